#include "tools/pciectl/bench_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "tools/pciectl/parse.h"
#include "tools/pciectl/render.h"

namespace pciectl::bench {
namespace {

// The ceiling for CPU writes on this link: at most 64 bytes of payload per TLP, so the
// link's data rate after line coding, times the 64-byte payload efficiency (0.657) that
// gives the README's 10.3 / 20.7 / 41.4 GB/s for Gen3 / Gen4 / Gen5 x16.
std::optional<double> write_ceiling_gbs(const pcie::DeviceInfo& device) {
  if (!device.link || device.link->current_width == 0 || device.link->current_speed_gts == 0) return std::nullopt;
  const double gts = device.link->current_speed_gts;
  const double coding = gts >= 8.0 ? 128.0 / 130.0 : 0.8;  // 8b/10b up to Gen2, 128b/130b after
  return gts * coding / 8.0 * device.link->current_width * 0.657;
}

void print_text_header(const Plan& plan, const BenchOptions& options, const Results& results) {
  const pcie::DeviceInfo& device = plan.device;
  fmt::print("{}\n{}, {}{} BAR\n", render_line(device), plan.window_text,
             plan.bar.prefetchable ? "prefetchable" : "non-prefetchable", plan.bar.is_64bit ? " 64-bit" : "");
  if (device.link && device.link->current_width != 0) {
    fmt::print("link: {} GT/s x{}", device.link->current_speed_gts, device.link->current_width);
    if (const auto ceiling = write_ceiling_gbs(device)) {
      fmt::print("; CPU writes (64-byte TLPs at most) cannot beat about {:.1f} GB/s here", *ceiling);
    }
    fmt::print("\n");
  }
  for (const pcie::MemoryTypeReport& report : results.reports) {
    fmt::print("{} mapping: {}\n", pcie::to_string(report.requested),
               report.verified() ? "verified, the kernel granted " + report.granted_name : report.note);
  }
  fmt::print("median of {} repetitions of at least {} ms each, after {} warm-up pass(es)\n\n", options.repetitions,
             options.min_time_ms, options.warmup);
}

nlohmann::ordered_json json_memory_types(const Results& results) {
  nlohmann::ordered_json types = nlohmann::ordered_json::array();
  for (const pcie::MemoryTypeReport& report : results.reports) {
    types.push_back({{"requested", pcie::to_string(report.requested)},
                     {"verified", report.verified()},
                     {"granted", report.verified() ? report.granted_name : ""},
                     {"note", report.note}});
  }
  return types;
}

nlohmann::ordered_json json_throughput(const Results& results) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const Measurement& row : results.throughput) {
    rows.push_back({{"mapping", pcie::to_string(row.mapping)},
                    {"direction", row.write ? "write" : "read"},
                    {"access", row.access},
                    {"bytes", row.size},
                    {"median_gbs", row.median()},
                    {"samples_gbs", row.gigabytes_per_second}});
  }
  return rows;
}

nlohmann::ordered_json json_latency(const BenchOptions& options, const Results& results) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const Latency& latency : results.latencies) {
    rows.push_back({{"mapping", pcie::to_string(latency.mapping)},
                    {"access", latency.what},
                    {"median_ns", latency.median_ns},
                    {"p99_ns", latency.p99_ns},
                    {"samples", options.latency_samples}});
  }
  return rows;
}

}  // namespace

void announce(const Plan& plan, const BenchOptions& options) {
  if (options.allow_write) {
    const bool both = plan.mappings.size() == 2;
    fmt::print(stderr, "pciectl bench: will overwrite {} through the {} mapping{}; its contents are not restored\n",
               plan.window_text, both ? "uncached and write-combined" : pcie::to_string(plan.mappings[0]),
               both ? "s" : "");
  } else if (!options.json) {
    fmt::print(stderr, "pciectl bench: reads only; pass --allow-write to benchmark writes too (they overwrite {})\n",
               plan.window_text);
  }
}

void print_text(const Plan& plan, const BenchOptions& options, const Results& results) {
  print_text_header(plan, options, results);
  fmt::print("{:<16} {:<6} {:<16} {:>10} {:>12} {:>12} {:>12}\n", "mapping", "dir", "access", "size", "GB/s",
             "min", "max");
  for (const Measurement& row : results.throughput) {
    const auto [low, high] = std::minmax_element(row.gigabytes_per_second.begin(), row.gigabytes_per_second.end());
    fmt::print("{:<16} {:<6} {:<16} {:>10} {:>12.4f} {:>12.4f} {:>12.4f}\n", pcie::to_string(row.mapping),
               row.write ? "write" : "read", row.access, human_size(row.size), row.median(), *low, *high);
  }
  fmt::print("\n{:<16} {:<34} {:>12} {:>12}   ({} samples, clock cost subtracted)\n", "mapping", "latency at +0",
             "median ns", "p99 ns", options.latency_samples);
  for (const Latency& latency : results.latencies) {
    fmt::print("{:<16} {:<34} {:>12.0f} {:>12.0f}\n", pcie::to_string(latency.mapping), latency.what,
               latency.median_ns, latency.p99_ns);
  }
}

void print_json(const Plan& plan, const BenchOptions& options, const Results& results) {
  const pcie::DeviceInfo& device = plan.device;
  nlohmann::ordered_json out;
  out["device"] = plan.bdf.to_string();
  out["bar"] = plan.bar_index;
  out["window"] = {{"offset", plan.offset}, {"length", plan.length}};
  out["prefetchable"] = plan.bar.prefetchable;
  if (device.link) {
    out["link"] = {{"speed_gts", device.link->current_speed_gts}, {"width", device.link->current_width}};
  }
  if (const auto ceiling = write_ceiling_gbs(device)) out["write_ceiling_gbs"] = *ceiling;
  out["memory_types"] = json_memory_types(results);
  out["repetitions"] = options.repetitions;
  out["throughput"] = json_throughput(results);
  out["latency"] = json_latency(options, results);
  print_json_document(out);
}

}  // namespace pciectl::bench
