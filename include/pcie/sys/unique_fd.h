// A move-only owner of a file descriptor.
#pragma once

#include <utility>

#include "pcie/error.h"

namespace pcie {

// Owns one file descriptor and closes it on destruction; -1 means none.
class UniqueFd {
 public:
  // Owns nothing (-1).
  UniqueFd() = default;
  // Takes ownership of `fd` (which may be -1 for "none").
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  // Move-only: takes `other`'s descriptor, leaving it -1.
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  // Closes the descriptor held (ignoring close(2)'s error), then takes `other`'s, leaving it
  // -1. Self-assignment does nothing.
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  // Closes the descriptor; an error from close(2) is ignored here (call close() to see it).
  ~UniqueFd();

  // The descriptor, still owned (-1 when none).
  int get() const noexcept { return fd_; }
  // Whether a descriptor is held.
  bool valid() const noexcept { return fd_ >= 0; }
  // Gives up ownership and returns the descriptor.
  int release() noexcept { return std::exchange(fd_, -1); }
  // Closes now and reports what close(2) said. Afterwards the object is empty.
  Result<void> close();

 private:
  int fd_ = -1;
};

}  // namespace pcie
