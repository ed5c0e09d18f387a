// Letting go of a device without letting it write into freed memory: the order every
// driver owes its device before its DMA memory and interrupts go (STYLE.md, practice 16):
//
//   1. stop: tell the device to start no new work (clear a run bit, disable a controller);
//   2. drain: wait, bounded, until it reports that no DMA is in flight;
//   3. bus mastering off: from here the device can neither DMA nor send an MSI (PCI Local
//      Bus 3.0, 6.2.2: Bus Master Enable gates every memory request the function issues);
//   4. only then may the owner disable interrupts and unmap or free DMA buffers.
//
// Step 3 is taken whatever steps 1 and 2 said: a device that cannot be shown idle (stuck,
// removed, a stop that failed) loses bus mastering all the same, since freeing memory it may
// still write is worse than cutting off a transfer (fail closed).
//
// A driver keeps a Quiescer as its *last* data member: members are destroyed in reverse
// order of declaration, so it runs before the buffers, rings and interrupt sets declared
// above it are released, and after nothing it protects is gone. Error paths and the
// kernel's request to give the device back (the VFIO request IRQ) call run() at once.
//
//   class MyDriver {
//     std::unique_ptr<pcie::Device> device_;      // destroyed last
//     std::unique_ptr<pcie::Interrupts> irq_;
//     pcie::DmaBuffer ring_;
//     pcie::Quiescer quiesce_;                     // destroyed first: runs before the above go
//   };
//   quiesce_ = pcie::Quiescer(*device_, {.stop = [&] { return regs.write(...); },
//                                        .idle = [&] { return engine_idle(); }});
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <utility>

#include "pcie/device.h"
#include "pcie/error.h"
#include "pcie/wait.h"

namespace pcie {

// What quiescing a particular device takes. Both steps are optional.
struct QuiesceSteps {
  // Tells the device to start no new DMA. Empty: there is nothing to tell (a device that
  // only works on request). An error is reported, and the drain and bus master steps still run.
  std::function<Result<void>()> stop;
  // True once no DMA of the device's is in flight; called on `wait`'s schedule until it is.
  // Empty: the device is idle as soon as it is stopped. An error ends the drain (reported),
  // and bus mastering is still turned off.
  std::function<Result<bool>()> idle;
  // How long, and how, to wait for idle: a second by default, sleeping between looks.
  WaitOptions wait{.timeout = std::chrono::seconds(1), .spin = std::chrono::microseconds(20)};
};

// Runs the steps on `device` in order: stop, drain (bounded), then Bus Master Enable off,
// always. Returns success only when the device stopped, was seen idle and bus mastering is
// off. Fails with the first error: stop's or idle's own, io_error when the device was still
// busy at the timeout (bus mastering was turned off anyway: in-flight DMA may have been cut
// short), or the backend's error clearing Bus Master Enable (device_removed for a device
// that is gone: then it cannot DMA either).
Result<void> quiesce(const Device& device, const QuiesceSteps& steps);

// quiesce() once, at the latest when destroyed. Move-only; an empty Quiescer (default,
// moved from) does nothing. It keeps a pointer to the Device, which must outlive it: keep
// the device in a member declared before the Quiescer (a std::unique_ptr<Device> keeps its
// address across moves of the driver).
class Quiescer {
 public:
  // An empty Quiescer: run() succeeds without doing anything.
  Quiescer() = default;
  // Will quiesce `device` (which must outlive it) with `steps`; nothing runs yet.
  Quiescer(const Device& device, QuiesceSteps steps) : device_(&device), steps_(std::move(steps)) {}
  // Move-only: takes over `other`'s device, steps and result; `other` becomes empty.
  Quiescer(Quiescer&& other) noexcept
      : device_(std::exchange(other.device_, nullptr)), steps_(std::move(other.steps_)),
        result_(std::move(other.result_)) {}
  // Runs this Quiescer first (the device it guarded is let go, its error dropped), then
  // takes over `other`'s device, steps and result; `other` becomes empty.
  Quiescer& operator=(Quiescer&& other) noexcept;
  Quiescer(const Quiescer&) = delete;
  Quiescer& operator=(const Quiescer&) = delete;
  ~Quiescer() { (void)run(); }

  // Quiesces the device the first time it is called; later calls return the first result
  // without touching the device again. An empty Quiescer returns success.
  Result<void> run();
  // Whether run() has been called (by the owner, or by nothing yet): the device may no
  // longer DMA, so a driver refuses new work once it is true.
  bool done() const { return result_.has_value(); }
  // Whether it guards a device (false when default-constructed or moved from).
  bool valid() const { return device_ != nullptr; }
  // Changes how long the drain may wait, once the device's own limit is known (NVMe CAP.TO).
  void set_wait_timeout(std::chrono::nanoseconds timeout) { steps_.wait.timeout = timeout; }

 private:
  const Device* device_ = nullptr;
  QuiesceSteps steps_;
  std::optional<Result<void>> result_;
};

}  // namespace pcie
