#include "pcie/sysfs_bar.h"
#include "pcie/iomem.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "pcie/byte_order.h"
#include "pcie/config_space.h"
#include "pcie/discovery.h"
#include "pcie/memory_type.h"
#include "src/bar/register_file.h"
#include "src/pci/resource_file.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"

namespace pcie {
namespace {

std::string bar_name(const Bdf& bdf, unsigned bar) { return fmt::format("{} BAR{}", bdf.to_string(), bar); }

// The BAR as discovery sees it, plus the bound driver, for the checks and the diagnosis.
struct BarLookup {
  BarInfo bar;
  std::optional<std::string> driver;
};

Result<BarLookup> look_up_bar(const SysfsPaths& paths, const Bdf& bdf, unsigned index) {
  if (index >= kBarCount) {
    return std::unexpected(make_error(Errc::invalid_argument, "open", bar_name(bdf, index),
                                      "BAR index must be 0 to 5"));
  }
  // The resource file and the driver link, not describe(): a libpci session and config
  // reads for one line of text.
  auto bars = sysfs::read_bars(paths, bdf);
  if (!bars) return std::unexpected(bars.error());
  const auto bar = std::find_if(bars->begin(), bars->end(), [index](const BarInfo& b) { return b.index == index; });
  if (bar == bars->end()) {
    return std::unexpected(make_error(Errc::not_found, "open", bar_name(bdf, index),
                                      "the device does not implement this BAR (size 0)",
                                      "see the BARs it has with 'pciectl info " + bdf.to_string() +
                                          "'; a BAR the kernel failed to assign also reads as size 0 (dmesg: "
                                          "'BAR " + std::to_string(index) +
                                          ": failed to assign'): boot with pci=realloc then"));
  }
  if (!bar->assigned) {
    // Its resourceN would map the stale address: another device's BAR, or nothing.
    return std::unexpected(make_error(
        Errc::not_supported, "open", bar_name(bdf, index),
        fmt::format("the kernel gave this BAR no address (IORESOURCE_UNSET or DISABLED in {}/resource)",
                    paths.device_dir(bdf)),
        "dmesg says why ('BAR " + std::to_string(index) +
            ": no space' or 'failed to assign'): boot with pci=realloc, or enable Above 4G Decoding for "
            "large 64-bit BARs"));
  }
  auto driver = sysfs::device_driver(paths, bdf);  // only to explain refusals: unknown is none
  return BarLookup{*bar, driver ? *driver : std::nullopt};
}

// `address`: the CPU physical address of the mapping asked for (0 for I/O BARs).
BarFailureContext failure_context(const SysfsPaths& paths, const Bdf& bdf, unsigned bar,
                                  std::string path, std::optional<std::string> driver, std::uint64_t address = 0) {
  std::optional<std::string> claimed_by;
  if (address != 0) {
    if (auto tree = read_iomem(paths.iomem_file); tree) claimed_by = iomem_owner(*tree, address).claimed;
  }
  return BarFailureContext{bdf, bar, std::move(path), std::move(driver), std::move(claimed_by),
                           read_lockdown_mode(paths.lockdown_file), sys::effective_uid() == 0};
}

// The command register's decode bit for a BAR of `space` (PCI Local Bus 3.0, 6.2.2).
std::uint16_t decode_bit(BarInfo::Space space) {
  return space == BarInfo::Space::io ? cfg::kCommandIoSpace : cfg::kCommandMemorySpace;
}

const char* decode_bit_name(BarInfo::Space space) {
  return space == BarInfo::Space::io ? "I/O Space Enable" : "Memory Space Enable";
}

// The command register, or device_removed when config space reads all ones.
Result<std::uint16_t> read_command(const SysfsPaths& paths, const Bdf& bdf) {
  auto config = ConfigSpace::open(paths, bdf);
  if (!config) return std::unexpected(config.error());
  if (auto present = config->check_present(); !present) return std::unexpected(present.error());
  return config->read16(cfg::kCommand);
}

// An SR-IOV VF's own Memory Space Enable is read-only zero: its BARs decode when its PF's
// SR-IOV Control register has VF Memory Space Enable set (PCIe Base Spec 6.0, 9.3.3.3.4).
// That bit belongs to the PF's driver (it sets it with sriov_numvfs), so it is checked,
// never set, here.
constexpr std::uint16_t kSriovControl = 0x08;
constexpr std::uint16_t kSriovControlVfMemorySpace = 1u << 3;

Result<void> check_vf_decoding(const SysfsPaths& paths, const Bdf& vf, const Bdf& pf, const BarInfo& bar) {
  const std::string name = bar_name(vf, bar.index);
  auto config = ConfigSpace::open(paths, pf);
  if (!config) return std::unexpected(config.error());
  auto bytes = config->snapshot();
  if (!bytes) return std::unexpected(bytes.error());
  const auto walk = walk_extended_capabilities(*bytes);
  const auto sriov = find_capability(walk.capabilities, Capability::Space::extended, ext_cap::kSingleRootIov);
  if (!sriov) {
    return std::unexpected(make_error(
        Errc::device_disabled, "open", name,
        fmt::format("cannot confirm that this virtual function decodes its BARs: the SR-IOV capability of its "
                    "physical function {} is not readable ({} bytes of its config space)",
                    pf.to_string(), bytes->size()),
        config->limited_by_privilege() ? "run as root" : ""));
  }
  auto control = config->read16(sriov->offset + kSriovControl);
  if (!control) return std::unexpected(control.error());
  if ((*control & kSriovControlVfMemorySpace) != 0) return {};
  return std::unexpected(make_error(
      Errc::device_disabled, "open", name,
      fmt::format("this virtual function does not decode its BARs: VF Memory Space Enable is off in the SR-IOV "
                  "control of its physical function {} (0x{:04x})",
                  pf.to_string(), *control),
      fmt::format("the PF's driver sets it when VFs are enabled (echo N > /sys/bus/pci/devices/{}/sriov_numvfs)",
                  pf.to_string())));
}

// A device that does not decode the BAR's space answers nothing the driver could trust
// (zeros or all ones, or a fault): refused, or enabled first when asked. An error while
// checking fails the open: decoding cannot be confirmed.
Result<void> check_decoding(const SysfsPaths& paths, const Bdf& bdf, const BarInfo& bar, bool enable) {
  auto pf = sysfs::physical_function(paths, bdf);
  if (!pf) return std::unexpected(pf.error());  // fail closed: decoding cannot be confirmed
  if (*pf && bar.space == BarInfo::Space::memory) return check_vf_decoding(paths, bdf, **pf, bar);
  auto command = read_command(paths, bdf);
  if (!command) return std::unexpected(command.error());
  if ((*command & decode_bit(bar.space)) != 0) return {};
  if (enable) return enable_decoding(paths, bdf);
  return std::unexpected(make_error(
      Errc::device_disabled, "open", bar_name(bdf, bar.index),
      fmt::format("the device does not decode this BAR: {} is off in its command register (0x{:04x}), so "
                  "accesses would not reach it",
                  decode_bit_name(bar.space), *command),
      fmt::format("enable it (pciectl --enable, pcie::enable_decoding, or echo 1 > "
                  "/sys/bus/pci/devices/{}/enable); a device without a driver is often left disabled",
                  bdf.to_string())));
}

}  // namespace

Result<void> enable_decoding(const SysfsPaths& paths, const Bdf& bdf) {
  auto bars = sysfs::read_bars(paths, bdf);
  if (!bars) return std::unexpected(bars.error());
  std::uint16_t wanted = 0;
  for (const BarInfo& bar : *bars) wanted |= decode_bit(bar.space);
  const std::string name = bdf.to_string();
  if (auto written = sys::write_text_file(paths.device_dir(bdf) + "/enable", "1", "enable decoding of"); !written) {
    return std::unexpected(written.error());
  }
  auto command = read_command(paths, bdf);
  if (!command) return std::unexpected(command.error());
  if ((*command & wanted) == wanted) return {};
  // The kernel counts enables: a device it already counts as enabled, whose bits were
  // cleared behind its back (setpci), is not touched again. Set them directly.
  auto config = ConfigSpace::open(paths, bdf, ConfigSpace::Mode::read_write);
  if (!config) return std::unexpected(config.error());
  if (auto set = config->write16(cfg::kCommand, static_cast<std::uint16_t>(*command | wanted)); !set) {
    return std::unexpected(set.error());
  }
  auto after = read_command(paths, bdf);
  if (!after) return std::unexpected(after.error());
  if ((*after & wanted) != wanted) {
    return std::unexpected(make_error(Errc::io_error, "enable decoding of", name,
                                      fmt::format("the command register still reads 0x{:04x}", *after),
                                      "the device ignores the enable bits; check dmesg"));
  }
  return {};
}

std::string read_lockdown_mode(const std::string& lockdown_file) {
  auto text = sys::read_text_file(lockdown_file, 256);
  if (!text) return {};
  const auto open = text->find('[');
  const auto close = text->find(']', open == std::string::npos ? 0 : open);
  if (open == std::string::npos || close == std::string::npos) return {};
  return text->substr(open + 1, close - open - 1);
}

Error explain_bar_failure(const Error& raw, const BarFailureContext& context) {
  Error error = raw;
  error.object = fmt::format("{} ({})", bar_name(context.bdf, context.bar), context.path);
  const bool locked_down = !context.lockdown_mode.empty() && context.lockdown_mode != "none";
  if (raw.code == Errc::permission_denied && locked_down) {
    error.code = Errc::lockdown;
    error.reason = fmt::format("{}: kernel lockdown ({}) forbids user-space BAR access through sysfs",
                               raw.reason, context.lockdown_mode);
    error.hint = "use the device through VFIO, or boot without lockdown (it follows Secure Boot)";
  } else if (raw.code == Errc::permission_denied && !context.running_as_root) {
    error.reason = raw.reason + ": BAR resource files are accessible to root only";
    error.hint = "run as root, or bind the device to vfio-pci and use VFIO";
  } else if (raw.code == Errc::permission_denied) {
    error.hint = "root was refused: check SELinux/AppArmor policy and CAP_SYS_RAWIO";
  } else if (raw.sys_errno == EINVAL && context.claimed_by) {
    // Named from the kernel's resource tree, which is what the IO_STRICT_DEVMEM check looks
    // at; the claim's name may differ from the driver's (vfio-pci claims as "vfio").
    error.code = Errc::driver_owns_region;
    error.reason = context.driver
                       ? fmt::format("the kernel refuses to map BAR{} while driver '{}' owns it: its range is claimed "
                                     "as '{}' in /proc/iomem (CONFIG_IO_STRICT_DEVMEM)",
                                     context.bar, *context.driver, *context.claimed_by)
                       : fmt::format("the kernel refuses to map BAR{} while '{}' has claimed its range (/proc/iomem; "
                                     "CONFIG_IO_STRICT_DEVMEM)",
                                     context.bar, *context.claimed_by);
    error.hint = context.driver
                     ? fmt::format("unbind it (echo {} > /sys/bus/pci/drivers/{}/unbind) or use the device through "
                                   "VFIO",
                                   context.bdf.to_string(), *context.driver)
                     : std::string("release it in whatever claimed it, or boot with iomem=relaxed");
  } else if (raw.sys_errno == EINVAL && context.driver) {
    error.code = Errc::driver_owns_region;
    error.reason = fmt::format("the kernel refuses to map BAR{} while driver '{}' owns it "
                               "(CONFIG_IO_STRICT_DEVMEM)", context.bar, *context.driver);
    error.hint = fmt::format("unbind it (echo {} > /sys/bus/pci/drivers/{}/unbind) or use the "
                             "device through VFIO", context.bdf.to_string(), *context.driver);
  } else if (raw.code == Errc::not_found) {
    error.hint = "the resource file is missing: is the BAR implemented and the device present?";
  }
  return error;
}

Result<BarMapping> BarMapping::map(const SysfsPaths& paths, const Bdf& bdf, unsigned bar,
                                   const BarMapOptions& options) {
  auto lookup = look_up_bar(paths, bdf, bar);
  if (!lookup) return std::unexpected(lookup.error());
  return map_bar(paths, bdf, lookup->bar, lookup->driver, options);
}

namespace {

// What map_bar() can refuse before touching anything: the BAR's kind, the memory type, the
// window's alignment and bounds. Returns the window's length.
Result<std::uint64_t> check_map_request(const BarInfo& info, const BarMapOptions& options, const std::string& name) {
  if (info.space == BarInfo::Space::io) {
    return std::unexpected(make_error(Errc::not_supported, "map", name,
                                      "an I/O-port BAR cannot be memory-mapped",
                                      "use IoPortBar (pciectl read/write do this for you)"));
  }
  if (options.memory_type == MemoryType::write_back) {
    return std::unexpected(make_error(Errc::invalid_argument, "map", name,
                                      "a BAR cannot be mapped write-back (cached): the CPU would serve "
                                      "reads from its cache and write back lines the device never saw",
                                      "map it uncached or write-combined"));
  }
  if (options.memory_type == MemoryType::write_combined && !info.prefetchable) {
    return std::unexpected(make_error(Errc::not_supported, "map write-combined", name,
                                      "the BAR is not prefetchable, so the kernel offers no resource_wc file",
                                      "map it uncached"));
  }
  const std::uint64_t page = sys::page_size();
  if (options.offset % page != 0) {
    return std::unexpected(make_error(Errc::misaligned, "map", fmt::format("{} offset 0x{:x}", name, options.offset),
                                      fmt::format("the window offset must be a multiple of the page size (0x{:x})", page)));
  }
  const std::uint64_t length = options.length != 0 ? options.length
                               : (options.offset < info.size ? info.size - options.offset : 0);
  auto in_bar = check_span("map", name, info.size, options.offset, length);
  if (!in_bar) return std::unexpected(in_bar.error());
  if (length == 0) return std::unexpected(make_error(Errc::out_of_range, "map", name, "empty window"));
  return length;
}

// The kernel makes resourceN_wc for prefetchable BARs only when PAT works (pci_create_attr,
// arch_can_pci_mmap_wc): its absence beside resourceN says so.
Error write_combining_unavailable(const SysfsPaths& paths, const std::string& name, const std::string& path) {
  const auto cmdline = sys::read_text_file(paths.kernel_cmdline, 64 * 1024);
  const bool nopat = cmdline && (" " + *cmdline).find(" nopat") != std::string::npos;
  return make_error(
      Errc::not_supported, "map write-combined", name,
      fmt::format("the kernel offers no write-combined mapping of this BAR (no {}): PAT is off ({})",
                  path.substr(path.rfind('/') + 1), nopat ? "the kernel was booted with nopat" : "booted with nopat, "
                                                                "or the CPU has no PAT"),
      "map it uncached, or boot without nopat");
}

// Opens resourceN (or resourceN_wc) at `path`, explaining a refusal.
Result<UniqueFd> open_resource_file(const SysfsPaths& paths, const Bdf& bdf, const BarInfo& info,
                                    const std::optional<std::string>& driver, const BarMapOptions& options,
                                    const std::string& path) {
  auto fd = sys::open_file(path, options.writable ? O_RDWR : O_RDONLY, "open");
  if (!fd && options.memory_type == MemoryType::write_combined && fd.error().sys_errno == ENOENT &&
      sys::path_exists(fmt::format("{}/resource{}", paths.device_dir(bdf), info.index))) {
    return std::unexpected(write_combining_unavailable(paths, bar_name(bdf, info.index), path));
  }
  if (!fd) {
    return std::unexpected(explain_bar_failure(fd.error(), failure_context(paths, bdf, info.index, path, driver)));
  }
  return std::move(*fd);
}

// The kernel's resource files are exactly as long as the BAR. A shorter one (a fake or
// hand-made tree) would fault with SIGBUS on the first access past its end.
Result<void> check_file_covers(int fd, const std::string& path, const std::string& name, std::uint64_t offset,
                               std::uint64_t length) {
  auto file_bytes = sys::file_size(fd, path);
  if (!file_bytes) return std::unexpected(file_bytes.error());
  if (*file_bytes < offset || length > *file_bytes - offset) {
    return std::unexpected(make_error(
        Errc::malformed, "map", fmt::format("{} ({})", name, path),
        fmt::format("the file holds {} bytes, fewer than the window [0x{:x}, 0x{:x}) needs", *file_bytes, offset,
                    offset + length),
        "a kernel's resource file is as long as the BAR: is this a complete sysfs tree?"));
  }
  return {};
}

}  // namespace

Result<BarMapping> BarMapping::map_bar(const SysfsPaths& paths, const Bdf& bdf, const BarInfo& info,
                                       const std::optional<std::string>& driver, const BarMapOptions& options) {
  const unsigned bar = info.index;
  const std::string name = bar_name(bdf, bar);
  auto length = check_map_request(info, options, name);
  if (!length) return std::unexpected(length.error());
  if (auto decoding = check_decoding(paths, bdf, info, options.enable_decoding); !decoding) {
    return std::unexpected(decoding.error());
  }
  const bool write_combined = options.memory_type == MemoryType::write_combined;
  const std::string path = fmt::format("{}/resource{}{}", paths.device_dir(bdf), bar, write_combined ? "_wc" : "");
  auto fd = open_resource_file(paths, bdf, info, driver, options, path);
  if (!fd) return std::unexpected(fd.error());
  if (auto covered = check_file_covers(fd->get(), path, name, options.offset, *length); !covered) {
    return std::unexpected(covered.error());
  }
  // The kernel maps whole pages; a BAR smaller than a page still maps one page
  // (drivers/pci/pci-sysfs.c, pci_mmap_fits), but accesses stay bounded by `length`.
  const std::uint64_t page = sys::page_size();
  const std::uint64_t mapped = (*length + page - 1) / page * page;
  const int prot = options.writable ? PROT_READ | PROT_WRITE : PROT_READ;
  auto mapping = sys::map_shared(fd->get(), mapped, options.offset, prot, path);
  if (!mapping) {
    return std::unexpected(explain_bar_failure(
        mapping.error(), failure_context(paths, bdf, bar, path, driver, info.bus_address + options.offset)));
  }
  // Registered with the removal guard (pcie/removal.h); a full table leaves it unguarded.
  (void)mapping->guard_as_device_memory(bdf);
  // What the kernel really granted: a second mapping of the range gets the first one's type.
  MemoryTypeReport report = check_memory_type(paths, options.memory_type, info.bus_address + options.offset, *length);
  if (!report.matches() && options.on_mismatch == MemoryTypeMismatch::fail) {
    return std::unexpected(make_error(Errc::busy, "map " + std::string(to_string(options.memory_type)), name,
                                      report.note,
                                      "unmap the other mapping of this BAR first (in this process or another), or "
                                      "accept the granted type (MemoryTypeMismatch::use_granted)"));
  }
  return BarMapping(name, std::move(*fd), std::move(*mapping), options.offset, *length, std::move(report),
                    options.writable);
}

Result<std::uint64_t> BarMapping::read_checked(Width width, std::uint64_t offset) const {
  const std::uint64_t value = mmio().read_as(width, offset);
  if (value == all_ones(width) && mapping_.revoked()) [[unlikely]] {
    return std::unexpected(removed_error("read", name_, offset));
  }
  return value;
}

Result<void> BarMapping::write_checked(Width width, std::uint64_t offset, std::uint64_t value) {
  if (mapping_.revoked()) [[unlikely]] return std::unexpected(removed_error("write", name_, offset));
  mmio().write_as(width, offset, value);
  return {};
}

Result<IoPortBar> IoPortBar::open(const SysfsPaths& paths, const Bdf& bdf, unsigned bar, bool writable,
                                  bool enable_decoding) {
  auto lookup = look_up_bar(paths, bdf, bar);
  if (!lookup) return std::unexpected(lookup.error());
  return open_bar(paths, bdf, lookup->bar, lookup->driver, writable, enable_decoding);
}

Result<IoPortBar> IoPortBar::open_bar(const SysfsPaths& paths, const Bdf& bdf, const BarInfo& info,
                                      const std::optional<std::string>& driver, bool writable,
                                      bool enable_decoding) {
  const unsigned bar = info.index;
  const std::string name = bar_name(bdf, bar);
  if (info.space != BarInfo::Space::io) {
    return std::unexpected(make_error(Errc::not_supported, "open I/O port", name,
                                      "this is a memory BAR", "map it with BarMapping"));
  }
  if (auto decoding = check_decoding(paths, bdf, info, enable_decoding); !decoding) {
    return std::unexpected(decoding.error());
  }
  const std::string path = fmt::format("{}/resource{}", paths.device_dir(bdf), bar);
  auto fd = sys::open_file(path, writable ? O_RDWR : O_RDONLY, "open");
  if (!fd) {
    return std::unexpected(explain_bar_failure(fd.error(), failure_context(paths, bdf, bar, path, driver)));
  }
  return IoPortBar(name, path, std::move(*fd), info.size, writable);
}

Result<std::uint64_t> IoPortBar::read_checked(Width width, std::uint64_t offset) const {
  return read_register_file(fd_.get(), width, offset, path_);
}

Result<void> IoPortBar::write_checked(Width width, std::uint64_t offset, std::uint64_t value) {
  return write_register_file(fd_.get(), width, offset, value, path_);
}

Result<std::unique_ptr<Region>> open_sysfs_bar(const SysfsPaths& paths, const Bdf& bdf, unsigned bar,
                                               const BarMapOptions& options) {
  auto lookup = look_up_bar(paths, bdf, bar);
  if (!lookup) return std::unexpected(lookup.error());
  if (lookup->bar.space == BarInfo::Space::io) {
    if (options.offset != 0 || options.length != 0 || options.memory_type != MemoryType::uncached) {
      return std::unexpected(make_error(Errc::not_supported, "open", bar_name(bdf, bar),
                                        "I/O-port BARs take no window or memory type"));
    }
    auto io = IoPortBar::open_bar(paths, bdf, lookup->bar, lookup->driver, options.writable,
                                  options.enable_decoding);
    if (!io) return std::unexpected(io.error());
    return std::make_unique<IoPortBar>(std::move(*io));
  }
  auto mapped = BarMapping::map_bar(paths, bdf, lookup->bar, lookup->driver, options);
  if (!mapped) return std::unexpected(mapped.error());
  return std::make_unique<BarMapping>(std::move(*mapped));
}

}  // namespace pcie
