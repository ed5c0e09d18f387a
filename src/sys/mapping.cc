#include "pcie/sys/mapping.h"

#include <sys/mman.h>

#include <cerrno>

namespace pcie {

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    if (addr_ != nullptr) ::munmap(addr_, length_);
    addr_ = std::exchange(other.addr_, nullptr);
    length_ = std::exchange(other.length_, 0);
  }
  return *this;
}

Mapping::~Mapping() {
  if (addr_ != nullptr) ::munmap(addr_, length_);
}

Result<void> Mapping::unmap() {
  void* addr = std::exchange(addr_, nullptr);
  const std::size_t length = std::exchange(length_, 0);
  if (addr == nullptr) return {};
  if (::munmap(addr, length) != 0) {
    return std::unexpected(make_errno_error(errno, "munmap", "mapping"));
  }
  return {};
}

}  // namespace pcie
