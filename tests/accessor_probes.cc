// One small function per accessor, compiled like any user's code, for
// accessor_codegen_test to disassemble. Only the view's construction and one access are
// inside each. BUILD.bazel compiles this file optimized and without sanitizers.
#include <cstddef>
#include <cstdint>

#include "pcie/mmio.h"

#define PCIE_PROBE extern "C" __attribute__((noinline, used))

namespace {
pcie::MmioView view_of(std::byte* base) { return pcie::MmioView(base, ~std::uint64_t{0}, pcie::WidthSet::all(), "probe"); }
}  // namespace

PCIE_PROBE std::uint8_t probe_read8(std::byte* base, std::uint64_t offset) { return view_of(base).read<std::uint8_t>(offset); }
PCIE_PROBE std::uint16_t probe_read16(std::byte* base, std::uint64_t offset) { return view_of(base).read<std::uint16_t>(offset); }
PCIE_PROBE std::uint32_t probe_read32(std::byte* base, std::uint64_t offset) { return view_of(base).read<std::uint32_t>(offset); }
PCIE_PROBE std::uint64_t probe_read64(std::byte* base, std::uint64_t offset) { return view_of(base).read<std::uint64_t>(offset); }
PCIE_PROBE void probe_write8(std::byte* base, std::uint64_t offset, std::uint8_t value) { view_of(base).write<std::uint8_t>(offset, value); }
PCIE_PROBE void probe_write16(std::byte* base, std::uint64_t offset, std::uint16_t value) { view_of(base).write<std::uint16_t>(offset, value); }
PCIE_PROBE void probe_write32(std::byte* base, std::uint64_t offset, std::uint32_t value) { view_of(base).write<std::uint32_t>(offset, value); }
PCIE_PROBE void probe_write64(std::byte* base, std::uint64_t offset, std::uint64_t value) { view_of(base).write<std::uint64_t>(offset, value); }
PCIE_PROBE std::uint32_t probe_read_relaxed32(std::byte* base, std::uint64_t offset) { return view_of(base).read_relaxed<std::uint32_t>(offset); }
PCIE_PROBE std::uint64_t probe_read_relaxed64(std::byte* base, std::uint64_t offset) { return view_of(base).read_relaxed<std::uint64_t>(offset); }
PCIE_PROBE void probe_write_relaxed32(std::byte* base, std::uint64_t offset, std::uint32_t value) { view_of(base).write_relaxed<std::uint32_t>(offset, value); }
PCIE_PROBE void probe_write_relaxed64(std::byte* base, std::uint64_t offset, std::uint64_t value) { view_of(base).write_relaxed<std::uint64_t>(offset, value); }

// A successful Result<void> as `return {};` makes it (value-initialization), and the host
// copy's inline path: neither may zero the Error's storage (AccessorCodegen test below).
#include <new>

#include "pcie/copy.h"
#include "pcie/error.h"

PCIE_PROBE void probe_result_success(pcie::Result<void>* out) { new (out) pcie::Result<void>{}; }
PCIE_PROBE bool probe_host_copy(void* to, const void* from, std::size_t length) {
  return pcie::copy(to, from, length).has_value();
}
