// pciectl ls: the device list, as lspci prints it (-nn -D, -k, -v, -x, -mm, -t), or JSON.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "pcie/config_space.h"
#include "pcie/discovery.h"
#include "pcie/error.h"
#include "tools/pciectl/command.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/render.h"
#include "tools/pciectl/tree.h"

namespace pciectl {
namespace {

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
    print_json_document(tree_to_json(devices, selected));
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

// The flag combinations ls refuses.
pcie::Result<void> check_ls_flags(const LsOptions& ls) {
  if (ls.machine == 1) {
    return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "ls", "-m",
                                            "lspci's obsolete machine-readable format is not offered", "use -mm"));
  }
  if (ls.tree && (ls.machine > 0 || ls.hex_dump > 0 || ls.show_driver)) {
    return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "ls", "-t",
                                            "the bus tree cannot be combined with -mm, -x or -k",
                                            "-t takes -v (names), -s, -d and --driver"));
  }
  if (ls.machine > 0 && ls.hex_dump > 0) {
    return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "ls", "-mm", "cannot be combined with -x",
                                            "use one of them"));
  }
  return {};
}

pcie::DiscoveryOptions ls_discovery_options(const GlobalOptions& global, const LsOptions& ls) {
  pcie::DiscoveryOptions options = discovery_options(global);
  options.slot_filter = ls.slot;
  options.id_filter = ls.id;
  options.driver_filter = ls.driver;
  options.names_from_hwdb = true;  // names as lspci finds them
  // The one-line listing needs neither capabilities nor link status; the JSON does, and the
  // tree needs each bridge's bus numbers from config space.
  options.read_capabilities = ls.json || ls.verbose || ls.tree;
  options.read_bindings = ls.json || ls.verbose || ls.show_driver || !ls.driver.empty() || ls.machine > 0;
  return options;
}

// ls -mm: lspci -mm -nn -D lines, or with -v lspci -vmm records.
void print_machine_listing(const std::vector<pcie::DeviceInfo>& devices, const LsOptions& ls) {
  for (const auto& device : devices) {
    print_warnings(device);
    if (ls.verbose) {
      fmt::print("{}\n", render_machine_record(device, ls.show_driver));
    } else {
      fmt::print("{}\n", render_machine_line(device));
    }
  }
}

void print_json_listing(const std::vector<pcie::DeviceInfo>& devices) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& device : devices) list.push_back(to_json(device));
  print_json_document(list);
}

// One line per device (with -x its config space, with -k its driver), or with -v the details.
void print_listing(const GlobalOptions& global, const std::vector<pcie::DeviceInfo>& devices, const LsOptions& ls) {
  for (const auto& device : devices) {
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
      line += fmt::format("  driver={} iommu_group={}", pcie::printable(device.driver.value_or("none")),
                          device.iommu_group ? std::to_string(*device.iommu_group) : "none");
    }
    fmt::print("{}\n", line);
  }
}

int run_ls(const GlobalOptions& global, const LsOptions& ls) {
  if (auto checked = check_ls_flags(ls); !checked) return fail(checked.error());
  const pcie::DiscoveryOptions options = ls_discovery_options(global, ls);
  if (ls.tree) return run_ls_tree(ls, options);
  auto devices = pcie::discover(options);
  if (!devices) return fail(devices.error());
  if (ls.machine > 0) {
    print_machine_listing(*devices, ls);
  } else if (ls.json) {
    print_json_listing(*devices);
  } else {
    print_listing(global, *devices, ls);
  }
  return kSuccess;
}

void add_ls_options(CLI::App* command, LsOptions& ls) {
  command->add_option("-s,--slot", ls.slot, "select by slot: [[[[domain]:]bus]:][device][.[func]]");
  command->add_option("-d,--id", ls.id, "select by ID: [vendor]:[device][:class[:prog-if]]");
  command->add_option("--driver", ls.driver, "select devices bound to this driver");
  command->add_flag("-k,--kernel", ls.show_driver, "show the bound driver and IOMMU group");
  command->add_flag("-v,--verbose", ls.verbose, "everything pciectl info shows, for each device (like lspci -v)");
  command->add_flag("-x", ls.hex_dump,
                    "config space in hex after each line, as lspci: -x 64 bytes, -xxx 256, -xxxx 4096 (root "
                    "beyond 64)");
  command->add_flag("-t,--tree", ls.tree,
                    "the bus tree, as lspci -t draws it (-v adds names, as lspci -tv -nn; with -s/-d/--driver only "
                    "the selected devices and the bridges above them)");
  command->add_flag("-m", ls.machine,
                    "-mm: one line per device in lspci -mm -nn -D's machine-readable format (with -v: lspci -vmm "
                    "-nn -D's records; -k adds the driver)");
  command->add_flag("--json", ls.json, "print JSON with everything discovery knows (with -t: the tree)");
}

}  // namespace

void register_ls(CLI::App& app, Commands& commands) {
  auto ls = std::make_shared<LsOptions>();
  CLI::App* command = app.add_subcommand("ls", "list devices, one line each (like lspci -nn -D)");
  add_ls_options(command, *ls);
  commands.push_back({command, [ls] { return ls->json; },
                      [ls](const GlobalOptions& global, bool json) {
                        ls->json = ls->json || json;  // one flag for every command, wherever it was given
                        return run_ls(global, *ls);
                      }});
}

}  // namespace pciectl
