#include "tools/pciectl/bench.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "pcie/barriers.h"
#include "pcie/copy.h"
#include "pcie/discovery.h"
#include "pcie/memory_type.h"
#include "pcie/sysfs_bar.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/render.h"

namespace pciectl {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kDefaultWindow = 4u << 20;

// One row: a mapping, a direction, an access kind and a size.
struct Measurement {
  pcie::MemoryType mapping = pcie::MemoryType::uncached;
  bool write = false;
  std::string access;  // "8-bit" .. "64-bit", or "copy (avx512)"
  std::uint64_t size = 0;
  std::vector<double> gigabytes_per_second;  // one per repetition
  double median() const {
    std::vector<double> sorted = gigabytes_per_second;
    std::sort(sorted.begin(), sorted.end());
    return sorted.empty() ? 0 : sorted[sorted.size() / 2];
  }
};

struct Latency {
  pcie::MemoryType mapping = pcie::MemoryType::uncached;
  std::string what;  // "32-bit read", "posted 32-bit write + read-back"
  double median_ns = 0;
  double p99_ns = 0;
};

// The ceiling for CPU writes on this link: at most 64 bytes of payload per TLP, so the
// link's data rate after line coding, times the 64-byte payload efficiency (0.657) that
// gives the README's 10.3 / 20.7 / 41.4 GB/s for Gen3 / Gen4 / Gen5 x16.
std::optional<double> write_ceiling_gbs(const pcie::DeviceInfo& device) {
  if (!device.link || device.link->current_width == 0 || device.link->current_speed_gts == 0) return std::nullopt;
  const double gts = device.link->current_speed_gts;
  const double coding = gts >= 8.0 ? 128.0 / 130.0 : 0.8;  // 8b/10b up to Gen2, 128b/130b after
  return gts * coding / 8.0 * device.link->current_width * 0.657;
}

std::string memory_name(pcie::MemoryType type) { return type == pcie::MemoryType::write_combined ? "wc" : "uc"; }

class Progress {
 public:
  Progress(bool enabled, std::size_t total) : enabled_(enabled), total_(total) {}
  void step(const std::string& what) {
    ++done_;
    if (enabled_) fmt::print(stderr, "\r\033[K[{}/{}] {}", done_, total_, what);
  }
  void finish() {
    if (enabled_) fmt::print(stderr, "\r\033[K");
  }

 private:
  bool enabled_;
  std::size_t total_;
  std::size_t done_ = 0;
};

// Runs `pass` (which moves `bytes`) until at least `min_time` has passed; returns GB/s.
template <class Pass>
double measure(std::uint64_t bytes, std::chrono::nanoseconds min_time, Pass&& pass) {
  std::uint64_t passes = 0;
  const auto start = Clock::now();
  Clock::time_point now;
  do {
    pass();
    ++passes;
    now = Clock::now();
  } while (now - start < min_time);
  const double seconds = std::chrono::duration<double>(now - start).count();
  return static_cast<double>(bytes) * static_cast<double>(passes) / seconds / 1e9;
}

template <pcie::MmioWord T>
void read_loop(const pcie::MmioView& view, std::uint64_t size) {
  T sum = 0;
  for (std::uint64_t offset = 0; offset + sizeof(T) <= size; offset += sizeof(T)) sum ^= view.read_relaxed<T>(offset);
  asm volatile("" : : "r"(sum));
}

template <pcie::MmioWord T>
void write_loop(const pcie::MmioView& view, std::uint64_t size) {
  for (std::uint64_t offset = 0; offset + sizeof(T) <= size; offset += sizeof(T)) {
    view.write_relaxed<T>(offset, static_cast<T>(offset * 0x9e3779b97f4a7c15ull));
  }
  pcie::barrier_before_doorbell();  // part of the cost on write-combined mappings
}

// Median and 99th percentile of per-access times, less the clock's own cost.
Latency summarize(pcie::MemoryType mapping, std::string what, std::vector<double> samples, double clock_ns) {
  for (double& sample : samples) sample = std::max(0.0, sample - clock_ns);
  std::sort(samples.begin(), samples.end());
  Latency latency{mapping, std::move(what)};
  if (!samples.empty()) {
    latency.median_ns = samples[samples.size() / 2];
    latency.p99_ns = samples[std::min(samples.size() - 1, samples.size() * 99 / 100)];
  }
  return latency;
}

template <class Access>
std::vector<double> time_each(unsigned samples, Access&& access) {
  std::vector<double> times;
  times.reserve(samples);
  for (unsigned i = 0; i < samples; ++i) {
    const auto start = Clock::now();
    access();
    times.push_back(std::chrono::duration<double, std::nano>(Clock::now() - start).count());
  }
  return times;
}

// A pass of `bits`-wide relaxed accesses over [0, size) of the window.
std::function<void()> width_pass(unsigned bits, const pcie::MmioView& view, std::uint64_t size, bool write) {
  switch (bits) {
    case 8: return write ? std::function<void()>([&view, size] { write_loop<std::uint8_t>(view, size); })
                         : [&view, size] { read_loop<std::uint8_t>(view, size); };
    case 16: return write ? std::function<void()>([&view, size] { write_loop<std::uint16_t>(view, size); })
                          : [&view, size] { read_loop<std::uint16_t>(view, size); };
    case 32: return write ? std::function<void()>([&view, size] { write_loop<std::uint32_t>(view, size); })
                          : [&view, size] { read_loop<std::uint32_t>(view, size); };
    default: return write ? std::function<void()>([&view, size] { write_loop<std::uint64_t>(view, size); })
                          : [&view, size] { read_loop<std::uint64_t>(view, size); };
  }
}

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

}  // namespace

