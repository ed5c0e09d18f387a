#include "pcie/testing/device_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "pcie/dma_backend.h"
#include "src/sys/syscalls.h"

namespace pcie::testing {

struct DeviceModel::State {
  DeviceModelOptions options;
  mutable std::mutex mutex;
  std::array<std::unique_ptr<RegisterModel>, 6> bars;
  std::array<WidthSet, 6> bar_widths{WidthSet::all(), WidthSet::all(), WidthSet::all(),
                                     WidthSet::all(), WidthSet::all(), WidthSet::all()};
  bool bus_master = false;
  // Per kind, the enabled vectors; their eventfds are owned by the FakeInterrupts object,
  // which unregisters them (under the lock) before closing them.
  struct Vector {
    int eventfd = -1;
    bool masked = false;   // Interrupts::mask(): fire() holds the message as pending
    bool pending = false;  // sent at unmask, as an MSI-X vector's Pending Bit would be
  };
  std::map<IrqKind, std::vector<Vector>> vectors;
  struct DmaMapping {
    std::uint64_t bus = 0;
    std::byte* host = nullptr;
    std::uint64_t size = 0;
    bool device_reads = true;
    bool device_writes = true;
  };
  std::vector<DmaMapping> dma;
  std::uint64_t next_bus = 0;
  std::uint64_t dma_faults = 0;
  std::uint64_t dma_without_bus_master = 0;
  DeviceModel::UnmapHook unmap_hook;  // called unlocked (copied out under the lock)

  std::string name() const { return options.bdf.to_string() + " (fake)"; }

  // The bytes the driver has mapped for DMA (under the lock).
  std::uint64_t mapped_bytes() const {
    std::uint64_t bytes = 0;
    for (const auto& mapping : dma) bytes += mapping.size;
    return bytes;
  }

  unsigned vectors_offered(IrqKind kind) const {
    switch (kind) {
      case IrqKind::intx: return options.intx_vectors;
      case IrqKind::msi: return options.msi_vectors;
      case IrqKind::msix: return options.msix_vectors;
      case IrqKind::error: return 0;
      case IrqKind::request: return options.request_vectors;
    }
    return 0;
  }
};

namespace {

using State = DeviceModel::State;

bool exclusive(IrqKind kind) { return kind == IrqKind::intx || kind == IrqKind::msi || kind == IrqKind::msix; }

class FakeInterrupts final : public Interrupts {
 public:
  FakeInterrupts(std::shared_ptr<State> state, IrqKind kind, std::vector<UniqueFd> fds)
      : state_(std::move(state)), kind_(kind), fds_(std::move(fds)),
        name_(state_->options.bdf.to_string() + " " + to_string(kind)) {}
  ~FakeInterrupts() override { (void)disable(); }

