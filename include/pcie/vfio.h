// Devices owned through VFIO (Documentation/driver-api/vfio.rst): a container (one IOMMU
// context, type1v2), the IOMMU groups attached to it, and devices opened by BDF, whose
// regions (BARs, ROM, config space) are reached through the same Region interface as the
// sysfs path, so driver code does not care which path opened the device.
//
// Lifetimes: VfioContainer → VfioDevice → VfioRegion. A device must not outlive its
// container, and a region must not outlive its device (like MmioView and BarMapping).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/error.h"
#include "pcie/mmio.h"
#include "pcie/region.h"
#include "pcie/sys/mapping.h"
#include "pcie/sys/unique_fd.h"
#include "pcie/sysfs_paths.h"

namespace pcie {

struct VfioPaths {
  SysfsPaths sysfs;
  std::string dev_vfio = "/dev/vfio";                      // vfio (the container) and group nodes
  std::string iommu_groups = "/sys/kernel/iommu_groups";  // empty when the IOMMU is off
};

// An inclusive range of I/O virtual addresses the IOMMU can translate.
struct IovaRange {
  std::uint64_t start = 0;
  std::uint64_t last = 0;
  friend bool operator==(const IovaRange&, const IovaRange&) = default;
};

// Region indexes of a vfio-pci device (VFIO_PCI_*_REGION_INDEX).
inline constexpr std::uint32_t kVfioBar0Region = 0;  // BARn is kVfioBar0Region + n
inline constexpr std::uint32_t kVfioRomRegion = 6;
inline constexpr std::uint32_t kVfioConfigRegion = 7;

struct VfioRegionInfo {
  std::uint32_t index = 0;
  std::uint64_t size = 0;         // 0: the region is not implemented (e.g. an unused BAR)
  std::uint64_t file_offset = 0;  // where it starts in the device file (pread/pwrite/mmap)
  bool readable = false;
  bool writable = false;
  bool mappable = false;          // mmap allowed, in `mmap_areas`
  // Parts that may be mapped, relative to the region: the whole region, or the sparse-mmap
  // capability's areas (e.g. a BAR minus its MSI-X table).
  struct Area {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
  };
  std::vector<Area> mmap_areas;
};

struct VfioRegionOptions {
  bool map = true;        // map the areas the kernel allows; false: pread/pwrite only
  bool writable = true;   // false opens read-only (and maps PROT_READ)
};

// One region of a VFIO device. Accesses inside a mapped area are MMIO loads and stores;
// the rest goes through pread/pwrite on the device file, which vfio-pci performs with the
// same width.
class VfioRegion final : public Region {
 public:
  VfioRegion(VfioRegion&&) noexcept = default;
  VfioRegion& operator=(VfioRegion&&) noexcept = default;
  std::uint64_t size() const override { return info_.size; }
  const std::string& name() const override { return name_; }
  const VfioRegionInfo& info() const { return info_; }
  // The accessor view when one mapping covers the whole region (no sparse areas), else
  // nullopt. Valid while this region lives.
  std::optional<MmioView> mmio() const;
  bool mapped() const { return !mappings_.empty(); }
  // One mapping over the whole region: its base (uncached, as vfio-pci maps BARs).
  std::byte* mapped_base() const override;

 protected:
  Result<std::uint64_t> read_checked(Width width, std::uint64_t offset) const override;
  Result<void> write_checked(Width width, std::uint64_t offset, std::uint64_t value) override;

 private:
  friend class VfioDevice;
  struct MappedArea {
    std::uint64_t offset = 0;  // in the region
    Mapping mapping;
  };
  VfioRegion(std::string name, int device_fd, VfioRegionInfo info, std::vector<MappedArea> mappings, bool writable)
      : Region(WidthSet::all(), writable), name_(std::move(name)), device_fd_(device_fd), info_(std::move(info)),
        mappings_(std::move(mappings)) {}
  const MappedArea* area_for(std::uint64_t offset, std::uint64_t bytes) const;

  std::string name_;
  int device_fd_ = -1;  // owned by the VfioDevice
  VfioRegionInfo info_;
  std::vector<MappedArea> mappings_;
};

// A device opened through VFIO. Move-only; closing it releases the device (vfio-pci then
// disables it and releases its BARs).
class VfioDevice {
 public:
  VfioDevice(VfioDevice&&) noexcept = default;
  VfioDevice& operator=(VfioDevice&&) noexcept = default;

  const Bdf& bdf() const { return bdf_; }
  int iommu_group() const { return group_; }
  std::uint32_t region_count() const { return region_count_; }
  std::uint32_t irq_count() const { return irq_count_; }
  bool reset_supported() const { return reset_supported_; }
  int fd() const { return fd_.get(); }

  // What the kernel says of region `index`. Fails with not_found past the last region.
  Result<VfioRegionInfo> region_info(std::uint32_t index) const;
  // Opens region `index`. Fails with not_found for an unimplemented region (size 0) and
  // permission_denied for a writable open of a read-only region.
  Result<VfioRegion> open_region(std::uint32_t index, const VfioRegionOptions& options = {}) const;

  // Sets (or clears) Bus Master Enable in the command register, with Memory Space Enable
  // when setting it (PCI Local Bus 3.0, 6.2.2). A device does no DMA until Bus Master
  // Enable is set, and VFIO does not set it for you.
  Result<void> enable_bus_master(bool enable = true) const;

  // Resets the device (FLR or another method vfio-pci picked); not_supported when it has
  // none. The kernel saves config space and restores it afterwards (pci_reset_function),
  // so BAR addresses and the command register survive; the device's own registers behind
  // the BARs are back to their reset values, so a driver sets the device up again. BAR
  // mappings stay valid, but values read before the reset are stale.
  Result<void> reset() const;

