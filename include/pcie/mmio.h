// Accessors on a memory-mapped register window, in the spirit of the kernel's
// readl/writel (Documentation/driver-api/device-io.rst):
//
//  - read<T>/write<T>: unchecked and ordered. Ordered means an MMIO write is not moved
//    before earlier ordinary memory accesses (so a descriptor written to a DMA buffer is
//    visible before the doorbell that announces it), and ordinary reads after an MMIO read
//    are not moved before it. Each compiles to one load or store instruction.
//  - read_relaxed<T>/write_relaxed<T>: unchecked, ordered only against other MMIO accesses
//    (volatile), like readl_relaxed/writel_relaxed; for bursts of register writes.
//  - checked_read<T>/checked_write<T>: bounds, natural alignment and allowed width checked
//    first, returning an Error; then the ordered access.
//  - write64_halves/read64_halves: a 64-bit register as two 32-bit accesses in a stated
//    order, like the kernel's lo_hi_writeq/hi_lo_writeq (include/linux/io-64-nonatomic-*.h).
//  - poll: a bounded wait on a register (pcie/wait.h: spin, then back off; an early stop).
//
// Write-combined windows: stores may merge and reorder among themselves; call
// barrier_before_doorbell() (pcie/barriers.h) before a write that must come after them.
// Values are in CPU byte order; PCI devices are little-endian, as is x86.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pcie/barriers.h"
#include "pcie/error.h"
#include "pcie/region.h"
#include "pcie/removal.h"
#include "pcie/wait.h"

namespace pcie {

// The register types the accessors take: 8-, 16-, 32- and 64-bit unsigned integers.
template <class T>
concept MmioWord = std::same_as<T, std::uint8_t> || std::same_as<T, std::uint16_t> ||
                   std::same_as<T, std::uint32_t> || std::same_as<T, std::uint64_t>;

// The access Width of register type `T` (width_of<std::uint32_t>() is Width::bits32).
template <MmioWord T>
constexpr Width width_of() {
  return static_cast<Width>(sizeof(T));
}

// What a poll ended with: the last value read, and false when the timeout passed first.
template <MmioWord T>
using PollResult = WaitResult<T>;

// A non-owning view of mapped registers. It does not keep the mapping alive: the object
// that produced it (BarMapping) must outlive it.
class MmioView {
 public:
  // An empty view: base() nullptr, size 0, no width allowed, so every checked access fails.
  MmioView() = default;
  // A view of the `size` bytes mapped at `base`, which must stay mapped while the view is
  // used. `allowed` is what the checked accessors accept; `name` ("0000:03:00.0 BAR2")
  // names the window in errors and is not copied: it must outlive the view too;
  // `memory_type` is how the window is mapped (Doorbell adds a fence for write_combined).
  MmioView(std::byte* base, std::uint64_t size, WidthSet allowed, std::string_view name,
           MemoryType memory_type = MemoryType::uncached)
      : base_(base), size_(size), allowed_(allowed), name_(name), memory_type_(memory_type) {}

  // The window's first byte (offset 0) in this process's address space.
  std::byte* base() const { return base_; }
  // Bytes in the window; the checked accessors refuse anything past it.
  std::uint64_t size() const { return size_; }
  // The widths the checked accessors accept (the unchecked ones do not look).
  WidthSet allowed_widths() const { return allowed_; }
  // The window's name, as errors give it.
  std::string_view name() const { return name_; }
  // How the window is mapped, as given at construction.
  MemoryType memory_type() const { return memory_type_; }

  // Ordered, unchecked read of the `T` at `offset` (one load; see the top of this header):
  // `offset` must be aligned for `T` and inside the window.
  template <MmioWord T>
  T read(std::uint64_t offset) const noexcept {
    const T value = *reinterpret_cast<const volatile T*>(base_ + offset);
    detail::after_ordered_mmio_read();
    return value;
  }

