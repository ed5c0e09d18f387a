// A move-only owner of an mmap(2) region; it knows its own length, so the unmap in the
// destructor cannot get the size wrong.
#pragma once

#include <cstddef>
#include <utility>

#include "pcie/error.h"

namespace pcie {

struct Bdf;

// Owns one mmap(2) region, unmapped on destruction, optionally registered with the removal
// guard.
class Mapping {
 public:
  // Owns nothing.
  Mapping() = default;
  // Takes ownership of [addr, addr + length) returned by mmap(2).
  Mapping(void* addr, std::size_t length) noexcept : addr_(addr), length_(length) {}
  // Move-only: takes `other`'s region and guard registration, leaving it empty.
  Mapping(Mapping&& other) noexcept
      : addr_(std::exchange(other.addr_, nullptr)),
        length_(std::exchange(other.length_, 0)),
        guard_slot_(std::exchange(other.guard_slot_, -1)) {}
  // Unmaps the region held (ignoring munmap(2)'s error), then takes `other`'s region and
  // guard registration, leaving it empty. Self-assignment does nothing.
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  // Unmaps; an error from munmap(2) is ignored here (call unmap() to see it).
  ~Mapping();

  // The first byte of the region (null when empty).
  std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
  // The region's length in bytes, as passed to mmap(2) (0 when empty).
  std::size_t size() const noexcept { return length_; }
  // Whether a region is held.
  bool valid() const noexcept { return addr_ != nullptr; }
  // Unmaps now and reports what munmap(2) said. Afterwards the object is empty.
  Result<void> unmap();

  // Registers this mapping as device memory of `device` with the removal guard
  // (pcie/removal.h): a fault in it (SIGBUS: the device is gone) or a revocation
  // (revoke_device_mappings) replaces it by memory that reads all ones. The registration
  // ends before the unmap. busy when the guard's table (4096 mappings) is full; the mapping
  // then stays unguarded. Registering twice is a no-op.
  Result<void> guard_as_device_memory(const Bdf& device);
  // Whether the removal guard replaced this mapping (its device went away): reads of it
  // return all ones and writes reach nothing.
  bool revoked() const noexcept;
  // Whether guard_as_device_memory() registered this mapping (until it is unmapped).
  bool guarded() const noexcept { return guard_slot_ >= 0; }

 private:
  void release() noexcept;

  void* addr_ = nullptr;
  std::size_t length_ = 0;
  int guard_slot_ = -1;  // the removal guard's table entry, -1 when not registered
};

}  // namespace pcie
