#include "pcie/copy.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "pcie/barriers.h"
#include "src/copy/kernels.h"
#include "src/copy/span_walk.h"

namespace pcie {
namespace {

using copy_detail::KernelFunctions;
using copy_detail::SpanFunction;
using copy_detail::SpanJob;

constexpr std::array kAllKernels = {CopyKernel::automatic, CopyKernel::registers, CopyKernel::sse2,
                                    CopyKernel::sse41,     CopyKernel::avx2,      CopyKernel::avx512,
                                    CopyKernel::movdir64b, CopyKernel::libc};

// Access sizes a kernel can make (span_walk.h's mask: bit k = 2^k bytes).
constexpr unsigned kRegisterWidths = 1 | 2 | 4 | 8;

using SupportedKernels = std::array<bool, kAllKernels.size()>;

unsigned kernel_widths(CopyKernel kernel);

// The best kernel among `candidates` that this CPU has and whose widest access fits `cap`.
CopyKernel best_of(std::initializer_list<CopyKernel> candidates, std::size_t cap, const SupportedKernels& supported) {
  for (CopyKernel kernel : candidates) {
    const unsigned widths = kernel_widths(kernel);
    if (supported[static_cast<std::size_t>(kernel)] && widths != 0 && std::bit_floor(widths) <= cap) return kernel;
  }
  return CopyKernel::registers;
}

// The automatic choice for a window that allows vector accesses, with accesses up to `cap`.
CopyKernel choose_automatic(CopyDirection direction, MemoryType memory_type, std::size_t cap,
                            const SupportedKernels& supported) {
  if (direction == CopyDirection::host_to_host) return CopyKernel::libc;
  if (cap < 16) return CopyKernel::registers;
  if (direction == CopyDirection::to_device) {
    // On an uncached window each ordinary store is its own transaction; MOVDIR64B makes
    // each 64 bytes one posted write. On a write-combined one a full line of 64-byte
    // stores already leaves as one burst.
    if (memory_type == MemoryType::uncached) {
      return best_of({CopyKernel::movdir64b, CopyKernel::avx512, CopyKernel::avx2, CopyKernel::sse2}, cap, supported);
    }
    return best_of({CopyKernel::avx512, CopyKernel::avx2, CopyKernel::sse2}, cap, supported);
  }
  if (memory_type == MemoryType::write_combined) {
    return best_of({CopyKernel::avx512, CopyKernel::avx2, CopyKernel::sse41, CopyKernel::sse2}, cap, supported);
  }
  return best_of({CopyKernel::avx512, CopyKernel::avx2, CopyKernel::sse2}, cap, supported);
}

struct KernelTable {
  std::array<KernelFunctions, kAllKernels.size()> functions{};
  SupportedKernels supported{};
  // The automatic choice for [direction][memory type] at the full 64-byte cap on a window
  // that allows vector accesses, worked out once (choose_copy_kernel runs per copy).
  std::array<std::array<CopyKernel, 3>, 3> automatic{};
};

const KernelTable& kernel_table() {
  static const KernelTable table = [] {
    KernelTable built;
    // The descriptors are constant data (kernels.h): reading one runs no code of its kernel.
    auto set = [&built](CopyKernel kernel, bool supported, const KernelFunctions& functions) {
      built.supported[static_cast<std::size_t>(kernel)] = supported;
      if (supported) built.functions[static_cast<std::size_t>(kernel)] = functions;
    };
    set(CopyKernel::registers, true, copy_detail::kRegistersKernel);
#if defined(__x86_64__)
    // libgcc's __builtin_cpu_supports checks that the OS saves AVX/AVX-512 state (XGETBV)
    // as well as CPUID, so a "yes" means the instructions will not fault.
    __builtin_cpu_init();
    set(CopyKernel::sse2, true, copy_detail::kSse2Kernel);
    set(CopyKernel::sse41, __builtin_cpu_supports("sse4.1"), copy_detail::kSse41Kernel);
    set(CopyKernel::avx2, __builtin_cpu_supports("avx2"), copy_detail::kAvx2Kernel);
    set(CopyKernel::avx512, __builtin_cpu_supports("avx512f"), copy_detail::kAvx512Kernel);
    set(CopyKernel::movdir64b,
        __builtin_cpu_supports("movdir64b") && __builtin_cpu_supports("sse4.1"), copy_detail::kMovdir64bKernel);
#endif
    built.supported[static_cast<std::size_t>(CopyKernel::libc)] = true;
    for (auto direction : {CopyDirection::to_device, CopyDirection::from_device, CopyDirection::host_to_host}) {
      for (auto type : {MemoryType::uncached, MemoryType::write_combined, MemoryType::write_back}) {
        built.automatic[static_cast<std::size_t>(direction)][static_cast<std::size_t>(type)] =
            choose_automatic(direction, type, 64, built.supported);
      }
    }
    return built;
  }();
  return table;
}

const KernelFunctions& functions_of(CopyKernel kernel) {
  return kernel_table().functions[static_cast<std::size_t>(kernel)];
}

unsigned kernel_widths(CopyKernel kernel) {
  switch (kernel) {
    case CopyKernel::registers: return kRegisterWidths;
    case CopyKernel::sse2:
    case CopyKernel::sse41: return kRegisterWidths | 16;
    case CopyKernel::avx2: return kRegisterWidths | 16 | 32;
    case CopyKernel::avx512: return kRegisterWidths | 16 | 32 | 64;
    case CopyKernel::movdir64b: return kRegisterWidths | 16 | 64;
    case CopyKernel::automatic:
    case CopyKernel::libc: break;
  }
  return 0;
}

// The access sizes a window allows: its register widths, plus 16/32/64-byte vector
// accesses where it allows 64-bit ones (a window that takes 64-bit accesses is memory,
// not a register file; cap with max_access_bytes where it is not).
unsigned window_widths(WidthSet allowed) {
  const unsigned registers = allowed.byte_mask();  // the same encoding: bit k = 2^k bytes
  return (registers & 8) != 0 ? registers | 16 | 32 | 64 : registers;
}

// A power of two from 1 to 64 (written out: has_single_bit is a libgcc call without POPCNT).
bool valid_max_access(std::size_t bytes) { return bytes >= 1 && bytes <= 64 && (bytes & (bytes - 1)) == 0; }

unsigned cap_widths(unsigned mask, std::size_t max_access_bytes) {
  return mask & static_cast<unsigned>(2 * max_access_bytes - 1);
}

std::string widths_text(unsigned mask) {
  std::string text;
  for (unsigned bytes = 1; bytes <= 64; bytes <<= 1) {
    if ((mask & bytes) == 0) continue;
    if (!text.empty()) text += '/';
    text += std::to_string(bytes * 8);
  }
  return text.empty() ? "none" : text;
}

// Splits [0, length) of a span starting at `address` into `parts` pieces whose inner
// boundaries are 4 KiB-aligned addresses, so every piece walks exactly as the whole span
// would have (all access sizes divide 4 KiB): no access is split, none repeated.
std::pair<std::uint64_t, std::uint64_t> piece(std::uintptr_t address, std::uint64_t length, unsigned part,
                                              unsigned parts) {
  constexpr std::uint64_t kBoundary = 4096;
  auto boundary = [&](unsigned index) -> std::uint64_t {
    if (index == 0) return 0;
    if (index == parts) return length;
    const std::uint64_t nominal = length / parts * index;
    const std::uint64_t aligned = ((address + nominal + kBoundary - 1) & ~(kBoundary - 1)) - address;
    return std::min(aligned, length);
  };
  return {boundary(part), boundary(part + 1)};
}

bool use_workers(const CopyOptions& options, std::uint64_t length) {
  return options.workers != nullptr && options.workers->helpers() != 0 && length >= options.parallel_threshold;
}

void run_job(SpanFunction function, const SpanJob& job, const CopyOptions& options) {
  if (!use_workers(options, job.length)) {
    function(job);
    return;
  }
  options.workers->run([&](unsigned part, unsigned parts) {
    const auto [begin, end] = piece(job.device, job.length, part, parts);
    if (begin >= end) return;
    SpanJob slice = job;
    slice.device += begin;
    slice.host += begin;
    slice.length = end - begin;
    function(slice);
    // Each thread's weakly ordered stores must be visible before it reports done; the
    // caller's own fence covers only its own stores.
    barrier_before_doorbell();
  });
}

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

std::string_view to_string(CopyKernel kernel) {
  switch (kernel) {
    case CopyKernel::automatic: return "auto";
    case CopyKernel::registers: return "registers";
    case CopyKernel::sse2: return "sse2";
    case CopyKernel::sse41: return "sse4.1";
    case CopyKernel::avx2: return "avx2";
    case CopyKernel::avx512: return "avx512";
    case CopyKernel::movdir64b: return "movdir64b";
    case CopyKernel::libc: return "libc";
  }
  return "unknown";
}

Result<CopyKernel> copy_kernel_from_string(std::string_view name) {
  if (name == "automatic") return CopyKernel::automatic;
  for (CopyKernel kernel : kAllKernels) {
    if (to_string(kernel) == name) return kernel;
  }
  return std::unexpected(make_error(Errc::invalid_argument, "parse copy kernel", fmt::format("'{}'", name),
                                    "unknown kernel",
                                    "one of auto, registers, sse2, sse4.1, avx2, avx512, movdir64b, libc"));
}

bool copy_kernel_supported(CopyKernel kernel) {
  if (kernel == CopyKernel::automatic) return true;
  return kernel_table().supported[static_cast<std::size_t>(kernel)];
}

std::size_t copy_kernel_access_bytes(CopyKernel kernel) {
  const unsigned widths = kernel_widths(kernel);
  return widths == 0 ? 0 : std::bit_floor(widths);
}

CopyKernel choose_copy_kernel(CopyDirection direction, MemoryType memory_type, WidthSet allowed,
                              const CopyOptions& options) {
  if (options.kernel != CopyKernel::automatic) return options.kernel;
  if (direction == CopyDirection::host_to_host) return CopyKernel::libc;
  if (!allowed.allows(Width::bits64)) return CopyKernel::registers;
  const KernelTable& table = kernel_table();
  if (options.max_access_bytes == 64) {
    return table.automatic[static_cast<std::size_t>(direction)][static_cast<std::size_t>(memory_type)];
  }
  const std::size_t cap = valid_max_access(options.max_access_bytes) ? options.max_access_bytes : 8;
  return choose_automatic(direction, memory_type, cap, table.supported);
}

Result<void> copy_to_device(const MmioView& view, std::uint64_t offset, const void* source, std::uint64_t length,
                            const CopyOptions& options) {
  const auto base = reinterpret_cast<std::uintptr_t>(view.base());
  auto prepared = prepare("copy to device", view.name(), view.size(), base, view.allowed_widths(),
                          view.memory_type(), CopyDirection::to_device, offset, length, source, options);
  if (!prepared) return std::unexpected(prepared.error());
  if (length == 0) return {};
  const SpanJob job{base + offset, static_cast<std::byte*>(const_cast<void*>(source)), length, prepared->widths};
  run_job(functions_of(prepared->kernel).to_device, job, options);
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
  return {};
}

Result<void> copy_to_device(Region& region, std::uint64_t offset, const void* source, std::uint64_t length,
                            const CopyOptions& options) {
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
  if (std::byte* base = region.mapped_base()) {
    return copy_from_device(destination, view_of(region, base), offset, length, options);
  }
  return copy_unmapped<RegionReads>("copy from device", region, CopyDirection::from_device, offset,
                                    static_cast<std::byte*>(destination), length, options);
}

namespace detail {

Error overlapping_copy_error(const void* destination, const void* source, std::size_t length) {
  return make_error(Errc::invalid_argument, "copy",
                    fmt::format("{} bytes from {} to {}", length, source, destination), "the ranges overlap",
                    "use memmove for overlapping ranges");
}

Result<void> copy_host_slow(void* destination, const void* source, std::size_t length, const CopyOptions& options) {
  const std::string object = fmt::format("{} bytes from {} to {}", length, source, destination);
  if (!valid_max_access(options.max_access_bytes)) {
    return std::unexpected(make_error(Errc::invalid_argument, "copy", object,
                                      "max_access_bytes is not a power of two from 1 to 64"));
  }
  if (length == 0) return {};
  if (destination == nullptr || source == nullptr) {
    return std::unexpected(make_error(Errc::invalid_argument, "copy", object, "null buffer"));
  }
  const CopyKernel kernel = options.kernel == CopyKernel::automatic ? CopyKernel::libc : options.kernel;
  if (!copy_kernel_supported(kernel)) {
    return std::unexpected(make_error(Errc::not_supported, "copy", object,
                                      fmt::format("this CPU has no {} instructions", to_string(kernel)),
                                      "use CopyKernel::automatic"));
  }
  const auto to = reinterpret_cast<std::uintptr_t>(destination);
  auto* from = static_cast<std::byte*>(const_cast<void*>(source));
  if (kernel == CopyKernel::libc) {
    const SpanJob job{to, from, length, 0};
    run_job([](const SpanJob& part) { std::memcpy(reinterpret_cast<void*>(part.device), part.host, part.length); },
            job, options);
    return {};
  }
  const SpanJob job{to, from, length, cap_widths(kernel_widths(kernel), options.max_access_bytes)};
  run_job(functions_of(kernel).host_copy, job, options);
  barrier_before_doorbell();  // non-temporal stores are weakly ordered
  return {};
}

}  // namespace detail

// ---- CopyWorkers ----

struct CopyWorkers::Shared {
  std::mutex turn;  // one copy at a time uses the workers
  std::mutex mutex;
  std::condition_variable wake;
  std::condition_variable finished;
  const std::function<void(unsigned, unsigned)>* job = nullptr;
  unsigned parts = 0;  // of the current job; set under `mutex` with it
  std::uint64_t generation = 0;
  unsigned running = 0;
  bool stopping = false;
  std::vector<std::thread> threads;

