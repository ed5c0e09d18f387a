// VfioDevice and its regions.
#include <fmt/format.h>
#include <sys/mman.h>

#include <cstring>
#include <utility>

#include "pcie/config_space.h"
#include "pcie/dma.h"
#include "pcie/vfio.h"
#include "src/bar/register_file.h"
#include "src/sys/syscalls.h"
#include "src/sys/vfio_ioctls.h"
#include "src/vfio/capability_chain.h"
#include "src/vfio/state.h"

namespace pcie {

VfioDevice::VfioDevice(std::shared_ptr<detail::VfioDeviceState> state, std::uint32_t regions,
                       std::uint32_t irq_indexes, bool reset)
    : state_(std::move(state)), region_count_(regions), irq_index_count_(irq_indexes), reset_supported_(reset) {}
VfioDevice::VfioDevice(VfioDevice&&) noexcept = default;
VfioDevice& VfioDevice::operator=(VfioDevice&&) noexcept = default;
VfioDevice::~VfioDevice() = default;

namespace {
const Bdf kNoDevice{};
}  // namespace

Error detail::empty_device_error(std::string operation) {
  return empty_object_error(std::move(operation), "VfioDevice",
                            "open a device with VfioContainer::open_device and move it in");
}

const Bdf& VfioDevice::bdf() const { return state_ ? state_->bdf : kNoDevice; }
int VfioDevice::iommu_group() const { return state_ ? state_->group : -1; }
int VfioDevice::fd() const { return state_ ? state_->fd.get() : -1; }

std::string VfioDevice::backend_name() const {
  if (!state_) return "VFIO (empty)";
  return state_->container && state_->container->mode->without_iommu() ? "VFIO (no IOMMU)" : "VFIO (IOMMU)";
}

Result<std::unique_ptr<Region>> VfioDevice::open_bar(unsigned bar) const {
  if (bar > 5) {
    return std::unexpected(make_error(Errc::invalid_argument, "open BAR",
                                      fmt::format("{} BAR{}", bdf().to_string(), bar), "a device has BARs 0 to 5"));
  }
  auto region = open_region(kVfioBar0Region + bar);
  if (!region) return std::unexpected(region.error());
  return std::unique_ptr<Region>(std::make_unique<VfioRegion>(std::move(*region)));
}

Result<std::unique_ptr<Interrupts>> VfioDevice::enable_interrupts(IrqKind kind, unsigned count) const {
  if (!state_) return std::unexpected(detail::empty_device_error("enable interrupts of"));
  auto interrupts = VfioInterrupts::enable(*this, kind, count);
  if (!interrupts) return std::unexpected(interrupts.error());
  return std::unique_ptr<Interrupts>(std::make_unique<VfioInterrupts>(std::move(*interrupts)));
}

Result<DmaAllocator> VfioDevice::dma_allocator() const {
  if (!state_) return std::unexpected(detail::empty_device_error("DMA allocator of"));
  return DmaAllocator::create(VfioContainer(state_->container));
}

Result<VfioRegionInfo> VfioDevice::region_info(std::uint32_t index) const {
  if (!state_) return std::unexpected(detail::empty_device_error("region info of"));
  const std::string name = bdf().to_string();
  if (index >= region_count_) {
    return std::unexpected(make_error(Errc::not_found, "region info", name + " region " + std::to_string(index),
                                      fmt::format("the device has {} regions", region_count_)));
  }
  auto raw = sys::vfio::region_info(fd(), index, name);
  if (!raw) return std::unexpected(raw.error());
  vfio_region_info base;
  std::memcpy(&base, raw->data(), sizeof base);
  VfioRegionInfo info;
  info.index = index;
  info.size = base.size;
  info.file_offset = base.offset;
  info.readable = base.flags & VFIO_REGION_INFO_FLAG_READ;
  info.writable = base.flags & VFIO_REGION_INFO_FLAG_WRITE;
  info.mappable = base.flags & VFIO_REGION_INFO_FLAG_MMAP;
  if (!info.mappable || info.size == 0) return info;

  std::optional<std::size_t> sparse;
  if (base.flags & VFIO_REGION_INFO_FLAG_CAPS) {
    sparse = vfio_detail::find_capability(*raw, base.cap_offset, VFIO_REGION_INFO_CAP_SPARSE_MMAP,
                                          sizeof(vfio_region_info_cap_sparse_mmap));
  }
  if (!sparse) {
    info.mmap_areas.push_back({0, info.size});
    return info;
  }
  vfio_region_info_cap_sparse_mmap capability;
  std::memcpy(&capability, raw->data() + *sparse, sizeof capability);
  for (const vfio_region_sparse_mmap_area& area : vfio_detail::capability_entries<vfio_region_sparse_mmap_area>(
           *raw, *sparse + sizeof capability, capability.nr_areas)) {
    // Untrusted all the same: an area must lie inside the region.
    if (area.size == 0 || area.offset > info.size || area.size > info.size - area.offset) continue;
    info.mmap_areas.push_back({area.offset, area.size});
  }
  return info;
}

Result<VfioRegion> VfioDevice::open_region(std::uint32_t index, const VfioRegionOptions& options) const {
  auto info = region_info(index);
  if (!info) return std::unexpected(info.error());
  const std::string name = fmt::format("{} {}", bdf().to_string(),
                                       index < kVfioRomRegion ? "BAR" + std::to_string(index)
                                       : index == kVfioRomRegion ? std::string("ROM")
                                       : index == kVfioConfigRegion ? std::string("config")
                                                                    : "region " + std::to_string(index));
  if (info->size == 0) {
    return std::unexpected(make_error(Errc::not_found, "open VFIO region", name, "not implemented (size 0)"));
  }
  if (options.writable && !info->writable) {
    return std::unexpected(make_error(Errc::permission_denied, "open VFIO region", name, "the region is read-only",
                                      "open it with writable = false"));
  }
  std::vector<VfioRegion::MappedArea> mappings;
  if (options.map && info->mappable) {
    const int prot = PROT_READ | (options.writable ? PROT_WRITE : 0);
    for (const VfioRegionInfo::Area& area : info->mmap_areas) {
      auto mapping = sys::map_shared(fd(), area.size, info->file_offset + area.offset, prot, name);
      if (!mapping) return std::unexpected(mapping.error());
      // Registered with the removal guard (pcie/removal.h); a full table leaves it unguarded.
      (void)mapping->guard_as_device_memory(bdf());
      mappings.push_back({area.offset, std::move(*mapping)});
    }
  }
  // Only a region mapped whole takes 64-bit accesses everywhere: the file path's 8-byte
  // pread/pwrite reaches the device as two 4-byte accesses (vfio.h).
  const bool mapped_whole = mappings.size() == 1 && mappings[0].offset == 0 && mappings[0].mapping.size() == info->size;
  const WidthSet widths = mapped_whole ? WidthSet::all() : WidthSet::up_to(Width::bits32);
  return VfioRegion(name, state_, std::move(*info), std::move(mappings), widths, options.writable);
}

Result<void> VfioDevice::enable_bus_master(bool enable) const {
  if (!state_) return std::unexpected(detail::empty_device_error("set bus mastering of"));
  auto config = open_region(kVfioConfigRegion, {.map = false});
  if (!config) return std::unexpected(config.error());
  // A read-modify-write of a register other threads may be changing too.
  std::lock_guard lock(state_->mutex);
  auto command = config->read(Width::bits16, cfg::kCommand);
  if (!command) return std::unexpected(command.error());
  std::uint64_t value = *command;
  if (enable) {
    value |= cfg::kCommandBusMaster | cfg::kCommandMemorySpace;
  } else {
    value &= ~std::uint64_t{cfg::kCommandBusMaster};
  }
  if (value == *command) return {};
  return config->write(Width::bits16, cfg::kCommand, value);
}

Result<void> VfioDevice::reset() const {
  if (!state_) return std::unexpected(detail::empty_device_error("reset"));
  if (!reset_supported_) {
    return std::unexpected(make_error(Errc::not_supported, "reset", bdf().to_string(),
                                      "vfio-pci knows no reset method for this device (no FLR, PM or bus reset)",
                                      "quiesce it through its own registers instead"));
  }
  // Counted before the attempt: a reset that failed half way may still have revoked the
  // device's dma-buf exports (PeerDmaWindow::check).
  state_->resets.fetch_add(1);
  return sys::vfio::reset_device(fd(), bdf().to_string());
}

// ---- VfioRegion ----

VfioRegion::VfioRegion(std::string name, std::shared_ptr<detail::VfioDeviceState> device, VfioRegionInfo info,
                       std::vector<MappedArea> mappings, WidthSet widths, bool writable)
    : Region(widths, writable), name_(std::move(name)), device_(std::move(device)), info_(std::move(info)),
      mappings_(std::move(mappings)) {}
VfioRegion::VfioRegion() : Region(WidthSet::all(), false) {}
// A moved-from region is empty: no device, no mappings, its info all zero.
VfioRegion::VfioRegion(VfioRegion&& other) noexcept
    : Region(other), name_(std::move(other.name_)), device_(std::move(other.device_)),
      info_(std::exchange(other.info_, VfioRegionInfo{})), mappings_(std::move(other.mappings_)) {
  other.mappings_.clear();
}
VfioRegion& VfioRegion::operator=(VfioRegion&& other) noexcept {
  if (this != &other) {
    VfioRegion old(std::move(*this));  // released here, mappings before the device
    Region::operator=(other);
    name_ = std::move(other.name_);
    device_ = std::move(other.device_);
    info_ = std::exchange(other.info_, VfioRegionInfo{});
    mappings_ = std::move(other.mappings_);
    other.mappings_.clear();
  }
  return *this;
}
// The mappings are released before the device reference (declaration order, reversed).
VfioRegion::~VfioRegion() = default;

std::byte* VfioRegion::mapped_base() const {
  if (mappings_.size() != 1 || mappings_[0].offset != 0 || mappings_[0].mapping.size() != info_.size) return nullptr;
  return mappings_[0].mapping.data();
}

bool VfioRegion::revoked() const {
  for (const MappedArea& area : mappings_) {
    if (area.mapping.revoked()) return true;
  }
  return false;
}

std::optional<MmioView> VfioRegion::mmio() const {
  std::byte* base = mapped_base();
  if (base == nullptr) return std::nullopt;
  return MmioView(base, info_.size, allowed_widths(), name_);
}

std::optional<MmioView> VfioRegion::mmio_at(std::uint64_t offset, std::uint64_t length) const {
  const MappedArea* area = area_for(offset, length);
  if (area == nullptr || length == 0) return std::nullopt;
  return MmioView(area->mapping.data() + (offset - area->offset), length, WidthSet::all(), name_);
}

const VfioRegion::MappedArea* VfioRegion::area_for(std::uint64_t offset, std::uint64_t bytes) const {
  for (const MappedArea& area : mappings_) {
    if (offset >= area.offset && offset - area.offset <= area.mapping.size() &&
        bytes <= area.mapping.size() - (offset - area.offset)) {
      return &area;
    }
  }
  return nullptr;
}

Result<std::uint64_t> VfioRegion::read_checked(Width width, std::uint64_t offset) const {
  if (const MappedArea* area = area_for(offset, byte_count(width))) {
    const std::uint64_t value =
        MmioView(area->mapping.data(), area->mapping.size(), allowed_widths(), name_).read_as(width, offset - area->offset);
    if (value == all_ones(width) && area->mapping.revoked()) [[unlikely]] {
      return std::unexpected(removed_error("read", name_, offset));
    }
    return value;
  }
  return read_register_file(device_->fd.get(), width, info_.file_offset + offset, name_);
}

Result<void> VfioRegion::write_checked(Width width, std::uint64_t offset, std::uint64_t value) {
  if (const MappedArea* area = area_for(offset, byte_count(width))) {
    if (area->mapping.revoked()) [[unlikely]] return std::unexpected(removed_error("write", name_, offset));
    MmioView(area->mapping.data(), area->mapping.size(), allowed_widths(), name_).write_as(width, offset - area->offset, value);
    return {};
  }
  return write_register_file(device_->fd.get(), width, info_.file_offset + offset, value, name_);
}

}  // namespace pcie
