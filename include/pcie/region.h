// A window onto device registers (a BAR today; VFIO regions later) with checked accessors.
// Driver code written against Region does not care whether the window is memory-mapped
// or reached through pread/pwrite (I/O-port BARs).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <optional>
#include <string_view>

#include "pcie/error.h"

namespace pcie {

// How the CPU maps a window, which decides how bulk copies may touch it (Intel SDM vol. 3A,
// 11.3 "Methods of caching available").
enum class MemoryType {
  uncached,        // resourceN, VFIO regions: every access reaches the device, in order
  write_combined,  // resourceN_wc: stores merge into bursts; prefetchable BARs only
  write_back,      // ordinary cached memory (DMA buffers, host memory)
};

// "uncached", "write-combined" or "write-back".
const char* to_string(MemoryType type);

// What a mapping asked for and what the kernel granted it (pcie/memory_type.h checks it).
struct MemoryTypeReport {
  MemoryType requested = MemoryType::uncached;  // what the mapping asked for
  // What the kernel granted, from its PAT table; nullopt when that could not be read (see
  // `note`). A type that is none of these three (write-through, write-protected) is
  // reported as uncached, the one whose accesses are all kept, with `mismatch` set.
  std::optional<MemoryType> granted;
  std::string granted_name;  // the kernel's name for it ("uncached-minus"); "" when unverified
  std::string note;          // why it is unverified, or what differs
  bool mismatch = false;     // verified, and not what was asked for
  // Whether the kernel's grant could be read (`granted` holds it).
  bool verified() const { return granted.has_value(); }
  // False only for a verified grant of another type than requested; true while unverified.
  bool matches() const { return !mismatch; }
};


// Access width in bytes.
enum class Width : std::uint8_t { bits8 = 1, bits16 = 2, bits32 = 4, bits64 = 8 };

// Bytes in one access of `width`: 1, 2, 4 or 8.
constexpr std::size_t byte_count(Width width) { return static_cast<std::size_t>(width); }
// The value a read of `width` returns from a device that is gone: every bit set.
constexpr std::uint64_t all_ones(Width width) {
  return width == Width::bits64 ? ~std::uint64_t{0} : (std::uint64_t{1} << (8 * byte_count(width))) - 1;
}
// Bits in one access of `width`: 8, 16, 32 or 64.
constexpr unsigned bit_count(Width width) { return 8u * static_cast<unsigned>(width); }

// 8, 16, 32 or 64 -> Width; anything else is invalid_argument.
Result<Width> width_from_bits(unsigned bits);

// The set of widths a region accepts. Many FPGA register files accept only 32-bit
// accesses; I/O-port BARs never accept 64-bit ones.
class WidthSet {
 public:
  // The empty set: no width allowed (see empty()).
  constexpr WidthSet() = default;
  // Every width: 8, 16, 32 and 64 bits.
  static constexpr WidthSet all() { return WidthSet(0x0f); }
  // `width` alone (WidthSet::only(Width::bits32) for a 32-bit-only register file).
  static constexpr WidthSet only(Width width) { return WidthSet(mask_of(width)); }
  // Every width from 8 bits up to and including `widest` (up_to(Width::bits32): 8/16/32,
  // what an I/O-port BAR takes).
  static constexpr WidthSet up_to(Width widest) {
    return WidthSet(static_cast<std::uint8_t>((mask_of(widest) << 1) - 1));
  }
  // Whether accesses of `width` are in the set.
  constexpr bool allows(Width width) const { return (mask_ & mask_of(width)) != 0; }
  // Intersection: the widths both sets allow (what Region::restrict_widths keeps).
  constexpr WidthSet operator&(WidthSet other) const { return WidthSet(mask_ & other.mask_); }
  // Union: WidthSet::only(Width::bits32) | WidthSet::only(Width::bits64) for 32/64-bit registers.
  constexpr WidthSet operator|(WidthSet other) const { return WidthSet(mask_ | other.mask_); }
  // True when no width is allowed: every checked access then fails with width_not_allowed.
  constexpr bool empty() const { return mask_ == 0; }
  // Bit k set: 2^k-byte accesses allowed (bit 0: 8-bit ... bit 3: 64-bit).
  constexpr std::uint8_t byte_mask() const { return mask_; }
  // "8/16/32", for messages.
  std::string to_string() const;
  // Equal when both sets allow exactly the same widths.
  friend constexpr bool operator==(WidthSet, WidthSet) = default;

