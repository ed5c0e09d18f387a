// CopyWorkers, and splitting a copy across them.
#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "pcie/barriers.h"
#include "pcie/copy.h"
#include "src/copy/parallel.h"

namespace pcie {
namespace copy_detail {
namespace {

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

}  // namespace

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

}  // namespace copy_detail

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
