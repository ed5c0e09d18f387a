#include "pcie/sys/unique_fd.h"

#include <unistd.h>

#include <cerrno>
#include <string>

namespace pcie {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

Result<void> UniqueFd::close() {
  const int fd = release();
  if (fd < 0) return {};
  if (::close(fd) != 0) {
    // Linux releases the descriptor even when close fails, so there is nothing to retry.
    return std::unexpected(make_errno_error(errno, "close", "fd " + std::to_string(fd)));
  }
  return {};
}

}  // namespace pcie