  unsigned count() const override { return static_cast<unsigned>(fds_.size()); }
  IrqKind kind() const override { return kind_; }
  const std::string& name() const override { return name_; }
  Result<int> fd(unsigned vector) const override {
    if (vector >= fds_.size()) {
      return std::unexpected(make_error(Errc::out_of_range, "eventfd of", name_,
                                        fmt::format("vector {} of {} enabled", vector, fds_.size())));
    }
    return fds_[vector].get();
  }
  Result<std::uint64_t> consume(unsigned vector) const override {
    auto descriptor = fd(vector);
    if (!descriptor) return std::unexpected(descriptor.error());
    return sys::wait_eventfd(*descriptor, 0);
  }
  Result<std::uint64_t> wait(unsigned vector, std::chrono::milliseconds timeout) const override {
    auto descriptor = fd(vector);
    if (!descriptor) return std::unexpected(descriptor.error());
    const auto bounded = std::clamp<std::chrono::milliseconds::rep>(timeout.count(), 0, 1 << 30);
    return sys::wait_eventfd(*descriptor, static_cast<int>(bounded));
  }
  Result<void> rearm(unsigned vector) const override {
    if (auto descriptor = fd(vector); !descriptor) return std::unexpected(descriptor.error());
    return {};
  }
  // A masked vector's fire() is held as pending and sent at unmask, as an MSI-X vector's
  // would be (the real backends: pcie/interrupts.h).
  Result<void> mask(unsigned vector) const override {
    if (auto descriptor = fd(vector); !descriptor) return std::unexpected(descriptor.error());
    const std::lock_guard lock(state_->mutex);
    state_->vectors[kind_][vector].masked = true;
    return {};
  }
  Result<void> unmask(unsigned vector) const override {
    if (auto descriptor = fd(vector); !descriptor) return std::unexpected(descriptor.error());
    const std::lock_guard lock(state_->mutex);
    State::Vector& entry = state_->vectors[kind_][vector];
    entry.masked = false;
    if (!std::exchange(entry.pending, false)) return {};
    const std::uint64_t one = 1;
    return sys::write_once(entry.eventfd, std::as_bytes(std::span(&one, 1)), name_);
  }
  Result<unsigned> add_vectors(unsigned more) override {
    const unsigned offered = state_->vectors_offered(kind_);
    if (fds_.empty()) {
      return std::unexpected(make_error(Errc::invalid_argument, "add interrupt vectors", name_, "the set is disabled"));
    }
    if (more > offered - std::min<unsigned>(offered, count())) {
      return std::unexpected(make_error(Errc::out_of_range, "add interrupt vectors", name_,
                                        fmt::format("{} enabled and {} more asked; the device has {}", count(), more,
                                                    offered)));
    }
    auto added = sys::make_eventfds(more);
    if (!added) return std::unexpected(added.error());
    const std::lock_guard lock(state_->mutex);
    for (UniqueFd& descriptor : added->owned) {
      state_->vectors[kind_].push_back({descriptor.get()});
      fds_.push_back(std::move(descriptor));
    }
    return count();
  }
  Result<void> disable() override {
    if (fds_.empty()) return {};
    {
      const std::lock_guard lock(state_->mutex);
      state_->vectors.erase(kind_);
    }
    fds_.clear();
    return {};
  }

 private:
  std::shared_ptr<State> state_;
  IrqKind kind_;
  std::vector<UniqueFd> fds_;
  std::string name_;
};

// Bus addresses handed out in order, page-aligned, below the request's DMA limit; the
// device reaches a buffer only through them (dma_read/dma_write).
class FakeDmaBackend final : public DmaBackend {
 public:
  explicit FakeDmaBackend(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::string_view name() const override { return "fake IOMMU"; }
  bool bus_addresses_are_physical() const override { return false; }
  Result<BusAddress> map(const Mapping& memory, const DmaMapRequest& request) override {
    const std::lock_guard lock(state_->mutex);
    const std::uint64_t alignment = std::max<std::uint64_t>({request.bus_alignment, request.page_size, 4096});
    const std::uint64_t misalignment = state_->next_bus % alignment;
    const std::uint64_t padding = misalignment == 0 ? 0 : alignment - misalignment;
    const bool wraps = padding > ~std::uint64_t{0} - state_->next_bus;
    const std::uint64_t bus = state_->next_bus + padding;
    if (wraps || memory.size() == 0 || bus > request.dma_limit || memory.size() - 1 > request.dma_limit - bus) {
      return std::unexpected(make_error(Errc::out_of_range, "map for DMA", state_->name(),
                                        fmt::format("no bus address for 0x{:x} bytes below 0x{:x}", memory.size(),
                                                    request.dma_limit)));
    }
    state_->dma.push_back({bus, memory.data(), memory.size(), request.device_reads, request.device_writes});
    state_->next_bus = bus + memory.size();
    return BusAddress{bus};
  }
  bool retry_with_other_memory(const Error&) const override { return false; }
  Result<void> unmap(BusAddress address, const Mapping& memory) override {
    DeviceModel::UnmapHook hook;
    std::uint64_t size = 0;
    {
      const std::lock_guard lock(state_->mutex);
      auto it = std::find_if(state_->dma.begin(), state_->dma.end(), [&](const State::DmaMapping& mapping) {
        return mapping.bus == address.value && mapping.host == memory.data();
      });
      if (it == state_->dma.end()) {
        return std::unexpected(make_error(Errc::not_found, "unmap DMA", state_->name(),
                                          fmt::format("nothing mapped at bus address 0x{:x}", address.value)));
      }
      size = it->size;
      state_->dma.erase(it);
      hook = state_->unmap_hook;
    }
    // Unlocked: the hook may call back into the model (a device model's own checks).
    if (hook) hook(address.value, size);
    return {};
  }
  std::uint64_t mapped_bytes() const override {
    const std::lock_guard lock(state_->mutex);
    return state_->mapped_bytes();
  }

 private:
  std::shared_ptr<State> state_;
};

// A BAR handed to the driver: the model's Region, keeping the device's state (and with it
// the model) alive for as long as the driver holds the BAR.
class FakeBar final : public Region {
 public:
  FakeBar(std::unique_ptr<Region> model_region, std::shared_ptr<State> state)
      : Region(model_region->allowed_widths(), model_region->writable()), state_(std::move(state)),
        region_(std::move(model_region)) {}
  std::uint64_t size() const override { return region_->size(); }
  const std::string& name() const override { return region_->name(); }