  // Ordered, unchecked write of `value` at `offset` (one store, after every earlier store
  // to ordinary memory): `offset` must be aligned for `T` and inside the window.
  template <MmioWord T>
  void write(std::uint64_t offset, T value) const noexcept {
    // The address is formed before the barrier so the barrier does not force a reload of
    // base_ from memory: the store stays one instruction with no load in front of it.
    volatile T* const target = reinterpret_cast<volatile T*>(base_ + offset);
    detail::before_ordered_mmio_write();
    *target = value;
  }

  // Ordered, unchecked access of a width chosen at run time (what Region implementations
  // dispatch on); the same single load or store as read<T>/write<T>.
  std::uint64_t read_as(Width width, std::uint64_t offset) const noexcept {
    switch (width) {
      case Width::bits8: return read<std::uint8_t>(offset);
      case Width::bits16: return read<std::uint16_t>(offset);
      case Width::bits32: return read<std::uint32_t>(offset);
      case Width::bits64: break;
    }
    return read<std::uint64_t>(offset);
  }
  // As read_as(), for a write of the low `width` bits of `value` (the rest is dropped).
  void write_as(Width width, std::uint64_t offset, std::uint64_t value) const noexcept {
    switch (width) {
      case Width::bits8: return write<std::uint8_t>(offset, static_cast<std::uint8_t>(value));
      case Width::bits16: return write<std::uint16_t>(offset, static_cast<std::uint16_t>(value));
      case Width::bits32: return write<std::uint32_t>(offset, static_cast<std::uint32_t>(value));
      case Width::bits64: break;
    }
    write<std::uint64_t>(offset, value);
  }

  // Unchecked read kept in order with other MMIO accesses only, like readl_relaxed: later
  // reads of DMA memory may pass it. Same preconditions as read<T>.
  template <MmioWord T>
  T read_relaxed(std::uint64_t offset) const noexcept {
    return *reinterpret_cast<const volatile T*>(base_ + offset);
  }

  // Unchecked write kept in order with other MMIO accesses only, like writel_relaxed: it may
  // pass earlier stores to DMA memory, so never announce a descriptor with it.
  template <MmioWord T>
  void write_relaxed(std::uint64_t offset, T value) const noexcept {
    *reinterpret_cast<volatile T*>(base_ + offset) = value;
  }

  // read<T> after the checks: fails with width_not_allowed, misaligned or out_of_range
  // (in that order, before any access), or with device_removed when the value is all ones
  // and the removal guard revoked the mapping (pcie/removal.h).
  template <MmioWord T>
  Result<T> checked_read(std::uint64_t offset) const {
    if (!access_allowed(size_, allowed_, width_of<T>(), offset)) [[unlikely]] {
      return std::unexpected(access_error("read", name_, size_, allowed_, width_of<T>(), offset));
    }
    const T value = read<T>(offset);
    // All ones is what a gone device answers; only then is the guard's table consulted.
    if (value == static_cast<T>(~T{0}) && mapping_revoked(base_ + offset)) [[unlikely]] {
      return std::unexpected(pcie::removed_error("read", name_, offset));
    }
    return value;
  }

  // write<T> after the checks: fails with width_not_allowed, misaligned or out_of_range (in
  // that order), writing nothing. A write to a revoked mapping is not reported (it reaches
  // no device: pcie/removal.h); Region::write reports it.
  template <MmioWord T>
  Result<void> checked_write(std::uint64_t offset, T value) const {
    if (!access_allowed(size_, allowed_, width_of<T>(), offset)) [[unlikely]] {
      return std::unexpected(access_error("write", name_, size_, allowed_, width_of<T>(), offset));
    }
    write<T>(offset, value);
    return {};
  }

