#include "tools/pciectl/bench_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "tools/pciectl/parse.h"
#include "tools/pciectl/render.h"

namespace pciectl::bench {
namespace {

constexpr std::uint64_t kDefaultWindow = 4u << 20;

// The measurement options' bounds: each outside them is a usage error before anything is
// mapped (a zero repetition count has no median; NaN or a huge minimum time is undefined
// behaviour in the conversion to nanoseconds; billions of samples exhaust memory).
pcie::Result<void> check_measurement_options(const BenchOptions& options) {
  const auto usage = [](std::string reason) {
    return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "bench", "", std::move(reason)));
  };
  if (options.repetitions < 1 || options.repetitions > 10000) {
    return usage(fmt::format("--repetitions must be 1 to 10000, not {}", options.repetitions));
  }
  if (options.warmup > 10000) return usage(fmt::format("--warmup must be 0 to 10000, not {}", options.warmup));
  if (options.latency_samples < 1 || options.latency_samples > 10'000'000) {
    return usage(fmt::format("--latency-samples must be 1 to 10000000, not {}", options.latency_samples));
  }
  // Written so that NaN fails too: every comparison with NaN is false.
  if (!(options.min_time_ms > 0 && options.min_time_ms <= 60'000)) {
    return usage(fmt::format("--min-time-ms must be more than 0 and at most 60000, not {}", options.min_time_ms));
  }
  return {};
}

// The measurement bounds, then the device address, BAR and copy kernel as written.
pcie::Result<void> parse_arguments(const BenchOptions& options, Plan& plan) {
  if (auto checked = check_measurement_options(options); !checked) return checked;
  auto bdf = pcie::Bdf::parse(options.bdf);
  if (!bdf) return std::unexpected(bdf.error());
  plan.bdf = *bdf;
  auto bar_index = parse_bar(options.bar);
  if (!bar_index) return std::unexpected(bar_index.error());
  plan.bar_index = *bar_index;
  auto kernel = pcie::copy_kernel_from_string(options.kernel);
  if (!kernel) return std::unexpected(kernel.error());
  plan.kernel = *kernel;
  return {};
}

// The device and its BAR, which must exist and be a memory BAR.
pcie::Result<void> find_bar(const pcie::SysfsPaths& paths, const std::string& pci_ids, Plan& plan) {
  pcie::DiscoveryOptions discovery;
  discovery.paths = paths;
  discovery.pci_ids_path = pci_ids;
  auto device = pcie::describe(plan.bdf, discovery);
  if (!device) return std::unexpected(device.error());
  print_warnings(*device);
  plan.device = std::move(*device);
  const pcie::BarInfo* bar = plan.device.find_bar(plan.bar_index);
  plan.bar_name = fmt::format("{} BAR{}", plan.bdf.to_string(), plan.bar_index);
  if (bar == nullptr) {
    return std::unexpected(pcie::make_error(pcie::Errc::not_found, "bench", plan.bar_name,
                                            "the device has no such BAR",
                                            fmt::format("pciectl info {} lists its BARs", plan.bdf.to_string())));
  }
  if (bar->space == pcie::BarInfo::Space::io) {
    return std::unexpected(pcie::make_error(
        pcie::Errc::not_supported, "bench", plan.bar_name,
        "an I/O-port BAR: each access is a system call, there is no throughput to measure", "benchmark a memory BAR"));
  }
  plan.bar = *bar;
  return {};
}

// --offset and --length: the window is exactly what is announced and touched, so it must
// lie in the BAR and hold the 32-bit access the latency step makes at its start.
pcie::Result<void> plan_window(const BenchOptions& options, Plan& plan) {
  auto offset = parse_size(options.offset, "offset");
  if (!offset) return std::unexpected(offset.error());
  if (auto inside = pcie::check_span("bench", plan.bar_name, plan.bar.size, *offset, 0); !inside) return inside;
  plan.offset = *offset;
  plan.length = std::min(plan.bar.size - *offset, kDefaultWindow);
  if (!options.length.empty()) {
    auto parsed = parse_size(options.length, "length");
    if (!parsed) return std::unexpected(parsed.error());
    plan.length = *parsed;
  }
  if (auto inside = pcie::check_span("bench", plan.bar_name, plan.bar.size, plan.offset, plan.length); !inside) {
    return inside;
  }
  if (plan.length < 4) {
    return std::unexpected(
        pcie::make_error(pcie::Errc::invalid_argument, "bench", plan.bar_name,
                         fmt::format("--length must be at least 4 bytes (one 32-bit access), not {}", plan.length)));
  }
  plan.window_text = fmt::format("{} [0x{:x}, 0x{:x}) ({})", plan.bar_name, plan.offset, plan.offset + plan.length,
                                 human_size(plan.length));
  return {};
}

// The default sizes: 64 bytes, then each 4 times the last, up to the window (the window
// itself when it is smaller than 64 bytes). Never overflows, however large the window.
std::vector<std::uint64_t> default_sizes(std::uint64_t length) {
  if (length < 64) return {length};
  std::vector<std::uint64_t> sizes;
  for (std::uint64_t size = 64;; size *= 4) {
    sizes.push_back(size);
    if (size > length / 4) break;
  }
  return sizes;
}

// --sizes, each of which must fit the window; the default sweep without it.
pcie::Result<void> plan_sizes(const BenchOptions& options, Plan& plan) {
  for (const std::string& text : options.sizes) {
    auto size = parse_size(text, "size");
    if (!size) return std::unexpected(size.error());
    if (*size == 0 || *size > plan.length) {
      return std::unexpected(pcie::make_error(pcie::Errc::out_of_range, "bench", plan.bar_name,
                                              fmt::format("size {} does not fit the {}-byte window", *size, plan.length),
                                              "use --length to widen the window, or smaller --sizes"));
    }
    plan.sizes.push_back(*size);
  }
  if (plan.sizes.empty()) plan.sizes = default_sizes(plan.length);
  return {};
}

// --mapping: write-combined only on a prefetchable BAR, and never through vfio-pci.
pcie::Result<void> plan_mappings(const BenchOptions& options, Plan& plan) {
  if (options.mapping == "uc" || options.mapping == "all") plan.mappings.push_back(pcie::MemoryType::uncached);
  if ((options.mapping == "wc" || options.mapping == "all") && plan.bar.prefetchable) {
    plan.mappings.push_back(pcie::MemoryType::write_combined);
  }
  if (options.vfio && options.mapping == "wc") {
    return std::unexpected(pcie::make_error(pcie::Errc::not_supported, "bench", plan.bar_name,
                                            "vfio-pci maps BARs uncached only",
                                            "use --mapping uc, or the sysfs path for wc"));
  }
  if (options.mapping == "wc" && !plan.bar.prefetchable) {
    return std::unexpected(pcie::make_error(pcie::Errc::not_supported, "bench", plan.bar_name,
                                            "the BAR is not prefetchable, so it cannot be mapped write-combined",
                                            "use --mapping uc"));
  }
  return {};
}

// --widths: 8, 16, 32, 64 or copy; every size a whole number of each width's accesses.
pcie::Result<void> plan_widths(const BenchOptions& options, Plan& plan) {
  for (const std::string& width : options.widths) {
    if (width == "copy") {
      plan.with_copy = true;
    } else if (width == "8" || width == "16" || width == "32" || width == "64") {
      plan.access_bits.push_back(static_cast<unsigned>(std::stoul(width)));
    } else {
      return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "bench",
                                              fmt::format("--widths {}", width), "expected 8, 16, 32, 64 or copy"));
    }
  }
  for (unsigned bits : plan.access_bits) {
    for (std::uint64_t size : plan.sizes) {
      if (size % (bits / 8) != 0) {
        return std::unexpected(pcie::make_error(
            pcie::Errc::invalid_argument, "bench", plan.bar_name,
            fmt::format("size {} is not a whole number of {}-bit accesses", size, bits),
            "use sizes that are multiples of the widest --widths entry"));
      }
    }
  }
  return {};
}

}  // namespace

pcie::Result<Plan> make_plan(const pcie::SysfsPaths& paths, const std::string& pci_ids,
                             const BenchOptions& options) {
  Plan plan;
  pcie::Result<void> step = parse_arguments(options, plan);
  if (step) step = find_bar(paths, pci_ids, plan);
  if (step) step = plan_window(options, plan);
  if (step) step = plan_sizes(options, plan);
  if (step) step = plan_mappings(options, plan);
  if (step) step = plan_widths(options, plan);
  if (!step) return std::unexpected(step.error());
  return plan;
}

}  // namespace pciectl::bench
