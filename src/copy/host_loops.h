// The loops of host-to-host copies (write-back memory on both sides, ranges that do not
// overlap): what copy() runs where glibc's memcpy is slow on this CPU (host_plan.cc).
// Unlike the MMIO kernels, these may store a byte twice: the head and the tail are whole
// vectors that overlap the aligned middle, which is what makes them cheap. The middle
// stores are aligned, the loads unaligned, four vectors per iteration (as glibc's
// memmove-vec-unaligned-erms and DPDK's rte_memcpy do).
//
// Internal linkage throughout, for the reason given in span_walk.h: each loop file includes
// this after the pragma that compiles it for its own instruction set. Include after
// <cstddef>, <cstdint>, <cstring> and <immintrin.h>.
#pragma once

namespace pcie::copy_detail {
namespace {

// Partial specializations (the unused Dummy), so that their members are templates,
// compiled only where a loop of that width is instantiated: a file compiled for AVX2 never
// compiles the AVX-512 ones (g++ refuses 512-bit vector returns there).
template <std::size_t N, int Dummy = 0>
struct HostVector;

template <int Dummy>
struct HostVector<32, Dummy> {
  using Type = __m256i;
  static Type load(const std::byte* from) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from)); }
  static void store_unaligned(std::byte* to, Type value) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(to), value); }
  static void store(std::byte* to, Type value) { _mm256_store_si256(reinterpret_cast<__m256i*>(to), value); }
  static void stream(std::byte* to, Type value) { _mm256_stream_si256(reinterpret_cast<__m256i*>(to), value); }
};

template <int Dummy>
struct HostVector<64, Dummy> {
  using Type = __m512i;
  static Type load(const std::byte* from) { return _mm512_loadu_si512(from); }
  static void store_unaligned(std::byte* to, Type value) { _mm512_storeu_si512(to, value); }
  static void store(std::byte* to, Type value) { _mm512_store_si512(to, value); }
  static void stream(std::byte* to, Type value) { _mm512_stream_si512(reinterpret_cast<__m512i*>(to), value); }
};

// Copies `length` bytes with N-byte vectors; `Streaming`: the middle with non-temporal
// stores (they bypass the caches: for copies larger than the caches, whose lines would
// otherwise be read before they are overwritten, and evict what the program still uses).
//
// The first vector and the last four are loaded before the loop: the first is stored
// unaligned, the middle from the first N-aligned destination address on, four vectors per
// iteration while it starts before the last four, which are stored last and cover
// whatever the middle left. Every byte is written at least once, none outside the range.
template <std::size_t N, bool Streaming>
void copy_host_vectors(std::byte* to, const std::byte* from, std::size_t length) {
  using V = HostVector<N>;
  constexpr std::size_t kBlock = 4 * N;
  if (length < kBlock + N) {
    std::memcpy(to, from, length);
    return;
  }
  const typename V::Type head = V::load(from);
  const typename V::Type tail0 = V::load(from + length - kBlock);
  const typename V::Type tail1 = V::load(from + length - kBlock + N);
  const typename V::Type tail2 = V::load(from + length - kBlock + 2 * N);
  const typename V::Type tail3 = V::load(from + length - N);
  V::store_unaligned(to, head);
  const std::size_t skip = N - (reinterpret_cast<std::uintptr_t>(to) & (N - 1));  // 1..N
  std::byte* out = to + skip;
  const std::byte* in = from + skip;
  std::byte* const last_block = to + length - kBlock;
  while (out < last_block) {
    const typename V::Type a = V::load(in);
    const typename V::Type b = V::load(in + N);
    const typename V::Type c = V::load(in + 2 * N);
    const typename V::Type d = V::load(in + 3 * N);
    if constexpr (Streaming) {
      V::stream(out, a), V::stream(out + N, b), V::stream(out + 2 * N, c), V::stream(out + 3 * N, d);
    } else {
      V::store(out, a), V::store(out + N, b), V::store(out + 2 * N, c), V::store(out + 3 * N, d);
    }
    out += kBlock;
    in += kBlock;
  }
  // Non-temporal stores are weakly ordered: fenced before the ordinary stores below, and
  // before the copy returns (a flag written afterwards must not pass the data).
  if constexpr (Streaming) _mm_sfence();
  V::store_unaligned(last_block, tail0);
  V::store_unaligned(last_block + N, tail1);
  V::store_unaligned(last_block + 2 * N, tail2);
  V::store_unaligned(last_block + 3 * N, tail3);
}

}  // namespace
}  // namespace pcie::copy_detail