// One mapped window of the BAR and what owns it: a sysfs BarMapping, or a VFIO region
// (which keeps its device and container open).
struct BenchWindow {
  std::unique_ptr<pcie::Region> owner;
  pcie::MmioView view;
  pcie::MemoryType type = pcie::MemoryType::uncached;
  pcie::MemoryTypeReport report;
};

int run_bench(const pcie::VfioPaths& vfio_paths, const std::string& pci_ids, const BenchOptions& options) {
  const pcie::SysfsPaths& paths = vfio_paths.sysfs;
  if (auto checked = check_measurement_options(options); !checked) return fail(checked.error());
  auto bdf = pcie::Bdf::parse(options.bdf);
  if (!bdf) return fail(bdf.error());
  auto bar_index = parse_bar(options.bar);
  if (!bar_index) return fail(bar_index.error());
  auto kernel = pcie::copy_kernel_from_string(options.kernel);
  if (!kernel) return fail(kernel.error());
  pcie::DiscoveryOptions discovery;
  discovery.paths = paths;
  discovery.pci_ids_path = pci_ids;
  auto device = pcie::describe(*bdf, discovery);
  if (!device) return fail(device.error());
  print_warnings(*device);
  const pcie::BarInfo* bar = device->find_bar(*bar_index);
  const std::string bar_name = fmt::format("{} BAR{}", bdf->to_string(), *bar_index);
  if (bar == nullptr) {
    return fail(pcie::make_error(pcie::Errc::not_found, "bench", bar_name, "the device has no such BAR",
                                 fmt::format("pciectl info {} lists its BARs", bdf->to_string())));
  }
  if (bar->space == pcie::BarInfo::Space::io) {
    return fail(pcie::make_error(pcie::Errc::not_supported, "bench", bar_name,
                                 "an I/O-port BAR: each access is a system call, there is no throughput to measure",
                                 "benchmark a memory BAR"));
  }
  auto offset = parse_size(options.offset, "offset");
  if (!offset) return fail(offset.error());
  if (auto inside = pcie::check_span("bench", bar_name, bar->size, *offset, 0); !inside) return fail(inside.error());
  std::uint64_t length = std::min(bar->size - *offset, kDefaultWindow);
  if (!options.length.empty()) {
    auto parsed = parse_size(options.length, "length");
    if (!parsed) return fail(parsed.error());
    length = *parsed;
  }
  // The window is exactly what is announced and touched: it must lie in the BAR and hold
  // the 32-bit access the latency step makes at its start.
  if (auto inside = pcie::check_span("bench", bar_name, bar->size, *offset, length); !inside) {
    return fail(inside.error());
  }
  if (length < 4) {
    return fail(pcie::make_error(pcie::Errc::invalid_argument, "bench", bar_name,
                                 fmt::format("--length must be at least 4 bytes (one 32-bit access), not {}", length)));
  }
  std::vector<std::uint64_t> sizes;
  for (const std::string& text : options.sizes) {
    auto size = parse_size(text, "size");
    if (!size) return fail(size.error());
    if (*size == 0 || *size > length) {
      return fail(pcie::make_error(pcie::Errc::out_of_range, "bench", bar_name,
                                   fmt::format("size {} does not fit the {}-byte window", *size, length),
                                   "use --length to widen the window, or smaller --sizes"));
    }
    sizes.push_back(*size);
  }
  if (sizes.empty()) sizes = default_sizes(length);
  std::vector<pcie::MemoryType> mappings;
  if (options.mapping == "uc" || options.mapping == "all") mappings.push_back(pcie::MemoryType::uncached);
  if ((options.mapping == "wc" || options.mapping == "all") && bar->prefetchable) {
    mappings.push_back(pcie::MemoryType::write_combined);
  }
  if (options.vfio && options.mapping == "wc") {
    return fail(pcie::make_error(pcie::Errc::not_supported, "bench", bar_name,
                                 "vfio-pci maps BARs uncached only", "use --mapping uc, or the sysfs path for wc"));
  }
  if (options.mapping == "wc" && !bar->prefetchable) {
    return fail(pcie::make_error(pcie::Errc::not_supported, "bench", bar_name,
                                 "the BAR is not prefetchable, so it cannot be mapped write-combined",
                                 "use --mapping uc"));
  }
  std::vector<unsigned> access_bits;
  bool with_copy = false;
  for (const std::string& width : options.widths) {
    if (width == "copy") {
      with_copy = true;
    } else if (width == "8" || width == "16" || width == "32" || width == "64") {
      access_bits.push_back(static_cast<unsigned>(std::stoul(width)));
    } else {
      return fail(pcie::make_error(pcie::Errc::invalid_argument, "bench", fmt::format("--widths {}", width),
                                   "expected 8, 16, 32, 64 or copy"));
    }
  }

  for (unsigned bits : access_bits) {
    for (std::uint64_t size : sizes) {
      if (size % (bits / 8) != 0) {
        return fail(pcie::make_error(pcie::Errc::invalid_argument, "bench", bar_name,
                                     fmt::format("size {} is not a whole number of {}-bit accesses", size, bits),
                                     "use sizes that are multiples of the widest --widths entry"));
      }
    }
  }

  // One memory type at a time: while an uncached mapping of the window exists, x86 PAT
  // makes a write-combined one uncached too (and the reverse), so holding both would
  // measure one type twice. Each is mapped (and its type checked against the kernel's PAT
  // table) once up front, so that a refusal costs nothing, then again for its rows only.
  const auto map_window = [&](pcie::MemoryType type) -> pcie::Result<BenchWindow> {
    if (options.vfio) {
      if (type != pcie::MemoryType::uncached) {
        return std::unexpected(pcie::make_error(pcie::Errc::not_supported, "bench", bar_name,
                                                "vfio-pci maps BARs uncached only"));
      }
      auto container = pcie::VfioContainer::open(vfio_paths);
      if (!container) return std::unexpected(container.error());
      auto vfio_device = container->open_device(*bdf, pcie::VfioDeviceOptions{.reset_on_open = false});
      if (!vfio_device) return std::unexpected(vfio_device.error());
      auto region = vfio_device->open_region(pcie::kVfioBar0Region + *bar_index,
                                             {.map = true, .writable = options.allow_write});
      if (!region) return std::unexpected(region.error());
      auto view = region->mmio_at(*offset, length);
      if (!view) {
        return std::unexpected(pcie::make_error(pcie::Errc::not_supported, "bench", bar_name,
                                                "vfio-pci does not map this window (a sparse BAR: its MSI-X table lies in it)",
                                                "choose --offset/--length around the MSI-X table"));
      }
      BenchWindow window{nullptr, *view, pcie::MemoryType::uncached,
                         {pcie::MemoryType::uncached, std::nullopt, "", "vfio-pci maps BARs uncached (not checked)"}};
      window.owner = std::make_unique<pcie::VfioRegion>(std::move(*region));
      return window;
    }
    auto mapped = pcie::BarMapping::map(paths, *bdf, *bar_index,
                                        {.memory_type = type,
                                         .offset = *offset,
                                         .length = length,
                                         .writable = options.allow_write,
                                         .enable_decoding = options.enable});
    if (!mapped) return std::unexpected(mapped.error());
    BenchWindow window{nullptr, mapped->mmio(), mapped->memory_type(), mapped->memory_type_report()};
    window.owner = std::make_unique<pcie::BarMapping>(std::move(*mapped));
    return window;
  };
  std::vector<std::string> notes;
  for (auto type = mappings.begin(); type != mappings.end();) {
    auto trial = map_window(*type);
    // With the default "all", a BAR the kernel offers no write-combined mapping of (PAT
    // off) is measured uncached only, and says so; asked for by name, it is an error.
    if (!trial && *type == pcie::MemoryType::write_combined && options.mapping == "all" &&
        trial.error().code == pcie::Errc::not_supported) {
      notes.push_back("write-combined: not measured: " + trial.error().reason);
      type = mappings.erase(type);
      continue;
    }
    if (!trial) return fail(trial.error());
    ++type;
  }
  for (const std::string& note : notes) fmt::print(stderr, "pciectl bench: {}\n", pcie::printable(note));

  const std::string window_text = fmt::format("{} [0x{:x}, 0x{:x}) ({})", bar_name, *offset, *offset + length,
                                              human_size(length));
  if (options.allow_write) {
    fmt::print(stderr, "pciectl bench: will overwrite {} through the {} mapping{}; its contents are not restored\n",
               window_text, mappings.size() == 2 ? "uncached and write-combined" : pcie::to_string(mappings[0]),
               mappings.size() == 2 ? "s" : "");
  } else if (!options.json) {
    fmt::print(stderr, "pciectl bench: reads only; pass --allow-write to benchmark writes too (they overwrite {})\n",
               window_text);
  }

  std::vector<std::byte> host(length + 64);
  const pcie::CopyOptions copy_options{.kernel = *kernel};
  const auto min_time = std::chrono::nanoseconds(static_cast<std::int64_t>(options.min_time_ms * 1e6));
  const std::size_t directions = options.allow_write ? 2 : 1;
  const std::size_t rows = mappings.size() * directions * (access_bits.size() + (with_copy ? 1 : 0)) * sizes.size();
  Progress progress(!options.no_progress && (options.progress || isatty(STDERR_FILENO)), rows);
  std::vector<Measurement> measurements;
  std::vector<Latency> latencies;
  std::vector<pcie::MemoryTypeReport> reports;

  for (pcie::MemoryType requested : mappings) {
    auto mapped = map_window(requested);
    if (!mapped) {
      progress.finish();
      return fail(mapped.error());
    }
    const pcie::MemoryType type = mapped->type;  // as granted, where verified
    reports.push_back(mapped->report);
    const pcie::MmioView view = mapped->view;
    for (std::size_t direction = 0; direction < directions; ++direction) {
      const bool write = direction == 1;
      std::vector<std::string> kinds;
      for (unsigned bits : access_bits) kinds.push_back(fmt::format("{}-bit", bits));
      if (with_copy) {
        const auto copy_direction = write ? pcie::CopyDirection::to_device : pcie::CopyDirection::from_device;
        kinds.push_back(fmt::format(
            "copy ({})",
            pcie::to_string(pcie::choose_copy_kernel(copy_direction, type, view.allowed_widths(), copy_options))));
      }
      for (std::size_t kind = 0; kind < kinds.size(); ++kind) {
        for (std::uint64_t size : sizes) {
          Measurement row{type, write, kinds[kind], size, {}};
          progress.step(fmt::format("{} {} {} {}", memory_name(type), write ? "write" : "read", row.access,
                                    human_size(size)));
          std::function<void()> pass;
          if (kind < access_bits.size()) {
            pass = width_pass(access_bits[kind], view, size, write);
          } else {
            // The copy path checks span, widths and kernel before any access; those are the
            // same on every pass, so one trial call is enough to report a refusal.
            auto trial = write ? pcie::copy_to_device(view, 0, host.data(), size, copy_options)
                               : pcie::copy_from_device(host.data(), view, 0, size, copy_options);
            if (!trial) {
              progress.finish();
              return fail(trial.error());
            }
            pass = [&, write, size] {
              (void)(write ? pcie::copy_to_device(view, 0, host.data(), size, copy_options)
                           : pcie::copy_from_device(host.data(), view, 0, size, copy_options));
            };
          }
          for (unsigned i = 0; i < options.warmup; ++i) pass();
          for (unsigned i = 0; i < options.repetitions; ++i) row.gigabytes_per_second.push_back(measure(size, min_time, pass));
          measurements.push_back(std::move(row));
        }
      }
    }
    // Latency of one 32-bit access at the window's start (a read is non-posted: it waits
    // for the completion; a write is posted, so it is timed with a read-back behind it).
    const double clock_ns = summarize(type, "", time_each(options.latency_samples, [] {}), 0).median_ns;
    for (unsigned i = 0; i < 10; ++i) (void)view.read<std::uint32_t>(0);
    latencies.push_back(summarize(type, "32-bit read",
                                  time_each(options.latency_samples, [&] { (void)view.read<std::uint32_t>(0); }),
                                  clock_ns));
    if (options.allow_write) {
      latencies.push_back(summarize(type, "posted 32-bit write + read-back",
                                    time_each(options.latency_samples,
                                              [&] {
                                                view.write<std::uint32_t>(0, 0x5a5a5a5a);
                                                pcie::barrier_before_doorbell();
                                                (void)view.read<std::uint32_t>(0);
                                              }),
                                    clock_ns));
    }
  }
  progress.finish();

  const std::optional<double> ceiling = write_ceiling_gbs(*device);
  if (options.json) {
    nlohmann::ordered_json out;
    out["device"] = bdf->to_string();
    out["bar"] = *bar_index;
    out["window"] = {{"offset", *offset}, {"length", length}};
    out["prefetchable"] = bar->prefetchable;
    if (device->link) {
      out["link"] = {{"speed_gts", device->link->current_speed_gts}, {"width", device->link->current_width}};
    }
    if (ceiling) out["write_ceiling_gbs"] = *ceiling;
    out["memory_types"] = nlohmann::ordered_json::array();
    for (const pcie::MemoryTypeReport& report : reports) {
      out["memory_types"].push_back({{"requested", pcie::to_string(report.requested)},
                                     {"verified", report.verified()},
                                     {"granted", report.verified() ? report.granted_name : ""},
                                     {"note", report.note}});
    }
    out["repetitions"] = options.repetitions;
    out["throughput"] = nlohmann::ordered_json::array();
    for (const Measurement& row : measurements) {
      out["throughput"].push_back({{"mapping", pcie::to_string(row.mapping)},
                                   {"direction", row.write ? "write" : "read"},
                                   {"access", row.access},
                                   {"bytes", row.size},
                                   {"median_gbs", row.median()},
                                   {"samples_gbs", row.gigabytes_per_second}});
    }
    out["latency"] = nlohmann::ordered_json::array();
    for (const Latency& latency : latencies) {
      out["latency"].push_back({{"mapping", pcie::to_string(latency.mapping)},
                                {"access", latency.what},
                                {"median_ns", latency.median_ns},
                                {"p99_ns", latency.p99_ns},
                                {"samples", options.latency_samples}});
    }
    fmt::print("{}\n", out.dump(2));
    return kSuccess;
  }

  fmt::print("{}\n{}, {}{} BAR\n", render_line(*device), window_text,
             bar->prefetchable ? "prefetchable" : "non-prefetchable", bar->is_64bit ? " 64-bit" : "");
  if (device->link && device->link->current_width != 0) {
    fmt::print("link: {} GT/s x{}", device->link->current_speed_gts, device->link->current_width);
    if (ceiling) fmt::print("; CPU writes (64-byte TLPs at most) cannot beat about {:.1f} GB/s here", *ceiling);
    fmt::print("\n");
  }
  for (const pcie::MemoryTypeReport& report : reports) {
    fmt::print("{} mapping: {}\n", pcie::to_string(report.requested),
               report.verified() ? "verified, the kernel granted " + report.granted_name : report.note);
  }
  fmt::print("median of {} repetitions of at least {} ms each, after {} warm-up pass(es)\n\n", options.repetitions,
             options.min_time_ms, options.warmup);
  fmt::print("{:<16} {:<6} {:<16} {:>10} {:>12} {:>12} {:>12}\n", "mapping", "dir", "access", "size", "GB/s",
             "min", "max");
  for (const Measurement& row : measurements) {
    const auto [low, high] = std::minmax_element(row.gigabytes_per_second.begin(), row.gigabytes_per_second.end());
    fmt::print("{:<16} {:<6} {:<16} {:>10} {:>12.4f} {:>12.4f} {:>12.4f}\n", pcie::to_string(row.mapping),
               row.write ? "write" : "read", row.access, human_size(row.size), row.median(), *low, *high);
  }
  fmt::print("\n{:<16} {:<34} {:>12} {:>12}   ({} samples, clock cost subtracted)\n", "mapping", "latency at +0",
             "median ns", "p99 ns", options.latency_samples);
  for (const Latency& latency : latencies) {
    fmt::print("{:<16} {:<34} {:>12.0f} {:>12.0f}\n", pcie::to_string(latency.mapping), latency.what,
               latency.median_ns, latency.p99_ns);
  }
  return kSuccess;
}

}  // namespace pciectl
