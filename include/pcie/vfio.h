// Devices owned through VFIO (Documentation/driver-api/vfio.rst): a container (one IOMMU
// context and its one I/O address space), the devices opened in it by BDF, whose regions
// (BARs, ROM, config space) are reached through the same Region interface as the sysfs
// path, so driver code does not care which path opened the device.
//
// The IOMMU context is driven through one of two kernel interfaces, chosen at run time
// (VfioIommuBackend): the legacy type1 container (/dev/vfio/vfio and the group nodes
// /dev/vfio/N, every kernel since 3.6), or iommufd (/dev/iommu, with each device opened
// through its own cdev /dev/vfio/devices/vfioN; Linux 6.6 or later built with IOMMUFD and
// VFIO_DEVICE_CDEV; Documentation/userspace-api/iommufd.rst). Devices, regions,
// interrupts and DMA buffers behave the same on both.
//
// Lifetimes are kept by the objects, not by the caller's ordering: a device keeps its
// container (and group) open, and a region or interrupt set keeps its device open, so any
// of them may be destroyed in any order and none ever acts on a descriptor another object
// closed. The handles are move-only; what they share is reference-counted.
//
// Threads: a VfioContainer may be used from several threads at once (open_device is
// serialised inside), as may a VfioDevice's const operations (its command register is
// changed under a lock). A VfioRegion's accessors are as thread-safe as the device
// behind them; restrict_widths() is set-up, not for concurrent use. A VfioInterrupts
// object is used by one thread at a time (one waiter per vector). Moving any object while
// another thread uses it is a race.
//
// What opening a device does to it: VfioContainer::open_device resets the device when
// vfio-pci knows a way (FLR, PM, bus reset) and always leaves Bus Master Enable off, so a
// new owner never inherits DMA that a previous (killed) owner started. A device with no
// reset (QEMU's edu) may still be finishing such a DMA: its driver must quiesce it (wait
// for its DMA engine to go idle) before enable_bus_master(), as examples/edu does.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/bus_address.h"
#include "pcie/device.h"
#include "pcie/dma_backend.h"
#include "pcie/error.h"
#include "pcie/interrupts.h"
#include "pcie/mmio.h"
#include "pcie/region.h"
#include "pcie/sys/mapping.h"
#include "pcie/sys/unique_fd.h"
#include "pcie/sysfs_paths.h"

namespace pcie {

// Where VFIO's device nodes and the sysfs files it reads lie. The defaults are the running
// machine's; tests point them into a fake tree (under()).
struct VfioPaths {
  SysfsPaths sysfs;  // the PCI sysfs tree and the other files read (pcie/sysfs_paths.h)
  // vfio (the container), the group nodes, and devices/vfioN (the device cdevs)
  std::string dev_vfio = "/dev/vfio";
  std::string iommu_groups = "/sys/kernel/iommu_groups";  // empty when the IOMMU is off
  std::string dev_iommu = "/dev/iommu";                   // iommufd
  // Present when the kernel gives devices cdevs (CONFIG_VFIO_DEVICE_CDEV).
  std::string vfio_dev_class = "/sys/class/vfio-dev";

