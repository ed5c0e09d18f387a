// The host copy plan: the CPU's facts, the choice of loop per size range, and its text.
#include "src/copy/host_plan.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace pcie::copy_detail {
namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;
}  // namespace

std::size_t glibc_rep_movsb_threshold(const CpuFacts& facts) {
  if (facts.fsrm) return 2112;
  if (facts.avx512) return 4096 * 64 / 16;
  if (facts.avx2) return 4096 * 32 / 16;
  return 2048;
}

namespace {

// L1d when the CPU does not say (every Zen core has at least 32 KiB).
constexpr std::size_t kDefaultL1d = 32 * kKiB;
constexpr std::size_t kMinStreamingFrom = 4 * kMiB;
constexpr std::size_t kMaxStreamingFrom = 16 * kMiB;

std::size_t cache_bytes(int name) {
  const long bytes = sysconf(name);
  return bytes > 0 ? static_cast<std::size_t>(bytes) : 0;
}

std::string size_text(std::size_t bytes) {
  if (bytes >= kMiB && bytes % kMiB == 0) return fmt::format("{} MiB", bytes / kMiB);
  if (bytes >= kKiB && bytes % kKiB == 0) return fmt::format("{} KiB", bytes / kKiB);
  return fmt::format("{} B", bytes);
}

const char* vendor_name(CpuFacts::Vendor vendor) {
  switch (vendor) {
    case CpuFacts::Vendor::intel: return "Intel";
    case CpuFacts::Vendor::amd: return "AMD";
    case CpuFacts::Vendor::hygon: return "Hygon";
    case CpuFacts::Vendor::other: break;
  }
  return "other vendor";
}

// Zen and its Hygon licensee: the CPUs whose rep movsb glibc itself calls slow (bug 30994).
bool is_zen(const CpuFacts& facts) {
  return (facts.vendor == CpuFacts::Vendor::amd || facts.vendor == CpuFacts::Vendor::hygon) && facts.family >= 0x17;
}

void describe(HostCopyPlan& plan, const CpuFacts& facts) {
  std::string text = fmt::format("{} family 0x{:x}: ", vendor_name(facts.vendor), facts.family);
  if (plan.loop == nullptr && plan.streaming == nullptr) {
    text += facts.avx2 ? "memcpy at every size (glibc's choices are this vendor's fast paths)"
                       : "memcpy at every size (no AVX2)";
    plan.description = std::move(text);
    return;
  }
  if (plan.loop != nullptr) {
    text += fmt::format("memcpy below {}, a {}-byte vector loop to {} (glibc's rep movsb is slow there), ",
                        size_text(plan.loop_from), plan.loop_vector_bytes, size_text(plan.loop_below));
    text += fmt::format("memcpy to {}", size_text(plan.streaming_from));
  } else {
    text += fmt::format("memcpy below {}", size_text(plan.streaming_from));
  }
  text += fmt::format(", {}-byte non-temporal stores from there", plan.streaming_vector_bytes);
  plan.description = std::move(text);
}

}  // namespace

CpuFacts this_cpu() {
  CpuFacts facts;
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) != 0) {
    char vendor[13] = {};
    std::memcpy(vendor, &ebx, 4);
    std::memcpy(vendor + 4, &edx, 4);
    std::memcpy(vendor + 8, &ecx, 4);
    if (std::strcmp(vendor, "GenuineIntel") == 0) facts.vendor = CpuFacts::Vendor::intel;
    if (std::strcmp(vendor, "AuthenticAMD") == 0) facts.vendor = CpuFacts::Vendor::amd;
    if (std::strcmp(vendor, "HygonGenuine") == 0) facts.vendor = CpuFacts::Vendor::hygon;
    const unsigned max_leaf = eax;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0) {
      const unsigned base = (eax >> 8) & 0xf;
      facts.family = base == 0xf ? base + ((eax >> 20) & 0xff) : base;
    }
    if (max_leaf >= 7 && __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) != 0) {
      facts.erms = (ebx & (1u << 9)) != 0;
      facts.fsrm = (edx & (1u << 4)) != 0;
    }
  }
  // libgcc's check includes XGETBV: a "yes" means the OS saves the state, so no fault.
  __builtin_cpu_init();
  facts.avx2 = __builtin_cpu_supports("avx2");
  facts.avx512 = __builtin_cpu_supports("avx512f");
#endif
  facts.l1d_bytes = cache_bytes(_SC_LEVEL1_DCACHE_SIZE);
  facts.l3_bytes = cache_bytes(_SC_LEVEL3_CACHE_SIZE);
  return facts;
}

HostCopyPlan plan_host_copy(const CpuFacts& facts) {
  HostCopyPlan plan;
#if defined(__x86_64__)
  // Only Zen was measured to lose with memcpy (bench/copy_bench); elsewhere glibc's own
  // per-vendor tuning (Intel's fast rep movsb, its non-temporal threshold) stands.
  if (facts.avx2 && is_zen(facts)) {
    // glibc takes rep movsb only where the CPU has ERMS. Below its threshold glibc's
    // overlapping vector moves are as fast as anything (copy_bench), and from L1d/2 on its
    // rep movsb is: the loop takes what lies between, where anything does (a CPU without
    // FSRM and with AVX-512 starts rep movsb at 16 KiB, where an L1d of 32 KiB leaves none).
    const std::size_t rep_movsb_from = glibc_rep_movsb_threshold(facts);
    const std::size_t half_l1d = (facts.l1d_bytes != 0 ? facts.l1d_bytes : kDefaultL1d) / 2;
    if (facts.erms && rep_movsb_from < half_l1d) {
      const HostCopyLoops& loops = facts.avx512 ? kAvx512HostLoops : kAvx2HostLoops;
      plan.loop = loops.cached;
      plan.loop_vector_bytes = loops.vector_bytes;
      plan.loop_from = rep_movsb_from;
      plan.loop_below = half_l1d;
    }
    // 32-byte streaming stores: 64-byte ones were no faster on Zen 5 and slower at 1 GiB.
    plan.streaming = kAvx2HostLoops.streaming;
    plan.streaming_vector_bytes = kAvx2HostLoops.vector_bytes;
    const std::size_t quarter_l3 = facts.l3_bytes != 0 ? facts.l3_bytes / 4 : kMaxStreamingFrom;
    plan.streaming_from = std::clamp(quarter_l3, kMinStreamingFrom, kMaxStreamingFrom);
  }
#endif
  describe(plan, facts);
  return plan;
}

void copy_by_plan(const HostCopyPlan& plan, std::byte* to, const std::byte* from, std::size_t length) noexcept {
  if (length >= plan.streaming_from) {
    plan.streaming(to, from, length);
  } else if (length >= plan.loop_from && length < plan.loop_below) {
    plan.loop(to, from, length);
  } else {
    std::memcpy(to, from, length);
  }
}

const HostCopyPlan& host_copy_plan() {
  static const HostCopyPlan plan = plan_host_copy(this_cpu());
  return plan;
}

}  // namespace pcie::copy_detail
