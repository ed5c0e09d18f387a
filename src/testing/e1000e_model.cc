// The 82574L model's public side: the hooks that connect BAR0 and the DeviceModel's unmap
// callback to the model, and the test's view (the wire, held work, what happened).
#include "pcie/testing/e1000e_model.h"

#include <fmt/format.h>

#include <utility>

#include "src/testing/e1000e_core.h"

namespace pcie::testing {

using namespace e1000e;
using Core = E1000eModel::Core;

std::string_view to_string(E1000eRxOutcome outcome) {
  switch (outcome) {
    case E1000eRxOutcome::delivered: return "delivered";
    case E1000eRxOutcome::queued: return "queued";
    case E1000eRxOutcome::link_down: return "link down";
    case E1000eRxOutcome::rx_disabled: return "receiver disabled";
    case E1000eRxOutcome::oversized: return "oversized";
    case E1000eRxOutcome::filtered: return "filtered";
    case E1000eRxOutcome::no_descriptors: return "no descriptors";
    case E1000eRxOutcome::stopped: return "queue stopped";
    case E1000eRxOutcome::dma_error: return "DMA error";
  }
  return "unknown";
}

// Accesses that started inside a register ran no hook: they reached the BAR's storage
// only (a write is lost to the model, a read returns what the storage mirrors).
void Core::scan_unaligned() {
  const std::vector<RegisterAccess> log = bar0.log();
  if (log.size() < log_seen) log_seen = 0;  // the test cleared the log
  for (std::size_t i = log_seen; i < log.size(); ++i) {
    const RegisterAccess& access = log[i];
    if (access.offset % 4 == 0) continue;
    violation(e1000e_rule::kRegisterWidth,
              fmt::format("a {}-bit {} at 0x{:x}, inside the register at 0x{:x}; the 82574's registers take "
                          "32-bit accesses only (the model never saw it)",
                          bit_count(access.width), access.write ? "write" : "read", access.offset,
                          access.offset & ~std::uint64_t{3}),
              kCiteRegisters);
  }
  log_seen = log.size();
}

void Core::violation(std::string_view rule, std::string_view detail, std::string_view citation) {
  violations.push_back(fmt::format("{}: {} ({})", rule, detail, citation));
}

namespace {

// Every register offset of BAR0 (a multiple of 4) reaches the model, whatever the width;
// an access that starts inside a register runs no hook (a hook on every byte would cost
// 128 Ki hooks a model) and is found in the BAR's log instead (scan_unaligned). Once the
// model is gone the BAR only stores.
void install_hooks(const std::shared_ptr<Core>& core) {
  const std::weak_ptr<Core> weak = core;
  const RegisterModel::ReadHook read = [weak](const RegisterAccess& access) -> std::uint64_t {
    const std::shared_ptr<Core> alive = weak.lock();
    if (!alive) return access.value;
    const std::lock_guard lock(alive->mutex);
    return alive->driver_read(access);
  };
  const RegisterModel::WriteHook write = [weak](const RegisterAccess& access) -> std::uint64_t {
    const std::shared_ptr<Core> alive = weak.lock();
    if (!alive) return access.value;
    const std::lock_guard lock(alive->mutex);
    return alive->driver_write(access);
  };
  for (std::uint64_t offset = 0; offset < kBar0Size; offset += 4) {
    core->bar0.on_read(offset, read);
    core->bar0.on_write(offset, write);
  }
  core->device.on_unmap([weak](std::uint64_t bus, std::uint64_t size) {
    if (const std::shared_ptr<Core> alive = weak.lock()) {
      const std::lock_guard lock(alive->mutex);
      alive->unmapped(bus, size);
    }
  });
}

}  // namespace

E1000eModel::E1000eModel(const E1000eModelOptions& options) : core_(std::make_shared<Core>(options)) {
  install_hooks(core_);
}

E1000eModel::~E1000eModel() { core_->device.on_unmap({}); }

DeviceModel& E1000eModel::device() { return core_->device; }
RegisterModel& E1000eModel::bar0() { return core_->bar0; }
std::unique_ptr<Device> E1000eModel::open() const { return core_->device.open(); }

E1000eRxOutcome E1000eModel::receive(std::span<const std::byte> frame) {
  const std::lock_guard lock(core_->mutex);
  if (core_->options.completion == Completion::on_process) {
    core_->arriving.emplace_back(frame.begin(), frame.end());
    return E1000eRxOutcome::queued;
  }
  return core_->deliver(frame);
}

std::vector<std::vector<std::byte>> E1000eModel::transmitted() const {
  const std::lock_guard lock(core_->mutex);
  return {core_->wire.begin(), core_->wire.end()};
}

std::vector<std::vector<std::byte>> E1000eModel::take_transmitted() {
  const std::lock_guard lock(core_->mutex);
  std::vector<std::vector<std::byte>> frames(std::make_move_iterator(core_->wire.begin()),
                                             std::make_move_iterator(core_->wire.end()));
  core_->wire.clear();
  return frames;
}

void E1000eModel::set_link(bool cable) {
  const std::lock_guard lock(core_->mutex);
  core_->cable = cable;
  core_->update_link();
}

std::size_t E1000eModel::process() {
  const std::lock_guard lock(core_->mutex);
  if (core_->options.completion == Completion::immediate) return 0;
  std::size_t moved = core_->transmit();
  while (!core_->arriving.empty()) {
    const std::vector<std::byte> frame = std::move(core_->arriving.front());
    core_->arriving.pop_front();
    if (core_->deliver(frame) == E1000eRxOutcome::delivered) ++moved;
  }
  return moved;
}

std::size_t E1000eModel::queued_frames() const {
  const std::lock_guard lock(core_->mutex);
  return core_->arriving.size();
}

std::vector<std::string> E1000eModel::violations() const {
  const std::lock_guard lock(core_->mutex);
  core_->scan_unaligned();
  return core_->violations;
}

void E1000eModel::clear_violations() {
  const std::lock_guard lock(core_->mutex);
  core_->scan_unaligned();
  core_->violations.clear();
}

std::vector<E1000eInterrupt> E1000eModel::interrupts() const {
  const std::lock_guard lock(core_->mutex);
  return core_->interrupts;
}

std::vector<E1000eInterrupt> E1000eModel::take_interrupts() {
  const std::lock_guard lock(core_->mutex);
  return std::exchange(core_->interrupts, {});
}

std::uint32_t E1000eModel::register_value(std::uint64_t offset) const {
  const std::lock_guard lock(core_->mutex);
  return core_->peek(offset);
}

bool E1000eModel::set_stored_register(std::uint64_t offset, std::uint32_t value) {
  const std::lock_guard lock(core_->mutex);
  if (!Core::stores_only(offset)) return false;
  core_->reg(offset) = value;
  return true;
}

std::uint64_t E1000eModel::resets() const {
  const std::lock_guard lock(core_->mutex);
  return core_->resets;
}

bool E1000eModel::link_up() const {
  const std::lock_guard lock(core_->mutex);
  return core_->link;
}

}  // namespace pcie::testing
