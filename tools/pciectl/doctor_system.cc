#include "tools/pciectl/doctor_system.h"

#include "pcie/vfio.h"

#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>

namespace pciectl::doctor {
namespace {

bool has_word(const std::string& text, const std::string& word) {
  std::istringstream words(text);
  for (std::string w; words >> w;) {
    if (w == word || w.starts_with(word + "=")) return true;
  }
  return false;
}

std::string word_value(const std::string& text, const std::string& key) {
  std::istringstream words(text);
  for (std::string w; words >> w;) {
    if (w.starts_with(key + "=")) return w.substr(key.size() + 1);
  }
  return {};
}

std::string size_text(std::uint64_t bytes) {
  if (bytes == ~std::uint64_t{0}) return "unlimited";
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) return fmt::format("{} GiB", bytes >> 30);
  if (bytes >= (1ull << 20)) return fmt::format("{} MiB", bytes >> 20);
  return fmt::format("{} KiB", bytes >> 10);
}

// The kernel's build configuration: /boot/config-<release>, else /proc/config.gz.
std::string kernel_config(const DoctorOptions& options) {
  struct utsname names {};
  if (::uname(&names) == 0) {
    std::string text = slurp(options.boot_dir + "/config-" + names.release, 16 << 20);
    if (!text.empty()) return text;
  }
  gzFile gz = gzopen((options.proc + "/config.gz").c_str(), "rb");
  if (gz == nullptr) return {};
  std::string text;
  char buffer[65536];
  for (int n; (n = gzread(gz, buffer, sizeof buffer)) > 0 && text.size() < (16u << 20);) text.append(buffer, n);
  gzclose(gz);
  return text;
}

std::string config_value(const std::string& config, const std::string& option) {
  const std::string key = option + "=";
  std::size_t at = config.find("\n" + key);
  if (at == std::string::npos && config.starts_with(key)) at = 0;
  else if (at != std::string::npos) ++at;
  else return config.find("# " + option + " is not set") != std::string::npos ? "n" : "";
  const std::size_t end = config.find('\n', at);
  return config.substr(at + key.size(), end == std::string::npos ? std::string::npos : end - at - key.size());
}

// What several checks read: the kernel command line, the IOMMU groups, and the kernel's
// build configuration (read when a check first asks for it).
struct Machine {
  explicit Machine(const DoctorOptions& options)
      : options(options), cmdline(slurp(options.proc + "/cmdline")), groups(list(options.sysfs + "/kernel/iommu_groups")) {}
  const DoctorOptions& options;
  const std::string cmdline;
  const std::vector<std::string> groups;  // an IOMMU translates for PCI devices only when some exist
  const std::string& config() const {
    if (!config_) config_ = kernel_config(options);
    return *config_;
  }

