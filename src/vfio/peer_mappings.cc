// The three ways a window of a peer's BAR gets a bus address (pcie/peer_dma.h): through the
// IOMMU as the BAR's mapping (type1), as a dma-buf imported into the IOAS (iommufd), or as
// the BAR's own bus address (no IOMMU).
#include <sys/mman.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>

#include "pcie/config_space.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/iommufd_ioctls.h"
#include "src/sys/syscalls.h"
#include "src/sys/vfio_ioctls.h"
#include "src/vfio/iommu_mode.h"
#include "src/vfio/peer_mapping.h"
#include "src/vfio/state.h"

namespace pcie::detail {
namespace {

constexpr std::uint64_t kPage = 4096;

// type1: the window's mmap, mapped into the IOMMU by the container's DMA backend. The IOMMU
// mapping goes first, then the mmap.
class BarMappingInIommu final : public PeerMapping {
 public:
  BarMappingInIommu(std::shared_ptr<DmaBackend> backend, Mapping window, BusAddress address)
      : backend_(std::move(backend)), window_(std::move(window)), address_(address) {}
  ~BarMappingInIommu() override { (void)unmap(); }
  BusAddress address() const override { return address_; }
  PeerDmaPath path() const override { return PeerDmaPath::iommu_bar_mapping; }
  Result<void> unmap() override {
    if (!mapped_) return {};
    mapped_ = false;
    return backend_->unmap(address_, window_);
  }

 private:
  std::shared_ptr<DmaBackend> backend_;  // declared first: outlives the window's mmap
  Mapping window_;
  BusAddress address_;
  bool mapped_ = true;
};

// iommufd: the dma-buf stays open while the IOAS maps it; unmapped, then the IOVA given
// back, then the dma-buf closed.
class DmaBufInIoas final : public PeerMapping {
 public:
  DmaBufInIoas(std::shared_ptr<VfioContainerState> state, UniqueFd dma_buf, Iova iova, std::uint64_t length)
      : state_(std::move(state)), dma_buf_(std::move(dma_buf)), iova_(iova), length_(length) {}
  ~DmaBufInIoas() override { (void)unmap(); }
  BusAddress address() const override { return iova_; }
  PeerDmaPath path() const override { return PeerDmaPath::iommufd_dma_buf; }
  Result<void> unmap() override {
    if (!mapped_) return {};
    mapped_ = false;
    auto unmapped = sys::iommufd::ioas_unmap(state_->fd.get(), state_->ioas, iova_.value, length_);
    if (!unmapped) return std::unexpected(unmapped.error());  // the IOVA stays taken
    // A revoked import keeps its IOAS area (the kernel only drops the translation), so the
    // whole length is unmapped either way; anything else means the books disagree.
    if (*unmapped != length_) {
      return std::unexpected(make_error(Errc::io_error, "unmap peer window",
                                        fmt::format("IOVA {:#x} (iommufd)", iova_.value),
                                        fmt::format("the kernel unmapped {} of {} bytes", *unmapped, length_)));
    }
    const std::lock_guard lock(state_->mutex);
    state_->iovas->release(iova_, length_);
    state_->mapped_bytes -= std::min(state_->mapped_bytes, length_);
    return {};
  }

 private:
  std::shared_ptr<VfioContainerState> state_;  // declared first: /dev/iommu outlives the dma-buf
  UniqueFd dma_buf_;
  Iova iova_;
  std::uint64_t length_ = 0;
  bool mapped_ = true;
};

// No IOMMU: nothing to map or undo.
class BusAddressWindow final : public PeerMapping {
 public:
  explicit BusAddressWindow(BusAddress address) : address_(address) {}
  BusAddress address() const override { return address_; }
  PeerDmaPath path() const override { return PeerDmaPath::bus_address; }
  Result<void> unmap() override { return {}; }

