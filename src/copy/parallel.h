// Running one span job on the caller's CopyWorkers (private): split at 4 KiB-aligned
// addresses so that every piece walks as the whole span would.
#pragma once

#include "pcie/copy.h"
#include "src/copy/kernels.h"

namespace pcie::copy_detail {

// Runs `function` on `job`, split across options.workers when the job is at least
// options.parallel_threshold long, each helper fencing its own weakly ordered stores.
void run_job(SpanFunction function, const SpanJob& job, const CopyOptions& options);

}  // namespace pcie::copy_detail