  // Every path below the mounts `sys`, `proc` and `dev` ("/sys", "/proc", "/dev" on a
  // machine; "<dir>/sys" and so on in a fake tree): SysfsPaths::under(sys, proc), and
  // <dev>/vfio, <dev>/iommu. Never fails.
  static VfioPaths under(const std::string& sys, const std::string& proc, const std::string& dev);
};

// The kernel interface a VfioContainer drives the IOMMU through.
enum class VfioIommuBackend {
  automatic,  // iommufd where it works for this process, else type1 (see VfioContainer::open)
  type1,      // the VFIO container, /dev/vfio/vfio, with the type1v2 IOMMU model
  iommufd,    // /dev/iommu and the device cdevs
};

// "auto", "type1", "iommufd".
std::string_view to_string(VfioIommuBackend backend);
// Parses what to_string() gives ("automatic" too). invalid_argument otherwise, naming the
// accepted values.
Result<VfioIommuBackend> parse_vfio_iommu_backend(std::string_view text);

// The environment variable that picks the backend when the program leaves it automatic
// (VfioContainerOptions::backend): auto, type1 or iommufd. An option set in the code wins.
inline constexpr const char* kVfioBackendVariable = "PCIE_VFIO_BACKEND";

// How VfioContainer::open() and open_without_iommu() pick the kernel interface.
struct VfioContainerOptions {
  // The interface to use; automatic lets PCIE_VFIO_BACKEND, else open()'s rules, decide.
  VfioIommuBackend backend = VfioIommuBackend::automatic;
};

// What VfioContainer::open() decides, and why, in words for a user ("iommufd: /dev/iommu
// opens and the kernel gives devices cdevs", "type1: /dev/iommu does not exist (a kernel
// without IOMMUFD, or the iommufd module not loaded)").
struct VfioBackendChoice {
  VfioIommuBackend backend = VfioIommuBackend::type1;  // never automatic
  std::string reason;  // why it was chosen (or why iommufd was not), for a user
};

// The backend VfioContainer::open(paths, options) would choose now for this process,
// without opening a device: for tools that report it (pciectl doctor). Fails like
// open() when the asked-for backend is unusable (a forced iommufd without /dev/iommu,
// a malformed PCIE_VFIO_BACKEND: invalid_argument).
Result<VfioBackendChoice> choose_vfio_backend(const VfioPaths& paths = {}, const VfioContainerOptions& options = {});

// The backend a container whose first device is `bdf` would take: choose_vfio_backend(),
// and where that is an automatic choice of iommufd, the fall back to type1 that
// VfioContainer::open_device() takes when the device's cdev is missing or not this user's
// (the reason then names the cdev). A device in VFIO's no-IOMMU mode (a noiommu-vfioN
// cdev, or an IOMMU group named "vfio-noiommu") gets what open_without_iommu() would
// choose, the reason saying so. Fails as choose_vfio_backend().
Result<VfioBackendChoice> choose_vfio_backend_for(const Bdf& bdf, const VfioPaths& paths = {},
                                                  const VfioContainerOptions& options = {});

// The VFIO cdev node of a device bound to vfio-pci (/dev/vfio/devices/vfioN, as sysfs
// <device>/vfio-dev/ names it), which the iommufd backend opens. Does not open it. Fails
// with not_found (no such device, or not bound to vfio-pci: the hint says how to bind it)
// or not_supported (the kernel gives devices no cdevs: Linux before 6.6, or built without
// VFIO_DEVICE_CDEV).
Result<std::string> vfio_device_cdev(const Bdf& bdf, const VfioPaths& paths = {});

// Region indexes of a vfio-pci device (VFIO_PCI_*_REGION_INDEX).
inline constexpr std::uint32_t kVfioBar0Region = 0;  // BARn is kVfioBar0Region + n
inline constexpr std::uint32_t kVfioRomRegion = 6;     // the expansion ROM, read-only
inline constexpr std::uint32_t kVfioConfigRegion = 7;  // config space, through pread/pwrite

// What VFIO_DEVICE_GET_REGION_INFO says of one region of a device (VfioDevice::region_info).
struct VfioRegionInfo {
  std::uint32_t index = 0;        // the region's index (kVfioBar0Region + n, kVfioRomRegion, ...)
  std::uint64_t size = 0;         // 0: the region is not implemented (e.g. an unused BAR)
  std::uint64_t file_offset = 0;  // where it starts in the device file (pread/pwrite/mmap)
  bool readable = false;          // pread allowed (VFIO_REGION_INFO_FLAG_READ)
  bool writable = false;          // pwrite allowed (VFIO_REGION_INFO_FLAG_WRITE)
  bool mappable = false;          // mmap allowed, in `mmap_areas`
  // Parts that may be mapped, relative to the region: the whole region, or the sparse-mmap
  // capability's areas (e.g. a BAR minus its MSI-X table).
  struct Area {
    std::uint64_t offset = 0;  // bytes from the region's start
    std::uint64_t size = 0;    // bytes, never 0; the area lies inside the region
  };
  std::vector<Area> mmap_areas;  // empty when the region is not mappable (or has size 0)
};

// How VfioDevice::open_region opens a region.
struct VfioRegionOptions {
  bool map = true;        // map the areas the kernel allows; false: pread/pwrite only
  bool writable = true;   // false opens read-only (and maps PROT_READ)
};

class PeerDmaWindow;    // pcie/peer_dma.h
struct PeerDmaOptions;

namespace detail {
struct VfioContainerState;  // the container, its groups and its IOVA space (src/vfio/state.h)
struct VfioDeviceState;     // a device's descriptor and what is enabled on it
}  // namespace detail

// One region of a VFIO device. Accesses inside a mapped area are single MMIO loads and
// stores of the asked width. The rest goes through pread/pwrite on the device file, which
// vfio-pci turns into accesses of at most 32 bits: an 8-byte pread/pwrite reaches the
// device as two 4-byte accesses on Linux 6.1 (vfio_pci_bar_rw), which no driver may assume
// is harmless. So a region that is not mapped whole accepts 8/16/32-bit accesses only;
// 64-bit accesses need a mapping (mmio(), or mmio_at() for a sparse region's areas).
class VfioRegion final : public Region {
 public:
  // An empty region (Region::valid() false), for a struct built step by step.
  VfioRegion();
  // Move-only: the moved-from region is empty (valid() false, info() all zero).
  VfioRegion(VfioRegion&&) noexcept;
  // Releases this region (its mappings, then its hold on the device), then takes `other`'s;
  // `other` is left empty.
  VfioRegion& operator=(VfioRegion&&) noexcept;
  ~VfioRegion() override;

