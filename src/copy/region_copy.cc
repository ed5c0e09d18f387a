// Copies between host memory and a device window: the checks made before the first access,
// then the chosen kernel's walk over a mapping, or Region::read/write per access where the
// region has no mapping (I/O ports, sparse VFIO regions).
#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "pcie/barriers.h"
#include "pcie/copy.h"
#include "pcie/region.h"
#include "pcie/removal.h"
#include "src/copy/kernel_choice.h"
#include "src/copy/kernels.h"
#include "src/copy/parallel.h"
#include "src/copy/span_walk.h"

namespace pcie {
namespace {

using copy_detail::cap_widths;
using copy_detail::functions_of;
using copy_detail::kernel_widths;
using copy_detail::KernelFunctions;
using copy_detail::kRegisterWidths;
using copy_detail::run_job;
using copy_detail::SpanJob;
using copy_detail::valid_max_access;
using copy_detail::widths_text;
using copy_detail::window_widths;

struct Prepared {
  CopyKernel kernel = CopyKernel::registers;
  unsigned widths = 0;
};

// Everything checked before the first access: span, kernel, widths, alignment.
Result<Prepared> prepare(std::string_view operation, std::string_view name, std::uint64_t size,
                         std::uintptr_t base, WidthSet allowed, MemoryType memory_type, CopyDirection direction,
                         std::uint64_t offset, std::uint64_t length, const void* host, const CopyOptions& options) {
  if (auto span = check_span(operation, name, size, offset, length); !span) return std::unexpected(span.error());
  // Built only for an error: a small copy must not pay for formatting.
  const auto object = [&] { return fmt::format("{} offset 0x{:x} length {}", name, offset, length); };
  if (!valid_max_access(options.max_access_bytes)) {
    return std::unexpected(make_error(Errc::invalid_argument, std::string(operation), object(),
                                      fmt::format("max_access_bytes {} is not a power of two from 1 to 64",
                                                  options.max_access_bytes)));
  }
  if (host == nullptr && length != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, std::string(operation), object(), "null host buffer"));
  }
  const CopyKernel kernel = choose_copy_kernel(direction, memory_type, allowed, options);
  if (kernel == CopyKernel::libc) {
    return std::unexpected(make_error(Errc::invalid_argument, std::string(operation), object(),
                                      "memcpy is not safe on a device window: it may store bytes twice and "
                                      "pick widths the device refuses",
                                      "use CopyKernel::automatic or a vector kernel"));
  }
  if (!copy_kernel_supported(kernel)) {
    return std::unexpected(make_error(Errc::not_supported, std::string(operation), object(),
                                      fmt::format("this CPU has no {} instructions", to_string(kernel)),
                                      "use CopyKernel::automatic (pciectl: --kernel auto)"));
  }
  const unsigned widths = cap_widths(window_widths(allowed) & kernel_widths(kernel), options.max_access_bytes);
  if (widths == 0) {
    return std::unexpected(make_error(Errc::width_not_allowed, std::string(operation), object(),
                                      fmt::format("no access size is allowed by the window ({}-bit), the {} "
                                                  "kernel and max_access_bytes {} together",
                                                  allowed.to_string(), to_string(kernel), options.max_access_bytes)));
  }
  // With the narrowest allowed size dividing both ends, the walk always finds an access
  // that fits; without it no pattern of allowed accesses covers the span exactly.
  const unsigned narrowest = widths & (~widths + 1);
  if (((base + offset) & (narrowest - 1)) != 0 || (length & (narrowest - 1)) != 0) {
    return std::unexpected(make_error(
        Errc::misaligned, std::string(operation), object(),
        fmt::format("this window accepts {}-bit accesses, so a copy must start and end on {}-byte boundaries",
                    widths_text(widths & kRegisterWidths), narrowest),
        "copy a span whose offset and length are multiples of the access size"));
  }
  return Prepared{kernel, widths};
}

// Region accesses for windows without a mapping (I/O ports, sparse VFIO regions): one
// checked Region::read/write per access, in the same pattern as the mapped kernels. The
// value is assembled little-endian from the bytes, as a device sees memory.
struct RegionWrites {
  static constexpr std::size_t kWidest = 8;
  Region* region = nullptr;
  Result<void> status;
  template <std::size_t N>
  void move(std::uintptr_t offset, std::byte* host) {
    if (!status) return;
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < N; ++i) value |= std::to_integer<std::uint64_t>(host[i]) << (8 * i);
    status = region->write(static_cast<Width>(N), offset, value);
  }
};

struct RegionReads {
  static constexpr std::size_t kWidest = 8;
  const Region* region = nullptr;
  Result<void> status;
  template <std::size_t N>
  void move(std::uintptr_t offset, std::byte* host) {
    if (!status) return;
    auto value = region->read(static_cast<Width>(N), offset);
    if (!value) {
      status = std::unexpected(value.error());
      return;
    }
    for (std::size_t i = 0; i < N; ++i) host[i] = static_cast<std::byte>(*value >> (8 * i));
  }
};

