// The access pattern of every bulk copy kernel: how a span of a device window is cut into
// naturally aligned, non-overlapping accesses no wider than allowed. Kernels differ only
// in the instructions behind Ops::move<N>; the pattern is this one template, so the test
// that runs it with a recording Ops (tests/copy_test.cc) checks what every kernel does.
//
// Everything here has internal linkage on purpose: each kernel file includes this header
// after the pragma that compiles it for its own instruction set, and shared (COMDAT) copies
// would let the linker run one kernel's AVX-512 code in another's place on CPUs without it.
// Include only after <cstddef> and <cstdint>, which this header needs and does not include.
#pragma once

namespace pcie::copy_detail {
namespace {

// Allowed access sizes as a mask: bit k set means 2^k-byte accesses (k = 0..6, 1..64 bytes).
using WidthMask = unsigned;

constexpr WidthMask width_bit(std::size_t bytes) { return static_cast<WidthMask>(bytes); }

// The widest allowed access of at most `remaining` bytes that `address` is aligned to.
// Returns 0 when none fits (the caller checked this cannot happen; see copy.cc).
inline std::size_t widest_fit(std::uintptr_t address, std::uint64_t remaining, WidthMask allowed) {
  for (std::size_t bytes = 64; bytes != 0; bytes >>= 1) {
    // Sizes are powers of two: a mask, not a division (this runs per access of the head).
    if ((allowed & width_bit(bytes)) != 0 && bytes <= remaining && (address & (bytes - 1)) == 0) return bytes;
  }
  return 0;
}

template <class Ops>
inline void move_one(Ops& ops, std::size_t bytes, std::uintptr_t device, std::byte* host) {
  switch (bytes) {
    case 1: ops.template move<1>(device, host); return;
    case 2: ops.template move<2>(device, host); return;
    case 4: ops.template move<4>(device, host); return;
    case 8: ops.template move<8>(device, host); return;
    case 16: if constexpr (Ops::kWidest >= 16) ops.template move<16>(device, host); return;
    case 32: if constexpr (Ops::kWidest >= 32) ops.template move<32>(device, host); return;
    case 64: if constexpr (Ops::kWidest >= 64) ops.template move<64>(device, host); return;
    default: return;
  }
}

// The aligned middle of a span: blocks of `Block` bytes, four per iteration so that loads
// and stores of neighbouring blocks overlap in the pipeline.
template <std::size_t Block, class Ops>
inline void move_blocks(Ops& ops, std::uintptr_t& device, std::byte*& host, std::uint64_t& remaining) {
  while (remaining >= 4 * Block) {
    ops.template move<Block>(device, host);
    ops.template move<Block>(device + Block, host + Block);
    ops.template move<Block>(device + 2 * Block, host + 2 * Block);
    ops.template move<Block>(device + 3 * Block, host + 3 * Block);
    device += 4 * Block;
    host += 4 * Block;
    remaining -= 4 * Block;
  }
  while (remaining >= Block) {
    ops.template move<Block>(device, host);
    device += Block;
    host += Block;
    remaining -= Block;
  }
}

// Moves the widest fitting accesses from `allowed` until `length` is 0 or, with `align`
// not 0, until the device address is aligned to `align`. Returns false if none fits, which
// the callers rule out by checking the span first (copy.cc).
template <class Ops>
inline bool move_fitting(Ops& ops, std::uintptr_t& device, std::byte*& host, std::uint64_t& length,
                         WidthMask allowed, std::size_t align) {
  while (length != 0 && (align == 0 || (device & (align - 1)) != 0)) {
    const std::size_t bytes = widest_fit(device, length, allowed);
    if (bytes == 0) return false;
    move_one(ops, bytes, device, host);
    device += bytes;
    host += bytes;
    length -= bytes;
  }
  return true;
}

// Moves [device, device + length) <-> [host, host + length) with accesses from `allowed`
// (already limited to what Ops can do). Head: widest fitting accesses until the device
// address is aligned to the widest allowed width; body: blocks of that width; tail: the
// widest fitting accesses again. Each byte is covered by exactly one access.
template <class Ops>
inline void walk_span(Ops& ops, std::uintptr_t device, std::byte* host, std::uint64_t length, WidthMask allowed) {
  std::size_t block = 64;
  while (block > 1 && (allowed & width_bit(block)) == 0) block >>= 1;
  if (!move_fitting(ops, device, host, length, allowed, block)) return;
  switch (block) {
    case 64: if constexpr (Ops::kWidest >= 64) move_blocks<64>(ops, device, host, length); break;
    case 32: if constexpr (Ops::kWidest >= 32) move_blocks<32>(ops, device, host, length); break;
    case 16: if constexpr (Ops::kWidest >= 16) move_blocks<16>(ops, device, host, length); break;
    case 8: move_blocks<8>(ops, device, host, length); break;
    case 4: move_blocks<4>(ops, device, host, length); break;
    case 2: move_blocks<2>(ops, device, host, length); break;
    default: move_blocks<1>(ops, device, host, length); break;
  }
  move_fitting(ops, device, host, length, allowed, 0);  // the tail, to the end
}

// Register-sized device accesses: one volatile load or store of exactly N bytes, so the
// compiler can neither split nor merge them; the host side is an ordinary copy.
template <std::size_t N>
struct RegisterWord;
template <> struct RegisterWord<1> { using type = std::uint8_t; };
template <> struct RegisterWord<2> { using type = std::uint16_t; };
template <> struct RegisterWord<4> { using type = std::uint32_t; };
template <> struct RegisterWord<8> { using type = std::uint64_t; };

template <std::size_t N>
inline void store_register(std::uintptr_t device, const std::byte* host) {
  using Word = typename RegisterWord<N>::type;
  Word value;
  __builtin_memcpy(&value, host, N);
  *reinterpret_cast<volatile Word*>(device) = value;
}

template <std::size_t N>
inline void load_register(std::uintptr_t device, std::byte* host) {
  using Word = typename RegisterWord<N>::type;
  const Word value = *reinterpret_cast<const volatile Word*>(device);
  __builtin_memcpy(host, &value, N);
}

}  // namespace
}  // namespace pcie::copy_detail