  std::uint64_t size() const override { return valid() ? info_.size : 0; }
  const std::string& name() const override { return name_; }
  bool valid() const override { return device_ != nullptr; }
  // What VFIO_DEVICE_GET_REGION_INFO said (all zero for an empty region).
  const VfioRegionInfo& info() const { return info_; }
  // The accessor view when one mapping covers the whole region (no sparse areas), else
  // nullopt. Valid while this region lives.
  std::optional<MmioView> mmio() const;
  // The accessor view of [offset, offset + length) of the region when one mapped area
  // holds all of it (a sparse region's parts around its MSI-X table), with offset 0 of
  // the view at `offset`; every width is allowed there. nullopt otherwise.
  std::optional<MmioView> mmio_at(std::uint64_t offset, std::uint64_t length) const;
  // Whether any part of the region is mapped (accesses there are MMIO; mmio_at() may
  // succeed). False when the kernel allows no mmap or the region was opened with map false.
  bool mapped() const { return !mappings_.empty(); }
  // One mapping over the whole region: its base (uncached, as vfio-pci maps BARs).
  std::byte* mapped_base() const override;
  bool revoked() const override;

 protected:
  Result<std::uint64_t> read_checked(Width width, std::uint64_t offset) const override;
  Result<void> write_checked(Width width, std::uint64_t offset, std::uint64_t value) override;

 private:
  friend class VfioDevice;
  struct MappedArea {
    std::uint64_t offset = 0;  // in the region
    Mapping mapping;
  };
  VfioRegion(std::string name, std::shared_ptr<detail::VfioDeviceState> device, VfioRegionInfo info,
             std::vector<MappedArea> mappings, WidthSet widths, bool writable);
  const MappedArea* area_for(std::uint64_t offset, std::uint64_t bytes) const;

