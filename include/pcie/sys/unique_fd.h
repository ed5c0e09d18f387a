// A move-only owner of a file descriptor.
#pragma once

#include <utility>

#include "pcie/error.h"

namespace pcie {

class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (which may be -1 for "none").
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  // Closes the descriptor; an error from close(2) is ignored here (call close() to see it).
  ~UniqueFd();

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  // Gives up ownership and returns the descriptor.
  int release() noexcept { return std::exchange(fd_, -1); }
  // Closes now and reports what close(2) said. Afterwards the object is empty.
  Result<void> close();

 private:
  int fd_ = -1;
};

}  // namespace pcie
