// pciectl: list, inspect and poke PCI devices through the pcie library.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "pcie/bar_opener.h"
#include "pcie/binding.h"
#include "pcie/config_space.h"
#include "pcie/discovery.h"
#include "pcie/sysfs_bar.h"
#include "pcie/version.h"
#include "pcie/vfio.h"
#include "tools/pciectl/bench.h"
#include "tools/pciectl/doctor.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/physical.h"
#include "tools/pciectl/render.h"
#include "tools/pciectl/setpci.h"
#include "tools/pciectl/sriov.h"
#include "tools/pciectl/tree.h"
#include "tools/pciectl/vfio_grant.h"

namespace pciectl {
namespace {

struct GlobalOptions {
  std::string sysfs = "/sys";  // the sysfs mount; a fake tree's <dir>/sys in tests
  std::string proc = "/proc";  // the proc mount (mount table, swaps); a fake tree's <dir>/proc
  std::string pci_ids;
  std::string dev_vfio = "/dev/vfio";  // VFIO's nodes; a fake tree's <dir>/dev/vfio in tests
};

pcie::SysfsPaths paths_of(const GlobalOptions& global) {
  pcie::SysfsPaths paths;
  paths.pci_root = global.sysfs + "/bus/pci";
  paths.lockdown_file = global.sysfs + "/kernel/security/lockdown";
  paths.class_block = global.sysfs + "/class/block";
  paths.class_net = global.sysfs + "/class/net";
  paths.mountinfo_file = global.proc + "/self/mountinfo";
  paths.swaps_file = global.proc + "/swaps";
  paths.pat_memtype_list = global.sysfs + "/kernel/debug/x86/pat_memtype_list";
  paths.kernel_cmdline = global.proc + "/cmdline";
  paths.iomem_file = global.proc + "/iomem";
  return paths;
}

pcie::VfioPaths vfio_paths_of(const GlobalOptions& global) {
  pcie::VfioPaths paths;
  paths.sysfs = paths_of(global);
  paths.dev_vfio = global.dev_vfio;
  paths.iommu_groups = global.sysfs + "/kernel/iommu_groups";
  paths.vfio_dev_class = global.sysfs + "/class/vfio-dev";
  // iommufd's node beside VFIO's: /dev/iommu, or <dir>/dev/iommu for a fake tree.
  paths.dev_iommu = std::filesystem::path(global.dev_vfio).parent_path().string() + "/iommu";
  return paths;
}

pcie::DiscoveryOptions discovery_options(const GlobalOptions& global) {
  pcie::DiscoveryOptions options;
  options.paths = paths_of(global);
  options.pci_ids_path = global.pci_ids;
  return options;
}

// ---- ls ----
struct LsOptions {
  std::string slot, id, driver;
  bool show_driver = false;
  bool verbose = false;
  int hex_dump = 0;  // -x: 64 bytes, -xxx: 256, -xxxx: 4096 (lspci's counts)
  bool tree = false;   // -t: the bus tree
  int machine = 0;     // -mm: lspci's machine-readable format (-m alone is its obsolete one)
  bool json = false;
};

// lspci -x's layout: "00: 34 12 ..." rows (three digits from 0x100), then a blank line.
void print_config_dump(const GlobalOptions& global, const pcie::Bdf& bdf, int level) {
  const std::size_t wanted = level >= 4 ? 4096 : level >= 3 ? 256 : 64;
  auto config = pcie::ConfigSpace::open(paths_of(global), bdf);
  if (!config) {
    fmt::print(stderr, "pciectl: {}\n", pcie::printable(config.error().message()));
    return;
  }
  auto bytes = config->snapshot();
  if (!bytes) {
    fmt::print(stderr, "pciectl: {}\n", pcie::printable(bytes.error().message()));
    return;
  }
  const std::size_t shown = std::min(wanted, bytes->size());
  for (std::size_t line = 0; line < shown; line += 16) {
    std::string text = line < 0x100 ? fmt::format("{:02x}:", line) : fmt::format("{:03x}:", line);
    for (std::size_t at = line; at < std::min(line + 16, shown); ++at) text += fmt::format(" {:02x}", (*bytes)[at]);
    fmt::print("{}\n", text);
  }
  fmt::print("\n");
}

int print_tree(const std::vector<pcie::DeviceInfo>& devices, const std::vector<bool>& selected, const LsOptions& ls) {
  for (const auto& device : devices) {
    if (selected.empty() || selected[static_cast<std::size_t>(&device - devices.data())]) print_warnings(device);
  }
  for (const pcie::Bdf& stranded : devices_outside_the_tree(devices)) {
    fmt::print(stderr, "pciectl: warning: {} is not in the tree: bridge bus numbers place it below a bridge that is "
                       "itself below it (see 'pciectl info' of the bridges)\n", stranded.to_string());
  }
  if (ls.json) {
    fmt::print("{}\n", tree_to_json(devices, selected).dump(2));
  } else {
    fmt::print("{}", render_tree(devices, selected, ls.verbose));
  }
  return kSuccess;
}

// ls -t: the tree is drawn from every device (a selected device's bridges must be known),
// then cut down to the selection.
int run_ls_tree(const LsOptions& ls, pcie::DiscoveryOptions options) {
  const bool filtered = !ls.slot.empty() || !ls.id.empty() || !ls.driver.empty();
  std::vector<bool> selected;
  if (filtered) {
    auto matching = pcie::discover(options);
    if (!matching) return fail(matching.error());
    options.slot_filter.clear();
    options.id_filter.clear();
    options.driver_filter.clear();
    auto all = pcie::discover(options);
    if (!all) return fail(all.error());
    std::vector<pcie::Bdf> wanted;
    for (const auto& device : *matching) wanted.push_back(device.bdf);
    std::sort(wanted.begin(), wanted.end());
    for (const auto& device : *all) selected.push_back(std::binary_search(wanted.begin(), wanted.end(), device.bdf));
    return print_tree(*all, selected, ls);
  }
  auto all = pcie::discover(options);
  if (!all) return fail(all.error());
  return print_tree(*all, selected, ls);
}

int run_ls(const GlobalOptions& global, const LsOptions& ls) {
  if (ls.machine == 1) {
    return fail(pcie::make_error(pcie::Errc::invalid_argument, "ls", "-m", "lspci's obsolete machine-readable format is not offered",
                                 "use -mm"));
  }
  if (ls.tree && (ls.machine > 0 || ls.hex_dump > 0 || ls.show_driver)) {
    return fail(pcie::make_error(pcie::Errc::invalid_argument, "ls", "-t", "the bus tree cannot be combined with -mm, -x or -k",
                                 "-t takes -v (names), -s, -d and --driver"));
  }
  if (ls.machine > 0 && ls.hex_dump > 0) {
    return fail(pcie::make_error(pcie::Errc::invalid_argument, "ls", "-mm", "cannot be combined with -x",
                                 "use one of them"));
  }
  pcie::DiscoveryOptions options = discovery_options(global);
  options.slot_filter = ls.slot;
  options.id_filter = ls.id;
  options.driver_filter = ls.driver;
  options.names_from_hwdb = true;  // names as lspci finds them
  // The one-line listing needs neither capabilities nor link status; the JSON does, and the
  // tree needs each bridge's bus numbers from config space.
  options.read_capabilities = ls.json || ls.verbose || ls.tree;
  options.read_bindings = ls.json || ls.verbose || ls.show_driver || !ls.driver.empty() || ls.machine > 0;
  if (ls.tree) return run_ls_tree(ls, options);
  auto devices = pcie::discover(options);
  if (!devices) return fail(devices.error());
  if (ls.machine > 0) {
    for (const auto& device : *devices) {
      print_warnings(device);
      if (ls.verbose) {
        fmt::print("{}\n", render_machine_record(device, ls.show_driver));
      } else {
        fmt::print("{}\n", render_machine_line(device));
      }
    }
    return kSuccess;
  }
  if (ls.json) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& device : *devices) list.push_back(to_json(device));
    fmt::print("{}\n", list.dump(2));
    return kSuccess;
  }
  for (const auto& device : *devices) {
    if (ls.verbose) {  // like lspci -v: the device's details, a blank line between devices
      const BarMemoryTypes memory_types = read_bar_memory_types(paths_of(global), device);
      fmt::print("{}\n", render_details(device, &memory_types));
      continue;
    }
    print_warnings(device);  // the one-line listing has no room for them
    std::string line = render_line(device);
    if (ls.hex_dump > 0) {
      fmt::print("{}\n", line);
      print_config_dump(global, device.bdf, ls.hex_dump);
      continue;
    }
    if (ls.show_driver) {
      line += fmt::format("  driver={} iommu_group={}", device.driver.value_or("none"),
                          device.iommu_group ? std::to_string(*device.iommu_group) : "none");
    }
    fmt::print("{}\n", line);
  }
  return kSuccess;
}

