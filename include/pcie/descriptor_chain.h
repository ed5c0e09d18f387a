// A chain of linked DMA descriptors built in DMA memory: the scatter-gather lists of DMA
// engines that follow a "next descriptor" pointer from one descriptor to the next until
// one marked stop (Xilinx XDMA, PG195 "Descriptors"; AXI DMA and CDMA scatter-gather;
// many FPGA and SoC engines). The driver appends descriptors in order; finish() links each
// to the next by its bus address and marks the last one stop, through a format traits type
// that knows the engine's descriptor layout.
//
// Engines that fetch several descriptors at once are told how many lie contiguously after
// the next one: XDMA's Nxt_adj (PG195, descriptor bits 13:8: "the number of additional
// adjacent descriptors after the descriptor located at the next descriptor address
// field"; a block of adjacent descriptors cannot cross a 4 KiB boundary). The chain
// computes it from where each descriptor lies, capped at the format's maximum and at its
// boundary, and hands it to the format's link(); ChainStart::first_adjacent is the same
// count for the first descriptor (XDMA's SGDMA Descriptor Adjacent register).
//
// A format is a type with:
//   using Descriptor = ...;                         // trivially copyable, the engine's layout
//   static constexpr std::uint64_t kAlignment;      // bus alignment of every descriptor
//   static constexpr std::uint32_t kMaxNextAdjacent;  // 0 for engines without it
//   static constexpr std::uint64_t kAdjacentBoundary; // a block never crosses it; 0: none
//   static void link(Descriptor&, BusAddress next, std::uint32_t next_adjacent);  // not last
//   static void mark_last(Descriptor&);             // stop here (no next)
//
//   auto chain = pcie::DescriptorChain<XdmaFormat>::create(descriptor_buffer).value();
//   for (auto& piece : pieces) chain.append(descriptor_for(piece));  // out_of_range when full
//   auto start = chain.finish().value();            // start.first, start.first_adjacent
//   ... give the engine start.first; after it finished: chain.clear() and build the next
//
// The chain owns neither its memory nor the buffer behind it, which must outlive it.
// Threads: one owner's.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include "pcie/dma.h"
#include "pcie/bus_address.h"
#include "pcie/error.h"

namespace pcie {

// A descriptor format traits type, as described above: the engine's Descriptor layout, its
// alignment and adjacency limits, and link() and mark_last().
template <class F>
concept DescriptorFormat = std::is_trivially_copyable_v<typename F::Descriptor> &&
    requires(typename F::Descriptor& descriptor, BusAddress next, std::uint32_t next_adjacent) {
  { F::kAlignment } -> std::convertible_to<std::uint64_t>;
  { F::kMaxNextAdjacent } -> std::convertible_to<std::uint32_t>;
  { F::kAdjacentBoundary } -> std::convertible_to<std::uint64_t>;
  F::link(descriptor, next, next_adjacent);
  F::mark_last(descriptor);
};

// What the engine is given to start a finished chain.
struct ChainStart {
  BusAddress first;                  // the first descriptor's bus address
  std::uint32_t first_adjacent = 0;  // descriptors right after it in the same block
  std::uint32_t count = 0;           // descriptors in the chain
};

namespace detail {
// The checks of a chain's memory (src/queue/descriptor_chain.cc); returns the capacity:
// `capacity`, or when 0 as many descriptors as fit (at most 1 << 24).
Result<std::uint32_t> check_chain_memory(std::span<std::byte> memory, BusAddress bus, std::size_t entry_size,
                                         std::size_t entry_alignment, std::uint64_t bus_alignment,
                                         std::uint32_t capacity);
Error chain_full_error(std::uint32_t capacity);
Error chain_empty_error();
}  // namespace detail

// A chain of `Format` descriptors in DMA memory it does not own: append() them in order,
// then finish() links them and says where the engine starts. Copyable, but copies share the
// memory: keep one in use.
template <DescriptorFormat Format>
class DescriptorChain {
 public:
  // The engine's descriptor layout, from the format.
  using Descriptor = typename Format::Descriptor;
  static_assert(Format::kAlignment > 0 && (Format::kAlignment & (Format::kAlignment - 1)) == 0 &&
                    sizeof(Descriptor) % Format::kAlignment == 0,
                "a format's alignment is a power of two that divides its descriptor's size");

  // An empty chain: append() and finish() fail with invalid_argument.
  DescriptorChain() = default;