 protected:
  Result<std::uint64_t> read_checked(Width width, std::uint64_t offset) const override {
    return region_->read(width, offset);
  }
  Result<void> write_checked(Width width, std::uint64_t offset, std::uint64_t value) override {
    return region_->write(width, offset, value);
  }

 private:
  std::shared_ptr<State> state_;  // declared first: outlives the region over its model
  std::unique_ptr<Region> region_;
};

class DeviceModelView final : public Device {
 public:
  explicit DeviceModelView(std::shared_ptr<State> state) : state_(std::move(state)) {}
  const Bdf& bdf() const override { return state_->options.bdf; }
  std::string backend_name() const override { return "fake"; }
  Result<std::unique_ptr<Region>> open_bar(unsigned bar) const override {
    const std::lock_guard lock(state_->mutex);
    if (bar > 5) {
      return std::unexpected(make_error(Errc::invalid_argument, "open BAR",
                                        fmt::format("{} BAR{}", state_->name(), bar), "a device has BARs 0 to 5"));
    }
    if (!state_->bars[bar]) {
      return std::unexpected(make_error(Errc::not_found, "open BAR", fmt::format("{} BAR{}", state_->name(), bar),
                                        "the fake device has no such BAR (DeviceModel::add_bar)"));
    }
    return std::unique_ptr<Region>(
        std::make_unique<FakeBar>(state_->bars[bar]->open_region(true, state_->bar_widths[bar]), state_));
  }
  Result<void> enable_bus_master(bool enable) const override {
    const std::lock_guard lock(state_->mutex);
    state_->bus_master = enable;
    return {};
  }
  Result<unsigned> vector_count(IrqKind kind) const override { return state_->vectors_offered(kind); }
  Result<std::unique_ptr<Interrupts>> enable_interrupts(IrqKind kind, unsigned count) const override {
    const unsigned offered = state_->vectors_offered(kind);
    if (count == 0 || count > offered) {
      return std::unexpected(make_error(Errc::out_of_range, "enable interrupts", state_->name(),
                                        fmt::format("{} {} vectors asked, the device has {}", count, to_string(kind),
                                                    offered)));
    }
    auto eventfds = sys::make_eventfds(count);
    if (!eventfds) return std::unexpected(eventfds.error());
    const std::lock_guard lock(state_->mutex);
    for (const auto& [enabled, vectors] : state_->vectors) {
      if (enabled == kind || (exclusive(enabled) && exclusive(kind))) {
        return std::unexpected(make_error(Errc::busy, "enable interrupts", state_->name(),
                                          fmt::format("{} is enabled", to_string(enabled))));
      }
    }
    auto& vectors = state_->vectors[kind];
    for (const int eventfd : eventfds->raw) vectors.push_back({eventfd});
    return std::unique_ptr<Interrupts>(std::make_unique<FakeInterrupts>(state_, kind, std::move(eventfds->owned)));
  }
  Result<DmaAllocator> dma_allocator() const override {
    return DmaAllocator::create(std::make_shared<FakeDmaBackend>(state_));
  }

