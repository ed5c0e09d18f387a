// 1/2/4/8-byte accesses only: the portable kernel, and the only one for windows that
// allow no vector accesses. Compiled for the baseline instruction set.
#include <cstddef>
#include <cstdint>

#include "src/copy/kernels.h"
#include "src/copy/span_walk.h"

namespace pcie::copy_detail {
namespace {

constexpr unsigned kRegisterWidths = 1 | 2 | 4 | 8;

struct ToDevice {
  static constexpr std::size_t kWidest = 8;
  template <std::size_t N>
  void move(std::uintptr_t device, std::byte* host) { store_register<N>(device, host); }
};

struct FromDevice {
  static constexpr std::size_t kWidest = 8;
  template <std::size_t N>
  void move(std::uintptr_t device, std::byte* host) { load_register<N>(device, host); }
};

void to_device(const SpanJob& job) {
  ToDevice ops;
  walk_span(ops, job.device, job.host, job.length, job.allowed & kRegisterWidths);
}

void from_device(const SpanJob& job) {
  FromDevice ops;
  walk_span(ops, job.device, job.host, job.length, job.allowed & kRegisterWidths);
}

}  // namespace

constinit const KernelFunctions kRegistersKernel = {8, to_device, from_device, from_device, to_device};

}  // namespace pcie::copy_detail