  std::string name_;
  std::shared_ptr<detail::VfioDeviceState> device_;  // keeps the device file open
  VfioRegionInfo info_;
  std::vector<MappedArea> mappings_;
};

// A device opened through VFIO. Move-only; the device is released (vfio-pci then disables
// it and releases its BARs) when this object and every region and interrupt set opened
// from it are gone.
class VfioDevice final : public Device {
 public:
  // An empty device (default-constructed or moved from), for a driver struct built step by
  // step: bdf() is 0000:00:00.0, fd() and iommu_group() -1, and every Result-returning
  // call fails with invalid_argument saying the object is empty.
  VfioDevice() = default;
  bool valid() const override { return state_ != nullptr; }
  // Move-only: the moved-from device is empty (valid() false).
  VfioDevice(VfioDevice&&) noexcept;
  // Drops this object's hold on its device (released once nothing opened from it is left
  // either), then takes `other`'s; `other` is left empty.
  VfioDevice& operator=(VfioDevice&&) noexcept;
  ~VfioDevice() override;

  const Bdf& bdf() const override;
  // "VFIO (IOMMU)" or "VFIO (no IOMMU)".
  std::string backend_name() const override;
  // The device's IOMMU group number (the N of /dev/vfio/N and /sys/kernel/iommu_groups/N);
  // -1 for an empty device, or one opened through iommufd whose sysfs node names no group.
  int iommu_group() const;
  // How many regions the device reports (VFIO_DEVICE_GET_INFO's num_regions: at least 9
  // for vfio-pci, BARs, ROM, config and VGA; device-specific ones follow). Region indexes
  // run from 0 to region_count() - 1.
  std::uint32_t region_count() const { return region_count_; }
  // How many VFIO IRQ indexes the device reports (INTx, MSI, MSI-X, error, request: 5 for
  // vfio-pci), not how many vectors: see vector_count().
  std::uint32_t irq_index_count() const { return irq_index_count_; }
  // Whether vfio-pci knows a way to reset the device (VFIO_DEVICE_FLAGS_RESET): reset()
  // fails with not_supported otherwise, and opening the device did not reset it.
  bool reset_supported() const { return reset_supported_; }
  // The device file descriptor, for ioctls of the caller's own; owned by this object and
  // valid while it (or a region or interrupt set of it) lives.
  int fd() const;

  // See Device::vector_count: VFIO_DEVICE_GET_IRQ_INFO's count, 0 for a kind the device
  // does not implement.
  Result<unsigned> vector_count(IrqKind kind) const override;

  // What the kernel says of region `index`. Fails with not_found past the last region.
  Result<VfioRegionInfo> region_info(std::uint32_t index) const;
  // Opens region `index`. Fails with not_found for an unimplemented region (size 0) and
  // permission_denied for a writable open of a read-only region.
  Result<VfioRegion> open_region(std::uint32_t index, const VfioRegionOptions& options = {}) const;
  // open_region(kVfioBar0Region + bar) for the Device interface (see Device::open_bar);
  // invalid_argument past BAR5.
  Result<std::unique_ptr<Region>> open_bar(unsigned bar) const override;
  // VfioInterrupts::enable behind the Device interface.
  Result<std::unique_ptr<Interrupts>> enable_interrupts(IrqKind kind, unsigned count = 1) const override;
  // DmaAllocator::create of the device's container.
  Result<DmaAllocator> dma_allocator() const override;

  // See Device::enable_bus_master: through the config region (VFIO does not set Bus
  // Master Enable for you). A device without a reset must be quiesced before this (see the
  // top of this header).
  Result<void> enable_bus_master(bool enable = true) const override;

  // Resets the device (FLR or another method vfio-pci picked); not_supported when it has
  // none. The kernel saves config space and restores it afterwards (pci_reset_function),
  // so BAR addresses and the command register survive; the device's own registers behind
  // the BARs are back to their reset values, so a driver sets the device up again. BAR
  // mappings stay valid, but values read before the reset are stale. A peer window of one
  // of its BARs mapped through iommufd is revoked for good (pcie/peer_dma.h).
  Result<void> reset() const;

