// PhysicalWindow: /dev/mem mapped uncached, with refusals explained from /proc/iomem.
#include "pcie/physical_window.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>

#include <limits>

#include "pcie/iomem.h"
#include "pcie/sysfs_bar.h"
#include "src/sys/syscalls.h"

namespace pcie {

namespace {

Error explain_refusal(const Error& raw, std::uint64_t physical, const PhysicalWindowOptions& options, bool opening) {
  Error error = raw;
  if (raw.sys_errno != EPERM && raw.sys_errno != EACCES) {
    if (raw.code == Errc::not_found) error.hint = "the kernel has no /dev/mem (CONFIG_DEVMEM off)";
    return error;
  }
  const std::string lockdown = read_lockdown_mode("/sys/kernel/security/lockdown");
  if (!lockdown.empty() && lockdown != "none") {
    error.code = Errc::lockdown;
    error.reason = "kernel lockdown (" + lockdown + ") forbids /dev/mem";
    error.hint = "use the sysfs or VFIO paths for BARs";
    return error;
  }
  if (opening || sys::effective_uid() != 0) {
    error.code = Errc::permission_denied;
    error.hint = "/dev/mem needs CAP_SYS_RAWIO: run as root";
    return error;
  }
  auto tree = read_iomem(options.iomem);
  const IomemOwner owner = tree ? iomem_owner(*tree, physical) : IomemOwner{};
  if (owner.ram) {
    error.code = Errc::not_supported;
    error.reason = fmt::format("{:#x} is System RAM, which CONFIG_STRICT_DEVMEM keeps out of /dev/mem", physical);
    error.hint = "for memory a device reads or writes, use DMA buffers (pcie/dma.h)";
  } else if (owner.claimed) {
    error.code = Errc::driver_owns_region;
    error.reason = fmt::format("{:#x} belongs to {}: CONFIG_IO_STRICT_DEVMEM keeps ranges a driver claimed out "
                               "of /dev/mem",
                               physical, owner.description);
    error.hint = owner.device ? "go through the driver that owns it (VFIO for vfio-pci), or unbind it; "
                                "iomem=relaxed on the kernel command line lifts this rule"
                              : "iomem=relaxed on the kernel command line lifts this rule";
  } else {
    error.reason += fmt::format(" (the kernel refused {:#x}: {})", physical,
                                tree ? owner.description : "/proc/iomem unreadable: " + tree.error().reason);
  }
  return error;
}

}  // namespace

Result<PhysicalWindow> PhysicalWindow::map(std::uint64_t physical, std::uint64_t length,
                                           const PhysicalWindowOptions& options) {
  const std::string name = fmt::format("physical {:#x}+{:#x}", physical, length);
  if (length == 0 || physical > ~std::uint64_t{0} - (length - 1)) {
    return std::unexpected(make_error(Errc::invalid_argument, "map physical window", name,
                                      length == 0 ? "the length is zero" : "the range wraps past 2^64"));
  }
  const std::uint64_t page = sys::page_size();
  const std::uint64_t first_page = physical / page * page;
  const std::uint64_t page_offset = physical - first_page;
  if (length > ~std::uint64_t{0} - page_offset - page) {
    return std::unexpected(make_error(Errc::invalid_argument, "map physical window", name, "the range is too long"));
  }
  const std::uint64_t mapped_length = (page_offset + length + page - 1) / page * page;
  if (first_page > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
    return std::unexpected(make_error(Errc::out_of_range, "map physical window", name,
                                      "the address does not fit a file offset"));
  }
  // O_SYNC: x86 maps /dev/mem uncached-minus with it (phys_mem_access_prot_allowed);
  // without it a range could be mapped write-back, and register accesses cached.
  auto fd = sys::open_file(options.dev_mem, (options.writable ? O_RDWR : O_RDONLY) | O_SYNC, "open");
  if (!fd) return std::unexpected(explain_refusal(fd.error(), physical, options, true));
  const int prot = PROT_READ | (options.writable ? PROT_WRITE : 0);
  auto mapping = sys::map_shared(fd->get(), mapped_length, first_page, prot, options.dev_mem);
  if (!mapping) {
    Error error = explain_refusal(mapping.error(), physical, options, false);
    error.operation = "map physical window";
    error.object = name;
    return std::unexpected(error);
  }
  return PhysicalWindow(name, std::move(*fd), std::move(*mapping), physical, page_offset, length, options.writable);
}

Result<std::uint64_t> PhysicalWindow::read_checked(Width width, std::uint64_t offset) const {
  return mmio().read_as(width, offset);
}

Result<void> PhysicalWindow::write_checked(Width width, std::uint64_t offset, std::uint64_t value) {
  mmio().write_as(width, offset, value);
  return {};
}

}  // namespace pcie