// ---- info ----
int run_info(const GlobalOptions& global, const std::string& bdf_text, bool json) {
  auto bdf = pcie::Bdf::parse(bdf_text);
  if (!bdf) return fail(bdf.error());
  auto device = pcie::describe(*bdf, discovery_options(global));
  if (!device) return fail(device.error());
  const BarMemoryTypes memory_types = read_bar_memory_types(paths_of(global), *device);
  const std::optional<VfioNodes> vfio = read_vfio_nodes(vfio_paths_of(global), *device);
  const VfioNodes* vfio_or_null = vfio ? &*vfio : nullptr;
  if (json) {
    fmt::print("{}\n", to_json(*device, &memory_types, vfio_or_null).dump(2));
  } else {
    fmt::print("{}", render_details(*device, &memory_types, vfio_or_null));
  }
  return kSuccess;
}

// ---- read / write / dump ----
struct AccessOptions {
  std::string bdf, bar, offset, value, length;
  unsigned width_bits = 32;
  bool enable = false;  // enable the device's decoding of the BAR first, if it is off
  std::string via = "auto";  // auto, sysfs or vfio
  bool vfio = false;         // --vfio: --via vfio
};

// What read, write and dump share: the width, the start offset and the opened BAR.
struct BarAccess {
  pcie::Width width = pcie::Width::bits32;
  std::uint64_t offset = 0;
  std::unique_ptr<pcie::Region> region;
  pcie::BarPath path = pcie::BarPath::sysfs;
};

