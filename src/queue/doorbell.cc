#include <fmt/format.h>

#include "pcie/queue.h"

namespace pcie {

namespace {
// base + index * stride, refusing a stride below one doorbell and any overflow.
Result<std::uint64_t> array_offset(std::string_view name, std::uint64_t base, std::uint64_t index,
                                   std::uint64_t stride) {
  if (stride < 4) {
    return std::unexpected(make_error(Errc::invalid_argument, "place doorbell",
                                      fmt::format("{} doorbell {}", name, index),
                                      fmt::format("a stride of {} bytes is below one 32-bit doorbell", stride)));
  }
  std::uint64_t offset = 0;
  if (__builtin_mul_overflow(index, stride, &offset) || __builtin_add_overflow(offset, base, &offset)) {
    return std::unexpected(make_error(Errc::out_of_range, "place doorbell", fmt::format("{} doorbell {}", name, index),
                                      fmt::format("0x{:x} + {} * 0x{:x} overflows 64 bits", base, index, stride)));
  }
  return offset;
}
}  // namespace

Result<Doorbell> Doorbell::at(const MmioView& registers, std::uint64_t offset) {
  auto ok = check_access("place doorbell", registers.name(), registers.size(), registers.allowed_widths(),
                         Width::bits32, offset);
  if (!ok) return std::unexpected(ok.error());
  return Doorbell(registers, offset);
}

Result<Doorbell> Doorbell::in_array(const MmioView& registers, std::uint64_t base, std::uint64_t index,
                                    std::uint64_t stride) {
  auto offset = array_offset(registers.name(), base, index, stride);
  if (!offset) return std::unexpected(offset.error());
  return at(registers, *offset);
}

Result<Doorbell> Doorbell::at(Region& registers, std::uint64_t offset) {
  auto ok = check_access("place doorbell", registers.name(), registers.size(), registers.allowed_widths(),
                         Width::bits32, offset);
  if (!ok) return std::unexpected(ok.error());
  if (!registers.writable()) {
    return std::unexpected(make_error(Errc::permission_denied, "place doorbell", registers.name(),
                                      "the region was opened read-only"));
  }
  return Doorbell(registers, offset);
}

Result<Doorbell> Doorbell::in_array(Region& registers, std::uint64_t base, std::uint64_t index, std::uint64_t stride) {
  auto offset = array_offset(registers.name(), base, index, stride);
  if (!offset) return std::unexpected(offset.error());
  return at(registers, *offset);
}

namespace detail {

Result<void> check_ring_memory(std::string_view ring, std::span<std::byte> memory, std::uint32_t depth,
                               std::size_t entry_size, std::size_t entry_alignment) {
  constexpr std::uint32_t kMaxDepth = 1u << 24;
  auto refuse = [&](std::string reason, std::string hint = {}) {
    return std::unexpected(make_error(Errc::invalid_argument, "create", std::string(ring), std::move(reason),
                                      std::move(hint)));
  };
  if (depth < 2 || depth > kMaxDepth) {
    return refuse(fmt::format("depth {} is outside [2, {}] (one slot always stays empty)", depth, kMaxDepth));
  }
  if (memory.data() == nullptr) return refuse("no memory");
  if (reinterpret_cast<std::uintptr_t>(memory.data()) % entry_alignment != 0) {
    return refuse(fmt::format("the memory at {} is not aligned to the entry's {} bytes",
                              static_cast<const void*>(memory.data()), entry_alignment));
  }
  // depth <= 2^24 and entry sizes of a real ring keep this product far from overflow, but
  // check anyway: the entry type is the caller's.
  std::uint64_t needed = 0;
  if (__builtin_mul_overflow(std::uint64_t{depth}, std::uint64_t{entry_size}, &needed) || needed > memory.size()) {
    return refuse(fmt::format("{} entries of {} bytes need more than the {} bytes given", depth, entry_size,
                              memory.size()),
                  "allocate depth * sizeof(entry) bytes");
  }
  return {};
}

}  // namespace detail
}  // namespace pcie
