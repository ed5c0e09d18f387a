#include "tools/pciectl/bench_measure.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <utility>

#include "pcie/barriers.h"
#include "pcie/copy.h"
#include "tools/pciectl/bench_window.h"
#include "tools/pciectl/render.h"

namespace pciectl::bench {
namespace {

using Clock = std::chrono::steady_clock;

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

// What every row of a run shares.
struct Run {
  const Plan& plan;
  const BenchOptions& options;
  Progress& progress;
  const RemovalWatch& removal;
  std::vector<std::byte> host;  // the copy rows' other end
  pcie::CopyOptions copy_options;
  std::chrono::nanoseconds min_time;
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

// A pass of the copy path over [0, size) of the window, to or from run.host. The copy path
// checks span, widths and kernel before any access; those are the same on every pass, so
// one trial call is enough to report a refusal.
pcie::Result<std::function<void()>> copy_pass(Run& run, const pcie::MmioView& view, std::uint64_t size, bool write) {
  auto trial = write ? pcie::copy_to_device(view, 0, run.host.data(), size, run.copy_options)
                     : pcie::copy_from_device(run.host.data(), view, 0, size, run.copy_options);
  if (!trial) return std::unexpected(trial.error());
  return std::function<void()>([&run, &view, write, size] {
    (void)(write ? pcie::copy_to_device(view, 0, run.host.data(), size, run.copy_options)
                 : pcie::copy_from_device(run.host.data(), view, 0, size, run.copy_options));
  });
}

// The access kinds' names: "32-bit", ..., then "copy (<kernel>)" with the kernel the copy
// path picks for this direction and memory type.
std::vector<std::string> access_kinds(const Run& run, const pcie::MmioView& view, pcie::MemoryType type, bool write) {
  std::vector<std::string> kinds;
  for (unsigned bits : run.plan.access_bits) kinds.push_back(fmt::format("{}-bit", bits));
  if (run.plan.with_copy) {
    const auto direction = write ? pcie::CopyDirection::to_device : pcie::CopyDirection::from_device;
    kinds.push_back(fmt::format(
        "copy ({})",
        pcie::to_string(pcie::choose_copy_kernel(direction, type, view.allowed_widths(), run.copy_options))));
  }
  return kinds;
}

// The throughput rows of one direction on one mapping: each access kind at each size.
pcie::Result<void> measure_direction(Run& run, const pcie::MmioView& view, pcie::MemoryType type, bool write,
                                     std::vector<Measurement>& rows) {
  const std::vector<std::string> kinds = access_kinds(run, view, type, write);
  for (std::size_t kind = 0; kind < kinds.size(); ++kind) {
    for (std::uint64_t size : run.plan.sizes) {
      Measurement row{type, write, kinds[kind], size, {}};
      run.progress.step(
          fmt::format("{} {} {} {}", memory_name(type), write ? "write" : "read", row.access, human_size(size)));
      auto pass = kind < run.plan.access_bits.size()
                      ? pcie::Result<std::function<void()>>(width_pass(run.plan.access_bits[kind], view, size, write))
                      : copy_pass(run, view, size, write);
      if (!pass) return std::unexpected(pass.error());
      for (unsigned i = 0; i < run.options.warmup; ++i) (*pass)();
      for (unsigned i = 0; i < run.options.repetitions; ++i) {
        row.gigabytes_per_second.push_back(measure(size, run.min_time, *pass));
      }
      // A row measured across a removal measured a revoked mapping: not a result.
      if (auto present = run.removal.check("bench"); !present) return present;
      rows.push_back(std::move(row));
    }
  }
  return {};
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

// Latency of one 32-bit access at the window's start (a read is non-posted: it waits for
// the completion; a write is posted, so it is timed with a read-back behind it).
void measure_latency(const Run& run, const pcie::MmioView& view, pcie::MemoryType type,
                     std::vector<Latency>& latencies) {
  const unsigned samples = run.options.latency_samples;
  const double clock_ns = summarize(type, "", time_each(samples, [] {}), 0).median_ns;
  for (unsigned i = 0; i < 10; ++i) (void)view.read<std::uint32_t>(0);
  latencies.push_back(
      summarize(type, "32-bit read", time_each(samples, [&] { (void)view.read<std::uint32_t>(0); }), clock_ns));
  if (run.options.allow_write) {
    latencies.push_back(summarize(type, "posted 32-bit write + read-back",
                                  time_each(samples,
                                            [&] {
                                              view.write<std::uint32_t>(0, 0x5a5a5a5a);
                                              pcie::barrier_before_doorbell();
                                              (void)view.read<std::uint32_t>(0);
                                            }),
                                  clock_ns));
  }
}

// Every row of one memory type, on a mapping of its own that lives until they are done.
pcie::Result<void> measure_mapping(const pcie::VfioPaths& paths, Run& run, pcie::MemoryType requested,
                                   Results& results) {
  auto mapped = map_window(paths, run.plan, run.options, requested);
  if (!mapped) return std::unexpected(mapped.error());
  const pcie::MemoryType type = mapped->type;  // as granted, where verified
  results.reports.push_back(mapped->report);
  const pcie::MmioView view = mapped->view;
  const std::size_t directions = run.options.allow_write ? 2 : 1;
  for (std::size_t direction = 0; direction < directions; ++direction) {
    if (auto rows = measure_direction(run, view, type, direction == 1, results.throughput); !rows) return rows;
  }
  measure_latency(run, view, type, results.latencies);
  return run.removal.check("bench");
}

}  // namespace

double Measurement::median() const {
  std::vector<double> sorted = gigabytes_per_second;
  std::sort(sorted.begin(), sorted.end());
  return sorted.empty() ? 0 : sorted[sorted.size() / 2];
}

pcie::Result<Results> measure_all(const pcie::VfioPaths& paths, const Plan& plan, const BenchOptions& options,
                                  const RemovalWatch& removal) {
  const std::size_t directions = options.allow_write ? 2 : 1;
  const std::size_t kinds = plan.access_bits.size() + (plan.with_copy ? 1 : 0);
  const std::size_t rows = plan.mappings.size() * directions * kinds * plan.sizes.size();
  Progress progress(!options.no_progress && (options.progress || isatty(STDERR_FILENO)), rows);
  Run run{plan,
          options,
          progress,
          removal,
          std::vector<std::byte>(plan.length + 64),
          pcie::CopyOptions{.kernel = plan.kernel},
          std::chrono::nanoseconds(static_cast<std::int64_t>(options.min_time_ms * 1e6))};
  Results results;
  for (pcie::MemoryType requested : plan.mappings) {
    if (auto measured = measure_mapping(paths, run, requested, results); !measured) {
      progress.finish();
      return std::unexpected(measured.error());
    }
  }
  progress.finish();
  return results;
}

}  // namespace pciectl::bench