 private:
  friend class VfioContainer;
  friend class VfioInterrupts;
  friend class PeerDmaWindow;  // usable_by: the device's container
  friend Result<PeerDmaWindow> map_peer_bar(const VfioDevice&, const VfioDevice&, unsigned, std::uint64_t,
                                            std::uint64_t, const PeerDmaOptions&);
  VfioDevice(std::shared_ptr<detail::VfioDeviceState> state, std::uint32_t regions, std::uint32_t irq_indexes,
             bool reset);
  std::shared_ptr<detail::VfioDeviceState> state_;
  std::uint32_t region_count_ = 0;
  std::uint32_t irq_index_count_ = 0;
  bool reset_supported_ = false;
};

// Interrupt vectors of one VFIO device signalled on eventfds. Move-only; destruction
// disables the interrupts, then closes the eventfds. Keeps its device open.
class VfioInterrupts final : public Interrupts {
 public:
  // Enables `count` vectors of `kind`. Fails with out_of_range when the device has fewer
  // (or `count` is 0); with busy when this kind is already enabled through another
  // VfioInterrupts of the device (two owners of one kind would take each other's vectors
  // away), or when another of INTx, MSI and MSI-X is (a device uses one at a time; disable
  // it first); with invalid_argument for an empty device; or with the kernel's error.
  static Result<VfioInterrupts> enable(const VfioDevice& device, IrqKind kind, unsigned count = 1);
  // An empty set (valid() false), for a struct built step by step.
  VfioInterrupts() = default;
  // Move-only: the moved-from set is empty (valid() false, count() 0).
  VfioInterrupts(VfioInterrupts&& other) noexcept;
  // Disables this set's interrupts (as disable(), its error ignored), then takes `other`'s
  // vectors; `other` is left empty.
  VfioInterrupts& operator=(VfioInterrupts&& other) noexcept;
  ~VfioInterrupts() override;

  unsigned count() const override { return static_cast<unsigned>(eventfds_.size()); }
  IrqKind kind() const override { return kind_; }
  bool valid() const override { return device_ != nullptr; }
  const std::string& name() const override { return name_; }
  // The eventfd of `vector` (fd() is the same); owned by this object. out_of_range for a
  // vector that was not enabled.
  Result<int> eventfd(unsigned vector) const;
  Result<int> fd(unsigned vector) const override { return eventfd(vector); }
  Result<std::uint64_t> consume(unsigned vector) const override;
  // See Interrupts::wait. INTx stays masked until unmask_intx() (rearm()).
  Result<std::uint64_t> wait(unsigned vector, std::chrono::milliseconds timeout) const override;
  // Unmasks INTx after the device's interrupt has been acknowledged; does nothing for the
  // other kinds. Fails with invalid_argument when empty, or the kernel's error.
  Result<void> unmask_intx() const;
  // unmask_intx() for a vector that is enabled (see Interrupts::rearm); out_of_range for
  // one that is not, as wait() and fd().
  Result<void> rearm(unsigned vector) const override;
  // Per-vector control (pcie/interrupts.h): INTx through VFIO's mask and unmask actions,
  // one MSI/MSI-X vector by detaching its eventfd and attaching it again.
  Result<void> mask(unsigned vector) const override;
  // Undoes mask(`vector`) (VFIO's unmask action for INTx; the eventfd attached again for
  // MSI/MSI-X); does nothing for a vector that is not masked. out_of_range for a vector
  // that is not enabled, invalid_argument when empty, or the kernel's error.
  Result<void> unmask(unsigned vector) const override;
  Result<unsigned> add_vectors(unsigned more) override;
  // See Interrupts::disable. The kind is free for another VfioInterrupts afterwards; this
  // set stays valid() with count() 0.
  Result<void> disable() override;

