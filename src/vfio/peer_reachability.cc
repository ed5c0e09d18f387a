// peer_reachability (pcie/peer_dma.h): which of map_peer_bar's paths could give a device a
// window of another's BAR here, told from sysfs, procfs and config space without opening
// anything.
#include <fmt/format.h>

#include <charconv>
#include <string>

#include "pcie/config_space.h"
#include "pcie/discovery.h"
#include "pcie/peer_dma.h"
#include "pcie/vfio.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"
#include "src/vfio/peer_mapping.h"

namespace pcie {
namespace {

constexpr std::uint64_t kPage = 4096;

// "major.minor" of the running kernel; nullopt when it cannot be read or parsed.
std::optional<std::pair<unsigned, unsigned>> kernel_version(const SysfsPaths& paths) {
  auto text = sys::read_text_file(paths.kernel_release_file, 256);
  if (!text) return std::nullopt;
  unsigned major = 0, minor = 0;
  const char* at = text->data();
  const char* end = text->data() + text->size();
  auto [after_major, ec1] = std::from_chars(at, end, major);
  if (ec1 != std::errc() || after_major == end || *after_major != '.') return std::nullopt;
  auto [after_minor, ec2] = std::from_chars(after_major + 1, end, minor);
  if (ec2 != std::errc()) return std::nullopt;
  return std::pair{major, minor};
}

// Why no window of this BAR can be made in any mode, or nullopt when one can.
std::optional<std::string> bar_refusal(const std::optional<BarInfo>& bar, unsigned index) {
  if (!bar) return fmt::format("BAR{} is not implemented", index);
  if (bar->space == BarInfo::Space::io) return fmt::format("BAR{} is I/O space: DMA reaches memory only", index);
  if (!bar->assigned) return fmt::format("BAR{} has no address (the kernel could not assign it)", index);
  if (bar->size < kPage) return fmt::format("BAR{} is {} bytes, less than the page a window needs", index, bar->size);
  return std::nullopt;
}

std::string describe_bar(const Bdf& peer, const std::optional<BarInfo>& bar, unsigned index) {
  if (!bar || bar->space == BarInfo::Space::io) return fmt::format("{} BAR{}", peer.to_string(), index);
  return fmt::format("{} BAR{} ({} bytes, {}-bit {}memory)", peer.to_string(), index, bar->size, bar->is_64bit ? 64 : 32,
                     bar->prefetchable ? "prefetchable " : "");
}

// Without an IOMMU: one host bridge, no translation. Memory decoding off is a note only:
// opening the peer through VFIO turns it on.
PeerPathCheck bus_address_check(const VfioPaths& paths, const Bdf& initiator, const Bdf& peer, const BarInfo& bar,
                                unsigned index, std::vector<std::string>& notes) {
  PeerPathCheck check{PeerDmaPath::bus_address, false, {}};
  auto initiator_bridge = detail::host_bridge_of(paths.sysfs, initiator);
  auto peer_bridge = detail::host_bridge_of(paths.sysfs, peer);
  if (!initiator_bridge || !peer_bridge) {
    const Error& error = !initiator_bridge ? initiator_bridge.error() : peer_bridge.error();
    check.reason = fmt::format("the host bridge cannot be told ({}: {})", error.object, error.reason);
    return check;
  }
  if (*initiator_bridge != *peer_bridge) {
    check.reason = fmt::format("the devices sit below different host bridges ({} and {}): use an IOMMU",
                               *initiator_bridge, *peer_bridge);
    return check;
  }
  auto bus = detail::bar_bus_address(paths.sysfs, peer, index, /*require_decoding=*/false);
  if (!bus) {
    check.reason = bus.error().hint.empty() ? bus.error().reason
                                            : fmt::format("{} ({})", bus.error().reason, bus.error().hint);
    return check;
  }
  if (*bus != bar.bus_address) {
    check.reason = fmt::format("the host bridge translates: the device decodes the BAR at {:#x}, the CPU sees it at "
                               "{:#x}",
                               *bus, bar.bus_address);
    return check;
  }
  check.possible = true;
  check.reason = fmt::format("no IOMMU translates for {}; both devices sit below {}; the BAR's bus address is {:#x}",
                             initiator.to_string(), *initiator_bridge, *bus);
  notes.push_back("both devices go to vfio-pci in VFIO's no-IOMMU mode (vfio.enable_unsafe_noiommu_mode=1) and "
                  "into one VfioContainer::open_without_iommu container");
  auto config = ConfigSpace::open(paths.sysfs, peer);
  auto command = config ? config->read16(0x04) : Result<std::uint16_t>(std::unexpected(config.error()));
  if (command && (*command & 0x2u) == 0) {
    notes.push_back(fmt::format("{} does not decode memory now (Memory Space Enable off): opening it through VFIO "
                                "turns it on, and map_peer_bar refuses it while off",
                                peer.to_string()));
  }
  return check;
}

// The paths through an IOMMU: type1 always, iommufd from Linux 6.19 with /dev/iommu; and
// which one a container opened with the defaults would take for the initiator.
void iommu_checks(const VfioPaths& paths, const Bdf& initiator, PeerReachability& found) {
  found.paths.push_back({PeerDmaPath::iommu_bar_mapping, true,
                         "the IOMMU maps the BAR's VFIO mapping (both devices in one type1 container; not through "
                         "iommufd's /dev/vfio/vfio emulation, which cannot map a BAR)"});
  PeerPathCheck iommufd{PeerDmaPath::iommufd_dma_buf, false, {}};
  const auto version = kernel_version(paths.sysfs);
  if (!sys::path_exists(paths.dev_iommu)) {
    iommufd.reason = fmt::format("no {}: a kernel without IOMMUFD, or its module not loaded", paths.dev_iommu);
  } else if (!version) {
    iommufd.reason = fmt::format("the kernel's release cannot be read from {}", paths.sysfs.kernel_release_file);
  } else if (version->first < 6 || (version->first == 6 && version->second < 19)) {
    iommufd.reason = fmt::format("Linux {}.{} cannot export a BAR as a dma-buf (6.19 and later can)", version->first,
                                 version->second);
  } else {
    iommufd.possible = true;
    iommufd.reason = fmt::format("Linux {}.{} exports the BAR as a dma-buf for the IOAS (if built with "
                                 "CONFIG_VFIO_PCI_DMABUF)",
                                 version->first, version->second);
  }
  const bool dma_buf = iommufd.possible;
  found.paths.push_back(std::move(iommufd));
  auto chosen = choose_vfio_backend_for(initiator, paths);
  if (!chosen) {
    found.notes.push_back(fmt::format("which backend a container takes cannot be told ({})", chosen.error().reason));
  } else if (chosen->backend == VfioIommuBackend::iommufd && !dma_buf) {
    found.notes.push_back(fmt::format("a container opened with the defaults takes iommufd here ({}), which cannot map "
                                      "this window: ask for type1 (PCIE_VFIO_BACKEND=type1, or "
                                      "VfioContainerOptions::backend)",
                                      chosen->reason));
  } else {
    found.notes.push_back(fmt::format("a container opened with the defaults takes {}", chosen->reason));
  }
}

// Drivers to bind, and the BAR's MSI-X parts a window must avoid.
void add_notes(const VfioPaths& paths, const DeviceInfo& initiator, const DeviceInfo& peer, unsigned index,
               const BarInfo& bar, PeerReachability& found) {
  for (const DeviceInfo* device : {&initiator, &peer}) {
    if (device->driver.value_or("") != "vfio-pci") {
      found.notes.push_back(fmt::format("bind {} to vfio-pci (pciectl bind {} vfio-pci; it is on {})",
                                        device->bdf.to_string(), device->bdf.to_string(),
                                        printable(device->driver.value_or("no driver"))));
    }
  }
  auto config = ConfigSpace::open(paths.sysfs, peer.bdf);
  auto snapshot = config ? config->snapshot() : Result<std::vector<std::uint8_t>>(std::unexpected(config.error()));
  if (!snapshot) {
    found.notes.push_back(fmt::format("whether MSI-X lives in BAR{} cannot be told ({})", index, snapshot.error().reason));
    return;
  }
  auto avoided = detail::check_window_avoids_msix(*snapshot, index, 0, bar.size, "the whole BAR");
  if (avoided) return;
  if (avoided.error().code == Errc::invalid_argument) {
    found.notes.push_back(fmt::format("keep windows off MSI-X's part: {}", avoided.error().reason));
  } else {
    found.notes.push_back(fmt::format("whether MSI-X lives in BAR{} cannot be told ({}; root reads all of config "
                                      "space)",
                                      index, avoided.error().reason));
  }
}

}  // namespace

bool PeerReachability::any_possible() const {
  for (const PeerPathCheck& path : paths) {
    if (path.possible) return true;
  }
  return false;
}

Result<PeerReachability> peer_reachability(const Bdf& initiator, const Bdf& peer, unsigned bar, const VfioPaths& paths) {
  if (bar > 5) {
    return std::unexpected(make_error(Errc::invalid_argument, "check peer DMA", fmt::format("BAR{}", bar),
                                      "a device has BARs 0 to 5"));
  }
  if (initiator == peer) {
    return std::unexpected(make_error(Errc::invalid_argument, "check peer DMA", initiator.to_string(),
                                      "the initiator is its own peer", "a device reaches its own BARs without DMA"));
  }
  DiscoveryOptions options;
  options.paths = paths.sysfs;
  auto initiator_info = describe(initiator, options);
  if (!initiator_info) return std::unexpected(initiator_info.error());
  auto peer_info = describe(peer, options);
  if (!peer_info) return std::unexpected(peer_info.error());
  std::optional<BarInfo> bar_info;
  for (const BarInfo& candidate : peer_info->bars) {
    if (candidate.index == bar) bar_info = candidate;
  }
  PeerReachability found;
  found.target = describe_bar(peer, bar_info, bar);
  if (const auto refusal = bar_refusal(bar_info, bar)) {
    for (PeerDmaPath path : {PeerDmaPath::iommu_bar_mapping, PeerDmaPath::iommufd_dma_buf, PeerDmaPath::bus_address}) {
      found.paths.push_back({path, false, *refusal});
    }
    return found;
  }
  // <device>/iommu links to the IOMMU translating for the device (iommu_device_link); VFIO's
  // no-IOMMU groups have none. One container holds devices of one kind only.
  const bool initiator_iommu = sys::path_exists(paths.sysfs.device_dir(initiator) + "/iommu");
  const bool peer_iommu = sys::path_exists(paths.sysfs.device_dir(peer) + "/iommu");
  if (initiator_iommu != peer_iommu) {
    const std::string mixed =
        fmt::format("{} is behind an IOMMU and {} is not: no container holds both (one with an IOMMU refuses a "
                    "device in no-IOMMU mode, and the other way round)",
                    (initiator_iommu ? initiator : peer).to_string(), (initiator_iommu ? peer : initiator).to_string());
    for (PeerDmaPath path : {PeerDmaPath::iommu_bar_mapping, PeerDmaPath::iommufd_dma_buf, PeerDmaPath::bus_address}) {
      found.paths.push_back({path, false, mixed});
    }
  } else if (initiator_iommu) {
    iommu_checks(paths, initiator, found);
    found.paths.push_back({PeerDmaPath::bus_address, false,
                           fmt::format("{} is behind an IOMMU: it reaches what the IOMMU maps, by IOVA",
                                       initiator.to_string())});
  } else {
    const std::string none = fmt::format("no IOMMU translates for {}", initiator.to_string());
    found.paths.push_back({PeerDmaPath::iommu_bar_mapping, false, none});
    found.paths.push_back({PeerDmaPath::iommufd_dma_buf, false, none});
    found.paths.push_back(bus_address_check(paths, initiator, peer, *bar_info, bar, found.notes));
  }
  add_notes(paths, *initiator_info, *peer_info, bar, *bar_info, found);
  return found;
}

}  // namespace pcie