pcie::Result<BarAccess> open_bar_access(const GlobalOptions& global, const AccessOptions& access, bool writable) {
  auto width = pcie::width_from_bits(access.width_bits);
  if (!width) return std::unexpected(width.error());
  auto offset = parse_number(access.offset, "offset");
  if (!offset) return std::unexpected(offset.error());
  auto bdf = pcie::Bdf::parse(access.bdf);
  if (!bdf) return std::unexpected(bdf.error());
  auto bar = parse_bar(access.bar);
  if (!bar) return std::unexpected(bar.error());
  pcie::BarOpenOptions options;
  options.writable = writable;
  options.enable_decoding = access.enable;
  options.paths = vfio_paths_of(global);
  const std::string via = access.vfio ? "vfio" : access.via;
  options.preference = via == "sysfs"  ? pcie::BarPathPreference::sysfs_only
                       : via == "vfio" ? pcie::BarPathPreference::vfio_only
                                       : pcie::BarPathPreference::automatic;
  auto opened = pcie::open_bar(*bdf, *bar, options);
  if (!opened) return std::unexpected(opened.error());
  // Say which path was taken when another one was refused first.
  if (!opened->refused.empty() && !json_errors()) {
    fmt::print(stderr, "pciectl: {} BAR{} through {} ({})\n", bdf->to_string(), *bar, pcie::to_string(opened->path),
               pcie::printable(opened->refused.front()));
  }
  return BarAccess{*width, *offset, std::move(opened->region), opened->path};
}

int run_read(const GlobalOptions& global, const AccessOptions& options) {
  auto access = open_bar_access(global, options, false);
  if (!access) return fail(access.error());
  auto value = access->region->read(access->width, access->offset);
  if (!value) return fail(value.error());
  if (json_errors()) {  // --json
    nlohmann::ordered_json out = {{"bdf", options.bdf}, {"bar", options.bar}, {"offset", access->offset},
                                  {"width", pcie::byte_count(access->width) * 8}, {"value", *value},
                                  {"path", pcie::to_string(access->path)}};
    fmt::print("{}\n", out.dump(2));
    return kSuccess;
  }
  fmt::print("0x{:0{}x}\n", *value, pcie::byte_count(access->width) * 2);
  return kSuccess;
}

int run_write(const GlobalOptions& global, const AccessOptions& options) {
  auto value = parse_number(options.value, "value");
  if (!value) return fail(value.error());
  auto access = open_bar_access(global, options, true);
  if (!access) return fail(access.error());
  auto written = access->region->write(access->width, access->offset, *value);
  if (!written) return fail(written.error());
  if (json_errors()) {
    nlohmann::ordered_json out = {{"bdf", options.bdf}, {"bar", options.bar}, {"offset", access->offset},
                                  {"width", pcie::byte_count(access->width) * 8}, {"written", *value},
                                  {"path", pcie::to_string(access->path)}};
    fmt::print("{}\n", out.dump(2));
  }
  return kSuccess;
}

int run_dump(const GlobalOptions& global, const AccessOptions& options) {
  auto access = open_bar_access(global, options, false);
  if (!access) return fail(access.error());
  return dump_region(*access->region, access->width, access->offset, options.length);
}

// ---- bind / unbind ----
struct BindCommand {
  std::string bdf;
  std::string driver;
  bool restore = false;
  bool force = false;
};

void print_binding(const pcie::Bdf& bdf, const std::string& now, const std::string& before, const char* action) {
  if (json_errors()) {
    nlohmann::ordered_json out = {{"bdf", bdf.to_string()}, {"action", action}, {"driver", now}, {"was", before}};
    fmt::print("{}\n", out.dump(2));
  } else if (std::string_view(action) == "unbound") {
    fmt::print("{}: unbound (was: {})\n", bdf.to_string(), before);
  } else {
    fmt::print("{}: {} to {} (was: {})\n", bdf.to_string(), action, now == "none" ? "no driver" : now, before);
  }
}

int run_bind(const GlobalOptions& global, const BindCommand& command, bool unbind) {
  auto bdf = pcie::Bdf::parse(command.bdf);
  if (!bdf) return fail(bdf.error());
  const pcie::SysfsPaths paths = paths_of(global);
  auto driver = pcie::bound_driver(paths, *bdf);
  if (!driver) return fail(driver.error());
  const std::string before = driver->value_or("none");
  const pcie::BindOptions options{.force = command.force};
  if (unbind) {
    if (auto done = pcie::unbind_driver(paths, *bdf, options); !done) return fail(done.error());
    print_binding(*bdf, "none", before, "unbound");
  } else if (command.restore) {
    auto now = pcie::restore_driver(paths, *bdf, options);
    if (!now) return fail(now.error());
    print_binding(*bdf, now->value_or("none"), before, "restored");
  } else if (command.driver.empty()) {
    return fail(pcie::make_error(pcie::Errc::invalid_argument, "bind", bdf->to_string(), "no driver named",
                                 "pciectl bind BDF vfio-pci, or pciectl bind BDF --restore"));
  } else {
    if (auto done = pcie::bind_driver(paths, *bdf, command.driver, options); !done) return fail(done.error());
    print_binding(*bdf, command.driver, before, "bound");
  }
  return kSuccess;
}