 private:
  VfioInterrupts(std::shared_ptr<detail::VfioDeviceState> device, std::string name, IrqKind kind,
                 std::vector<UniqueFd> eventfds);
  std::shared_ptr<detail::VfioDeviceState> device_;  // keeps the device file open
  std::string name_;
  IrqKind kind_ = IrqKind::msi;
  std::vector<UniqueFd> eventfds_;
  mutable std::vector<bool> masked_;  // per vector: mask() was called, unmask() not yet
};

// How VfioContainer::open_device opens a device.
struct VfioDeviceOptions {
  // Reset the device on open when vfio-pci knows a way, so that nothing a previous owner
  // started survives the handover. Off only for devices whose state must outlive an owner
  // (firmware loaded once, a cooperating process's setup), and only when the last owner
  // left the device idle.
  bool reset_on_open = true;
};

// One IOMMU context and its I/O address space, with the devices opened in it: a VFIO
// container with the type1v2 IOMMU model, or an iommufd with one IOAS (I/O address space)
// that every device is attached to. Devices (and, for type1, their groups) stay attached
// while the container or any device, region, interrupt set, DMA allocator or DMA buffer
// of it lives; they are released before the container. Move-only.
class VfioContainer {
 public:
  // An empty container, for a driver struct built step by step (move an opened one in):
  // it holds nothing; open_device() fails with invalid_argument, the queries return empty
  // values (no groups, no ranges, fd -1).
  VfioContainer() = default;
  // False for an empty container (default-constructed or moved from).
  bool valid() const { return state_ != nullptr; }
  // Opens the IOMMU context through the backend options.backend names; automatic (the
  // default) reads PCIE_VFIO_BACKEND, and when that is unset or "auto" takes iommufd if
  // /dev/iommu opens for this process, the kernel gives devices cdevs and an IOAS can be
  // made, else type1. An automatic choice of iommufd falls back to type1 when the first
  // device's cdev cannot be opened (not found, or not this user's while its group node
  // is), so a user given the group (pciectl vfio grant) is served either way.
  // backend() and backend_choice() say what was chosen and why.
  // Errors: not_found (VFIO modules not loaded; for iommufd, /dev/iommu missing: a kernel
  // without IOMMUFD or the module not loaded), permission_denied (with what to change),
  // not_supported (an API version or IOMMU model this library does not know),
  // invalid_argument (a PCIE_VFIO_BACKEND that is none of auto, type1, iommufd).
  static Result<VfioContainer> open(const VfioPaths& paths = {}, const VfioContainerOptions& options = {});
  // Opens a container for devices in VFIO's no-IOMMU mode (Documentation/driver-api/
  // vfio.rst, "VFIO NOIOMMU mode"): regions and interrupts work as with an IOMMU, and DMA
  // buffers (DmaAllocator::create) carry physical addresses, so the device can reach all of
  // memory: hence the acknowledgement. Two interfaces, picked as options.backend (or
  // PCIE_VFIO_BACKEND) says; automatic takes iommufd where it works, else type1:
  //  - iommufd: /dev/iommu, each device through its noiommu-vfioN cdev. The IOAS pins each
  //    buffer (its pages cannot move or be swapped) and the kernel tells its physical
  //    address (IOMMU_IOAS_NOIOMMU_GET_PA, newer kernels with CONFIG_IOMMUFD_NOIOMMU, 7.3
  //    among them); pinned pages count against RLIMIT_MEMLOCK as iommufd counts them.
  //    `dma.lock` and `dma.pagemap_path` are not used.
  //  - type1: /dev/vfio/vfio in the group no-IOMMU model (VFIO_NOIOMMU_IOMMU, groups named
  //    /dev/vfio/noiommu-N): buffers are locked with mlock() and their addresses read from
  //    pagemap (which needs CAP_SYS_ADMIN).
  // backend() and backend_choice() say which, and why. Needs a kernel with
  // CONFIG_VFIO_NOIOMMU and vfio's enable_unsafe_noiommu_mode set (not_supported says so
  // otherwise), and CAP_SYS_RAWIO (permission_denied when a device is opened). Errors also:
  // invalid_argument (a PCIE_VFIO_BACKEND that is none of auto, type1, iommufd); iommufd
  // asked for where /dev/iommu does not open (not_found, permission_denied, or the kernel's
  // error for a node that is no iommufd) or the kernel cannot tell physical addresses
  // through it or gives no device cdevs (not_supported, saying to use type1). A device
  // behind an IOMMU is refused at open_device (invalid_argument). On iommufd, DMA buffers
  // can be made once a device is open (not_supported before), and the IOVAs that
  // iova_ranges() and the IOAS hold are bookkeeping the device never sees.
  static Result<VfioContainer> open_without_iommu(DeviceMayReachAllMemory acknowledgement, const VfioPaths& paths = {},
                                                  const PhysicalDmaOptions& dma = {},
                                                  const VfioContainerOptions& options = {});
  // True for a container opened with open_without_iommu().
  bool without_iommu() const;
  // The backend in use: type1 or iommufd (for a no-IOMMU container, the interface its
  // devices are opened through). An automatic choice may still turn from iommufd to type1
  // at the first open_device (see open()).
  VfioIommuBackend backend() const;
  // The backend in use and why, in words (as choose_vfio_backend() says it); after an
  // automatic fall back to type1 at the first open_device, that one. A default
  // VfioBackendChoice for an empty container.
  VfioBackendChoice backend_choice() const;
  // Move-only: the moved-from container is empty (valid() false).
  VfioContainer(VfioContainer&&) noexcept;
  // Drops this object's hold on its IOMMU context (released once no device, allocator or
  // DMA buffer of it is left either), then takes `other`'s; `other` is left empty.
  VfioContainer& operator=(VfioContainer&&) noexcept;
  ~VfioContainer();

