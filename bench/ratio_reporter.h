// A console reporter that, after the usual table, prints each benchmark's time as a ratio
// to a baseline measured in the same run ("BM_Ours/x" against "BM_Baseline/x"), using the
// median when benchmarks are repeated.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace pcie::bench {

// time: candidate time / baseline time (below 1.00x the candidate is faster).
// speed: baseline time / candidate time, a throughput ratio (above 1.00x it is faster).
enum class RatioKind { time, speed };

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  // Each pair: {candidate benchmark name, baseline benchmark name}.
  explicit RatioReporter(std::vector<std::pair<std::string, std::string>> pairs, RatioKind kind = RatioKind::time)
      : pairs_(std::move(pairs)), kind_(kind) {}

  // Keeps the median of repeated runs when there are repetitions, else the single run.
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      const std::string name = run.run_name.str();
      const double ns = run.GetAdjustedRealTime() * multiplier(run.time_unit);
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name == "median") {
        nanoseconds_[name] = ns;
        medians_.insert(name);
      } else if (run.run_type == Run::RT_Iteration && run.iterations > 0 && !medians_.contains(name)) {
        nanoseconds_[name] = ns;
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    // Columns as wide as the longest names, so that every ratio lines up.
    int candidate_width = 44;
    int baseline_width = 32;
    for (const auto& [candidate, baseline] : pairs_) {
      candidate_width = std::max(candidate_width, static_cast<int>(candidate.size()));
      baseline_width = std::max(baseline_width, static_cast<int>(baseline.size()));
    }
    std::printf("\n%-*s %-*s %10s\n", candidate_width, "candidate", baseline_width, "baseline (same run)",
                kind_ == RatioKind::time ? "time ratio" : "speed ratio");
    for (const auto& [candidate, baseline] : pairs_) {
      const auto a = nanoseconds_.find(candidate);
      const auto b = nanoseconds_.find(baseline);
      if (a == nanoseconds_.end() || b == nanoseconds_.end() || b->second == 0 || a->second == 0) continue;
      const double ratio = kind_ == RatioKind::time ? a->second / b->second : b->second / a->second;
      // Two decimals, or three significant digits for ratios far below 1 (0.00x says nothing).
      if (ratio >= 0.1) {
        std::printf("%-*s %-*s %9.2fx\n", candidate_width, candidate.c_str(), baseline_width, baseline.c_str(),
                    ratio);
      } else {
        std::printf("%-*s %-*s %9.3gx\n", candidate_width, candidate.c_str(), baseline_width, baseline.c_str(),
                    ratio);
      }
    }
    std::fflush(stdout);
  }

 private:
  static double multiplier(benchmark::TimeUnit unit) {
    switch (unit) {
      case benchmark::kNanosecond: return 1;
      case benchmark::kMicrosecond: return 1e3;
      case benchmark::kMillisecond: return 1e6;
      case benchmark::kSecond: return 1e9;
    }
    return 1;
  }

  std::vector<std::pair<std::string, std::string>> pairs_;
  RatioKind kind_ = RatioKind::time;
  std::map<std::string, double> nanoseconds_;
  std::set<std::string> medians_;
};

}  // namespace pcie::bench
