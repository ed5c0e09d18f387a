#include "pcie/quiesce.h"

#include <fmt/format.h>

#include <utility>

namespace pcie {

namespace {
// Waits for steps.idle; nullopt when the device was seen idle.
std::optional<Error> drain(const Device& device, const QuiesceSteps& steps) {
  if (!steps.idle) return std::nullopt;
  std::optional<Error> failed;
  auto waited = wait_until(
      [&] {
        auto idle = steps.idle();
        if (!idle) failed = idle.error();
        return idle.value_or(false);
      },
      [&](bool idle) { return idle || failed.has_value(); }, steps.wait);
  if (failed) return failed;
  if (!waited) return waited.error();
  if (!waited->matched) {
    const auto waited_ms = std::chrono::duration_cast<std::chrono::milliseconds>(steps.wait.timeout).count();
    return make_error(Errc::io_error, "quiesce", device.bdf().to_string(),
                      fmt::format("DMA still in flight after {} ms; bus mastering turned off anyway", waited_ms),
                      "the device is stuck: reset it (or reload its function) before using it again");
  }
  return std::nullopt;
}
}  // namespace

Result<void> quiesce(const Device& device, const QuiesceSteps& steps) {
  std::optional<Error> first;
  if (steps.stop) {
    if (auto stopped = steps.stop(); !stopped) first = stopped.error();
  }
  if (auto drained = drain(device, steps); drained && !first) first = std::move(drained);
  // Always: a device that could not be shown idle must not reach the memory freed next.
  if (auto off = device.enable_bus_master(false); !off && !first) first = off.error();
  if (first) return std::unexpected(std::move(*first));
  return {};
}

Quiescer& Quiescer::operator=(Quiescer&& other) noexcept {
  if (this != &other) {
    (void)run();  // the device this one guarded is let go first
    device_ = std::exchange(other.device_, nullptr);
    steps_ = std::move(other.steps_);
    result_ = std::move(other.result_);
  }
  return *this;
}

Result<void> Quiescer::run() {
  if (device_ == nullptr) return {};
  if (!result_) result_ = quiesce(*device_, steps_);
  return *result_;
}

}  // namespace pcie
