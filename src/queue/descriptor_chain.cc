#include "pcie/descriptor_chain.h"

#include <fmt/format.h>

namespace pcie::detail {

namespace {
constexpr const char* kObject = "descriptor chain";
constexpr std::uint32_t kMaxCapacity = 1u << 24;

Result<std::uint32_t> refuse(Errc code, std::string reason, std::string hint = {}) {
  return std::unexpected(make_error(code, "create", kObject, std::move(reason), std::move(hint)));
}
}  // namespace

Result<std::uint32_t> check_chain_memory(std::span<std::byte> memory, BusAddress bus, std::size_t entry_size,
                                         std::size_t entry_alignment, std::uint64_t bus_alignment,
                                         std::uint32_t capacity) {
  if (memory.data() == nullptr) return refuse(Errc::invalid_argument, "no memory");
  if (reinterpret_cast<std::uintptr_t>(memory.data()) % entry_alignment != 0) {
    return refuse(Errc::invalid_argument, fmt::format("the memory at {} is not aligned to the descriptor's {} bytes",
                                                      static_cast<const void*>(memory.data()), entry_alignment));
  }
  if (bus.value % bus_alignment != 0) {
    return refuse(
        Errc::misaligned,
        fmt::format("bus address 0x{:x} is not a multiple of {}, which the engine needs", bus.value, bus_alignment),
        "place the chain at an aligned offset of its DMA buffer");
  }
  const std::uint64_t fit = memory.size() / entry_size;
  const std::uint64_t wanted = capacity == 0 ? std::min<std::uint64_t>(fit, kMaxCapacity) : capacity;
  if (wanted == 0 || wanted > fit || wanted > kMaxCapacity) {
    return refuse(Errc::invalid_argument,
                  fmt::format("{} descriptors of {} bytes asked in {} bytes (1 to {} descriptors, within the memory)",
                              capacity, entry_size, memory.size(), kMaxCapacity));
  }
  const std::uint64_t last_byte = wanted * entry_size - 1;  // no overflow: wanted * entry_size <= memory.size()
  if (bus.value > ~std::uint64_t{0} - last_byte) {
    return refuse(Errc::out_of_range,
                  fmt::format("0x{:x} bytes from bus address 0x{:x} wrap past 2^64", last_byte + 1, bus.value));
  }
  return static_cast<std::uint32_t>(wanted);
}

Error chain_full_error(std::uint32_t capacity) {
  return make_error(Errc::out_of_range, "append", kObject, fmt::format("the chain is full ({} descriptors)", capacity),
                    "split the transfer into several chains, or give the chain more memory");
}

Error chain_empty_error() {
  return make_error(Errc::invalid_argument, "finish", kObject, "the chain has no descriptors",
                    "append at least one descriptor");
}

}  // namespace pcie::detail