  // A chain of at most `capacity` descriptors (0: as many as fit, up to 1 << 24) over
  // `memory`, whose first byte the device reaches at `bus`. Fails with invalid_argument (no
  // memory, too little for `capacity`, not aligned for Descriptor), misaligned (`bus` not a
  // multiple of Format::kAlignment), out_of_range (the bus addresses would wrap).
  static Result<DescriptorChain> create(std::span<std::byte> memory, BusAddress bus, std::uint32_t capacity = 0) {
    auto checked =
        detail::check_chain_memory(memory, bus, sizeof(Descriptor), alignof(Descriptor), Format::kAlignment, capacity);
    if (!checked) return std::unexpected(checked.error());
    DescriptorChain chain;
    chain.memory_ = memory.data();
    chain.bus_ = bus;
    chain.capacity_ = *checked;
    return chain;
  }
  // Over a whole DMA buffer or pool slice (its bytes and bus address).
  static Result<DescriptorChain> create(const DmaBuffer& buffer, std::uint32_t capacity = 0) {
    return create(buffer.bytes(), buffer.bus_address(), capacity);
  }
  // As above, for a DmaSlice.
  static Result<DescriptorChain> create(const DmaSlice& slice, std::uint32_t capacity = 0) {
    return create(slice.bytes(), slice.bus_address(), capacity);
  }

  // False for a default-constructed chain (not made by create()).
  bool valid() const { return memory_ != nullptr; }
  // Descriptors appended since creation or the last clear().
  std::uint32_t size() const { return size_; }
  // The most descriptors the chain holds (0 on an empty chain).
  std::uint32_t capacity() const { return capacity_; }

  // Copies `descriptor` into the next place and returns its index. Not linked until
  // finish(). out_of_range when the chain is full; invalid_argument on an empty chain.
  Result<std::uint32_t> append(const Descriptor& descriptor) {
    if (!valid()) return std::unexpected(empty_object_error("append", "DescriptorChain", "use create()"));
    if (size_ == capacity_) return std::unexpected(detail::chain_full_error(capacity_));
    std::memcpy(memory_ + std::size_t{size_} * sizeof(Descriptor), &descriptor, sizeof(Descriptor));
    return size_++;
  }

  // Links every descriptor to the next (Format::link with the next one's bus address and
  // adjacent_after() of it) and marks the last stop (Format::mark_last); returns where the
  // engine starts. May be called again after more appends. invalid_argument when the chain
  // has no descriptors or is empty.
  Result<ChainStart> finish() {
    if (!valid()) return std::unexpected(empty_object_error("finish", "DescriptorChain", "use create()"));
    if (size_ == 0) return std::unexpected(detail::chain_empty_error());
    for (std::uint32_t i = 0; i + 1 < size_; ++i) {
      Format::link(*descriptor(i), bus_address(i + 1), adjacent_after(i + 1));
    }
    Format::mark_last(*descriptor(size_ - 1));
    return ChainStart{bus_, adjacent_after(0), size_};
  }

  // Forgets the descriptors (the memory keeps them until overwritten): for the next chain,
  // once the engine is done with this one.
  void clear() noexcept { size_ = 0; }

  // How many descriptors follow descriptor `index` contiguously in the chain without
  // crossing a Format::kAdjacentBoundary, at most Format::kMaxNextAdjacent; 0 past the end.
  std::uint32_t adjacent_after(std::uint32_t index) const {
    if (index >= size_) return 0;
    std::uint64_t adjacent = std::min<std::uint64_t>(size_ - 1 - index, Format::kMaxNextAdjacent);
    if constexpr (Format::kAdjacentBoundary != 0) {
      const std::uint64_t into_block = bus_address(index).value % Format::kAdjacentBoundary;
      const std::uint64_t fit = (Format::kAdjacentBoundary - into_block) / sizeof(Descriptor);  // itself included
      adjacent = std::min<std::uint64_t>(adjacent, fit == 0 ? 0 : fit - 1);
    }
    return static_cast<std::uint32_t>(adjacent);
  }

  // The bus address of descriptor `index` (below capacity()).
  BusAddress bus_address(std::uint32_t index) const {
    return BusAddress{bus_.value + std::uint64_t{index} * sizeof(Descriptor)};
  }
  // Descriptor `index` in place (below capacity()), for a driver that edits it before
  // finish(); nullptr on an empty chain.
  Descriptor* descriptor(std::uint32_t index) const {
    if (!valid()) return nullptr;
    return reinterpret_cast<Descriptor*>(memory_ + std::size_t{index} * sizeof(Descriptor));
  }

 private:
  std::byte* memory_ = nullptr;
  BusAddress bus_;
  std::uint32_t capacity_ = 0;
  std::uint32_t size_ = 0;
};

}  // namespace pcie