// A mapped region's window, for the kernels.
MmioView view_of(const Region& region, std::byte* base) {
  return MmioView(base, region.size(), region.allowed_widths(), region.name(), region.memory_type());
}

// A region with no mapping is copied register by register through Region::read/write
// (Ops: RegionWrites or RegionReads), with the same checks and in the same access pattern
// as the mapped kernels, 8 bytes at the widest.
template <class Ops, class RegionType>
Result<void> copy_unmapped(std::string_view operation, RegionType& region, CopyDirection direction,
                           std::uint64_t offset, std::byte* host, std::uint64_t length, const CopyOptions& options) {
  CopyOptions registers_only = options;
  registers_only.kernel = CopyKernel::registers;
  registers_only.max_access_bytes = std::min<std::size_t>(options.max_access_bytes, 8);
  auto prepared = prepare(operation, region.name(), region.size(), 0, region.allowed_widths(), region.memory_type(),
                          direction, offset, length, host, registers_only);
  if (!prepared) return std::unexpected(prepared.error());
  Ops ops{&region, {}};
  copy_detail::walk_span(ops, offset, host, length, prepared->widths);
  return ops.status;
}

}  // namespace

Result<void> copy_to_device(const MmioView& view, std::uint64_t offset, const void* source, std::uint64_t length,
                            const CopyOptions& options) {
  const auto base = reinterpret_cast<std::uintptr_t>(view.base());
  auto prepared = prepare("copy to device", view.name(), view.size(), base, view.allowed_widths(),
                          view.memory_type(), CopyDirection::to_device, offset, length, source, options);
  if (!prepared) return std::unexpected(prepared.error());
  if (length == 0) return {};
  // A window the removal guard revoked is no longer the device's: nothing is written.
  if (mapping_revoked(view.base())) [[unlikely]] return std::unexpected(removed_error("copy to device", view.name(), offset));
  const SpanJob job{base + offset, static_cast<std::byte*>(const_cast<void*>(source)), length, prepared->widths};
  run_job(functions_of(prepared->kernel).to_device, job, options);
  // Revoked while copying: some of the data went to the guard's private memory.
  if (mapping_revoked(view.base())) [[unlikely]] return std::unexpected(removed_error("copy to device", view.name(), offset));
  // Write-combined stores and MOVDIR64B are weakly ordered: fence once, so that whatever
  // the caller writes next (a doorbell) reaches the device after all of the data.
  if (view.memory_type() != MemoryType::uncached || prepared->kernel == CopyKernel::movdir64b) {
    barrier_before_doorbell();
  }
  return {};
}

Result<void> copy_from_device(void* destination, const MmioView& view, std::uint64_t offset, std::uint64_t length,
                              const CopyOptions& options) {
  const auto base = reinterpret_cast<std::uintptr_t>(view.base());
  auto prepared = prepare("copy from device", view.name(), view.size(), base, view.allowed_widths(),
                          view.memory_type(), CopyDirection::from_device, offset, length, destination, options);
  if (!prepared) return std::unexpected(prepared.error());
  if (length == 0) return {};
  const KernelFunctions& functions = functions_of(prepared->kernel);
  const bool streaming = view.memory_type() == MemoryType::write_combined;
  const SpanJob job{base + offset, static_cast<std::byte*>(destination), length, prepared->widths};
  if (streaming) {
    // Streaming loads are weakly ordered: our own earlier (write-combined) stores must be
    // visible to them, and later loads (a status register) must not pass them.
    full_barrier();
    run_job(functions.from_device_streaming, job, options);
    barrier_before_reading_dma_data();
  } else {
    run_job(functions.from_device, job, options);
  }
  // Revoked before or while copying: what was read is the guard's all ones, not the device's.
  if (mapping_revoked(view.base())) [[unlikely]] return std::unexpected(removed_error("copy from device", view.name(), offset));
  return {};
}

Result<void> copy_to_device(Region& region, std::uint64_t offset, const void* source, std::uint64_t length,
                            const CopyOptions& options) {
  if (!region.valid()) return std::unexpected(region.empty_error("copy to device"));
  if (!region.writable()) {
    return std::unexpected(make_error(Errc::permission_denied, "copy to device", region.name(),
                                      "the region was opened read-only", "open it writable"));
  }
  if (std::byte* base = region.mapped_base()) return copy_to_device(view_of(region, base), offset, source, length, options);
  return copy_unmapped<RegionWrites>("copy to device", region, CopyDirection::to_device, offset,
                                     static_cast<std::byte*>(const_cast<void*>(source)), length, options);
}

Result<void> copy_from_device(void* destination, const Region& region, std::uint64_t offset, std::uint64_t length,
                              const CopyOptions& options) {
  if (!region.valid()) return std::unexpected(region.empty_error("copy from device"));
  if (std::byte* base = region.mapped_base()) {
    return copy_from_device(destination, view_of(region, base), offset, length, options);
  }
  return copy_unmapped<RegionReads>("copy from device", region, CopyDirection::from_device, offset,
                                    static_cast<std::byte*>(destination), length, options);
}

}  // namespace pcie