 private:
  friend class VfioContainer;
  VfioDevice(Bdf bdf, int group, UniqueFd fd, std::uint32_t regions, std::uint32_t irqs, bool reset)
      : bdf_(bdf), group_(group), fd_(std::move(fd)), region_count_(regions), irq_count_(irqs), reset_supported_(reset) {}
  Bdf bdf_;
  int group_ = -1;
  UniqueFd fd_;
  std::uint32_t region_count_ = 0;
  std::uint32_t irq_count_ = 0;
  bool reset_supported_ = false;
};

enum class IrqKind {
  intx,     // legacy INTx: one vector, masked by the kernel each time it fires
  msi,
  msix,
  error,    // AER errors reported for the device
  request,  // the kernel asks the user to release the device (unbind, hot unplug)
};

// Interrupt vectors of one VFIO device signalled on eventfds. Move-only; destruction
// disables the interrupts, then closes the eventfds. Must not outlive its device.
class VfioInterrupts {
 public:
  // Enables `count` vectors of `kind`. Fails with out_of_range when the device has fewer.
  static Result<VfioInterrupts> enable(const VfioDevice& device, IrqKind kind, unsigned count = 1);
  VfioInterrupts(VfioInterrupts&& other) noexcept
      : device_fd_(std::exchange(other.device_fd_, -1)), name_(std::move(other.name_)), kind_(other.kind_),
        eventfds_(std::move(other.eventfds_)) {}
  VfioInterrupts& operator=(VfioInterrupts&& other) noexcept;
  ~VfioInterrupts();

  unsigned count() const { return static_cast<unsigned>(eventfds_.size()); }
  IrqKind kind() const { return kind_; }
  // The eventfd of `vector`, to hand to the user's own event loop (epoll, io_uring, ...).
  int eventfd(unsigned vector) const { return eventfds_.at(vector).get(); }
  // Waits up to `timeout` for `vector`; returns how many interrupts arrived since the last
  // wait, 0 when the timeout passed. INTx stays masked until unmask_intx().
  Result<std::uint64_t> wait(unsigned vector, std::chrono::milliseconds timeout) const;
  // Unmasks INTx after the device's interrupt has been acknowledged.
  Result<void> unmask_intx() const;
  // Disables the vectors now and reports what the kernel said.
  Result<void> disable();

 private:
  VfioInterrupts(int device_fd, std::string name, IrqKind kind, std::vector<UniqueFd> eventfds)
      : device_fd_(device_fd), name_(std::move(name)), kind_(kind), eventfds_(std::move(eventfds)) {}
  int device_fd_ = -1;  // owned by the VfioDevice
  std::string name_;
  IrqKind kind_ = IrqKind::msi;
  std::vector<UniqueFd> eventfds_;
};

// A VFIO container with the type1v2 IOMMU model. Groups are opened and attached as their
// devices are opened, and stay attached until the container is destroyed (groups first,
// then the container). Move-only.
class VfioContainer {
 public:
  // Opens /dev/vfio/vfio. Errors: not_found (VFIO modules not loaded), permission_denied,
  // not_supported (an API version or IOMMU model this library does not know).
  static Result<VfioContainer> open(const VfioPaths& paths = {});
  VfioContainer(VfioContainer&&) noexcept = default;
  VfioContainer& operator=(VfioContainer&&) noexcept = default;

  // Opens `bdf` through its IOMMU group, attaching the group first if needed. Errors say
  // what to do: the IOMMU is off, the device is not bound to vfio-pci, the group is not
  // viable (naming every other device in it and its driver), the group is open elsewhere
  // (busy), no access to /dev/vfio/N.
  Result<VfioDevice> open_device(const Bdf& bdf);

  // The IOVA ranges the IOMMU translates (MSI window excluded), known once a group is
  // attached; empty before.
  const std::vector<IovaRange>& iova_ranges() const { return iova_ranges_; }
  std::vector<int> attached_groups() const;
  int fd() const { return container_.get(); }

 private:
  struct Group {
    int number = -1;
    UniqueFd fd;
  };
  VfioContainer(VfioPaths paths, UniqueFd container) : paths_(std::move(paths)), container_(std::move(container)) {}
  // The device's group, attached to this container (opened now or earlier): its number and fd.
  struct AttachedGroup {
    int number = -1;
    int fd = -1;
  };
  Result<AttachedGroup> attach_group(const Bdf& bdf);

  VfioPaths paths_;
  UniqueFd container_;        // declared before groups_: closed after them
  std::vector<Group> groups_;
  std::vector<IovaRange> iova_ranges_;
};

// What is known about a device when opening it through VFIO fails, to explain it.
struct VfioGroupMember {
  Bdf bdf;
  std::optional<std::string> driver;
  bool is_bridge = false;  // bridges never make a group unviable
};
struct VfioFailureContext {
  Bdf bdf;
  std::optional<int> group;                 // nullopt: the device has no IOMMU group
  bool iommu_enabled = true;                // false: no IOMMU groups at all on this system
  std::optional<std::string> driver;        // the device's driver
  std::vector<VfioGroupMember> members;     // every device in the group, this one included
};

// Turns a failed step of opening a device through VFIO into an error the user can act on.
// `step` is "group" (opening /dev/vfio/N), "viable" (the group is not viable) or
// "device" (VFIO_GROUP_GET_DEVICE_FD). Public so tools can reuse the diagnosis.
Error explain_vfio_failure(const Error& raw, std::string_view step, const VfioFailureContext& context);

// Whether this member leaves its group viable (drivers/vfio/vfio_main.c,
// vfio_dev_driver_allowed): no driver, vfio-pci, pci-stub, or any driver on a bridge.
bool vfio_member_allows_viability(const VfioGroupMember& member);

}  // namespace pcie
