// The vector instructions behind the SSE2 / SSE4.1 / AVX2 / AVX-512 / MOVDIR64B kernels.
// Each kernel file includes this after its target pragma and instantiates only the
// widths its instruction set has (vector_kernel<Widest, ...>): a template that is never
// instantiated is never compiled for a target that lacks its instructions, so one text
// serves every instruction set. (g++ does not define __AVX2__ & co. under the pragma.)
// Internal linkage throughout, for the reason given in span_walk.h. Include after
// <cstddef>, <cstdint>, <immintrin.h> and span_walk.h.
#pragma once

namespace pcie::copy_detail {
namespace {

// One aligned vector store of N bytes to the window, from unaligned host memory.
template <std::size_t N>
inline void store_vector(std::uintptr_t device, const std::byte* host) {
  if constexpr (N == 16) {
    _mm_store_si128(reinterpret_cast<__m128i*>(device), _mm_loadu_si128(reinterpret_cast<const __m128i*>(host)));
  } else if constexpr (N == 32) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(device), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(host)));
  } else if constexpr (N == 64) {
    _mm512_store_si512(reinterpret_cast<void*>(device), _mm512_loadu_si512(host));
  } else {
    static_assert(N == 0, "no vector store of this width for this instruction set");
  }
}

// One non-temporal (streaming) store: bypasses the caches, for host copies larger than them.
template <std::size_t N>
inline void stream_vector(std::uintptr_t device, const std::byte* host) {
  if constexpr (N == 16) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(device), _mm_loadu_si128(reinterpret_cast<const __m128i*>(host)));
  } else if constexpr (N == 32) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(device), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(host)));
  } else if constexpr (N == 64) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(device), _mm512_loadu_si512(host));
  } else {
    static_assert(N == 0, "no streaming store of this width for this instruction set");
  }
}

// One aligned vector load of N bytes from the window, to unaligned host memory.
template <std::size_t N>
inline void load_vector(std::uintptr_t device, std::byte* host) {
  if constexpr (N == 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(host), _mm_load_si128(reinterpret_cast<const __m128i*>(device)));
  } else if constexpr (N == 32) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(host), _mm256_load_si256(reinterpret_cast<const __m256i*>(device)));
  } else if constexpr (N == 64) {
    _mm512_storeu_si512(host, _mm512_load_si512(reinterpret_cast<const void*>(device)));
  } else {
    static_assert(N == 0, "no vector load of this width for this instruction set");
  }
}

// One streaming load (movntdqa): from a write-combined window it fills a streaming buffer
// with the whole 64-byte line, so the next loads of that line do not go to the device
// (Intel SDM vol. 2B, MOVNTDQA). Needs SSE4.1; 32 bytes AVX2; 64 bytes AVX-512.
template <std::size_t N>
inline void stream_load_vector(std::uintptr_t device, std::byte* host) {
  if constexpr (N == 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(host), _mm_stream_load_si128(reinterpret_cast<__m128i*>(device)));
  } else if constexpr (N == 32) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(host), _mm256_stream_load_si256(reinterpret_cast<__m256i*>(device)));
  } else if constexpr (N == 64) {
    _mm512_storeu_si512(host, _mm512_stream_load_si512(reinterpret_cast<void*>(device)));
  } else {
    static_assert(N == 0, "no streaming load of this width for this instruction set");
  }
}

// What a kernel's access does: the four directions of span_walk.h's Ops::move.
enum class VectorMove {
  store,         // host -> window, aligned stores
  load,          // window -> host, aligned loads
  stream_load,   // window -> host, streaming loads (write-combined windows)
  stream_store,  // host -> host, non-temporal stores
};

// span_walk.h's Ops for a kernel whose widest access is `Widest` bytes. Accesses of 8
// bytes and less are register accesses in every direction.
template <std::size_t Widest, VectorMove Kind>
struct VectorOps {
  static constexpr std::size_t kWidest = Widest;
  template <std::size_t N>
  void move(std::uintptr_t device, std::byte* host) {
    constexpr bool from_window = Kind == VectorMove::load || Kind == VectorMove::stream_load;
    if constexpr (N <= 8 && from_window) {
      load_register<N>(device, host);
    } else if constexpr (N <= 8) {
      store_register<N>(device, host);
    } else if constexpr (Kind == VectorMove::store) {
      store_vector<N>(device, host);
    } else if constexpr (Kind == VectorMove::load) {
      load_vector<N>(device, host);
    } else if constexpr (Kind == VectorMove::stream_load) {
      stream_load_vector<N>(device, host);
    } else {
      stream_vector<N>(device, host);
    }
  }
};

// Allowed-width masks of 1..Widest bytes (span_walk.h's WidthMask).
constexpr unsigned widths_up_to(std::size_t widest) { return static_cast<unsigned>(2 * widest - 1); }

template <class Ops>
void run_span(const SpanJob& job) {
  Ops ops;
  walk_span(ops, job.device, job.host, job.length, job.allowed & widths_up_to(Ops::kWidest));
}

// The kernel of accesses up to `Widest` bytes; `StreamingLoads`: the target has SSE4.1's
// movntdqa (else reads from write-combined windows use ordinary loads).
template <std::size_t Widest, bool StreamingLoads>
constexpr KernelFunctions vector_kernel() {
  constexpr VectorMove kWcLoad = StreamingLoads ? VectorMove::stream_load : VectorMove::load;
  return {Widest, run_span<VectorOps<Widest, VectorMove::store>>, run_span<VectorOps<Widest, VectorMove::load>>,
          run_span<VectorOps<Widest, kWcLoad>>, run_span<VectorOps<Widest, VectorMove::stream_store>>};
}

}  // namespace
}  // namespace pcie::copy_detail