  // Opens `bdf`, then resets it when it can be reset (options.reset_on_open) and makes
  // sure Bus Master Enable is off. type1: through its IOMMU group, attaching the group to
  // the container first if needed. iommufd: through its cdev (/dev/vfio/devices/vfioN,
  // named by sysfs <device>/vfio-dev/), bound to the iommufd and attached to the IOAS;
  // the usable IOVA ranges are read again after each attach (a device may reserve more).
  // Errors say what to do: the IOMMU is off, the device is not bound to vfio-pci, the
  // group is not viable (naming every other device in it and its driver), the group or
  // device is open elsewhere (busy, naming the node to check with fuser), no access to
  // /dev/vfio/N or to the cdev, a kernel without device cdevs (not_supported); busy when
  // the device is already open in this container (opening it again would reset it under
  // its owner); a failed reset is an error too (the device may still be busy with a
  // previous owner's work). Safe from several threads.
  Result<VfioDevice> open_device(const Bdf& bdf, const VfioDeviceOptions& options = {});

  // The IOVA ranges the IOMMU translates (MSI window excluded), known once a device is
  // open; empty before.
  std::vector<IovaRange> iova_ranges() const;
  // The IOMMU groups of the devices open (type1: attached to the container).
  std::vector<int> attached_groups() const;
  // The container's descriptor, for ioctls of the caller's own; owned by this object:
  // /dev/vfio/vfio for type1, /dev/iommu for iommufd. An automatic choice of iommufd
  // that falls back to type1 at the first open_device (see open()) closes /dev/iommu
  // then: take the descriptor after a device is open.
  int fd() const;
  // iommufd only: the ID of the IOAS every device is attached to; nullopt for type1.
  std::optional<std::uint32_t> ioas_id() const;

 private:
  friend class DmaAllocator;
  friend class VfioDevice;
  explicit VfioContainer(std::shared_ptr<detail::VfioContainerState> state);
  std::shared_ptr<detail::VfioContainerState> state_;
};

// One device of the IOMMU group of a device that failed to open (VfioFailureContext).
struct VfioGroupMember {
  Bdf bdf;                            // the member's address
  std::optional<std::string> driver;  // the driver bound to it; nullopt when none
  bool is_bridge = false;  // bridges never make a group unviable
};
// What is known about a device when opening it through VFIO fails, to explain it.
struct VfioFailureContext {
  Bdf bdf;                                  // the device that failed to open
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