 private:
  std::shared_ptr<State> state_;
};

// The mapping that holds all of [bus, bus + length) for `writes`, or null.
const State::DmaMapping* find_mapping(const State& state, std::uint64_t bus, std::uint64_t length, bool writes) {
  for (const auto& mapping : state.dma) {
    if (bus >= mapping.bus && bus - mapping.bus <= mapping.size && length <= mapping.size - (bus - mapping.bus) &&
        (writes ? mapping.device_writes : mapping.device_reads)) {
      return &mapping;
    }
  }
  return nullptr;
}

}  // namespace

DeviceModel::DeviceModel(const DeviceModelOptions& options) : state_(std::make_shared<State>()) {
  state_->options = options;
  state_->next_bus = options.first_bus_address;
}

RegisterModel& DeviceModel::add_bar(unsigned bar, std::uint64_t size) { return add_bar(bar, size, WidthSet::all()); }

RegisterModel& DeviceModel::add_bar(unsigned bar, std::uint64_t size, WidthSet widths) {
  const std::lock_guard lock(state_->mutex);
  const unsigned index = std::min(bar, 5u);
  auto& slot = state_->bars[index];
  if (slot) return *slot;
  slot = std::make_unique<RegisterModel>(size, fmt::format("{} BAR{}", state_->options.bdf.to_string(), bar));
  state_->bar_widths[index] = widths;
  return *slot;
}

std::unique_ptr<Device> DeviceModel::open() const { return std::make_unique<DeviceModelView>(state_); }

bool DeviceModel::fire(IrqKind kind, unsigned vector) const {
  const std::lock_guard lock(state_->mutex);
  if ((kind == IrqKind::msi || kind == IrqKind::msix) && !state_->bus_master) return false;
  auto found = state_->vectors.find(kind);
  if (found == state_->vectors.end() || vector >= found->second.size()) return false;
  State::Vector& entry = found->second[vector];
  if (entry.masked) {
    entry.pending = true;
    return false;
  }
  const std::uint64_t one = 1;
  return sys::write_once(entry.eventfd, std::as_bytes(std::span(&one, 1)), "fake interrupt").has_value();
}

namespace {

// Where [bus_address, + length) lies in host memory, for a device read or write: the checks
// of both directions, under the state's lock.
Result<std::byte*> reach(State& state, std::uint64_t bus_address, std::size_t length, bool writes) {
  const char* operation = writes ? "DMA write" : "DMA read";
  if (!state.bus_master) {
    ++state.dma_without_bus_master;
    return std::unexpected(make_error(Errc::permission_denied, operation, state.name(), "Bus Master Enable is off"));
  }
  const State::DmaMapping* mapping = find_mapping(state, bus_address, length, writes);
  if (mapping == nullptr) {
    ++state.dma_faults;
    return std::unexpected(make_error(Errc::not_found, operation,
                                      fmt::format("{} bus address 0x{:x}", state.name(), bus_address),
                                      fmt::format("0x{:x} bytes there are not mapped for the device to {} (an IOMMU "
                                                  "fault)",
                                                  length, writes ? "write" : "read")));
  }
  return mapping->host + (bus_address - mapping->bus);
}

}  // namespace

Result<void> DeviceModel::dma_read(std::uint64_t bus_address, std::span<std::byte> into) const {
  const std::lock_guard lock(state_->mutex);
  auto host = reach(*state_, bus_address, into.size(), false);
  if (!host) return std::unexpected(host.error());
  std::memcpy(into.data(), *host, into.size());
  return {};
}

Result<void> DeviceModel::dma_write(std::uint64_t bus_address, std::span<const std::byte> from) const {
  const std::lock_guard lock(state_->mutex);
  auto host = reach(*state_, bus_address, from.size(), true);
  if (!host) return std::unexpected(host.error());
  std::memcpy(*host, from.data(), from.size());
  return {};
}

bool DeviceModel::bus_master() const {
  const std::lock_guard lock(state_->mutex);
  return state_->bus_master;
}

std::uint64_t DeviceModel::dma_faults() const {
  const std::lock_guard lock(state_->mutex);
  return state_->dma_faults;
}

std::uint64_t DeviceModel::dma_without_bus_master() const {
  const std::lock_guard lock(state_->mutex);
  return state_->dma_without_bus_master;
}

void DeviceModel::on_unmap(UnmapHook hook) {
  const std::lock_guard lock(state_->mutex);
  state_->unmap_hook = std::move(hook);
}

std::uint64_t DeviceModel::dma_mapped_bytes() const {
  const std::lock_guard lock(state_->mutex);
  return state_->mapped_bytes();
}

bool DeviceModel::interrupts_enabled(IrqKind kind) const {
  const std::lock_guard lock(state_->mutex);
  return state_->vectors.contains(kind);
}

}  // namespace pcie::testing