 private:
  constexpr explicit WidthSet(std::uint8_t mask) : mask_(mask) {}
  static constexpr std::uint8_t mask_of(Width width) {
    switch (width) {
      case Width::bits8: return 1;
      case Width::bits16: return 2;
      case Width::bits32: return 4;
      case Width::bits64: return 8;
    }
    return 0;
  }
  std::uint8_t mask_ = 0;
};

// The checks every checked accessor makes: the width is allowed, the offset is naturally
// aligned, and [offset, offset + width) lies inside [0, region_size). The bounds check is
// written so that no offset, however large, can overflow. Inline: this is the hot path.
constexpr bool access_allowed(std::uint64_t region_size, WidthSet allowed, Width width,
                              std::uint64_t offset) {
  const std::uint64_t bytes = byte_count(width);
  return allowed.allows(width) && offset % bytes == 0 && offset <= region_size &&
         bytes <= region_size - offset;
}

// The error for an access that access_allowed() refused, reporting the first failed check
// in this order: width, alignment, bounds.
Error access_error(std::string_view operation, std::string_view region_name,
                   std::uint64_t region_size, WidthSet allowed, Width width, std::uint64_t offset);

// access_allowed() as a Result, with the error built only on failure.
inline Result<void> check_access(std::string_view operation, std::string_view region_name,
                                 std::uint64_t region_size, WidthSet allowed, Width width,
                                 std::uint64_t offset) {
  if (access_allowed(region_size, allowed, width, offset)) [[likely]] return {};
  return std::unexpected(access_error(operation, region_name, region_size, allowed, width, offset));
}

// The error of an access to a region whose mapping the removal guard revoked
// (pcie/removal.h): device_removed.
Error removed_error(std::string_view operation, std::string_view region_name, std::uint64_t offset);

// Overflow-safe check that [offset, offset + length) lies inside [0, region_size).
Result<void> check_span(std::string_view operation, std::string_view region_name,
                        std::uint64_t region_size, std::uint64_t offset, std::uint64_t length);

// Which half of a 64-bit register goes first when it is accessed as two 32-bit halves, for
// devices and paths that cannot take one 8-byte access. The device sees two accesses, and
// the order matters where the second one acts (a doorbell, a latched or self-clearing
// register): a device's manual says which half it expects last.
enum class HalfOrder {
  low_first,   // bytes 0-3, then 4-7 (the kernel's lo_hi_writeq)
  high_first,  // bytes 4-7, then 0-3 (hi_lo_writeq)
};

// The contract of each call is its comment here, whichever implementation (BarMapping,
// IoPortBar, VfioRegion, PhysicalWindow, the testing kit's): an override's comment says only
// what is specific to it.
class Region {
 public:
  virtual ~Region() = default;

  // Bytes addressable through this region.
  virtual std::uint64_t size() const = 0;
  // "0000:03:00.0 BAR2", used in every error about this region.
  virtual const std::string& name() const = 0;

  // The access widths the checked accessors and copies accept.
  WidthSet allowed_widths() const { return allowed_; }
  // Narrows the accepted widths (never widens: the result is the intersection).
  void restrict_widths(WidthSet widths) { allowed_ = allowed_ & widths; }