// ---- config ----
// setpci's habits (tools/pciectl/setpci.h): register names, capability-relative offsets,
// .b/.w/.l widths, REG=VALUE[:MASK], hex numbers, -s/-d selecting devices.
struct ConfigOptions {
  std::vector<std::string> items;  // [BDF] REG... (or the older form: BDF OFFSET VALUE)
  std::string slot, id;            // lspci/setpci selectors instead of a BDF
  unsigned width_bits = 0;
  bool json = false;
  bool vfio = false;  // through the VFIO config region
};

bool is_bare_number(const std::string& text) {
  return !text.empty() && text.find_first_of(".=+:_") == std::string::npos && parse_hex32(text, "value").has_value();
}

// Config space through sysfs (ConfigSpace) or, with --vfio, through the device's VFIO
// config region (a normal user given the group reads all of it; sysfs gives them 64 bytes).
class ConfigAccess {
 public:
  static pcie::Result<ConfigAccess> open(const GlobalOptions& global, const pcie::Bdf& bdf, bool writing, bool vfio) {
    ConfigAccess access;
    if (!vfio) {
      auto config = pcie::ConfigSpace::open(paths_of(global), bdf,
                                            writing ? pcie::ConfigSpace::Mode::read_write : pcie::ConfigSpace::Mode::read_only);
      if (!config) return std::unexpected(config.error());
      access.sysfs_.emplace(std::move(*config));
      return access;
    }
    auto container = pcie::VfioContainer::open(vfio_paths_of(global));
    if (!container) return std::unexpected(container.error());
    auto device = container->open_device(bdf, pcie::VfioDeviceOptions{.reset_on_open = false});
    if (!device) return std::unexpected(device.error());
    auto region = device->open_region(pcie::kVfioConfigRegion, {.map = false, .writable = writing});
    if (!region) return std::unexpected(region.error());
    access.vfio_ = std::make_unique<pcie::VfioRegion>(std::move(*region));  // keeps the device open
    return access;
  }
  pcie::Result<std::uint32_t> read(std::uint32_t offset, std::size_t width) const {
    if (sysfs_) return sysfs_->read(offset, width);
    auto value = vfio_->read(static_cast<pcie::Width>(width), offset);
    if (!value) return std::unexpected(value.error());
    return static_cast<std::uint32_t>(*value);
  }
  pcie::Result<void> write(std::uint32_t offset, std::size_t width, std::uint32_t value) const {
    if (sysfs_) return sysfs_->write(offset, width, value);
    return vfio_->write(static_cast<pcie::Width>(width), offset, value);
  }
  pcie::Result<std::vector<std::uint8_t>> snapshot() const {
    if (sysfs_) return sysfs_->snapshot();
    std::vector<std::uint8_t> bytes(vfio_->size());
    for (std::size_t at = 0; at + 4 <= bytes.size(); at += 4) {
      auto word = vfio_->read(pcie::Width::bits32, at);
      if (!word) return std::unexpected(word.error());
      for (unsigned i = 0; i < 4; ++i) bytes[at + i] = static_cast<std::uint8_t>(*word >> (8 * i));
    }
    return bytes;
  }
  bool limited_by_privilege() const { return sysfs_ && sysfs_->limited_by_privilege(); }
  std::size_t readable_size() const { return sysfs_ ? sysfs_->readable_size() : vfio_->size(); }
  std::size_t file_size() const { return sysfs_ ? sysfs_->file_size() : vfio_->size(); }

 private:
  std::optional<pcie::ConfigSpace> sysfs_;
  std::unique_ptr<pcie::VfioRegion> vfio_;
};

