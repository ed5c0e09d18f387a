#include "tools/pciectl/doctor.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "pcie/bdf.h"
#include "tools/pciectl/doctor_check.h"
#include "tools/pciectl/doctor_device.h"
#include "tools/pciectl/doctor_system.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

using doctor::Check;
using doctor::Status;

const char* status_name(Status status) {
  switch (status) {
    case Status::ok: return "ok";
    case Status::info: return "info";
    case Status::warn: return "warn";
    case Status::fail: return "fail";
  }
  return "?";
}

// Ready: for a device, nothing blocks it; without one, VFIO is usable at all. (Without an
// IOMMU a device bound to uio_pci_generic is ready, for root, all the same.)
bool is_ready(const std::vector<Check>& checks, bool for_device) {
  bool ready = true;
  for (const Check& check : checks) {
    if (for_device ? check.blocks_device && check.status == Status::fail
                   : (check.name == "iommu" || check.name == "vfio_modules") && check.status == Status::fail) {
      ready = false;
    }
  }
  return ready;
}

// The checks that report "fail". Any one makes the command's exit status 1, ready or not:
// a script that runs doctor sees every failure it prints.
int failed_checks(const std::vector<Check>& checks) {
  return static_cast<int>(std::count_if(checks.begin(), checks.end(),
                                        [](const Check& check) { return check.status == Status::fail; }));
}

void print_json(const std::vector<Check>& checks, const std::optional<pcie::Bdf>& bdf, bool ready) {
  nlohmann::ordered_json out;
  if (bdf) out["bdf"] = bdf->to_string();
  out["ready"] = ready;
  out["failed"] = failed_checks(checks);
  out["checks"] = nlohmann::ordered_json::array();
  for (const Check& check : checks) {
    out["checks"].push_back(
        {{"name", check.name}, {"status", status_name(check.status)}, {"detail", pcie::printable(check.detail)},
         {"fix", pcie::printable(check.fix)}});
  }
  print_json_document(out);
}

void print_text(const std::vector<Check>& checks, const std::optional<pcie::Bdf>& bdf, bool ready) {
  for (const Check& check : checks) {
    fmt::print("{:<5} {:<13} {}\n", status_name(check.status), check.name, pcie::printable(check.detail));
    if (!check.fix.empty() && check.status != Status::ok) fmt::print("{:<19} fix: {}\n", "", pcie::printable(check.fix));
  }
  std::string verdict = bdf ? (ready ? fmt::format("{} is ready for a userspace driver", bdf->to_string())
                                     : fmt::format("{} is not ready for a userspace driver", bdf->to_string()))
                            : (ready ? "VFIO is usable on this machine" : "VFIO is not usable on this machine");
  const int failed = failed_checks(checks);
  if (ready && failed > 0) verdict += fmt::format(", but {} check{} failed", failed, failed == 1 ? "" : "s");
  fmt::print("{}\n", verdict);
}

}  // namespace

int run_doctor(const DoctorOptions& options) {
  std::vector<Check> checks;
  doctor::system_checks(options, checks);
  std::optional<pcie::Bdf> bdf;
  if (!options.bdf.empty()) {
    auto parsed = pcie::Bdf::parse(options.bdf);
    if (!parsed) return fail(parsed.error());
    bdf = *parsed;
    doctor::device_checks(options, *bdf, checks);
  }
  const bool ready = is_ready(checks, bdf.has_value());
  if (options.json) {
    print_json(checks, bdf, ready);
  } else {
    print_text(checks, bdf, ready);
  }
  return ready && failed_checks(checks) == 0 ? kSuccess : kFailure;
}

}  // namespace pciectl
