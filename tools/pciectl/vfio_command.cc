// pciectl vfio grant BDF USER | vfio release BDF (run_vfio_grant, vfio_grant.h).
#include <memory>

#include "tools/pciectl/command.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/vfio_grant.h"

namespace pciectl {
namespace {

int run_vfio_command(const GlobalOptions& global, GrantCommand& grant) {
  grant.json = json_errors();
  if ((grant.action == "grant") == grant.user.empty()) {
    return fail(pcie::make_error(pcie::Errc::invalid_argument, "vfio", grant.action,
                                 grant.action == "grant" ? "grant needs a USER" : "release takes no USER",
                                 "pciectl vfio grant BDF USER; pciectl vfio release BDF"));
  }
  return run_vfio_grant(vfio_paths_of(global), grant);
}

}  // namespace

void register_vfio(CLI::App& app, Commands& commands) {
  auto grant = std::make_shared<GrantCommand>();
  CLI::App* command = app.add_subcommand(
      "vfio", "give a device to a normal user through VFIO (grant), and back to its previous driver (release)");
  command->add_option("action", grant->action, "grant or release")->required()->check(CLI::IsMember({"grant", "release"}));
  command->add_option("bdf", grant->bdf, "device address")->required();
  command->add_option("user", grant->user, "grant: the user (name, or uid[:gid]) who gets /dev/vfio/N");
  command->add_option("--state-dir", grant->state_dir, "where grants are recorded (default /run/pcie/vfio-grants)");
  command->add_option("--limits-conf", grant->limits_conf, "pam_limits' file (default /etc/security/limits.conf)");
  command->add_flag("--force", grant->force,
                    "take the device even if this machine uses it (mounted, swap, held, up) or that cannot be told");
  commands.push_back(
      {command, nullptr, [grant](const GlobalOptions& global, bool) { return run_vfio_command(global, *grant); }});
}

}  // namespace pciectl