int run_config(const GlobalOptions& global, const ConfigOptions& options) {
  std::vector<std::string> items = options.items;
  std::vector<pcie::Bdf> devices;
  const bool selected = !options.slot.empty() || !options.id.empty();
  if (selected) {
    pcie::DiscoveryOptions discovery = discovery_options(global);
    discovery.slot_filter = options.slot;
    discovery.id_filter = options.id;
    discovery.read_capabilities = false;
    discovery.read_bindings = false;
    auto found = pcie::discover(discovery);
    if (!found) return fail(found.error());
    for (const auto& device : *found) devices.push_back(device.bdf);
    if (devices.empty()) {
      return fail(pcie::make_error(pcie::Errc::not_found, "select devices",
                                   fmt::format("-s '{}' -d '{}'", options.slot, options.id), "no device matches",
                                   "pciectl ls -s/-d with the same selector lists what matches"));
    }
  } else {
    if (items.empty()) {
      return fail(pcie::make_error(pcie::Errc::invalid_argument, "config", "", "no device given",
                                   "pciectl config BDF [REG...], or select with -s SLOT / -d VENDOR:DEVICE"));
    }
    auto bdf = pcie::Bdf::parse(items.front());
    if (!bdf) return fail(bdf.error());
    devices.push_back(*bdf);
    items.erase(items.begin());
  }

  // The older positional form "OFFSET VALUE": a second item that is a bare number is the
  // first one's value.
  if (items.size() == 2 && items[0].find('=') == std::string::npos && is_bare_number(items[1])) {
    items = {items[0] + "=" + items[1]};
  }
  std::vector<RegisterExpression> expressions;
  bool writing = false;
  for (const std::string& item : items) {
    auto expression = parse_register_expression(item);
    if (!expression) return fail(expression.error());
    if (auto settled = settle_width(*expression, options.width_bits / 8); !settled) return fail(settled.error());
    writing = writing || expression->value.has_value();
    expressions.push_back(std::move(*expression));
  }

  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const pcie::Bdf& bdf : devices) {
    auto config = ConfigAccess::open(global, bdf, writing, options.vfio);
    if (!config) return fail(config.error());
    auto bytes = config->snapshot();
    if (!bytes) return fail(bytes.error());
    if (expressions.empty()) {  // the whole readable config space, as lspci -xxx lays it out
      if (options.json) {
        results.push_back({{"bdf", bdf.to_string()}, {"config", *bytes}});
        continue;
      }
      if (selected) fmt::print("{}\n", bdf.to_string());
      for (std::size_t line = 0; line < bytes->size(); line += 16) {
        std::string text = fmt::format("{:03x}:", line);
        for (std::size_t at = line; at < std::min(line + 16, bytes->size()); ++at) text += fmt::format(" {:02x}", (*bytes)[at]);
        fmt::print("{}\n", text);
      }
      continue;
    }
    for (const RegisterExpression& expression : expressions) {
      auto offset = resolve_register_offset(expression, *bytes);
      if (!offset) {
        // A capability beyond what this user can read: say so rather than "not found".
        if (config->limited_by_privilege() && offset.error().code == pcie::Errc::not_found) {
          pcie::Error error = offset.error();
          error.hint = fmt::format("only {} of {} bytes of config space are readable without root", config->readable_size(),
                                   config->file_size());
          return fail(error);
        }
        return fail(offset.error());
      }
      const std::size_t width = expression.width_bytes;
      if (expression.value) {
        std::uint32_t value = *expression.value;
        const std::uint32_t mask = write_mask(expression);
        RegisterExpression whole = expression;
        whole.has_mask = false;
        if (mask != write_mask(whole)) {
          auto old = config->read(*offset, width);  // read-modify-write for VALUE:MASK
          if (!old) return fail(old.error());
          value = (*old & ~mask) | (value & mask);
        }
        auto written = config->write(*offset, width, value);
        if (!written) return fail(written.error());
        if (options.json) {
          results.push_back({{"bdf", bdf.to_string()}, {"register", expression.text}, {"offset", *offset},
                             {"width", width * 8}, {"written", value}});
        }
        continue;
      }
      auto value = config->read(*offset, width);
      if (!value) return fail(value.error());
      if (options.json) {
        results.push_back({{"bdf", bdf.to_string()}, {"register", expression.text}, {"offset", *offset},
                           {"width", width * 8}, {"value", *value}});
      } else {
        fmt::print("{}0x{:0{}x}\n", selected ? bdf.to_string() + " " : "", *value, width * 2);
      }
    }
  }
  if (options.json) fmt::print("{}\n", results.dump(2));
  return kSuccess;
}

void add_width(CLI::App* command, unsigned& width_bits, bool required = false) {
  command->add_option("-w,--width", width_bits,
                      required ? "access width in bits: 8, 16, 32 or 64 (required: a write never guesses, as in setpci)"
                               : "access width in bits: 8, 16, 32 or 64 (default 32)")
      ->check(CLI::IsMember({8u, 16u, 32u, 64u}));
}

// A register write with no -w: refused rather than guessed (a 32-bit write to an 8-bit
// register also writes its three neighbours).
int width_required(const char* command) {
  return fail(pcie::make_error(pcie::Errc::invalid_argument, command, "", "a write needs an explicit width",
                               fmt::format("add -w 8, -w 16, -w 32 or -w 64 (see 'pciectl {} --help')", command)));
}

void add_path_choice(CLI::App* command, AccessOptions& access) {
  command->add_option("--via", access.via,
                      "how to reach the BAR: auto (VFIO first for a device bound to vfio-pci, sysfs first otherwise, "
                      "the other when the first fails), sysfs or vfio (default auto)")
      ->check(CLI::IsMember({"auto", "sysfs", "vfio"}));
  command->add_flag("--vfio", access.vfio, "same as --via vfio: through the device's VFIO group (vfio-pci)");
}

constexpr const char* kEnableHelp =
    "if the device does not decode the BAR (Memory/I/O Space Enable off), enable it first (needs root)";

}  // namespace
}  // namespace pciectl