  // Checked, ordered read of `width` at `offset` (zero-extended to 64 bits). Fails with
  // width_not_allowed, misaligned or out_of_range (checked in that order), invalid_argument
  // on an empty region, device_removed (see revoked()), or the backend's I/O error.
  Result<std::uint64_t> read(Width width, std::uint64_t offset) const;
  // Checked, ordered write. Fails as read() does (device_removed for any write to a
  // revoked mapping), and, after the access checks, with permission_denied for a region
  // opened read-only, then invalid_argument when `value` does not fit in `width`.
  Result<void> write(Width width, std::uint64_t offset, std::uint64_t value);
  // Whether the region was opened for writing.
  bool writable() const { return writable_; }
  // The error of any access to an empty region (valid() false).
  Error empty_error(std::string_view operation) const;

  // A 64-bit register as two checked 32-bit accesses, the halves in `order` (the kernel's
  // lo_hi_writeq/hi_lo_writeq and lo_hi_readq/hi_lo_readq): for regions that refuse 8-byte
  // accesses (a VFIO region file, a BAR that takes 32 bits only) and for devices that want
  // the halves in a given order. Both halves are checked before the first access, so a
  // refused write writes nothing: out_of_range, misaligned (offset not 4-byte aligned),
  // width_not_allowed, invalid_argument (empty region), permission_denied (read-only);
  // then the errors of each access (device_removed, the backend's I/O error), a write's
  // first half done when its second fails.
  Result<void> write64_halves(std::uint64_t offset, std::uint64_t value, HalfOrder order);
  // As write64_halves(), for a read: the two halves read in `order` and returned as one
  // value (bytes 4-7 in the upper 32 bits). Fails with the same checks before the first
  // read (all but permission_denied), then with either read's error.
  Result<std::uint64_t> read64_halves(std::uint64_t offset, HalfOrder order) const;

  // How the window is mapped, as the kernel granted it where that could be verified, else
  // as asked for (memory_type_report() says which); the bulk copy path (pcie/copy.h)
  // picks its kernel from it.
  virtual MemoryType memory_type() const { return MemoryType::uncached; }
  // What was asked for, what was granted, and whether that could be verified.
  virtual MemoryTypeReport memory_type_report() const {
    return {memory_type(), std::nullopt, "", "not checked for this kind of region"};
  }
  // Where the whole region is one mapping: its base address, for the bulk copy path's
  // vector kernels. nullptr for regions reached through pread/pwrite (I/O ports, VFIO
  // regions without a mapping or with sparse areas), which copy register by register.
  virtual std::byte* mapped_base() const { return nullptr; }
  // Whether the removal guard (pcie/removal.h) replaced this region's mapping because its
  // device went away. Checked accesses then fail with device_removed: writes always, reads
  // when they return all ones (a read racing the revocation cannot tell otherwise).
  virtual bool revoked() const { return false; }
  // False for an empty region: a default-constructed or moved-from BarMapping, IoPortBar,
  // PhysicalWindow or VfioRegion, which a driver struct may hold before the real one is
  // moved in. An empty region has size() 0 and no mapping; every access and copy fails
  // with invalid_argument.
  virtual bool valid() const { return true; }

 protected:
  // For implementations: the widths the checked accessors accept, and whether write()
  // may write (permission_denied otherwise).
  Region(WidthSet allowed, bool writable) : allowed_(allowed), writable_(writable) {}
  // Copies the accepted widths and the writable flag, for an implementation's moves.
  Region(const Region&) = default;
  // As the copy constructor, for an implementation's move assignment.
  Region& operator=(const Region&) = default;
  // Called only after the checks above passed (and, for writes, the value fits): the one
  // access, failing only with device_removed (a revoked mapping) or the backend's I/O
  // error (pread/pwrite on a region file).
  virtual Result<std::uint64_t> read_checked(Width width, std::uint64_t offset) const = 0;
  // As read_checked(), for the write of `value` (already known to fit in `width`).
  virtual Result<void> write_checked(Width width, std::uint64_t offset, std::uint64_t value) = 0;

 private:
  WidthSet allowed_;
  bool writable_ = false;
};

}  // namespace pcie