  // The 64-bit register at `offset` as two ordered 32-bit accesses, the halves in `order`.
  // Unchecked: `offset` must be 4-byte aligned with 8 bytes inside the view.
  void write64_halves(std::uint64_t offset, std::uint64_t value, HalfOrder order) const noexcept {
    const auto low = static_cast<std::uint32_t>(value);
    const auto high = static_cast<std::uint32_t>(value >> 32);
    if (order == HalfOrder::low_first) {
      write<std::uint32_t>(offset, low);
      write<std::uint32_t>(offset + 4, high);
    } else {
      write<std::uint32_t>(offset + 4, high);
      write<std::uint32_t>(offset, low);
    }
  }
  // As write64_halves(), for a read: bytes 4-7 become the upper 32 bits of the value.
  std::uint64_t read64_halves(std::uint64_t offset, HalfOrder order) const noexcept {
    std::uint32_t low = 0;
    std::uint32_t high = 0;
    if (order == HalfOrder::low_first) {
      low = read<std::uint32_t>(offset);
      high = read<std::uint32_t>(offset + 4);
    } else {
      high = read<std::uint32_t>(offset + 4);
      low = read<std::uint32_t>(offset);
    }
    return (std::uint64_t{high} << 32) | low;
  }

  // Checked first: both halves inside the view, 4-byte aligned, 32-bit accesses allowed.
  // Fails only with out_of_range, misaligned or width_not_allowed, accessing nothing; a
  // read of all ones is not checked for removal (unlike checked_read).
  Result<void> checked_write64_halves(std::uint64_t offset, std::uint64_t value, HalfOrder order) const {
    auto ok = check_halves("write", offset);
    if (!ok) return ok;
    write64_halves(offset, value, order);
    return {};
  }
  // read64_halves() after the same checks as checked_write64_halves(), with the same
  // errors; an all-ones value is returned as read.
  Result<std::uint64_t> checked_read64_halves(std::uint64_t offset, HalfOrder order) const {
    auto ok = check_halves("read", offset);
    if (!ok) return std::unexpected(ok.error());
    return read64_halves(offset, order);
  }

  // Reads the register at `offset` until (value & mask) == expected, on the schedule of
  // `options` (pcie/wait.h: spin, then sleep with backoff; stop_if ends it early; with
  // all_ones_means_removed, a read of all ones ends it with device_removed). Returns the
  // last value read and whether it matched (false: the timeout passed). Fails with
  // width_not_allowed, misaligned or out_of_range (checked once, up front), device_removed
  // as said, or stop_if's error.
  template <MmioWord T>
  Result<PollResult<T>> poll(std::uint64_t offset, T mask, T expected, const WaitOptions& options) const {
    auto ok = check_access("poll", name_, size_, allowed_, width_of<T>(), offset);
    if (!ok) return std::unexpected(ok.error());
    bool removed = false;
    auto polled = wait_until(
        [this, offset] { return read<T>(offset); },
        [&removed, mask, expected, &options](T value) {
          if ((value & mask) == expected) return true;
          removed = options.all_ones_means_removed && value == static_cast<T>(~T{0});
          return removed;  // ends the wait; reported below
        },
        options);
    if (polled && removed) return std::unexpected(removed_error(offset, sizeof(T)));
    return polled;
  }

  // Spins on the register for up to `timeout` (no sleeping, no early stop): for waits of
  // microseconds. Never waits longer than `timeout` plus one read. Fails only with the
  // access checks above (no stop_if, all ones not taken as removal).
  template <MmioWord T>
  Result<PollResult<T>> poll(std::uint64_t offset, T mask, T expected, std::chrono::nanoseconds timeout) const {
    WaitOptions spin_only;
    spin_only.timeout = timeout;
    spin_only.max_sleep = std::chrono::nanoseconds::zero();
    return poll<T>(offset, mask, expected, spin_only);
  }

 private:
  Result<void> check_halves(std::string_view operation, std::uint64_t offset) const {
    auto ok = check_access(operation, name_, size_, allowed_, Width::bits32, offset);
    // The first check keeps offset below the size, so offset + 4 cannot wrap around.
    if (ok) ok = check_access(operation, name_, size_, allowed_, Width::bits32, offset + 4);
    return ok;
  }
  Error removed_error(std::uint64_t offset, std::size_t bytes) const;

  std::byte* base_ = nullptr;
  std::uint64_t size_ = 0;
  WidthSet allowed_;
  std::string_view name_;
  MemoryType memory_type_ = MemoryType::uncached;
};

}  // namespace pcie
