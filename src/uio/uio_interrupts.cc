// UioInterrupts: INTx through /dev/uioN (Documentation/driver-api/uio-howto.rst: a read
// returns the 32-bit event count). uio_pci_generic masks INTx in its handler by setting the
// command register's Interrupt Disable bit and has no irqcontrol (a write to /dev/uioN is
// ENOSYS): user space unmasks by clearing the bit through the config file, writing only
// the command register's high byte as the howto's example does, so that the low byte
// (decode and bus master enables) is never rewritten.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "pcie/config_space.h"
#include "pcie/uio.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"
#include "src/uio/state.h"

namespace pcie {

namespace {

constexpr std::uint32_t kCommandHighByte = cfg::kCommand + 1;
constexpr std::uint8_t kInterruptDisableInHighByte = cfg::kCommandInterruptDisable >> 8;

// Clears (unmask) or sets (mask) Interrupt Disable. Called with the state's mutex held.
Result<void> set_intx_masked(const detail::UioDeviceState& state, bool masked) {
  auto high = state.config->read8(kCommandHighByte);
  if (!high) return std::unexpected(high.error());
  const auto value = static_cast<std::uint8_t>(masked ? (*high | kInterruptDisableInHighByte)
                                                      : (*high & ~kInterruptDisableInHighByte));
  return state.config->write8(kCommandHighByte, value);
}

}  // namespace

Result<UioInterrupts> UioDevice::enable_intx() const {
  if (!state_) return std::unexpected(detail::empty_uio_device_error("enable INTx of"));
  const std::string name = state_->bdf.to_string() + " INTx (" + state_->node + ")";
  auto vectors = vector_count(IrqKind::intx);
  if (!vectors) return std::unexpected(vectors.error());
  if (*vectors == 0) {
    return std::unexpected(make_error(Errc::out_of_range, "enable interrupts", name,
                                      "the device has no interrupt pin, or the kernel routed it no IRQ"));
  }
  std::lock_guard lock(state_->mutex);
  if (state_->intx_enabled) {
    return std::unexpected(make_error(Errc::busy, "enable interrupts", name,
                                      "INTx is already enabled through another UioInterrupts of this device",
                                      "use that one, or disable or destroy it first"));
  }
  // The count so far, so that the first wait reports only what arrives from now on.
  std::uint32_t seen = 0;
  if (auto text = sys::read_text_file(state_->uio_dir + "/event"); text) {
    if (auto count = sysfs::parse_number(*text); count && *count >= 0) seen = static_cast<std::uint32_t>(*count);
  }
  if (auto unmasked = set_intx_masked(*state_, false); !unmasked) return std::unexpected(unmasked.error());
  state_->intx_enabled = true;
  return UioInterrupts(state_, name, seen);
}

UioInterrupts::UioInterrupts(std::shared_ptr<detail::UioDeviceState> state, std::string name, std::uint32_t seen)
    : state_(std::move(state)), name_(std::move(name)), seen_(seen) {}

UioInterrupts::UioInterrupts(UioInterrupts&& other) noexcept
    : state_(std::move(other.state_)), name_(std::move(other.name_)), seen_(other.seen_) {}

UioInterrupts& UioInterrupts::operator=(UioInterrupts&& other) noexcept {
  if (this != &other) {
    (void)disable();
    state_ = std::move(other.state_);
    name_ = std::move(other.name_);
    seen_ = other.seen_;
  }
  return *this;
}

UioInterrupts::~UioInterrupts() { (void)disable(); }

Result<void> UioInterrupts::check_vector(unsigned vector, std::string_view operation) const {
  if (!state_) {
    return std::unexpected(empty_object_error(std::string(operation), "UioInterrupts",
                                              "enable INTx (UioDevice::enable_intx) and move it in"));
  }
  if (vector != 0) {
    return std::unexpected(make_error(Errc::out_of_range, std::string(operation), name_,
                                      fmt::format("vector {} of {} enabled", vector, count())));
  }
  return {};
}

Result<int> UioInterrupts::fd(unsigned vector) const {
  if (auto valid = check_vector(vector, "descriptor of"); !valid) return std::unexpected(valid.error());
  return state_->fd.get();
}

Result<std::uint64_t> UioInterrupts::consume(unsigned vector) const {
  if (auto valid = check_vector(vector, "read interrupt count"); !valid) return std::unexpected(valid.error());
  std::uint32_t total = 0;
  auto read = sys::read_some(state_->fd.get(), std::as_writable_bytes(std::span(&total, 1)), state_->node);
  if (!read) {
    if (read.error().sys_errno == EAGAIN) return 0u;  // non-blocking: nothing new
    return std::unexpected(read.error());
  }
  if (*read != sizeof total) {
    return std::unexpected(make_error(Errc::io_error, "read interrupt count", name_,
                                      fmt::format("read {} bytes, expected 4", *read)));
  }
  // A 32-bit count that wraps: the difference modulo 2^32 is what arrived.
  const std::uint32_t arrived = total - seen_;
  seen_ = total;
  return arrived;
}

Result<std::uint64_t> UioInterrupts::wait(unsigned vector, std::chrono::milliseconds timeout) const {
  if (auto valid = check_vector(vector, "wait for interrupt"); !valid) return std::unexpected(valid.error());
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const auto bounded = std::clamp<std::chrono::milliseconds::rep>(left.count(), 0, std::numeric_limits<int>::max());
    const int fds[] = {state_->fd.get()};
    auto ready = sys::wait_readable(fds, static_cast<int>(bounded));
    if (!ready) return std::unexpected(ready.error());
    if (!*ready) return 0u;
    auto arrived = consume(0);
    if (!arrived || *arrived > 0 || left.count() <= 0) return arrived;
  }
}

Result<void> UioInterrupts::rearm(unsigned vector) const {
  if (auto valid = check_vector(vector, "rearm interrupt"); !valid) return valid;
  std::lock_guard lock(state_->mutex);
  return set_intx_masked(*state_, false);
}

Result<void> UioInterrupts::mask(unsigned vector) const {
  if (auto valid = check_vector(vector, "mask interrupt"); !valid) return valid;
  std::lock_guard lock(state_->mutex);
  return set_intx_masked(*state_, true);
}

Result<void> UioInterrupts::unmask(unsigned vector) const { return rearm(vector); }

Result<unsigned> UioInterrupts::add_vectors(unsigned more) {
  if (auto valid = check_vector(0, "add interrupt vectors"); !valid) return std::unexpected(valid.error());
  return Interrupts::add_vectors(more);
}

Result<void> UioInterrupts::disable() {
  if (!state_) return {};
  Result<void> masked;
  {
    std::lock_guard lock(state_->mutex);
    masked = set_intx_masked(*state_, true);
    state_->intx_enabled = false;
  }
  state_.reset();
  return masked;
}

}  // namespace pcie