 private:
  BusAddress address_;
};

// The DMA backend explains its failures as a buffer's; a window's differ. vfio_iommu_type1
// resolves a BAR's pages through its VM_PFNMAP mapping and neither pins nor counts them
// (reserved PFNs), so RLIMIT_MEMLOCK is never the reason; EFAULT is the peer's BAR not
// reachable through that mapping: vfio-pci's fault handler refuses while the peer's memory
// decoding is off or it is being reset.
Error explain_window_map_failure(const Error& raw, const PeerWindowRequest& request) {
  // Everything the backend said stays (an exhausted IOVA space keeps its hint); only what is
  // a buffer's alone is replaced.
  Error error = raw;
  error.operation = "map peer BAR";
  error.object = fmt::format("{} ({})", request.name, raw.object);
  switch (raw.sys_errno) {
    case EFAULT:
      error.code = Errc::device_disabled;
      error.reason = "the kernel could not reach the peer's BAR through its mapping (EFAULT): its memory decoding "
                     "is off, or it is being reset";
      error.hint = "turn the peer's memory decoding on (Memory Space Enable in its command register), then map the "
                   "window again";
      break;
    case ENOMEM:
      error.code = Errc::io_error;
      error.reason = "the kernel had no memory for the IOMMU mapping (ENOMEM; a BAR's pages are not pinned, so no "
                     "locked-memory limit applies)";
      error.hint = "free memory, or map fewer or smaller windows";
      break;
    case ENOSPC:
      error.code = Errc::busy;
      error.reason = "the kernel's limit on DMA mappings per container is reached";
      error.hint = "unmap other windows or buffers, or raise vfio_iommu_type1's dma_entry_limit";
      break;
    default: break;
  }
  return error;
}

// IOMMU_IOAS_MAP_FILE of the window's dma-buf, failed. vfio-pci exports a BAR whose memory
// decoding is off (Linux 7.3), but the export is revoked then, and the import answers
// ENODEV: not a removal.
Error explain_import_failure(const Error& raw, const PeerWindowRequest& request) {
  Error error = raw;
  error.object = fmt::format("{} ({})", request.name, raw.object);
  if (raw.sys_errno == ENODEV) {
    error.code = Errc::device_disabled;
    error.reason = "the peer's BAR is revoked (ENODEV): its memory decoding is off, or it is being reset";
    error.hint = "turn the peer's memory decoding on (Memory Space Enable in its command register), then map the "
                 "window again";
  }
  return error;
}

// The mmap-able part of the region that holds the whole window, if any.
bool inside_one_mappable_area(const PeerWindowRequest& request) {
  if (!request.region.mappable) return false;  // vfio-pci maps no BAR smaller than a page
  return std::any_of(request.region.mmap_areas.begin(), request.region.mmap_areas.end(),
                     [&](const VfioRegionInfo::Area& area) {
                       return request.offset >= area.offset && request.offset - area.offset <= area.size &&
                              request.length <= area.size - (request.offset - area.offset);
                     });
}

}  // namespace

Result<std::string> host_bridge_of(const SysfsPaths& paths, const Bdf& bdf) {
  auto target = sys::read_link(paths.device_dir(bdf));
  if (!target) return std::unexpected(target.error());
  std::optional<std::string> bridge;
  std::string_view rest = *target;
  while (!rest.empty()) {
    const std::size_t slash = rest.find('/');
    const std::string_view component = rest.substr(0, slash);
    if (is_host_bridge_directory(component)) bridge = std::string(component);
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  if (bridge) return *bridge;
  return std::unexpected(make_error(Errc::not_supported, "find host bridge", bdf.to_string(),
                                    fmt::format("its sysfs link ({}) names no pciDDDD:BB directory", *target),
                                    "without an IOMMU a peer window needs both devices below one known host bridge"));
}

Result<std::uint64_t> bar_bus_address(const SysfsPaths& paths, const Bdf& bdf, unsigned bar, bool require_decoding) {
  if (sys::path_exists(paths.device_dir(bdf) + "/physfn")) {
    // SR-IOV 1.1, 3.3.3 and 3.4.1: a VF's BAR registers read zero and its Memory Space
    // Enable is the PF's VF MSE; the address would have to come from the PF.
    return std::unexpected(make_error(Errc::not_supported, "map peer BAR", fmt::format("{} BAR{}", bdf.to_string(), bar),
                                      "it is an SR-IOV virtual function: its BAR's bus address is not in its own "
                                      "config space, so it cannot be checked without an IOMMU",
                                      "use an IOMMU (type1 or iommufd), or a physical function as the peer"));
  }
  auto config = ConfigSpace::open(paths, bdf);
  if (!config) return std::unexpected(config.error());
  auto ids = config->read32(0x00);
  auto command = config->read32(0x04);
  if (!ids || !command) return std::unexpected(!ids ? ids.error() : command.error());
  if (*ids == ~0u && *command == ~0u) {
    return std::unexpected(make_error(Errc::device_removed, "read BAR", bdf.to_string(),
                                      "its config space reads all ones: removed, or in reset"));
  }
  // A BAR that is not decoded answers no transaction at its address (PCIe Base 6.0,
  // 7.5.1.1.3, Memory Space Enable); as vfio-pci refuses the other modes' windows then.
  if (require_decoding && (*command & 0x2u) == 0) {
    return std::unexpected(make_error(Errc::device_disabled, "map peer BAR", fmt::format("{} BAR{}", bdf.to_string(), bar),
                                      "the device does not decode memory (Memory Space Enable is off in its command "
                                      "register)",
                                      "turn the peer's memory decoding on, then map the window again"));
  }
  auto low = config->read32(0x10 + 4 * bar);
  if (!low) return std::unexpected(low.error());
  const bool is_64bit = (*low & 0x6u) == 0x4u;
  std::uint64_t high = 0;
  if (is_64bit && bar < 5) {
    auto upper = config->read32(0x10 + 4 * (bar + 1));
    if (!upper) return std::unexpected(upper.error());
    high = *upper;
  }
  return (high << 32) | (*low & ~0xfull);
}

bool is_host_bridge_directory(std::string_view component) {
  if (!component.starts_with("pci")) return false;
  component.remove_prefix(3);
  const std::size_t colon = component.find(':');
  if (colon == std::string_view::npos || colon < 4 || component.size() != colon + 3) return false;
  return std::all_of(component.begin(), component.end(),
                     [](char c) { return c == ':' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

Result<std::unique_ptr<PeerMapping>> map_bar_through_iommu(std::shared_ptr<DmaBackend> backend,
                                                           const PeerWindowRequest& request) {
  if (!inside_one_mappable_area(request)) {
    return std::unexpected(make_error(Errc::not_supported, "map peer BAR", request.name,
                                      "vfio-pci does not let this part of the BAR be mapped (it offers no mapping of "
                                      "the BAR, or only of other parts of it)",
                                      "choose a window inside the parts VfioRegionInfo::mmap_areas lists"));
  }
  if (request.dma.device_writes && !request.region.writable) {
    return std::unexpected(make_error(Errc::permission_denied, "map peer BAR", request.name,
                                      "the region is read-only", "map it with device_writes = false"));
  }
  // The IOMMU mapping needs the access the device is given in the CPU mapping too.
  const int prot = PROT_READ | (request.dma.device_writes ? PROT_WRITE : 0);
  auto window = sys::map_shared(request.peer->fd.get(), request.length, request.region.file_offset + request.offset,
                                prot, request.name);
  if (!window) return std::unexpected(window.error());
  auto address = backend->map(*window, request.dma);
  if (!address) return std::unexpected(explain_window_map_failure(address.error(), request));
  return std::make_unique<BarMappingInIommu>(std::move(backend), std::move(*window), *address);
}

Result<std::unique_ptr<PeerMapping>> map_bar_as_dma_buf(const std::shared_ptr<VfioContainerState>& state,
                                                        const PeerWindowRequest& request) {
  auto dma_buf = sys::vfio::export_dma_buf(request.peer->fd.get(), request.region.index, request.offset,
                                           request.length, request.name);
  if (!dma_buf) return std::unexpected(dma_buf.error());
  auto iova = [&]() -> Result<Iova> {
    const std::lock_guard lock(state->mutex);
    if (!state->iovas) return std::unexpected(no_iova_ranges_error());
    return state->iovas->allocate(request.length, std::max(kPage, state->iova_alignment), request.dma.dma_limit);
  }();
  if (!iova) return std::unexpected(iova.error());
  auto mapped = sys::iommufd::ioas_map_file_fixed(state->fd.get(), state->ioas, dma_buf->get(), 0, iova->value,
                                                  request.length, request.dma.device_reads, request.dma.device_writes);
  const std::lock_guard lock(state->mutex);
  if (!mapped) {
    state->iovas->release(*iova, request.length);
    return std::unexpected(explain_import_failure(mapped.error(), request));
  }
  state->mapped_bytes += request.length;  // as the type1 backend counts a window
  return std::make_unique<DmaBufInIoas>(state, std::move(*dma_buf), *iova, request.length);
}

Result<std::unique_ptr<PeerMapping>> map_bar_by_bus_address(const VfioContainerState& state,
                                                            const PeerWindowRequest& request) {
  // Without an IOMMU the transaction is routed by address alone: only below one host
  // bridge is the BAR's bus address the one the initiator's bus decodes to it. Unknown is
  // refused, not assumed.
  auto initiator_bridge = host_bridge_of(state.paths.sysfs, request.initiator->bdf);
  if (!initiator_bridge) return std::unexpected(initiator_bridge.error());
  auto peer_bridge = host_bridge_of(state.paths.sysfs, request.peer->bdf);
  if (!peer_bridge) return std::unexpected(peer_bridge.error());
  if (*initiator_bridge != *peer_bridge) {
    return std::unexpected(make_error(
        Errc::not_supported, "map peer BAR", request.name,
        fmt::format("without an IOMMU, {} (below {}) reaches no BAR below another host bridge ({})",
                    request.initiator->bdf.to_string(), *initiator_bridge, *peer_bridge),
        "put both devices below one host bridge, or use an IOMMU"));
  }
  auto bus = bar_bus_address(state.paths.sysfs, request.peer->bdf, request.bar);
  if (!bus) return std::unexpected(bus.error());
  if (*bus != request.bar_info.bus_address) {
    return std::unexpected(make_error(
        Errc::not_supported, "map peer BAR", request.name,
        fmt::format("the host bridge translates: the device decodes the BAR at {:#x}, the CPU sees it at {:#x}",
                    *bus, request.bar_info.bus_address),
        "use an IOMMU"));
  }
  const std::uint64_t first = *bus + request.offset;
  const std::uint64_t last = first + (request.length - 1);
  if (first < *bus || last < first || last > request.dma.dma_limit) {
    return std::unexpected(make_error(Errc::out_of_range, "map peer BAR", request.name,
                                      fmt::format("the window lies at {:#x}-{:#x}, above the device's DMA limit {:#x}",
                                                  first, last, request.dma.dma_limit)));
  }
  return std::make_unique<BusAddressWindow>(BusAddress{first});
}

}  // namespace pcie::detail
