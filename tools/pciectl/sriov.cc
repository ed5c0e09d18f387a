#include "tools/pciectl/sriov.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "pcie/sriov.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"

namespace pciectl {

int run_sriov(const pcie::SysfsPaths& paths, const SriovCommand& command) {
  auto pf = pcie::Bdf::parse(command.bdf);
  if (!pf) return fail(pf.error());
  pcie::Result<pcie::SriovState> state = std::unexpected(pcie::Error{});
  if (command.numvfs || !command.bind.empty() || !command.autoprobe.empty()) {
    pcie::SetVfCountOptions options;
    options.bind_driver = command.bind;
    options.force = command.force;
    if (!command.autoprobe.empty()) options.drivers_autoprobe = command.autoprobe == "on";
    // VFs meant for vfio-pci should not be probed by a host driver first.
    if (command.autoprobe.empty() && command.bind == "vfio-pci") options.drivers_autoprobe = false;
    unsigned count = 0;
    if (command.numvfs) {
      count = *command.numvfs;
    } else {
      auto current = pcie::sriov_state(paths, *pf);
      if (!current) return fail(current.error());
      count = current->num_vfs;
    }
    state = pcie::set_vf_count(paths, *pf, count, options);
  } else {
    state = pcie::sriov_state(paths, *pf);
  }
  if (!state) return fail(state.error());

  if (command.json) {
    nlohmann::ordered_json out = {{"bdf", pf->to_string()},
                                  {"total_vfs", state->total_vfs},
                                  {"num_vfs", state->num_vfs}};
    out["drivers_autoprobe"] = state->drivers_autoprobe ? nlohmann::ordered_json(*state->drivers_autoprobe) : nullptr;
    out["vfs"] = nlohmann::ordered_json::array();
    for (const auto& vf : state->vfs) {
      out["vfs"].push_back({{"index", vf.index}, {"bdf", vf.bdf.to_string()}, {"driver", vf.driver.value_or("none")}});
    }
    fmt::print("{}\n", out.dump(2));
    return kSuccess;
  }
  fmt::print("{}: SR-IOV, {} of {} VFs enabled{}\n", pf->to_string(), state->num_vfs, state->total_vfs,
             state->drivers_autoprobe ? fmt::format(" (drivers autoprobe {})", *state->drivers_autoprobe ? "on" : "off")
                                      : "");
  for (const auto& vf : state->vfs) {
    fmt::print("  VF{:<3} {}  driver {}\n", vf.index, vf.bdf.to_string(), vf.driver.value_or("none"));
  }
  return kSuccess;
}

}  // namespace pciectl