  void helper_loop(unsigned part) {
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(unsigned, unsigned)>* current = nullptr;
      unsigned current_parts = 0;
      {
        std::unique_lock lock(mutex);
        wake.wait(lock, [&] { return stopping || generation != seen; });
        if (stopping) return;
        seen = generation;
        current = job;
        current_parts = parts;
      }
      (*current)(part, current_parts);
      std::lock_guard lock(mutex);
      if (--running == 0) finished.notify_all();
    }
  }

  void stop() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    wake.notify_all();
    for (std::thread& thread : threads) {
      if (thread.joinable()) thread.join();
    }
  }
};

Result<CopyWorkers> CopyWorkers::start(unsigned helpers) {
  auto shared = std::make_unique<Shared>();
  try {
    shared->threads.reserve(helpers);
    for (unsigned part = 1; part <= helpers; ++part) {
      shared->threads.emplace_back([raw = shared.get(), part] { raw->helper_loop(part); });
    }
  } catch (const std::system_error& failure) {
    shared->stop();
    return std::unexpected(make_errno_error(failure.code().value(), "start copy workers",
                                            fmt::format("{} threads", helpers),
                                            "use fewer helper threads"));
  }
  return CopyWorkers(std::move(shared));
}

CopyWorkers::CopyWorkers(std::unique_ptr<Shared> shared) : shared_(std::move(shared)) {}
CopyWorkers::CopyWorkers(CopyWorkers&&) noexcept = default;
CopyWorkers& CopyWorkers::operator=(CopyWorkers&& other) noexcept {
  if (this != &other) {
    if (shared_) shared_->stop();
    shared_ = std::move(other.shared_);
  }
  return *this;
}
CopyWorkers::~CopyWorkers() {
  if (shared_) shared_->stop();
}

unsigned CopyWorkers::helpers() const { return shared_ ? static_cast<unsigned>(shared_->threads.size()) : 0; }

void CopyWorkers::run(const std::function<void(unsigned, unsigned)>& part) const {
  const unsigned parts = helpers() + 1;
  if (parts == 1) {
    part(0, 1);
    return;
  }
  std::lock_guard turn(shared_->turn);
  {
    std::lock_guard lock(shared_->mutex);
    shared_->job = &part;
    shared_->parts = parts;
    shared_->running = parts - 1;
    ++shared_->generation;
  }
  shared_->wake.notify_all();
  part(0, parts);
  std::unique_lock lock(shared_->mutex);
  shared_->finished.wait(lock, [&] { return shared_->running == 0; });
}

}  // namespace pcie