 private:
  mutable std::optional<std::string> config_;
};

// ---- The IOMMU, VFIO and UIO ----

Check iommu_off(const Machine& machine) {
  const std::string& cmdline = machine.cmdline;
  const bool asked = has_word(cmdline, "intel_iommu") || has_word(cmdline, "amd_iommu");
  const std::string intel = word_value(cmdline, "intel_iommu");
  const std::string amd = word_value(cmdline, "amd_iommu");
  return {.status = Status::fail,
          .detail = asked ? fmt::format("off: no IOMMU groups although the command line asks ({}{})",
                                        intel.empty() ? "" : "intel_iommu=" + intel,
                                        amd.empty() ? "" : " amd_iommu=" + amd)
                          : "off: the kernel created no IOMMU groups",
          .fix = "enable VT-d / AMD-Vi in the firmware setup and boot with intel_iommu=on (Intel; AMD enables it "
                 "by default); without an IOMMU only VFIO no-IOMMU mode or UIO remain, both root-only and unsafe"};
}

std::optional<Check> check_iommu(const Machine& machine) {
  const std::string& sysfs = machine.options.sysfs;
  const auto units = list(sysfs + "/class/iommu");
  if (machine.groups.empty()) return iommu_off(machine);
  const std::string domain_type = trimmed(slurp(sysfs + "/kernel/iommu_groups/" + machine.groups.front() + "/type"));
  std::string detail = fmt::format("on: {} IOMMU groups", machine.groups.size());
  if (!units.empty()) detail += fmt::format(", units {}", fmt::join(units, " "));
  if (!domain_type.empty()) detail += fmt::format(", default domain {}", domain_type);
  const bool passthrough = domain_type == "identity" || word_value(machine.cmdline, "iommu") == "pt";
  if (passthrough) detail += " (host devices pass through untranslated; VFIO still isolates the devices it owns)";
  return Check{.status = Status::ok, .detail = detail};
}

std::optional<Check> check_vfio_modules(const Machine& machine) {
  const DoctorOptions& options = machine.options;
  const bool vfio_pci = exists(options.paths.pci_root + "/drivers/vfio-pci");
  const bool type1 = exists(options.sysfs + "/module/vfio_iommu_type1");
  const bool container = exists(options.dev_vfio + "/vfio");
  if (vfio_pci && (type1 || machine.groups.empty()) && container) {
    return Check{.status = Status::ok,
                 .detail = fmt::format("vfio-pci loaded, {}/vfio present{}", options.dev_vfio,
                                       type1 ? ", vfio_iommu_type1 loaded" : "")};
  }
  std::vector<std::string> missing;
  if (!vfio_pci) missing.push_back("vfio-pci");
  if (!type1) missing.push_back("vfio_iommu_type1");
  if (!container) missing.push_back(options.dev_vfio + "/vfio");
  return Check{.status = machine.groups.empty() ? Status::warn : Status::fail,
               .detail = fmt::format("missing: {}", fmt::join(missing, ", ")),
               .fix = "modprobe vfio-pci (it loads vfio and vfio_iommu_type1); to load it at boot: echo vfio-pci > "
                      "/etc/modules-load.d/vfio-pci.conf"};
}

// Reported only where the vfio module has the parameter.
std::optional<Check> check_vfio_noiommu(const Machine& machine) {
  const std::string noiommu =
      trimmed(slurp(machine.options.sysfs + "/module/vfio/parameters/enable_unsafe_noiommu_mode"));
  if (noiommu.empty()) return std::nullopt;
  return Check{.status = noiommu == "Y" ? Status::warn : Status::info,
               .detail = noiommu == "Y" ? "VFIO no-IOMMU mode is on: devices can DMA anywhere"
                                        : "VFIO no-IOMMU mode available, off"};
}

std::optional<Check> check_iommufd(const Machine& machine) {
  const std::string node = machine.options.dev_root + "/iommu";
  if (exists(node)) return Check{.status = Status::ok, .detail = node + " present"};
  return Check{.status = Status::info,
               .detail = "no " + node + " (kernel without IOMMUFD, or module not loaded); the VFIO container works "
                                        "without it"};
}

// Which IOMMU backend a VfioContainer would take for this user now, and why.
std::optional<Check> check_vfio_backend(const Machine& machine) {
  const DoctorOptions& options = machine.options;
  pcie::VfioPaths vfio = pcie::VfioPaths::under(options.sysfs, options.proc, options.dev_root);
  vfio.sysfs = options.paths;
  vfio.dev_vfio = options.dev_vfio;
  auto choice = pcie::choose_vfio_backend(vfio);
  if (!choice) {
    return Check{.status = Status::fail, .detail = choice.error().message(), .fix = choice.error().hint};
  }
  return Check{.status = Status::info, .detail = choice->reason};
}

std::optional<Check> check_uio(const Machine& machine) {
  if (exists(machine.options.paths.pci_root + "/drivers/uio_pci_generic")) {
    return Check{.status = Status::ok, .detail = "uio_pci_generic loaded"};
  }
  return Check{.status = Status::info,
               .detail = "uio_pci_generic not loaded (only needed without an IOMMU: modprobe uio_pci_generic)"};
}

// /dev/vfio nodes: who may open them.
std::optional<Check> check_vfio_nodes(const Machine& machine) {
  const std::string& dev_vfio = machine.options.dev_vfio;
  std::vector<std::string> nodes;
  for (const std::string& name : list(dev_vfio)) {
    struct stat status {};
    if (::stat((dev_vfio + "/" + name).c_str(), &status) != 0) continue;
    const bool mine = ::access((dev_vfio + "/" + name).c_str(), R_OK | W_OK) == 0;
    nodes.push_back(fmt::format("{} ({}:{} {:o}{})", name, status.st_uid, status.st_gid, status.st_mode & 0777,
                                mine ? ", yours" : ""));
  }
  return Check{.status = Status::info, .detail = nodes.empty() ? "none" : fmt::format("{}", fmt::join(nodes, ", "))};
}

// ---- Memory ----

// Pinned memory.
std::optional<Check> check_memlock(const Machine&) {
  struct rlimit memlock {};
  ::getrlimit(RLIMIT_MEMLOCK, &memlock);
  const std::uint64_t limit = memlock.rlim_cur == RLIM_INFINITY ? ~std::uint64_t{0} : memlock.rlim_cur;
  const bool root = ::geteuid() == 0;
  constexpr std::uint64_t kTypicalPinned = 256ull << 20;  // a driver's queues and a few MiB of buffers per queue
  const bool enough = root || limit >= kTypicalPinned;
  return Check{.status = enough ? Status::ok : Status::warn,
               .detail = fmt::format("RLIMIT_MEMLOCK {}{}", size_text(limit),
                                     root ? " (root: CAP_IPC_LOCK lifts it)" : ""),
               .fix = enough ? ""
                             : fmt::format("DMA buffers are pinned and counted against it; a driver with a few "
                                           "queues pins {} or more: set 'USER hard memlock unlimited' (or a size "
                                           "in KiB) in /etc/security/limits.d/ and log in again",
                                           size_text(kTypicalPinned))};
}

// One huge page size's pool ("hugepages-2048kB" -> "2 MiB pages: ..."), per NUMA node;
// adds its page count to `reserved`.
std::string hugepage_pool(const std::string& sysfs, const std::string& size, std::uint64_t& reserved) {
  const std::string total = trimmed(slurp(sysfs + "/kernel/mm/hugepages/" + size + "/nr_hugepages"));
  const std::string free = trimmed(slurp(sysfs + "/kernel/mm/hugepages/" + size + "/free_hugepages"));
  std::vector<std::string> per_node;
  for (const std::string& node : list(sysfs + "/devices/system/node")) {
    if (!node.starts_with("node")) continue;
    const std::string count =
        trimmed(slurp(sysfs + "/devices/system/node/" + node + "/hugepages/" + size + "/nr_hugepages"));
    if (!count.empty()) per_node.push_back(node + ":" + count);
  }
  reserved += std::strtoull(total.c_str(), nullptr, 10);
  const std::uint64_t kib = std::strtoull(size.c_str() + std::string("hugepages-").size(), nullptr, 10);
  return fmt::format("{} pages: {} total, {} free{}", size_text(kib << 10), total, free,
                     per_node.empty() ? "" : fmt::format(" ({})", fmt::join(per_node, " ")));
}

// Huge pages, per size and per NUMA node.
std::optional<Check> check_hugepages(const Machine& machine) {
  const std::string& sysfs = machine.options.sysfs;
  std::vector<std::string> pools;
  std::uint64_t reserved = 0;
  for (const std::string& size : list(sysfs + "/kernel/mm/hugepages")) {
    pools.push_back(hugepage_pool(sysfs, size, reserved));
  }
  return Check{.status = reserved > 0 ? Status::ok : Status::info,
               .detail = pools.empty() ? "no huge page sizes" : fmt::format("{}", fmt::join(pools, "; ")),
               .fix = reserved > 0 ? ""
                                   : "none reserved: DMA buffers use 4 KiB pages (fine behind an IOMMU; physically "
                                     "contiguous buffers without one need them): echo 64 > "
                                     "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"};
}

// ---- What the kernel allows ----

// "on" or "off" from the SecureBoot EFI variable; empty without one.
std::string secure_boot(const std::string& sysfs) {
  std::string state;
  for (const std::string& name : list(sysfs + "/firmware/efi/efivars")) {
    if (!name.starts_with("SecureBoot-")) continue;
    const std::string bytes = slurp(sysfs + "/firmware/efi/efivars/" + name, 16);
    if (bytes.size() >= 5) state = bytes[4] == 1 ? "on" : "off";
  }
  return state;
}

// Lockdown and Secure Boot.
std::optional<Check> check_lockdown(const Machine& machine) {
  const std::string lockdown = trimmed(slurp(machine.options.paths.lockdown_file));
  const std::string secure = secure_boot(machine.options.sysfs);
  const bool locked = lockdown.find("[integrity]") != std::string::npos ||
                      lockdown.find("[confidentiality]") != std::string::npos;
  return Check{.status = locked ? Status::warn : Status::ok,
               .detail = fmt::format("lockdown {}; Secure Boot {}", lockdown.empty() ? "not available" : lockdown,
                                     secure.empty() ? "unknown (no EFI variables)" : secure),
               .fix = locked ? "lockdown refuses sysfs BAR mappings, /dev/mem and no-IOMMU mode; VFIO with an "
                               "IOMMU still works"
                             : ""};
}

// PAT: write-combined mappings need it.
std::optional<Check> check_pat(const Machine& machine) {
  const std::string cpuinfo = slurp(machine.options.proc + "/cpuinfo", 1 << 16);
  const bool cpu_pat = cpuinfo.find(" pat ") != std::string::npos;
  const bool nopat = has_word(machine.cmdline, "nopat");
  return Check{.status = cpu_pat && !nopat ? Status::ok : Status::warn,
               .detail = nopat ? "off (nopat on the command line)" : cpu_pat ? "on" : "the CPU does not report PAT",
               .fix = cpu_pat && !nopat ? "" : "write-combined BAR mappings fall back to uncached; remove nopat"};
}

// /dev/mem restrictions, from the kernel's build configuration.
std::optional<Check> check_devmem(const Machine& machine) {
  const std::string& config = machine.config();
  if (config.empty()) {
    return Check{.status = Status::info, .detail = "kernel configuration not found (/boot/config-*, /proc/config.gz)"};
  }
  const std::string devmem = config_value(config, "CONFIG_DEVMEM");
  const std::string strict = config_value(config, "CONFIG_STRICT_DEVMEM");
  const std::string io_strict = config_value(config, "CONFIG_IO_STRICT_DEVMEM");
  const bool relaxed = word_value(machine.cmdline, "iomem") == "relaxed";
  return Check{.status = Status::info,
               .detail = fmt::format("CONFIG_DEVMEM={}, CONFIG_STRICT_DEVMEM={}, CONFIG_IO_STRICT_DEVMEM={}{}",
                                     devmem.empty() ? "?" : devmem, strict.empty() ? "?" : strict,
                                     io_strict.empty() ? "?" : io_strict, relaxed ? " (iomem=relaxed)" : ""),
               .fix = io_strict == "y" && !relaxed ? "/dev/mem refuses ranges a driver claimed; boot with "
                                                     "iomem=relaxed to peek at them (pciectl mem)"
                                                   : ""};
}

// Reported only where the kernel's configuration names CONFIG_VFIO_DEVICE_CDEV.
std::optional<Check> check_vfio_cdev(const Machine& machine) {
  const std::string& config = machine.config();
  if (config.empty()) return std::nullopt;
  const std::string cdev = config_value(config, "CONFIG_VFIO_DEVICE_CDEV");
  if (cdev.empty()) return std::nullopt;
  return Check{.status = Status::info,
               .detail = fmt::format("CONFIG_VFIO_DEVICE_CDEV={}, CONFIG_IOMMUFD={}, CONFIG_VFIO_NOIOMMU={}", cdev,
                                     config_value(config, "CONFIG_IOMMUFD"),
                                     config_value(config, "CONFIG_VFIO_NOIOMMU"))};
}

// Each check by its stable name, in the order they are reported; one that returns nothing
// has nothing to say on this machine.
struct SystemCheck {
  const char* name;
  std::optional<Check> (*run)(const Machine&);
};

constexpr SystemCheck kSystemChecks[] = {
    {"iommu", check_iommu},
    {"vfio_modules", check_vfio_modules},
    {"vfio_noiommu", check_vfio_noiommu},
    {"iommufd", check_iommufd},
    {"vfio_backend", check_vfio_backend},
    {"uio", check_uio},
    {"vfio_nodes", check_vfio_nodes},
    {"memlock", check_memlock},
    {"hugepages", check_hugepages},
    {"lockdown", check_lockdown},
    {"pat", check_pat},
    {"devmem", check_devmem},
    {"vfio_cdev", check_vfio_cdev},
};

}  // namespace

void system_checks(const DoctorOptions& options, std::vector<Check>& checks) {
  const Machine machine(options);
  for (const SystemCheck& entry : kSystemChecks) {
    std::optional<Check> check = entry.run(machine);
    if (!check) continue;
    check->name = entry.name;
    checks.push_back(std::move(*check));
  }
}

}  // namespace pciectl::doctor
