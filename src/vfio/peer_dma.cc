// map_peer_bar and PeerDmaWindow (pcie/peer_dma.h): the checks every IOMMU mode shares,
// then the container's mode maps the window (src/vfio/peer_mappings.cc).
#include "pcie/peer_dma.h"

#include <fmt/format.h>

#include <utility>

#include "pcie/vfio.h"
#include "src/pci/resource_file.h"
#include "src/vfio/peer_mapping.h"
#include "src/vfio/state.h"

namespace pcie {

namespace detail {

struct PeerWindowState {
  std::shared_ptr<VfioDeviceState> peer;  // declared first: the peer's file outlives the mapping
  std::unique_ptr<PeerMapping> mapping;
  std::uint64_t size = 0;
  std::string name;
};

}  // namespace detail

namespace {

constexpr std::uint64_t kPage = 4096;

Error empty_window_error(std::string operation) {
  return make_error(Errc::invalid_argument, std::move(operation), "peer DMA window",
                    "the window is empty (default-constructed, moved from or released)");
}

// The window's bounds against the BAR: page multiples, nonzero, inside (overflow-safe).
Result<void> check_window(const std::string& bar_name, std::uint64_t bar_size, std::uint64_t offset,
                          std::uint64_t length) {
  const std::string object = fmt::format("{} [{:#x}, +{:#x})", bar_name, offset, length);
  if (length == 0 || offset % kPage != 0 || length % kPage != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "map peer BAR", object,
                                      "the offset and length must be multiples of 4096 and the length nonzero "
                                      "(an IOMMU maps whole pages)"));
  }
  if (offset > bar_size || length > bar_size - offset) {
    return std::unexpected(make_error(Errc::out_of_range, "map peer BAR", object,
                                      fmt::format("the BAR is {:#x} bytes", bar_size)));
  }
  return {};
}

}  // namespace

std::string_view to_string(PeerDmaPath path) {
  switch (path) {
    case PeerDmaPath::iommu_bar_mapping: return "type1 (the BAR's mapping)";
    case PeerDmaPath::iommufd_dma_buf: return "iommufd (dma-buf)";
    case PeerDmaPath::bus_address: return "no IOMMU (the BAR's bus address)";
  }
  return "?";
}

PeerDmaWindow& PeerDmaWindow::operator=(PeerDmaWindow&& other) noexcept {
  if (this != &other) {
    (void)release();
    state_ = std::move(other.state_);
  }
  return *this;
}

PeerDmaWindow::~PeerDmaWindow() { (void)release(); }

BusAddress PeerDmaWindow::bus_address() const { return state_ ? state_->mapping->address() : BusAddress{}; }
std::uint64_t PeerDmaWindow::size() const { return state_ ? state_->size : 0; }
PeerDmaPath PeerDmaWindow::path() const { return state_ ? state_->mapping->path() : PeerDmaPath::bus_address; }

const std::string& PeerDmaWindow::name() const {
  static const std::string empty;
  return state_ ? state_->name : empty;
}

Result<BusAddress> PeerDmaWindow::bus_address_of(std::uint64_t offset, std::uint64_t length) const {
  if (!state_) return std::unexpected(empty_window_error("translate to bus address"));
  if (offset > state_->size || length > state_->size - offset) {
    return std::unexpected(make_error(Errc::out_of_range, "translate to bus address",
                                      fmt::format("{} +{:#x}, {:#x} bytes", state_->name, offset, length),
                                      fmt::format("the window is {:#x} bytes", state_->size)));
  }
  return BusAddress{state_->mapping->address().value + offset};
}

Result<void> PeerDmaWindow::release() {
  if (!state_) return {};
  Result<void> result = state_->mapping->unmap();
  state_.reset();
  return result;
}

Result<PeerDmaWindow> map_peer_bar(const VfioDevice& initiator, const VfioDevice& peer, unsigned bar,
                                   std::uint64_t offset, std::uint64_t length, const PeerDmaOptions& options) {
  if (!initiator.state_ || !peer.state_) return std::unexpected(detail::empty_device_error("map a peer BAR for"));
  const std::string bar_name = fmt::format("{} BAR{}", peer.bdf().to_string(), bar);
  if (bar > 5) {
    return std::unexpected(make_error(Errc::invalid_argument, "map peer BAR", bar_name, "BARs are numbered 0 to 5"));
  }
  const auto& container = peer.state_->container;
  if (initiator.state_->container != container) {
    return std::unexpected(make_error(Errc::invalid_argument, "map peer BAR", bar_name,
                                      fmt::format("{} and {} are open in different VFIO containers, so they share "
                                                  "no DMA address space",
                                                  initiator.bdf().to_string(), peer.bdf().to_string()),
                                      "open both devices through one VfioContainer"));
  }
  // The BAR's kind and size from sysfs (an I/O BAR cannot be a DMA target); its region
  // from VFIO.
  auto bars = sysfs::read_bars(container->paths.sysfs, peer.bdf());
  if (!bars) return std::unexpected(bars.error());
  const BarInfo* info = nullptr;
  for (const BarInfo& candidate : *bars) {
    if (candidate.index == bar) info = &candidate;
  }
  if (info == nullptr) {
    return std::unexpected(make_error(Errc::not_found, "map peer BAR", bar_name, "the device does not implement it"));
  }
  if (info->space == BarInfo::Space::io) {
    return std::unexpected(make_error(Errc::not_supported, "map peer BAR", bar_name,
                                      "an I/O-space BAR cannot be a DMA target"));
  }
  auto region = peer.region_info(kVfioBar0Region + bar);
  if (!region) return std::unexpected(region.error());
  if (auto inside = check_window(bar_name, region->size, offset, length); !inside) {
    return std::unexpected(inside.error());
  }
  detail::PeerWindowRequest request{
      .peer = peer.state_.get(),
      .initiator = initiator.state_.get(),
      .bar = bar,
      .bar_info = *info,
      .region = *region,
      .offset = offset,
      .length = length,
      .dma = {.page_size = kPage,
              .dma_limit = options.dma_limit,
              .device_reads = options.device_reads,
              .device_writes = options.device_writes},
      .name = fmt::format("{} [{:#x}, {:#x})", bar_name, offset, offset + length)};
  auto mapping = container->mode->map_peer_window(container, request);
  if (!mapping) return std::unexpected(mapping.error());
  auto state = std::make_shared<detail::PeerWindowState>();
  state->peer = peer.state_;
  state->mapping = std::move(*mapping);
  state->size = length;
  state->name = std::move(request.name);
  return PeerDmaWindow(std::move(state));
}

}  // namespace pcie
