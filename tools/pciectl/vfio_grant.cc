#include "tools/pciectl/vfio_grant.h"

#include <fmt/format.h>
#include <pwd.h>
#include <sys/resource.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "pcie/vfio_access.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

struct User {
  std::string name;
  unsigned uid = 0;
  unsigned gid = 0;
};

pcie::Result<User> resolve_user(const std::string& text) {
  auto number = [](std::string_view digits) -> std::optional<unsigned> {
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size()) return std::nullopt;
    return value;
  };
  const auto colon = text.find(':');
  if (auto uid = number(std::string_view(text).substr(0, colon))) {
    User user{std::to_string(*uid), *uid, *uid};
    if (const passwd* entry = ::getpwuid(*uid)) {
      user.name = entry->pw_name;
      user.gid = entry->pw_gid;
    }
    if (colon != std::string::npos) {
      auto gid = number(std::string_view(text).substr(colon + 1));
      if (!gid) return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "parse user", text, "bad gid"));
      user.gid = *gid;
    }
    return user;
  }
  if (const passwd* entry = ::getpwnam(text.c_str())) return User{text, entry->pw_uid, entry->pw_gid};
  return std::unexpected(pcie::make_error(pcie::Errc::not_found, "find user", text, "no such user in the passwd database",
                                          "give a user name, or a numeric uid[:gid]"));
}

// The memlock limits that pam_limits would give `user`: "user", "*" and "@group" lines
// of limits.conf and limits.d/*.conf (the last matching line wins, as pam_limits reads
// them in that order; a user's own line beats a wildcard).
std::vector<std::string> memlock_lines_for(const std::string& limits_conf, const User& user) {
  std::vector<std::string> files = {limits_conf};
  std::error_code ignored;
  const std::filesystem::path directory = std::filesystem::path(limits_conf).parent_path() / "limits.d";
  std::vector<std::string> extra;
  for (const auto& entry : std::filesystem::directory_iterator(directory, ignored)) {
    if (entry.path().extension() == ".conf") extra.push_back(entry.path().string());
  }
  std::sort(extra.begin(), extra.end());
  files.insert(files.end(), extra.begin(), extra.end());
  std::vector<std::string> found;
  for (const std::string& file : files) {
    std::ifstream in(file);
    std::string line;
    for (int count = 0; count < 10000 && std::getline(in, line); ++count) {
      std::istringstream fields(line);
      std::string domain, type, item, value;
      if (!(fields >> domain >> type >> item >> value) || domain.starts_with("#") || item != "memlock") continue;
      if (domain == user.name || domain == std::to_string(user.uid) || domain == "*" || domain.starts_with("@")) {
        found.push_back(fmt::format("{}: {} {} memlock {}", file, domain, type, value));
      }
    }
  }
  return found;
}

std::string limit_text(rlim_t value) {
  if (value == RLIM_INFINITY) return "unlimited";
  return fmt::format("{} KiB", value / 1024);
}

int run_release(const pcie::Bdf& bdf, const pcie::VfioGrantOptions& options, bool json) {
  auto driver = pcie::release_vfio_access(bdf, options);
  if (!driver) return fail(driver.error());
  if (json) {
    print_json_document(nlohmann::ordered_json{
        {"bdf", bdf.to_string()}, {"action", "released"}, {"driver", pcie::printable(driver->value_or("none"))}});
  } else {
    fmt::print("{}: released; driver now {}\n", bdf.to_string(), pcie::printable(driver->value_or("none")));
  }
  return kSuccess;
}

