// pciectl bench, step 4: what was measured, as text or JSON on stdout, and the notice on
// stderr of what the run is about to touch.
#pragma once

#include "tools/pciectl/bench.h"
#include "tools/pciectl/bench_measure.h"
#include "tools/pciectl/bench_plan.h"

namespace pciectl::bench {

// Says on stderr, before anything is measured, that the window will be overwritten (with
// options.allow_write), or that only reads are measured (in text mode).
void announce(const Plan& plan, const BenchOptions& options);

// The device, link, mappings and every row, as a table for people.
void print_text(const Plan& plan, const BenchOptions& options, const Results& results);

// The same as one JSON object (keys "device", "bar", "window", ... "latency").
void print_json(const Plan& plan, const BenchOptions& options, const Results& results);

}  // namespace pciectl::bench
