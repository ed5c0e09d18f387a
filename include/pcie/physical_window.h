// A window onto physical address space through /dev/mem, with the same Region and MmioView
// accessors as a BAR: for register blocks that are not a PCI BAR (an FPGA's bridge on an
// embedded board, a platform device), or a BAR the user wants by address (devmem2, pcimem
// and PYNQ's MMIO do this). Prefer the sysfs or VFIO paths for BARs: they know the BAR's
// bounds and type, and the kernel keeps track of who uses them.
//
// The kernel's rules (drivers/char/mem.c, arch/x86/mm/init.c devmem_is_allowed):
//  - opening /dev/mem needs CAP_SYS_RAWIO (root);
//  - CONFIG_STRICT_DEVMEM (every Debian kernel) refuses RAM, so /dev/mem is never a way to
//    reach DMA memory: use DMA buffers (pcie/dma.h);
//  - CONFIG_IO_STRICT_DEVMEM (Debian's too) also refuses a range a driver claimed with
//    request_mem_region (a BAR of a bound nvme, or a BAR vfio-pci maps for its user), so
//    that user space cannot write under a driver: the error names the claimer from
//    /proc/iomem. Booting with iomem=relaxed lifts this one (not the RAM rule).
// The mapping is uncached (O_SYNC, which makes x86 map /dev/mem UC-): registers must see
// every access. Write-combining is not offered: map the BAR's resourceN_wc instead.
#pragma once

#include <cstdint>
#include <string>

#include "pcie/error.h"
#include "pcie/mmio.h"
#include "pcie/region.h"
#include "pcie/sys/mapping.h"
#include "pcie/sys/unique_fd.h"

namespace pcie {

// How PhysicalWindow::map opens and maps /dev/mem.
struct PhysicalWindowOptions {
  bool writable = true;                 // false maps PROT_READ
  std::string dev_mem = "/dev/mem";     // tests point these elsewhere
  std::string iomem = "/proc/iomem";    // used to explain refusals
};

// An uncached mapping of a physical address range through /dev/mem, as a Region (checked
// accesses) and an MmioView. Move-only; destruction unmaps it and closes /dev/mem.
class PhysicalWindow final : public Region {
 public:
  // Maps [physical, physical + length). Errors: invalid_argument (length 0, or the range
  // wraps), permission_denied (not root), lockdown (kernel lockdown forbids /dev/mem),
  // driver_owns_region (IO_STRICT_DEVMEM: a driver claimed the range; names it),
  // not_supported (STRICT_DEVMEM: the range is RAM), not_found (no /dev/mem: a kernel
  // without CONFIG_DEVMEM).
  static Result<PhysicalWindow> map(std::uint64_t physical, std::uint64_t length, const PhysicalWindowOptions& options = {});
  // An empty window (Region::valid() false), for a struct built step by step.
  PhysicalWindow() : Region(WidthSet::all(), false) {}
  // Move-only: takes over the mapping; the moved-from window is empty.
  PhysicalWindow(PhysicalWindow&&) noexcept = default;
  // Unmaps this window, then takes over `other`'s mapping, leaving `other` empty.
  PhysicalWindow& operator=(PhysicalWindow&&) noexcept = default;

  std::uint64_t size() const override { return valid() ? length_ : 0; }
  const std::string& name() const override { return name_; }
  bool valid() const override { return mapping_.valid(); }
  // The physical address of the window's first byte, as given to map() (0 when empty).
  std::uint64_t physical_address() const { return valid() ? physical_ : 0; }
  // Unchecked, ordered access to the window (uncached; null and size 0 when empty). The
  // view does not keep the mapping alive: the window must outlive it.
  MmioView mmio() const { return MmioView(base(), size(), allowed_widths(), name_, MemoryType::uncached); }
  std::byte* mapped_base() const override { return base(); }

 protected:
  // One load of `width` through the mapping; never fails.
  Result<std::uint64_t> read_checked(Width width, std::uint64_t offset) const override;
  // One store of `width` through the mapping; never fails.
  Result<void> write_checked(Width width, std::uint64_t offset, std::uint64_t value) override;

 private:
  PhysicalWindow(std::string name, UniqueFd fd, Mapping mapping, std::uint64_t physical, std::uint64_t page_offset,
                 std::uint64_t length, bool writable)
      : Region(WidthSet::all(), writable), name_(std::move(name)), fd_(std::move(fd)), mapping_(std::move(mapping)),
        physical_(physical), page_offset_(page_offset), length_(length) {}
  std::byte* base() const { return valid() ? mapping_.data() + page_offset_ : nullptr; }

  std::string name_;
  UniqueFd fd_;  // declared before mapping_: released after it
  Mapping mapping_;
  std::uint64_t physical_ = 0;
  std::uint64_t page_offset_ = 0;  // the window's start inside the first mapped page
  std::uint64_t length_ = 0;
};

}  // namespace pcie
