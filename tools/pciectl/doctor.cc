#include "tools/pciectl/doctor.h"

#include "pcie/vfio.h"

#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pcie/binding.h"
#include "pcie/discovery.h"
#include "pcie/iomem.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

namespace fs = std::filesystem;

enum class Status { ok, info, warn, fail };

const char* status_name(Status status) {
  switch (status) {
    case Status::ok: return "ok";
    case Status::info: return "info";
    case Status::warn: return "warn";
    case Status::fail: return "fail";
  }
  return "?";
}

struct Check {
  std::string name;    // stable, for --json: "iommu", "vfio_modules", ...
  Status status = Status::info;
  std::string detail;  // what was found
  std::string fix;     // what to do, when something is wrong
  bool blocks_device = false;  // a failure that keeps the device from a userspace driver
};

// Small text files only (sysfs attributes, /proc files); empty when unreadable.
std::string slurp(const std::string& path, std::size_t limit = 1 << 20) {
  std::ifstream in(path);
  if (!in) return {};
  std::string text(limit, '\0');
  in.read(text.data(), static_cast<std::streamsize>(limit));
  text.resize(static_cast<std::size_t>(in.gcount()));
  return text;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

bool exists(const std::string& path) {
  std::error_code ignored;
  return fs::exists(path, ignored);
}

std::vector<std::string> list(const std::string& path) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end && names.size() < 4096; it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

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

void system_checks(const DoctorOptions& options, std::vector<Check>& checks) {
  const std::string sysfs = options.sysfs;
  const std::string cmdline = slurp(options.proc + "/cmdline");

  // The IOMMU: groups exist only when one translates for PCI devices.
  const auto groups = list(sysfs + "/kernel/iommu_groups");
  const auto units = list(sysfs + "/class/iommu");
  std::string domain_type;
  if (!groups.empty()) domain_type = trimmed(slurp(sysfs + "/kernel/iommu_groups/" + groups.front() + "/type"));
  if (!groups.empty()) {
    std::string detail = fmt::format("on: {} IOMMU groups", groups.size());
    if (!units.empty()) detail += fmt::format(", units {}", fmt::join(units, " "));
    if (!domain_type.empty()) detail += fmt::format(", default domain {}", domain_type);
    const bool passthrough = domain_type == "identity" || word_value(cmdline, "iommu") == "pt";
    if (passthrough) detail += " (host devices pass through untranslated; VFIO still isolates the devices it owns)";
    checks.push_back({"iommu", Status::ok, detail, ""});
  } else {
    const bool asked = has_word(cmdline, "intel_iommu") || has_word(cmdline, "amd_iommu");
    checks.push_back({"iommu", Status::fail,
                      asked ? fmt::format("off: no IOMMU groups although the command line asks ({}{})",
                                          word_value(cmdline, "intel_iommu").empty() ? "" : "intel_iommu=" + word_value(cmdline, "intel_iommu"),
                                          word_value(cmdline, "amd_iommu").empty() ? "" : " amd_iommu=" + word_value(cmdline, "amd_iommu"))
                            : "off: the kernel created no IOMMU groups",
                      "enable VT-d / AMD-Vi in the firmware setup and boot with intel_iommu=on (Intel; AMD enables it "
                      "by default); without an IOMMU only VFIO no-IOMMU mode or UIO remain, both root-only and unsafe"});
  }

  // VFIO and UIO drivers.
  const bool vfio_pci = exists(options.pci_root + "/drivers/vfio-pci");
  const bool type1 = exists(sysfs + "/module/vfio_iommu_type1");
  const bool container = exists(options.dev_vfio + "/vfio");
  if (vfio_pci && (type1 || groups.empty()) && container) {
    checks.push_back({"vfio_modules", Status::ok,
                      fmt::format("vfio-pci loaded, {}/vfio present{}", options.dev_vfio,
                                  type1 ? ", vfio_iommu_type1 loaded" : ""),
                      ""});
  } else {
    std::vector<std::string> missing;
    if (!vfio_pci) missing.push_back("vfio-pci");
    if (!type1) missing.push_back("vfio_iommu_type1");
    if (!container) missing.push_back(options.dev_vfio + "/vfio");
    checks.push_back({"vfio_modules", groups.empty() ? Status::warn : Status::fail,
                      fmt::format("missing: {}", fmt::join(missing, ", ")),
                      "modprobe vfio-pci (it loads vfio and vfio_iommu_type1); to load it at boot: echo vfio-pci > "
                      "/etc/modules-load.d/vfio-pci.conf"});
  }
  const std::string noiommu = trimmed(slurp(sysfs + "/module/vfio/parameters/enable_unsafe_noiommu_mode"));
  if (!noiommu.empty()) {
    checks.push_back({"vfio_noiommu", noiommu == "Y" ? Status::warn : Status::info,
                      noiommu == "Y" ? "VFIO no-IOMMU mode is on: devices can DMA anywhere"
                                     : "VFIO no-IOMMU mode available, off",
                      ""});
  }
  checks.push_back({"iommufd", exists(options.dev_root + "/iommu") ? Status::ok : Status::info,
                    exists(options.dev_root + "/iommu") ? options.dev_root + "/iommu present"
                                                        : "no " + options.dev_root + "/iommu (kernel without IOMMUFD, or "
                                                              "module not loaded); the VFIO container works without it",
                    ""});
  {
    // Which IOMMU backend a VfioContainer would take for this user now, and why.
    pcie::VfioPaths vfio;
    vfio.sysfs = options.paths;
    vfio.dev_vfio = options.dev_vfio;
    vfio.iommu_groups = sysfs + "/kernel/iommu_groups";
    vfio.dev_iommu = options.dev_root + "/iommu";
    vfio.vfio_dev_class = sysfs + "/class/vfio-dev";
    auto choice = pcie::choose_vfio_backend(vfio);
    checks.push_back({"vfio_backend", choice ? Status::info : Status::fail,
                      choice ? choice->reason : choice.error().message(), choice ? "" : choice.error().hint});
  }
  checks.push_back({"uio", exists(options.pci_root + "/drivers/uio_pci_generic") ? Status::ok : Status::info,
                    exists(options.pci_root + "/drivers/uio_pci_generic") ? "uio_pci_generic loaded"
                                                                          : "uio_pci_generic not loaded (only needed "
                                                                            "without an IOMMU: modprobe uio_pci_generic)",
                    ""});

  // /dev/vfio nodes: who may open them.
  std::vector<std::string> nodes;
  for (const std::string& name : list(options.dev_vfio)) {
    struct stat status {};
    if (::stat((options.dev_vfio + "/" + name).c_str(), &status) != 0) continue;
    const bool mine = ::access((options.dev_vfio + "/" + name).c_str(), R_OK | W_OK) == 0;
    nodes.push_back(fmt::format("{} ({}:{} {:o}{})", name, status.st_uid, status.st_gid, status.st_mode & 0777,
                                mine ? ", yours" : ""));
  }
  checks.push_back({"vfio_nodes", Status::info, nodes.empty() ? "none" : fmt::format("{}", fmt::join(nodes, ", ")), ""});

  // Pinned memory.
  struct rlimit memlock {};
  ::getrlimit(RLIMIT_MEMLOCK, &memlock);
  const std::uint64_t limit = memlock.rlim_cur == RLIM_INFINITY ? ~std::uint64_t{0} : memlock.rlim_cur;
  const bool root = ::geteuid() == 0;
  constexpr std::uint64_t kTypicalPinned = 256ull << 20;  // a driver's queues and a few MiB of buffers per queue
  checks.push_back({"memlock", root || limit >= kTypicalPinned ? Status::ok : Status::warn,
                    fmt::format("RLIMIT_MEMLOCK {}{}", size_text(limit),
                                root ? " (root: CAP_IPC_LOCK lifts it)" : ""),
                    root || limit >= kTypicalPinned
                        ? ""
                        : fmt::format("DMA buffers are pinned and counted against it; a driver with a few queues "
                                      "pins {} or more: set 'USER hard memlock unlimited' (or a size in KiB) in "
                                      "/etc/security/limits.d/ and log in again",
                                      size_text(kTypicalPinned))});

  // Huge pages, per size and per NUMA node.
  std::vector<std::string> pools;
  std::uint64_t reserved = 0;
  for (const std::string& size : list(sysfs + "/kernel/mm/hugepages")) {
    const std::string total = trimmed(slurp(sysfs + "/kernel/mm/hugepages/" + size + "/nr_hugepages"));
    const std::string free = trimmed(slurp(sysfs + "/kernel/mm/hugepages/" + size + "/free_hugepages"));
    std::vector<std::string> per_node;
    for (const std::string& node : list(sysfs + "/devices/system/node")) {
      if (!node.starts_with("node")) continue;
      const std::string count = trimmed(slurp(sysfs + "/devices/system/node/" + node + "/hugepages/" + size + "/nr_hugepages"));
      if (!count.empty()) per_node.push_back(node + ":" + count);
    }
    reserved += std::strtoull(total.c_str(), nullptr, 10);
    // "hugepages-2048kB" -> "2 MiB"
    const std::uint64_t kib = std::strtoull(size.c_str() + std::string("hugepages-").size(), nullptr, 10);
    pools.push_back(fmt::format("{} pages: {} total, {} free{}", size_text(kib << 10), total, free,
                                per_node.empty() ? "" : fmt::format(" ({})", fmt::join(per_node, " "))));
  }
  checks.push_back({"hugepages", reserved > 0 ? Status::ok : Status::info,
                    pools.empty() ? "no huge page sizes" : fmt::format("{}", fmt::join(pools, "; ")),
                    reserved > 0 ? ""
                                 : "none reserved: DMA buffers use 4 KiB pages (fine behind an IOMMU; physically "
                                   "contiguous buffers without one need them): echo 64 > "
                                   "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"});

  // Lockdown and Secure Boot.
  const std::string lockdown = trimmed(slurp(options.lockdown_file));
  std::string secure_boot;
  for (const std::string& name : list(sysfs + "/firmware/efi/efivars")) {
    if (!name.starts_with("SecureBoot-")) continue;
    const std::string bytes = slurp(sysfs + "/firmware/efi/efivars/" + name, 16);
    if (bytes.size() >= 5) secure_boot = bytes[4] == 1 ? "on" : "off";
  }
  const bool locked = lockdown.find("[integrity]") != std::string::npos ||
                      lockdown.find("[confidentiality]") != std::string::npos;
  checks.push_back({"lockdown", locked ? Status::warn : Status::ok,
                    fmt::format("lockdown {}; Secure Boot {}", lockdown.empty() ? "not available" : lockdown,
                                secure_boot.empty() ? "unknown (no EFI variables)" : secure_boot),
                    locked ? "lockdown refuses sysfs BAR mappings, /dev/mem and no-IOMMU mode; VFIO with an IOMMU "
                             "still works"
                           : ""});

  // PAT: write-combined mappings need it.
  const std::string cpuinfo = slurp(options.proc + "/cpuinfo", 1 << 16);
  const bool cpu_pat = cpuinfo.find(" pat ") != std::string::npos;
  const bool nopat = has_word(cmdline, "nopat");
  checks.push_back({"pat", cpu_pat && !nopat ? Status::ok : Status::warn,
                    nopat ? "off (nopat on the command line)" : cpu_pat ? "on" : "the CPU does not report PAT",
                    cpu_pat && !nopat ? "" : "write-combined BAR mappings fall back to uncached; remove nopat"});

  // /dev/mem restrictions, from the kernel's build configuration.
  const std::string config = kernel_config(options);
  if (config.empty()) {
    checks.push_back({"devmem", Status::info, "kernel configuration not found (/boot/config-*, /proc/config.gz)", ""});
  } else {
    const std::string strict = config_value(config, "CONFIG_STRICT_DEVMEM");
    const std::string io_strict = config_value(config, "CONFIG_IO_STRICT_DEVMEM");
    const bool relaxed = word_value(cmdline, "iomem") == "relaxed";
    checks.push_back({"devmem", Status::info,
                      fmt::format("CONFIG_DEVMEM={}, CONFIG_STRICT_DEVMEM={}, CONFIG_IO_STRICT_DEVMEM={}{}",
                                  config_value(config, "CONFIG_DEVMEM").empty() ? "?" : config_value(config, "CONFIG_DEVMEM"),
                                  strict.empty() ? "?" : strict, io_strict.empty() ? "?" : io_strict,
                                  relaxed ? " (iomem=relaxed)" : ""),
                      io_strict == "y" && !relaxed ? "/dev/mem refuses ranges a driver claimed; boot with iomem=relaxed "
                                                     "to peek at them (pciectl mem)"
                                                   : ""});
    const std::string cdev = config_value(config, "CONFIG_VFIO_DEVICE_CDEV");
    if (!cdev.empty()) {
      checks.push_back({"vfio_cdev", Status::info,
                        fmt::format("CONFIG_VFIO_DEVICE_CDEV={}, CONFIG_IOMMUFD={}, CONFIG_VFIO_NOIOMMU={}", cdev,
                                    config_value(config, "CONFIG_IOMMUFD"), config_value(config, "CONFIG_VFIO_NOIOMMU")),
                        ""});
    }
  }
}

void device_checks(const DoctorOptions& options, const pcie::Bdf& bdf, std::vector<Check>& checks) {
  const pcie::SysfsPaths& paths = options.paths;
  const std::string name = bdf.to_string();
  pcie::DiscoveryOptions discovery;
  discovery.paths = paths;
  auto device = pcie::describe(bdf, discovery);
  if (!device) {
    checks.push_back({"device", Status::fail, device.error().message(), "check the address with pciectl ls", true});
    return;
  }
  checks.push_back({"device", Status::ok,
                    fmt::format("{} [{:04x}:{:04x}], NUMA node {}", name, device->vendor_id, device->device_id,
                                device->numa_node ? std::to_string(*device->numa_node) : "unknown"),
                    ""});

  const std::string driver = device->driver.value_or("none");
  const bool userspace = driver == "vfio-pci" || driver == "uio_pci_generic";
  Check binding{"driver", userspace ? Status::ok : Status::fail, "bound to " + driver, "", !userspace};
  if (!userspace) {
    auto uses = pcie::host_uses_of(paths, bdf);
    if (!uses) {
      binding.detail += fmt::format("; whether this machine uses it cannot be told ({})", uses.error().reason);
    } else if (!uses->empty()) {
      binding.detail += fmt::format("; this machine uses it: {}", fmt::join(*uses, "; "));
    }
    binding.fix = uses && uses->empty()
                      ? fmt::format("sudo pciectl vfio grant {} $USER (binds vfio-pci, gives you the group), or "
                                    "sudo pciectl bind {} vfio-pci",
                                    name, name)
                      : "taking it from the host would break what uses it; pick another device";
  }
  checks.push_back(binding);

  if (!device->iommu_group) {
    checks.push_back({"iommu_group", Status::fail, "in no IOMMU group",
                      "VFIO needs the IOMMU (see the iommu check); without it: VFIO no-IOMMU mode or UIO (root)",
                      driver != "uio_pci_generic"});
  } else {
    const std::string group = std::to_string(*device->iommu_group);
    std::vector<std::string> spoilers, members;
    for (const std::string& member : list(options.sysfs + "/kernel/iommu_groups/" + group + "/devices")) {
      auto member_bdf = pcie::Bdf::parse(member);
      if (!member_bdf) continue;
      members.push_back(member);
      if (*member_bdf == bdf) continue;
      auto member_driver = pcie::bound_driver(paths, *member_bdf);
      const std::string class_text = trimmed(slurp(paths.device_dir(*member_bdf) + "/class"));
      const bool bridge = class_text.starts_with("0x0604");
      const std::string their = member_driver ? member_driver->value_or("none") : "unknown";
      if (!bridge && their != "none" && their != "vfio-pci" && their != "pci-stub") {
        spoilers.push_back(fmt::format("{} (bound to {})", member, their));
      }
    }
    const std::string node = options.dev_vfio + "/" + group;
    std::string access = "not present";
    if (exists(node)) access = ::access(node.c_str(), R_OK | W_OK) == 0 ? "you may open it" : "you may not open it";
    Check viability{"iommu_group",
                    spoilers.empty() ? Status::ok : Status::fail,
                    fmt::format("group {} ({}); {}: {}", group, fmt::join(members, " "), node, access),
                    "", !spoilers.empty()};
    if (!spoilers.empty()) {
      viability.detail += fmt::format("; not viable: {}", fmt::join(spoilers, ", "));
      viability.fix = "bind every device of the group to vfio-pci (or unbind it); the group is the unit of isolation";
    } else if (driver == "vfio-pci" && access != "you may open it") {
      // Root opens it all the same (the node's owner is root); anyone else cannot.
      viability.status = ::geteuid() == 0 ? Status::warn : Status::fail;
      viability.fix = fmt::format("run as root, or sudo pciectl vfio grant {} $USER", name);
      viability.blocks_device = ::geteuid() != 0;
    }
    checks.push_back(viability);
  }

  // Who owns each memory BAR in the kernel's resource tree.
  auto tree = pcie::read_iomem(paths.iomem_file);
  std::vector<std::string> owners;
  for (const pcie::BarInfo& bar : device->bars) {
    if (bar.space != pcie::BarInfo::Space::memory) continue;
    if (!tree || tree->addresses_hidden) {
      owners.push_back(fmt::format("BAR{}: unknown ({})", bar.index, tree ? "addresses hidden: not root" : tree.error().reason));
      continue;
    }
    owners.push_back(fmt::format("BAR{}: {}", bar.index, pcie::iomem_owner(*tree, bar.bus_address).description));
  }
  checks.push_back({"bar_owners", Status::info, owners.empty() ? "no memory BARs" : fmt::format("{}", fmt::join(owners, "; ")),
                    ""});
}

}  // namespace

