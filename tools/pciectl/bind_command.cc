// pciectl bind BDF DRIVER | bind BDF --restore | unbind BDF: a device's driver through sysfs
// (pcie/binding.h). Both commands share one run function, so they share this file.
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string_view>

#include "pcie/binding.h"
#include "tools/pciectl/command.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

struct BindCommand {
  std::string bdf;
  std::string driver;
  bool restore = false;
  bool force = false;
};

constexpr const char* kForceHelp =
    "unbind even if this machine uses the device (mounted, swap, held, up) or that cannot be told";

// Driver names come from sysfs links: printed through pcie::printable.
void print_binding(const pcie::Bdf& bdf, const std::string& now_raw, const std::string& before_raw, const char* action) {
  const std::string now = pcie::printable(now_raw);
  const std::string before = pcie::printable(before_raw);
  if (json_errors()) {
    nlohmann::ordered_json out = {{"bdf", bdf.to_string()}, {"action", action}, {"driver", now}, {"was", before}};
    print_json_document(out);
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

}  // namespace

void register_bind(CLI::App& app, Commands& commands) {
  auto bind = std::make_shared<BindCommand>();
  CLI::App* command = app.add_subcommand("bind", "bind a driver (e.g. vfio-pci), or --restore the device's own");
  command->add_option("bdf", bind->bdf, "device address")->required();
  command->add_option("driver", bind->driver, "driver to bind: vfio-pci, uio_pci_generic, ...");
  command->add_flag("--restore", bind->restore, "clear driver_override and let the kernel pick the driver");
  command->add_flag("--force", bind->force, kForceHelp);
  commands.push_back(
      {command, nullptr, [bind](const GlobalOptions& global, bool) { return run_bind(global, *bind, false); }});
}

void register_unbind(CLI::App& app, Commands& commands) {
  auto unbind = std::make_shared<BindCommand>();
  CLI::App* command = app.add_subcommand("unbind", "unbind the device's driver");
  command->add_option("bdf", unbind->bdf, "device address")->required();
  command->add_flag("--force", unbind->force, kForceHelp);
  commands.push_back(
      {command, nullptr, [unbind](const GlobalOptions& global, bool) { return run_bind(global, *unbind, true); }});
}

}  // namespace pciectl