int main(int argc, char** argv) {
  using namespace pciectl;
  CLI::App app{"pciectl: list, inspect, read and write PCI devices", "pciectl"};
  app.footer(kExitCodeHelp);
  app.require_subcommand(1);
  // The version compiled in, and the library's own when a shared libpcie was swapped.
  app.set_version_flag("--version", fmt::format("pciectl {} (library {}), Apache-2.0", PCIE_VERSION,
                                                pcie::library_version()));

  GlobalOptions global;
  if (const char* sysfs = std::getenv("PCIE_SYSFS")) global.sysfs = sysfs;
  if (const char* proc = std::getenv("PCIE_PROC")) global.proc = proc;
  if (const char* dev_vfio = std::getenv("PCIE_DEV_VFIO")) global.dev_vfio = dev_vfio;
  app.add_option("--sysfs", global.sysfs, "sysfs mount to use (default /sys, or $PCIE_SYSFS)");
  app.add_option("--proc", global.proc, "proc mount for the mount table and swaps (default /proc, or $PCIE_PROC)");
  app.add_option("--pci-ids", global.pci_ids, "pci.ids file for names (default: libpci's)");
  app.add_option("--dev-vfio", global.dev_vfio, "VFIO's device nodes (default /dev/vfio, or $PCIE_DEV_VFIO)");
  bool json = false;
  app.add_flag("--json", json,
               "JSON on stdout: every command's result and any "
               "error as {\"error\": {...}}");
  app.fallthrough();  // --json after the command name too
  // Errors while parsing the command line are JSON too when --json is anywhere in it.
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--json") set_json_errors(true);
  }

  LsOptions ls;
  CLI::App* ls_command = app.add_subcommand("ls", "list devices, one line each (like lspci -nn -D)");
  ls_command->add_option("-s,--slot", ls.slot, "select by slot: [[[[domain]:]bus]:][device][.[func]]");
  ls_command->add_option("-d,--id", ls.id, "select by ID: [vendor]:[device][:class[:prog-if]]");
  ls_command->add_option("--driver", ls.driver, "select devices bound to this driver");
  ls_command->add_flag("-k,--kernel", ls.show_driver, "show the bound driver and IOMMU group");
  ls_command->add_flag("-v,--verbose", ls.verbose, "everything pciectl info shows, for each device (like lspci -v)");
  ls_command->add_flag("-x", ls.hex_dump,
                       "config space in hex after each line, as lspci: -x 64 bytes, -xxx 256, -xxxx 4096 (root "
                       "beyond 64)");
  ls_command->add_flag("-t,--tree", ls.tree,
                       "the bus tree, as lspci -t draws it (-v adds names, as lspci -tv -nn; with -s/-d/--driver only "
                       "the selected devices and the bridges above them)");
  ls_command->add_flag("-m", ls.machine,
                       "-mm: one line per device in lspci -mm -nn -D's machine-readable format (with -v: lspci -vmm "
                       "-nn -D's records; -k adds the driver)");
  ls_command->add_flag("--json", ls.json, "print JSON with everything discovery knows (with -t: the tree)");

  std::string info_bdf;
  bool info_json = false;
  CLI::App* info_command = app.add_subcommand("info", "everything discovery knows about one device");
  info_command->add_option("bdf", info_bdf, "device address, e.g. 0000:03:00.0")->required();
  info_command->add_flag("--json", info_json, "print JSON");

  AccessOptions read_access;
  CLI::App* read_command = app.add_subcommand("read", "read one register of a BAR");
  read_command->add_option("bdf", read_access.bdf, "device address")->required();
  read_command->add_option("bar", read_access.bar, "bar0 .. bar5")->required();
  read_command->add_option("offset", read_access.offset, "byte offset (decimal or 0x hex)")->required();
  add_width(read_command, read_access.width_bits);
  read_command->add_flag("--enable", read_access.enable, kEnableHelp);
  add_path_choice(read_command, read_access);

  AccessOptions write_access;
  CLI::App* write_command = app.add_subcommand("write", "write one register of a BAR");
  write_command->add_option("bdf", write_access.bdf, "device address")->required();
  write_command->add_option("bar", write_access.bar, "bar0 .. bar5")->required();
  write_command->add_option("offset", write_access.offset, "byte offset (decimal or 0x hex)")->required();
  write_command->add_option("value", write_access.value, "value (decimal or 0x hex)")->required();
  write_access.width_bits = 0;
  add_width(write_command, write_access.width_bits, true);
  write_command->add_flag("--enable", write_access.enable, kEnableHelp);
  add_path_choice(write_command, write_access);

  AccessOptions dump_access;
  dump_access.offset = "0";
  CLI::App* dump_command = app.add_subcommand("dump", "hex dump of a BAR range, read register by register");
  dump_command->add_option("bdf", dump_access.bdf, "device address")->required();
  dump_command->add_option("bar", dump_access.bar, "bar0 .. bar5")->required();
  dump_command->add_option("--offset", dump_access.offset, "start offset (default 0)");
  dump_command->add_option("--length", dump_access.length, "bytes to dump (default 256 or to the end)");
  add_width(dump_command, dump_access.width_bits);
  dump_command->add_flag("--enable", dump_access.enable, kEnableHelp);
  add_path_choice(dump_command, dump_access);

  ConfigOptions config;
  CLI::App* config_command = app.add_subcommand(
      "config", "config space in setpci's syntax: dump it, read registers, or write REG=VALUE[:MASK]");
  config_command->add_option("device_and_registers", config.items,
                             "BDF (unless -s/-d), then registers: COMMAND, 0x40.w, CAP_EXP+0x10.w, ECAP_AER+4.l=1:1 "
                             "(hex, as in setpci; none: dump config space)");
  config_command->add_option("-s,--slot", config.slot, "every device in this slot, lspci -s syntax");
  config_command->add_option("-d,--id", config.id, "every device with this ID, lspci -d syntax");
  config_command->add_option("-w,--width", config.width_bits,
                             "width in bits for registers without .b/.w/.l: 8, 16 or 32 (reads default to 32 or the "
                             "register's own; writes need one)")
      ->check(CLI::IsMember({8u, 16u, 32u}));
  config_command->add_flag("--json", config.json, "print JSON");
  config_command->add_flag("--vfio", config.vfio,
                           "through the device's VFIO config region (bound to vfio-pci; all of it for a user given the "
                           "group, where sysfs shows them 64 bytes)");

  BindCommand bind;
  CLI::App* bind_command = app.add_subcommand("bind", "bind a driver (e.g. vfio-pci), or --restore the device's own");
  bind_command->add_option("bdf", bind.bdf, "device address")->required();
  bind_command->add_option("driver", bind.driver, "driver to bind: vfio-pci, uio_pci_generic, ...");
  bind_command->add_flag("--restore", bind.restore, "clear driver_override and let the kernel pick the driver");
  bind_command->add_flag("--force", bind.force,
                         "unbind even if this machine uses the device (mounted, swap, held, up) or that cannot be told");

  BindCommand unbind;
  CLI::App* unbind_command = app.add_subcommand("unbind", "unbind the device's driver");
  unbind_command->add_option("bdf", unbind.bdf, "device address")->required();
  unbind_command->add_flag("--force", unbind.force,
                           "unbind even if this machine uses the device (mounted, swap, held, up) or that cannot be told");

  std::string iomem_address;
  CLI::App* iomem_command = app.add_subcommand(
      "iomem", "the kernel's physical address map (/proc/iomem): RAM, each device's BARs and who claimed them");
  iomem_command->add_option("address", iomem_address, "show only the ranges holding this physical address, and its owner");

  MemOptions mem;
  CLI::App* mem_command = app.add_subcommand(
      "mem", "read, write or dump physical addresses through /dev/mem (root; uncached), like devmem2");
  mem_command->add_option("action", mem.action, "read, write or dump")->required()->check(CLI::IsMember({"read", "write", "dump"}));
  mem_command->add_option("address", mem.address, "physical address (decimal or 0x hex)")->required();
  mem_command->add_option("value", mem.value, "value to write (write only)");
  mem_command->add_option("--length", mem.length, "bytes to dump (default 256)");
  mem_command->add_option("--dev-mem", mem.dev_mem, "the /dev/mem to use (default /dev/mem)");
  add_width(mem_command, mem.width_bits);  // required for "write" below

  GrantCommand grant;
  CLI::App* vfio_command = app.add_subcommand(
      "vfio", "give a device to a normal user through VFIO (grant), and back to its previous driver (release)");
  vfio_command->add_option("action", grant.action, "grant or release")->required()->check(CLI::IsMember({"grant", "release"}));
  vfio_command->add_option("bdf", grant.bdf, "device address")->required();
  vfio_command->add_option("user", grant.user, "grant: the user (name, or uid[:gid]) who gets /dev/vfio/N");
  vfio_command->add_option("--state-dir", grant.state_dir, "where grants are recorded (default /run/pcie/vfio-grants)");
  vfio_command->add_option("--limits-conf", grant.limits_conf, "pam_limits' file (default /etc/security/limits.conf)");
  vfio_command->add_flag("--force", grant.force,
                         "take the device even if this machine uses it (mounted, swap, held, up) or that cannot be told");

  DoctorOptions doctor;
  CLI::App* doctor_command = app.add_subcommand(
      "doctor", "check what a userspace driver needs (IOMMU, VFIO, memlock, huge pages, lockdown, PAT; with BDF the "
                "device's driver, group and BARs), each with its fix; exit 0 when ready");
  doctor_command->add_option("bdf", doctor.bdf, "the device to check (optional)");

  SriovCommand sriov;
  CLI::App* sriov_command = app.add_subcommand(
      "sriov", "an SR-IOV physical function's VFs: list them, create or remove them (--numvfs), bind them (--bind)");
  sriov_command->add_option("bdf", sriov.bdf, "the physical function")->required();
  sriov_command->add_option("--numvfs", sriov.numvfs, "enable this many VFs (0 removes them; needs root)");
  sriov_command->add_option("--bind", sriov.bind,
                            "bind every VF to this driver, e.g. vfio-pci (then host drivers do not autoprobe them)");
  sriov_command->add_option("--autoprobe", sriov.autoprobe, "whether host drivers probe new VFs: on or off")
      ->check(CLI::IsMember({"on", "off"}));
  sriov_command->add_flag("--force", sriov.force, "remove VFs even while they are bound to drivers");

  BenchOptions bench;
  CLI::App* bench_command = app.add_subcommand(
      "bench", "BAR throughput by size and access width, and access latency (writes need --allow-write)");
  bench_command->add_option("bdf", bench.bdf, "device address")->required();
  bench_command->add_option("bar", bench.bar, "bar0 .. bar5 (a memory BAR)")->required();
  bench_command->add_option("--offset", bench.offset, "window start in the BAR, page-aligned (default 0)");
  bench_command->add_option("--length", bench.length, "window length (default: to the BAR's end, at most 4M)");
  bench_command->add_option("--sizes", bench.sizes, "transfer sizes, e.g. 64,4K,1M (default 64 B x4 up to the window)")
      ->delimiter(',');
  bench_command->add_option("--widths", bench.widths, "access kinds: 8,16,32,64,copy (default 32,64,copy)")
      ->delimiter(',');
  bench_command->add_option("--mapping", bench.mapping, "uc, wc or all (default all; wc needs a prefetchable BAR)")
      ->check(CLI::IsMember({"uc", "wc", "all"}));
  bench_command->add_option("--kernel", bench.kernel,
                            "copy kernel: auto, registers, sse2, sse4.1, avx2, avx512, movdir64b (default auto)");
  bench_command->add_option("--repetitions", bench.repetitions, "measurements per row (default 5; the median is shown)");
  bench_command->add_option("--warmup", bench.warmup, "unmeasured passes before each row (default 1)");
  bench_command->add_option("--min-time-ms", bench.min_time_ms, "shortest measurement (default 10 ms)");
  bench_command->add_option("--latency-samples", bench.latency_samples, "accesses timed one by one (default 1000)");
  bench_command->add_flag("--allow-write", bench.allow_write, "also benchmark writes: overwrites the window");
  bench_command->add_flag("--json", bench.json, "print JSON");
  bench_command->add_flag("--enable", bench.enable, kEnableHelp);
  bench_command->add_flag("--vfio", bench.vfio,
                          "through the device's VFIO region (bound to vfio-pci; uncached only, no reset)");
  bench_command->add_flag("--progress", bench.progress, "show the progress line even when stderr is not a terminal");
  bench_command->add_flag("--no-progress", bench.no_progress, "never show the progress line");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "pciectl: error: {} (see 'pciectl --help')\n", pcie::printable(e.what()));
    if (json_errors()) {
      print_json_error("usage", kUsage,
                       pcie::make_error(pcie::Errc::invalid_argument, "parse command line", "", e.what(), "see 'pciectl --help'"));
    }
    return kUsage;
  }
  // One flag for every command, wherever it was given.
  ls.json = ls.json || json;
  info_json = info_json || json;
  config.json = config.json || json;
  bench.json = bench.json || json;
  set_json_errors(json || ls.json || info_json || config.json || bench.json);

  if (*ls_command) return run_ls(global, ls);
  if (*info_command) return run_info(global, info_bdf, info_json);
  if (*read_command) return run_read(global, read_access);
  if (*write_command) return write_access.width_bits == 0 ? width_required("write") : run_write(global, write_access);
  if (*dump_command) return run_dump(global, dump_access);
  if (*config_command) return run_config(global, config);
  if (*bind_command) return run_bind(global, bind, false);
  if (*unbind_command) return run_bind(global, unbind, true);
  if (*sriov_command) {
    sriov.json = json_errors();
    return run_sriov(paths_of(global), sriov);
  }
  if (*doctor_command) {
    doctor.json = json_errors();
    doctor.paths = paths_of(global);
    doctor.sysfs = global.sysfs;
    doctor.proc = global.proc;
    doctor.pci_root = global.sysfs + "/bus/pci";
    doctor.dev_vfio = global.dev_vfio;
    doctor.dev_root = std::filesystem::path(global.dev_vfio).parent_path().string();
    doctor.lockdown_file = global.sysfs + "/kernel/security/lockdown";
    if (const char* boot = std::getenv("PCIE_BOOT")) doctor.boot_dir = boot;
    return run_doctor(doctor);
  }
  if (*vfio_command) {
    grant.json = json_errors();
    if ((grant.action == "grant") == grant.user.empty()) {
      return fail(pcie::make_error(pcie::Errc::invalid_argument, "vfio", grant.action,
                                   grant.action == "grant" ? "grant needs a USER" : "release takes no USER",
                                   "pciectl vfio grant BDF USER; pciectl vfio release BDF"));
    }
    return run_vfio_grant(vfio_paths_of(global), grant);
  }
  if (*bench_command) return run_bench(vfio_paths_of(global), global.pci_ids, bench);
  if (*iomem_command) return run_iomem(global.proc + "/iomem", iomem_address);
  if (*mem_command) {
    if ((mem.action == "write") != !mem.value.empty()) {
      fmt::print(stderr, "pciectl: error: mem write takes a VALUE, read and dump do not (see 'pciectl mem --help')\n");
      return kUsage;
    }
    if (mem.action == "write" && mem_command->count("--width") == 0) return width_required("mem");
    mem.iomem = global.proc + "/iomem";
    return run_mem(mem);
  }
  return kUsage;
}
