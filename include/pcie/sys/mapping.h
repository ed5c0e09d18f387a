// A move-only owner of an mmap(2) region; it knows its own length, so the unmap in the
// destructor cannot get the size wrong.
#pragma once

#include <cstddef>
#include <utility>

#include "pcie/error.h"

namespace pcie {

class Mapping {
 public:
  Mapping() = default;
  // Takes ownership of [addr, addr + length) returned by mmap(2).
  Mapping(void* addr, std::size_t length) noexcept : addr_(addr), length_(length) {}
  Mapping(Mapping&& other) noexcept
      : addr_(std::exchange(other.addr_, nullptr)), length_(std::exchange(other.length_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  // Unmaps; an error from munmap(2) is ignored here (call unmap() to see it).
  ~Mapping();

  std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
  std::size_t size() const noexcept { return length_; }
  bool valid() const noexcept { return addr_ != nullptr; }
  // Unmaps now and reports what munmap(2) said. Afterwards the object is empty.
  Result<void> unmap();

 private:
  void* addr_ = nullptr;
  std::size_t length_ = 0;
};

}  // namespace pcie