// What a first run then trips over: a group that is not viable, and no memlock limit for the
// user (DMA buffers are pinned memory, counted against RLIMIT_MEMLOCK; VFIO type1 accounts
// it per process).
std::vector<std::string> grant_warnings(const pcie::VfioGrant& grant, const User& user,
                                        const std::vector<std::string>& configured, const std::string& limits_conf) {
  struct rlimit own {};
  ::getrlimit(RLIMIT_MEMLOCK, &own);
  std::vector<std::string> warnings;
  for (const auto& spoiler : grant.spoilers) {
    warnings.push_back(fmt::format("IOMMU group {} is not viable: {} is bound to {}; bind it to vfio-pci too "
                                   "(pciectl bind {} vfio-pci) or the user's open fails",
                                   grant.group, spoiler.bdf.to_string(), spoiler.driver.value_or("?"),
                                   spoiler.bdf.to_string()));
  }
  if (configured.empty()) {
    warnings.push_back(fmt::format(
        "no memlock limit is configured for {} in {} or limits.d: its processes get the default ({} here); a driver "
        "pinning more DMA memory fails with ENOMEM: add '{} hard memlock <KiB>' and '{} soft memlock <KiB>'",
        user.name, limits_conf, limit_text(own.rlim_cur), user.name, user.name));
  }
  return warnings;
}

// What a grant did and what to check next.
struct GrantReport {
  const pcie::Bdf& bdf;
  const User& user;
  const pcie::VfioGrant& grant;
  std::vector<std::string> configured;  // memlock lines for the user
  std::vector<std::string> warnings;
};

void print_grant_json(const GrantReport& report) {
  nlohmann::ordered_json out = {{"bdf", report.bdf.to_string()},
                                {"action", "granted"},
                                {"user", report.user.name},
                                {"uid", report.user.uid},
                                {"gid", report.user.gid},
                                {"previous_driver", pcie::printable(report.grant.previous_driver.value_or("none"))},
                                {"group", report.grant.group},
                                {"group_node", report.grant.group_node},
                                {"memlock_configured", report.configured},
                                {"warnings", nlohmann::ordered_json::array()}};
  for (const std::string& warning : report.warnings) out["warnings"].push_back(pcie::printable(warning));
  print_json_document(out);
}

void print_grant_text(const GrantReport& report) {
  fmt::print("{}: bound to vfio-pci (was: {}); {} now owned by {} (uid {}, gid {}, mode 0600)\n",
             report.bdf.to_string(), pcie::printable(report.grant.previous_driver.value_or("none")), report.grant.group_node,
             report.user.name, report.user.uid, report.user.gid);
  for (const std::string& line : report.configured) fmt::print("  memlock: {}\n", line);
  for (const std::string& warning : report.warnings) fmt::print("  warning: {}\n", pcie::printable(warning));
  fmt::print("  undo with: pciectl vfio release {}\n", report.bdf.to_string());
}

int run_grant(const pcie::Bdf& bdf, const pcie::VfioGrantOptions& options, const GrantCommand& command) {
  if (command.user.empty()) {
    return fail(pcie::make_error(pcie::Errc::invalid_argument, "vfio grant", bdf.to_string(), "no user given",
                                 "pciectl vfio grant BDF USER"));
  }
  auto user = resolve_user(command.user);
  if (!user) return fail(user.error());
  auto grant = pcie::grant_vfio_access(bdf, user->uid, user->gid, options);
  if (!grant) return fail(grant.error());
  GrantReport report{bdf, *user, *grant, memlock_lines_for(command.limits_conf, *user), {}};
  report.warnings = grant_warnings(*grant, *user, report.configured, command.limits_conf);
  if (command.json) {
    print_grant_json(report);
  } else {
    print_grant_text(report);
  }
  return kSuccess;
}

}  // namespace

int run_vfio_grant(const pcie::VfioPaths& paths, const GrantCommand& command) {
  auto bdf = pcie::Bdf::parse(command.bdf);
  if (!bdf) return fail(bdf.error());
  pcie::VfioGrantOptions options;
  options.paths = paths;
  options.state_dir = command.state_dir;
  options.bind.force = command.force;
  if (command.action == "release") return run_release(*bdf, options, command.json);
  return run_grant(*bdf, options, command);
}

}  // namespace pciectl
