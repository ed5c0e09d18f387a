// map_peer_bar and PeerDmaWindow (pcie/peer_dma.h): the checks every IOMMU mode shares,
// then the container's mode maps the window (src/vfio/peer_mappings.cc).
#include "pcie/peer_dma.h"

#include <fcntl.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "pcie/byte_order.h"
#include "pcie/capabilities.h"
#include "pcie/config_space.h"
#include "pcie/vfio.h"
#include "src/pci/resource_file.h"
#include "src/sys/syscalls.h"
#include "src/vfio/peer_mapping.h"
#include "src/vfio/state.h"

namespace pcie {

namespace detail {

struct PeerWindowState {
  std::shared_ptr<VfioDeviceState> peer;  // declared first: the peer's file outlives the mapping
  std::unique_ptr<PeerMapping> mapping;
  std::uint64_t size = 0;
  std::string name;
  std::shared_ptr<VfioContainerState> container;  // whose devices the window serves
  bool device_reads = false, device_writes = false;
  std::uint64_t peer_resets_at_map = 0;  // VfioDeviceState::resets before it was mapped
  // The peer's sysfs config file, opened at map time, for check()'s 2-byte read of the
  // command register (ConfigSpace::open would probe the whole config space each time).
  UniqueFd peer_config;
  // SR-IOV VF peers: their own Memory Space Enable reads 0 (the PF's VF MSE governs them:
  // SR-IOV 1.1, 3.4.1), so check() cannot read decoding from their command register.
  bool peer_is_virtual_function = false;
  // iommufd: why the kernel revoked the import, from the check that first saw it; every
  // later check returns it again (the import stays unmapped).
  mutable std::mutex revoked_mutex;
  mutable std::optional<Error> revoked;
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

bool PeerDmaWindow::usable_by(const VfioDevice& device) const {
  return state_ && device.state_ && device.state_->container == state_->container;
}
bool PeerDmaWindow::device_reads() const { return state_ && state_->device_reads; }
bool PeerDmaWindow::device_writes() const { return state_ && state_->device_writes; }

Result<void> PeerDmaWindow::check() const {
  if (!state_) return std::unexpected(empty_window_error("check peer window"));
  const detail::PeerWindowState& window = *state_;
  // iommufd unmaps an import for good when its dma-buf is revoked: it zeroes the import's
  // length and does not map it again when vfio-pci lifts the revocation (Linux 7.3,
  // drivers/iommu/iommufd/pages.c, iopt_revoke_notify). The first error that shows it
  // stays the window's answer.
  const bool dma_buf = window.mapping->path() == PeerDmaPath::iommufd_dma_buf;
  std::lock_guard lock(window.revoked_mutex);
  if (window.revoked) return std::unexpected(*window.revoked);
  const auto fail = [&](Error error) {
    if (dma_buf) window.revoked = error;
    return std::unexpected(std::move(error));
  };
  const std::string revoked_import = "the kernel revoked the window's dma-buf import: ";
  if (dma_buf && window.peer->resets.load() != window.peer_resets_at_map) {
    return fail(make_error(Errc::device_disabled, "check peer window", window.name,
                           revoked_import + "the peer was reset after the window was mapped",
                           "release the window and map it again"));
  }
  // The command register as the hardware holds it (PCIe Base 6.0, 7.5.1.1.3: Memory Space
  // Enable is bit 1; config space is little-endian). A read that fails for another reason
  // than the device's removal says nothing about revocation: its own error.
  std::uint8_t bytes[2] = {};
  auto read = sys::pread_exact(window.peer_config.get(), std::as_writable_bytes(std::span(bytes)), cfg::kCommand,
                               window.name + ": the peer's sysfs config");
  if (!read && read.error().code != Errc::device_removed) return std::unexpected(read.error());
  const std::uint16_t command = read ? load_le16(bytes, 0) : 0xffff;
  if (command == 0xffff) {
    return fail(make_error(Errc::device_removed, "check peer window", window.name,
                           "the peer's config space reads all ones or is gone: removed, or in reset"));
  }
  if (!window.peer_is_virtual_function && (command & cfg::kCommandMemorySpace) == 0) {
    if (dma_buf) {
      return fail(make_error(Errc::device_disabled, "check peer window", window.name,
                             revoked_import + "the peer does not decode memory (Memory Space Enable is off)",
                             "release the window and map it again, once the peer decodes memory"));
    }
    return std::unexpected(make_error(Errc::device_disabled, "check peer window", window.name,
                                      "the peer does not decode memory (Memory Space Enable is off)",
                                      "turn the peer's memory decoding back on before the next transfer"));
  }
  return {};
}

const Bdf& PeerDmaWindow::peer() const {
  static const Bdf none{};
  return state_ ? state_->peer->bdf : none;
}

Result<void> PeerDmaWindow::release() {
  if (!state_) return {};
  Result<void> result = state_->mapping->unmap();
  state_.reset();
  return result;
}

namespace detail {

Result<void> check_window_avoids_msix(std::span<const std::uint8_t> config, unsigned bar, std::uint64_t offset,
                                     std::uint64_t length, const std::string& name) {
  const CapabilityWalk walk = walk_standard_capabilities(config);
  if (walk.problem) {
    if (walk.problem->code == Errc::device_removed) return std::unexpected(*walk.problem);
    return std::unexpected(make_error(Errc::malformed, "map peer BAR", name,
                                      "the peer's capability list cannot be walked: " + walk.problem->reason));
  }
  const auto msix = find_capability(walk.capabilities, Capability::Space::standard, cap::kMsiX);
  if (!msix) return {};
  const std::size_t at = msix->offset;
  if (at + 12 > config.size()) {
    return std::unexpected(make_error(Errc::malformed, "map peer BAR", name, "the MSI-X capability is cut short"));
  }
  const auto dword = [&](std::size_t from) {
    std::uint32_t value = 0;
    for (unsigned i = 0; i < 4; ++i) value |= std::uint32_t{config[from + i]} << (8 * i);
    return value;
  };
  // PCIe 6.0, 7.7.2: Message Control bits 10:0 are the table size minus one; the Table and
  // PBA registers hold a BAR indicator in bits 2:0 and a QWORD-aligned offset above.
  const std::uint64_t entries = (dword(at) >> 16 & 0x7ff) + 1;
  const struct {
    const char* what;
    std::uint32_t word;
    std::uint64_t bytes;
  } structures[] = {{"MSI-X table", dword(at + 4), entries * 16},
                    {"MSI-X pending-bit array", dword(at + 8), (entries + 63) / 64 * 8}};
  for (const auto& structure : structures) {
    const std::uint64_t start = structure.word & ~0x7u;
    if ((structure.word & 0x7u) != bar || start >= offset + length || offset >= start + structure.bytes) continue;
    return std::unexpected(make_error(Errc::invalid_argument, "map peer BAR", name,
                                      fmt::format("the window covers the peer's {} ({:#x}-{:#x}): a device writing "
                                                  "there rewrites its interrupt messages",
                                                  structure.what, start, start + structure.bytes - 1),
                                      "choose a window outside it"));
  }
  return {};
}

}  // namespace detail

namespace {

Error refusal(Errc code, const std::string& object, std::string reason, std::string hint = "") {
  return make_error(code, "map peer BAR", object, std::move(reason), std::move(hint));
}

// The checks that need neither device's files: BAR index, directions, one container.
Result<void> check_request(const VfioDevice& initiator, const VfioDevice& peer, unsigned bar,
                           const PeerDmaOptions& options, const std::string& bar_name) {
  if (bar > 5) return std::unexpected(refusal(Errc::invalid_argument, bar_name, "BARs are numbered 0 to 5"));
  if (!options.device_reads && !options.device_writes) {
    return std::unexpected(refusal(Errc::invalid_argument, bar_name, "the initiator may neither read nor write it",
                                   "set device_reads, device_writes or both"));
  }
  if (initiator.bdf() == peer.bdf()) {
    return std::unexpected(refusal(Errc::invalid_argument, bar_name, "the initiator and the peer are one device",
                                   "a controller's own memory (an NVMe CMB) is addressed by its BAR's bus address, "
                                   "not through the IOMMU"));
  }
  return {};
}

// BAR `bar` as sysfs describes it: an implemented, assigned memory BAR.
Result<BarInfo> memory_bar(const SysfsPaths& paths, const Bdf& bdf, unsigned bar, const std::string& bar_name) {
  auto bars = sysfs::read_bars(paths, bdf);
  if (!bars) return std::unexpected(bars.error());
  const auto found = std::find_if(bars->begin(), bars->end(), [&](const BarInfo& info) { return info.index == bar; });
  if (found == bars->end()) {
    return std::unexpected(refusal(Errc::not_found, bar_name, "the device does not implement it"));
  }
  if (found->space == BarInfo::Space::io) {
    return std::unexpected(refusal(Errc::not_supported, bar_name, "an I/O-space BAR cannot be a DMA target"));
  }
  if (!found->assigned) {
    return std::unexpected(refusal(Errc::not_supported, bar_name, "the kernel gave the BAR no address",
                                   "dmesg says why ('BAR n: no space'): boot with pci=realloc"));
  }
  return *found;
}

// The window must not cover the peer's MSI-X table or pending-bit array: a device writing
// there rewrites the peer's interrupt messages. The capability is read through VFIO
// (readable wherever the device could be opened, unlike sysfs beyond 64 bytes).
Result<void> check_msix_overlap(const VfioDevice& peer, unsigned bar, std::uint64_t offset, std::uint64_t length,
                                const std::string& name) {
  auto config_region = peer.region_info(kVfioConfigRegion);
  if (!config_region) return std::unexpected(config_region.error());
  std::vector<std::uint8_t> config(std::min<std::uint64_t>(config_region->size, 256));
  if (auto read = sys::pread_exact(peer.fd(), std::as_writable_bytes(std::span(config)), config_region->file_offset,
                                   peer.bdf().to_string() + " config");
      !read) {
    return std::unexpected(read.error());
  }
  return detail::check_window_avoids_msix(config, bar, offset, length, name);
}

}  // namespace

Result<PeerDmaWindow> map_peer_bar(const VfioDevice& initiator, const VfioDevice& peer, unsigned bar,
                                   std::uint64_t offset, std::uint64_t length, const PeerDmaOptions& options) {
  if (!initiator.state_ || !peer.state_) return std::unexpected(detail::empty_device_error("map a peer BAR for"));
  const std::string bar_name = fmt::format("{} BAR{}", peer.bdf().to_string(), bar);
  if (auto valid = check_request(initiator, peer, bar, options, bar_name); !valid) return std::unexpected(valid.error());
  const auto& container = peer.state_->container;
  if (initiator.state_->container != container) {
    return std::unexpected(refusal(Errc::invalid_argument, bar_name,
                                   fmt::format("{} and {} are open in different VFIO containers, so they share no "
                                               "DMA address space",
                                               initiator.bdf().to_string(), peer.bdf().to_string()),
                                   "open both devices through one VfioContainer"));
  }
  auto info = memory_bar(container->paths.sysfs, peer.bdf(), bar, bar_name);
  if (!info) return std::unexpected(info.error());
  auto region = peer.region_info(kVfioBar0Region + bar);
  if (!region) return std::unexpected(region.error());
  if (auto inside = check_window(bar_name, region->size, offset, length); !inside) return std::unexpected(inside.error());
  const std::string name = fmt::format("{} [{:#x}, {:#x})", bar_name, offset, offset + length);
  if (auto clear = check_msix_overlap(peer, bar, offset, length, name); !clear) return std::unexpected(clear.error());
  const detail::PeerWindowRequest request{
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
      .name = name};
  auto config = sys::open_file(container->paths.sysfs.device_dir(peer.bdf()) + "/config", O_RDONLY | O_CLOEXEC,
                               "open the peer's config space");
  if (!config) return std::unexpected(config.error());
  const std::uint64_t resets = peer.state_->resets.load();  // before: a reset during the mapping counts
  auto mapping = container->mode->map_peer_window(container, request);
  if (!mapping) return std::unexpected(mapping.error());
  auto state = std::make_shared<detail::PeerWindowState>();
  state->peer = peer.state_;
  state->mapping = std::move(*mapping);
  state->size = length;
  state->name = name;
  state->container = container;
  state->device_reads = options.device_reads;
  state->device_writes = options.device_writes;
  state->peer_resets_at_map = resets;
  state->peer_config = std::move(*config);
  state->peer_is_virtual_function = sys::path_exists(container->paths.sysfs.device_dir(peer.bdf()) + "/physfn");
  return PeerDmaWindow(std::move(state));
}

}  // namespace pcie
