// VfioInterrupts: a device's interrupt vectors on eventfds (VFIO_DEVICE_SET_IRQS).
#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "pcie/vfio.h"
#include "src/sys/syscalls.h"
#include "src/sys/vfio_ioctls.h"
#include "src/vfio/state.h"

namespace pcie {
namespace {

std::uint32_t irq_index_of(IrqKind kind) {
  switch (kind) {
    case IrqKind::intx: return VFIO_PCI_INTX_IRQ_INDEX;
    case IrqKind::msi: return VFIO_PCI_MSI_IRQ_INDEX;
    case IrqKind::msix: return VFIO_PCI_MSIX_IRQ_INDEX;
    case IrqKind::error: return VFIO_PCI_ERR_IRQ_INDEX;
    case IrqKind::request: return VFIO_PCI_REQ_IRQ_INDEX;
  }
  return VFIO_PCI_MSI_IRQ_INDEX;
}

constexpr unsigned bit_of(std::uint32_t index) { return 1u << index; }

// A device signals with one of INTx, MSI and MSI-X at a time (vfio_pci_set_irqs_ioctl
// refuses the others while one is enabled).
constexpr unsigned kExclusiveIndexes =
    bit_of(VFIO_PCI_INTX_IRQ_INDEX) | bit_of(VFIO_PCI_MSI_IRQ_INDEX) | bit_of(VFIO_PCI_MSIX_IRQ_INDEX);

const char* kind_of_index(std::uint32_t index) {
  switch (index) {
    case VFIO_PCI_INTX_IRQ_INDEX: return "INTx";
    case VFIO_PCI_MSI_IRQ_INDEX: return "MSI";
    case VFIO_PCI_MSIX_IRQ_INDEX: return "MSI-X";
    default: return "another interrupt kind";
  }
}

Error empty_error(std::string operation) {
  return empty_object_error(std::move(operation), "VfioInterrupts",
                            "enable interrupts (VfioInterrupts::enable) and move them in");
}

// out_of_range when `current` enabled vectors and `more` exceed the `available` ones.
Result<void> check_room(const std::string& name, unsigned current, unsigned more, unsigned available) {
  if (more <= available - std::min<unsigned>(available, current)) return {};
  return std::unexpected(make_error(Errc::out_of_range, "add interrupt vectors", name,
                                    fmt::format("{} enabled and {} more asked; the device has {}", current, more,
                                                available)));
}

// The enabled vectors as the kernel holds them: each one's eventfd, -1 for a masked
// vector (which stays detached).
std::vector<int> attached_eventfds(const std::vector<UniqueFd>& eventfds, const std::vector<bool>& masked) {
  std::vector<int> attached;
  for (std::size_t i = 0; i < eventfds.size(); ++i) attached.push_back(masked[i] ? -1 : eventfds[i].get());
  return attached;
}

struct EnableLargerFailure {
  Error error;
  bool set_disabled = false;  // the previous set could not be enabled again either
};

// The kernel sizes the set when it is enabled: enable it again, larger, with the same
// eventfds (`before`) followed by `added`.
std::expected<void, EnableLargerFailure> enable_larger(int device_fd, std::uint32_t index,
                                                       const std::vector<int>& before, const std::vector<int>& added,
                                                       const std::string& name) {
  std::vector<int> all = before;
  all.insert(all.end(), added.begin(), added.end());
  if (auto off = sys::vfio::set_irq_eventfds(device_fd, index, {}, name); !off) {
    return std::unexpected(EnableLargerFailure{off.error()});
  }
  auto on = sys::vfio::set_irq_eventfds(device_fd, index, all, name);
  if (on) return {};
  // Put the old set back, so that a refusal leaves the vectors as they were.
  auto restored = sys::vfio::set_irq_eventfds(device_fd, index, before, name);
  if (restored) return std::unexpected(EnableLargerFailure{on.error()});
  // Both refused: the kind is off now. Say so.
  Error error = on.error();
  error.reason += "; enabling the previous " + std::to_string(before.size()) +
                  " vectors again failed too (" + restored.error().reason + "): the set is now disabled";
  error.hint = "enable the interrupts again";
  return std::unexpected(EnableLargerFailure{error, true});
}

}  // namespace

Result<unsigned> VfioDevice::vector_count(IrqKind kind) const {
  if (!state_) return std::unexpected(detail::empty_device_error("count vectors of"));
  auto info = sys::vfio::irq_info(fd(), irq_index_of(kind), bdf().to_string());
  if (!info) return std::unexpected(info.error());
  return info->count;
}

Result<VfioInterrupts> VfioInterrupts::enable(const VfioDevice& device, IrqKind kind, unsigned count) {
  const std::string name = fmt::format("{} {}", device.bdf().to_string(), to_string(kind));
  const std::uint32_t index = irq_index_of(kind);
  auto vectors = device.vector_count(kind);
  if (!vectors) return std::unexpected(vectors.error());
  if (count == 0 || count > *vectors) {
    return std::unexpected(make_error(Errc::out_of_range, "enable interrupts", name,
                                      fmt::format("{} vectors asked, the device has {}", count, *vectors),
                                      *vectors == 0 ? "the device does not implement this interrupt kind" : ""));
  }
  auto eventfds = sys::make_eventfds(count);
  if (!eventfds) return std::unexpected(eventfds.error());
  detail::VfioDeviceState& state = *device.state_;
  // Checked and claimed under the device's lock: a second owner of the same kind would
  // silently take the first one's vectors, and its destruction would turn them off under
  // the first one.
  std::lock_guard lock(state.mutex);
  if ((state.irq_indexes_in_use & bit_of(index)) != 0) {
    return std::unexpected(make_error(Errc::busy, "enable interrupts", name,
                                      fmt::format("{} is already enabled on this device by another VfioInterrupts",
                                                  to_string(kind)),
                                      "use that one, or disable or destroy it first"));
  }
  if ((bit_of(index) & kExclusiveIndexes) != 0) {
    const unsigned others = state.irq_indexes_in_use & kExclusiveIndexes;
    if (others != 0) {
      const std::uint32_t other = static_cast<std::uint32_t>(__builtin_ctz(others));
      return std::unexpected(make_error(Errc::busy, "enable interrupts", name,
                                        fmt::format("{} is enabled: a device signals with one of INTx, MSI and MSI-X "
                                                    "at a time",
                                                    kind_of_index(other)),
                                        fmt::format("disable {} first", kind_of_index(other))));
    }
  }
  if (auto set = sys::vfio::set_irq_eventfds(state.fd.get(), index, eventfds->raw, device.bdf().to_string()); !set) {
    return std::unexpected(set.error());
  }
  state.irq_indexes_in_use |= bit_of(index);
  return VfioInterrupts(device.state_, name, kind, std::move(eventfds->owned));
}

VfioInterrupts::VfioInterrupts(std::shared_ptr<detail::VfioDeviceState> device, std::string name, IrqKind kind,
                               std::vector<UniqueFd> eventfds)
    : device_(std::move(device)), name_(std::move(name)), kind_(kind), eventfds_(std::move(eventfds)),
      masked_(eventfds_.size(), false) {}

VfioInterrupts::VfioInterrupts(VfioInterrupts&& other) noexcept
    : device_(std::move(other.device_)), name_(std::move(other.name_)), kind_(other.kind_),
      eventfds_(std::move(other.eventfds_)), masked_(std::move(other.masked_)) {
  other.eventfds_.clear();
  other.masked_.clear();
}

VfioInterrupts& VfioInterrupts::operator=(VfioInterrupts&& other) noexcept {
  if (this != &other) {
    (void)disable();
    device_ = std::move(other.device_);
    name_ = std::move(other.name_);
    kind_ = other.kind_;
    eventfds_ = std::move(other.eventfds_);
    masked_ = std::move(other.masked_);
    other.eventfds_.clear();
    other.masked_.clear();
  }
  return *this;
}

VfioInterrupts::~VfioInterrupts() { (void)disable(); }

Result<void> VfioInterrupts::disable() {
  if (!device_ || eventfds_.empty()) return {};
  // Disable before the eventfds close: the kernel must stop signalling them first.
  std::lock_guard lock(device_->mutex);
  auto disabled = sys::vfio::set_irq_eventfds(device_->fd.get(), irq_index_of(kind_), {}, name_);
  device_->irq_indexes_in_use &= ~bit_of(irq_index_of(kind_));
  eventfds_.clear();
  masked_.clear();
  return disabled;
}

Result<int> VfioInterrupts::eventfd(unsigned vector) const {
  if (!device_) return std::unexpected(empty_error("eventfd of"));
  if (vector >= eventfds_.size()) {
    return std::unexpected(make_error(Errc::out_of_range, "eventfd of", name_,
                                      fmt::format("vector {} of {} enabled", vector, eventfds_.size())));
  }
  return eventfds_[vector].get();
}

Result<std::uint64_t> VfioInterrupts::wait(unsigned vector, std::chrono::milliseconds timeout) const {
  if (!device_) return std::unexpected(empty_error("wait for interrupt"));
  if (vector >= eventfds_.size()) {
    return std::unexpected(make_error(Errc::out_of_range, "wait for interrupt", name_,
                                      fmt::format("vector {} of {}", vector, eventfds_.size())));
  }
  // poll() takes an int of milliseconds, where -1 means forever: clamp, never wrap.
  const auto bounded = std::clamp<std::chrono::milliseconds::rep>(timeout.count(), 0, std::numeric_limits<int>::max());
  return sys::wait_eventfd(eventfds_[vector].get(), static_cast<int>(bounded));
}

Result<std::uint64_t> VfioInterrupts::consume(unsigned vector) const {
  auto fd = eventfd(vector);
  if (!fd) return std::unexpected(fd.error());
  return sys::wait_eventfd(*fd, 0);
}

// mask() and unmask() are const (a driver masks from its interrupt thread while another
// thread reads): masked_ is read and written only under the device's lock.
Result<void> VfioInterrupts::mask(unsigned vector) const {
  if (auto fd = eventfd(vector); !fd) return std::unexpected(fd.error());
  std::lock_guard lock(device_->mutex);
  if (masked_[vector]) return {};
  const std::uint32_t index = irq_index_of(kind_);
  auto masked = kind_ == IrqKind::intx ? sys::vfio::mask_irq(device_->fd.get(), index, name_)
                                       : sys::vfio::set_irq_eventfds_from(device_->fd.get(), index, vector, {-1}, name_);
  if (masked) masked_[vector] = true;
  return masked;
}

Result<void> VfioInterrupts::unmask(unsigned vector) const {
  auto fd = eventfd(vector);
  if (!fd) return std::unexpected(fd.error());
  std::lock_guard lock(device_->mutex);
  if (!masked_[vector]) return {};
  const std::uint32_t index = irq_index_of(kind_);
  auto unmasked = kind_ == IrqKind::intx ? sys::vfio::unmask_irq(device_->fd.get(), index, name_)
                                         : sys::vfio::set_irq_eventfds_from(device_->fd.get(), index, vector, {*fd}, name_);
  if (unmasked) masked_[vector] = false;
  return unmasked;
}

Result<unsigned> VfioInterrupts::add_vectors(unsigned more) {
  if (!device_) return std::unexpected(empty_error("add interrupt vectors"));
  if (eventfds_.empty()) {
    return std::unexpected(make_error(Errc::invalid_argument, "add interrupt vectors", name_, "the set is disabled"));
  }
  const std::uint32_t index = irq_index_of(kind_);
  auto info = sys::vfio::irq_info(device_->fd.get(), index, name_);
  if (!info) return std::unexpected(info.error());
  const unsigned current = count();
  if (auto room = check_room(name_, current, more, info->count); !room) return std::unexpected(room.error());
  if (more == 0) return current;
  auto added = sys::make_eventfds(more);
  if (!added) return std::unexpected(added.error());
  std::lock_guard lock(device_->mutex);
  const int device_fd = device_->fd.get();
  if (kind_ == IrqKind::msix && (info->flags & VFIO_IRQ_INFO_NORESIZE) == 0) {
    // Linux 6.5+ allocates MSI-X vectors on demand: the new ones join the enabled set.
    auto grown = sys::vfio::set_irq_eventfds_from(device_fd, index, current, added->raw, name_);
    if (!grown) return std::unexpected(grown.error());
  } else if (auto larger = enable_larger(device_fd, index, attached_eventfds(eventfds_, masked_), added->raw, name_);
             !larger) {
    if (larger.error().set_disabled) {
      // The kind is off now: hold nothing that claims otherwise.
      device_->irq_indexes_in_use &= ~bit_of(index);
      eventfds_.clear();
      masked_.clear();
    }
    return std::unexpected(larger.error().error);
  }
  for (UniqueFd& fd : added->owned) eventfds_.push_back(std::move(fd));
  masked_.resize(eventfds_.size(), false);
  return count();
}

Result<void> VfioInterrupts::rearm(unsigned vector) const {
  if (auto fd = eventfd(vector); !fd) {
    Error error = fd.error();
    error.operation = "rearm interrupt";
    return std::unexpected(error);
  }
  return unmask_intx();
}

Result<void> VfioInterrupts::unmask_intx() const {
  if (!device_) return std::unexpected(empty_error("unmask INTx of"));
  if (kind_ != IrqKind::intx) return {};
  std::lock_guard lock(device_->mutex);
  auto unmasked = sys::vfio::unmask_irq(device_->fd.get(), VFIO_PCI_INTX_IRQ_INDEX, name_);
  if (unmasked && !masked_.empty()) masked_[0] = false;  // an unmask ends a mask() too
  return unmasked;
}

}  // namespace pcie