int run_doctor(const DoctorOptions& options) {
  std::vector<Check> checks;
  system_checks(options, checks);
  std::optional<pcie::Bdf> bdf;
  if (!options.bdf.empty()) {
    auto parsed = pcie::Bdf::parse(options.bdf);
    if (!parsed) return fail(parsed.error());
    bdf = *parsed;
    device_checks(options, *bdf, checks);
  }
  // Ready: for a device, nothing blocks it; without one, VFIO is usable at all.
  bool ready = true;
  for (const Check& check : checks) {
    if (bdf ? check.blocks_device && check.status == Status::fail
            : (check.name == "iommu" || check.name == "vfio_modules") && check.status == Status::fail) {
      ready = false;
    }
  }
  // Without an IOMMU a device bound to uio_pci_generic is ready (for root) all the same.
  if (options.json) {
    nlohmann::ordered_json out;
    if (bdf) out["bdf"] = bdf->to_string();
    out["ready"] = ready;
    out["checks"] = nlohmann::ordered_json::array();
    for (const Check& check : checks) {
      out["checks"].push_back(
          {{"name", check.name}, {"status", status_name(check.status)}, {"detail", check.detail}, {"fix", check.fix}});
    }
    fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
  } else {
    for (const Check& check : checks) {
      fmt::print("{:<5} {:<13} {}\n", status_name(check.status), check.name, pcie::printable(check.detail));
      if (!check.fix.empty() && check.status != Status::ok) fmt::print("{:<19} fix: {}\n", "", pcie::printable(check.fix));
    }
    fmt::print("{}\n", bdf ? (ready ? fmt::format("{} is ready for a userspace driver", bdf->to_string())
                                    : fmt::format("{} is not ready for a userspace driver", bdf->to_string()))
                           : (ready ? "VFIO is usable on this machine" : "VFIO is not usable on this machine"));
  }
  return ready ? kSuccess : kFailure;
}

}  // namespace pciectl
