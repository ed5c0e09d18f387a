// Kernel choice: the CPU check (once, reading only constant descriptors), the automatic
// choice, and the names of kernels.
#include "src/copy/kernel_choice.h"

#include <fmt/format.h>

#include <array>
#include <bit>
#include <initializer_list>

namespace pcie {
namespace copy_detail {
namespace {

constexpr std::array kAllKernels = {CopyKernel::automatic, CopyKernel::registers, CopyKernel::sse2,
                                    CopyKernel::sse41,     CopyKernel::avx2,      CopyKernel::avx512,
                                    CopyKernel::movdir64b, CopyKernel::libc};

using SupportedKernels = std::array<bool, kAllKernels.size()>;

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

}  // namespace

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

}  // namespace copy_detail

using copy_detail::cap_widths;
using copy_detail::choose_automatic;
using copy_detail::kAllKernels;
using copy_detail::kernel_table;
using copy_detail::KernelTable;
using copy_detail::kernel_widths;
using copy_detail::valid_max_access;

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
  if (direction == CopyDirection::host_to_host) return CopyKernel::automatic;  // per size: host_plan.h
  if (!allowed.allows(Width::bits64)) return CopyKernel::registers;
  const KernelTable& table = kernel_table();
  if (options.max_access_bytes == 64) {
    return table.automatic[static_cast<std::size_t>(direction)][static_cast<std::size_t>(memory_type)];
  }
  const std::size_t cap = valid_max_access(options.max_access_bytes) ? options.max_access_bytes : 8;
  return choose_automatic(direction, memory_type, cap, table.supported);
}

}  // namespace pcie
