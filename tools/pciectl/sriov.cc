#include "tools/pciectl/sriov.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "pcie/sriov.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"

namespace pciectl {

namespace {

bool changes_anything(const SriovCommand& command) {
  return command.numvfs || !command.bind.empty() || !command.autoprobe.empty();
}

// --numvfs, --bind and --autoprobe applied; without --numvfs the VF count stays as it is.
pcie::Result<pcie::SriovState> apply(const pcie::SysfsPaths& paths, const pcie::Bdf& pf, const SriovCommand& command) {
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
    auto current = pcie::sriov_state(paths, pf);
    if (!current) return std::unexpected(current.error());
    count = current->num_vfs;
  }
  return pcie::set_vf_count(paths, pf, count, options);
}

void print_state_json(const pcie::Bdf& pf, const pcie::SriovState& state) {
  nlohmann::ordered_json out = {{"bdf", pf.to_string()},
                                {"total_vfs", state.total_vfs},
                                {"num_vfs", state.num_vfs}};
  out["drivers_autoprobe"] = state.drivers_autoprobe ? nlohmann::ordered_json(*state.drivers_autoprobe) : nullptr;
  out["vfs"] = nlohmann::ordered_json::array();
  for (const auto& vf : state.vfs) {
    out["vfs"].push_back({{"index", vf.index}, {"bdf", vf.bdf.to_string()}, {"driver", pcie::printable(vf.driver.value_or("none"))}});
  }
  print_json_document(out);
}

void print_state_text(const pcie::Bdf& pf, const pcie::SriovState& state) {
  fmt::print("{}: SR-IOV, {} of {} VFs enabled{}\n", pf.to_string(), state.num_vfs, state.total_vfs,
             state.drivers_autoprobe ? fmt::format(" (drivers autoprobe {})", *state.drivers_autoprobe ? "on" : "off")
                                     : "");
  for (const auto& vf : state.vfs) {
    fmt::print("  VF{:<3} {}  driver {}\n", vf.index, vf.bdf.to_string(), pcie::printable(vf.driver.value_or("none")));
  }
}

}  // namespace

int run_sriov(const pcie::SysfsPaths& paths, const SriovCommand& command) {
  auto pf = pcie::Bdf::parse(command.bdf);
  if (!pf) return fail(pf.error());
  auto state = changes_anything(command) ? apply(paths, *pf, command) : pcie::sriov_state(paths, *pf);
  if (!state) return fail(state.error());
  if (command.json) {
    print_state_json(*pf, *state);
  } else {
    print_state_text(*pf, *state);
  }
  return kSuccess;
}

}  // namespace pciectl
