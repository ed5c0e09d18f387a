#include "pcie/vfio_access.h"

#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <thread>

#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"
#include "src/vfio/diagnosis.h"

namespace pcie {
namespace {

constexpr std::size_t kMaxRecordBytes = 1024;

std::string record_path(const VfioGrantOptions& options, const Bdf& bdf) {
  return options.state_dir + "/" + bdf.to_string();
}

// The record: "key value" lines. Written and read only here; everything is checked.
std::string serialise(const VfioGrant& grant, const sys::FileOwnership& node_before) {
  return fmt::format("bdf {}\nprevious_driver {}\ngroup {}\nuid {}\ngid {}\nnode_uid {}\nnode_gid {}\nnode_mode {:o}\n",
                     grant.bdf.to_string(), grant.previous_driver.value_or("-"), grant.group, grant.uid, grant.gid,
                     node_before.uid, node_before.gid, node_before.mode);
}

struct Record {
  VfioGrant grant;
  sys::FileOwnership node_before;
};

Error malformed_record(const std::string& path, const std::string& why) {
  return make_error(Errc::malformed, "read VFIO grant record", path, why,
                    "remove it if it is not from pcie, then bind the device by hand");
}

std::optional<std::uint64_t> parse_field_number(const std::string& value, int base) {
  std::uint64_t parsed = 0;
  const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), parsed, base);
  if (ec != std::errc{} || ptr != value.data() + value.size() || parsed > 0xffffffffu) return std::nullopt;
  return parsed;
}

Result<void> parse_numeric_field(const std::string& key, const std::string& value, Record& record,
                                 const std::string& path) {
  const auto parsed = parse_field_number(value, key == "node_mode" ? 8 : 10);
  if (!parsed) return std::unexpected(malformed_record(path, "bad " + key + " '" + value + "'"));
  if (key == "group") record.grant.group = static_cast<int>(*parsed);
  else if (key == "uid") record.grant.uid = static_cast<unsigned>(*parsed);
  else if (key == "gid") record.grant.gid = static_cast<unsigned>(*parsed);
  else if (key == "node_uid") record.node_before.uid = static_cast<unsigned>(*parsed);
  else if (key == "node_gid") record.node_before.gid = static_cast<unsigned>(*parsed);
  else if (key == "node_mode") record.node_before.mode = static_cast<unsigned>(*parsed) & 07777u;
  else return std::unexpected(malformed_record(path, "unknown key '" + key + "'"));
  return {};
}

Result<void> parse_field(const std::string& line, Record& record, const std::string& path) {
  const std::size_t space = line.find(' ');
  if (space == std::string::npos) return std::unexpected(malformed_record(path, "a line without a value: '" + line + "'"));
  const std::string key = line.substr(0, space);
  const std::string value = line.substr(space + 1);
  if (key == "bdf") {
    auto bdf = Bdf::parse(value);
    if (!bdf) return std::unexpected(malformed_record(path, "bad bdf '" + value + "'"));
    record.grant.bdf = *bdf;
  } else if (key == "previous_driver") {
    if (value.empty() || value.find('/') != std::string::npos) {
      return std::unexpected(malformed_record(path, "bad driver '" + value + "'"));
    }
    if (value != "-") record.grant.previous_driver = value;
  } else {
    return parse_numeric_field(key, value, record, path);
  }
  return {};
}

Result<Record> parse_record(const std::string& text, const std::string& path) {
  Record record;
  int fields = 0;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (auto parsed = parse_field(text.substr(start, end - start), record, path); !parsed) {
      return std::unexpected(parsed.error());
    }
    start = end + 1;
    ++fields;
  }
  if (fields != 8) return std::unexpected(malformed_record(path, fmt::format("{} fields instead of 8", fields)));
  return record;
}

Result<std::optional<Record>> read_record(const Bdf& bdf, const VfioGrantOptions& options) {
  const std::string path = record_path(options, bdf);
  if (!sys::path_exists(path)) return std::optional<Record>{};
  auto text = sys::read_text_file(path, kMaxRecordBytes);
  if (!text) return std::unexpected(text.error());
  auto record = parse_record(*text, path);
  if (!record) return std::unexpected(record.error());
  if (record->grant.bdf != bdf) {
    return std::unexpected(make_error(Errc::malformed, "read VFIO grant record", path,
                                      "it names another device: " + record->grant.bdf.to_string()));
  }
  return std::optional<Record>(std::move(*record));
}

// Puts the previous driver back after a grant that failed half-way; best effort, the
// caller reports the first error.
void rebind_previous(const Bdf& bdf, const std::optional<std::string>& previous, const VfioGrantOptions& options) {
  if (previous && *previous == "vfio-pci") return;
  if (previous) {
    (void)bind_driver(options.paths.sysfs, bdf, *previous, options.bind);
  } else {
    (void)unbind_driver(options.paths.sysfs, bdf, options.bind);
  }
  (void)sys::write_text_file(options.paths.sysfs.device_dir(bdf) + "/driver_override", "\n", "clear driver_override");
}

Result<void> check_not_granted(const Bdf& bdf, const VfioGrantOptions& options) {
  const std::string name = bdf.to_string();
  if (sys::effective_uid() != 0) {
    return std::unexpected(make_error(Errc::permission_denied, "grant VFIO access", name, "binding drivers needs root",
                                      "run as root (sudo pciectl vfio grant ...)"));
  }
  auto existing = read_record(bdf, options);
  if (!existing) return std::unexpected(existing.error());
  if (*existing) {
    return std::unexpected(make_error(Errc::busy, "grant VFIO access", name,
                                      fmt::format("already granted to uid {}", (*existing)->grant.uid),
                                      "pciectl vfio release " + name + " first"));
  }
  return {};
}

Result<int> group_to_grant(const Bdf& bdf, const VfioGrantOptions& options) {
  auto group = sysfs::device_iommu_group(options.paths.sysfs, bdf);
  if (group) return *group;
  if (!sys::path_exists(options.paths.sysfs.device_dir(bdf))) {
    return std::unexpected(make_error(Errc::not_found, "grant VFIO access", bdf.to_string(), "no such device"));
  }
  return std::unexpected(make_error(Errc::not_supported, "grant VFIO access", bdf.to_string(),
                                    "the device has no IOMMU group (the IOMMU is off or does not cover it)",
                                    "enable the IOMMU (intel_iommu=on / amd_iommu=on); without one a userspace driver "
                                    "needs root (VFIO no-IOMMU mode or UIO)"));
}

// vfio-pci creates the group node when it takes the group's first device; udev or
// devtmpfs may take a moment to show it.
void wait_for_group_node(const std::string& node) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!sys::path_exists(node) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Records the grant, then gives the group node to the grantee. On failure the device goes
// back to its previous driver.
Result<void> record_and_hand_over(const VfioGrant& grant, const VfioGrantOptions& options) {
  const Bdf& bdf = grant.bdf;
  auto before = sys::file_ownership(grant.group_node);
  if (!before) {
    rebind_previous(bdf, grant.previous_driver, options);
    Error error = before.error();
    error.hint = "vfio-pci took the device but its group node did not appear; is /dev/vfio devtmpfs or udev-managed?";
    return std::unexpected(error);
  }
  if (auto made = sys::make_directories(options.state_dir); !made) {
    rebind_previous(bdf, grant.previous_driver, options);
    return std::unexpected(made.error());
  }
  // Record first, then change the node: a crash in between leaves a record release() can use.
  if (auto written = sys::write_whole_file(record_path(options, bdf), serialise(grant, *before)); !written) {
    rebind_previous(bdf, grant.previous_driver, options);
    return std::unexpected(written.error());
  }
  if (auto changed = sys::change_ownership(grant.group_node, {grant.uid, grant.gid, 0600}); !changed) {
    (void)sys::remove_file(record_path(options, bdf));
    rebind_previous(bdf, grant.previous_driver, options);
    return std::unexpected(changed.error());
  }
  return {};
}

// The other members of the group that keep it from being viable.
std::vector<VfioGroupMember> spoilers_of(const Bdf& bdf, const VfioGrantOptions& options) {
  std::vector<VfioGroupMember> spoilers;
  const VfioFailureContext context = vfio_detail::failure_context(options.paths, bdf);
  for (const VfioGroupMember& member : context.members) {
    if (member.bdf != bdf && !vfio_member_allows_viability(member)) spoilers.push_back(member);
  }
  return spoilers;
}

// Another granted device in the same group keeps the node's grant.
bool group_granted_elsewhere(const Bdf& bdf, int group, const VfioGrantOptions& options) {
  bool group_shared = false;
  if (auto records = sys::list_directory(options.state_dir)) {
    for (const std::string& other : *records) {
      auto other_bdf = Bdf::parse(other);
      if (!other_bdf || *other_bdf == bdf) continue;
      auto other_record = read_record(*other_bdf, options);
      if (other_record && *other_record && (*other_record)->grant.group == group) group_shared = true;
    }
  }
  return group_shared;
}

Result<void> clear_driver_override(const Bdf& bdf, const VfioGrantOptions& options) {
  return sys::write_text_file(options.paths.sysfs.device_dir(bdf) + "/driver_override", "\n", "clear driver_override");
}

// From vfio-pci back to the driver the device had before the grant (none: left unbound).
Result<void> return_to_previous_driver(const Bdf& bdf, const std::optional<std::string>& previous,
                                       const VfioGrantOptions& options) {
  // Unbinding vfio-pci waits for the user to close the device (and asks them through the
  // request IRQ); that would hang here, so a device still open is refused.
  auto driver = bound_driver(options.paths.sysfs, bdf);
  if (!driver) return std::unexpected(driver.error());
  if (*driver && **driver == "vfio-pci") {
    if (auto unbound = unbind_driver(options.paths.sysfs, bdf, options.bind); !unbound) {
      return std::unexpected(unbound.error());
    }
  }
  if (auto cleared = clear_driver_override(bdf, options); !cleared) return cleared;
  if (previous) {
    if (auto bound = bind_driver(options.paths.sysfs, bdf, *previous, options.bind); !bound) {
      return std::unexpected(bound.error());
    }
    // bind_driver pinned it through driver_override; the kernel would pick it anyway.
    (void)clear_driver_override(bdf, options);
  }
  return {};
}

}  // namespace

Result<std::optional<VfioGrant>> recorded_vfio_grant(const Bdf& bdf, const VfioGrantOptions& options) {
  auto record = read_record(bdf, options);
  if (!record) return std::unexpected(record.error());
  if (!*record) return std::optional<VfioGrant>{};
  return std::optional<VfioGrant>((*record)->grant);
}

Result<VfioGrant> grant_vfio_access(const Bdf& bdf, unsigned uid, unsigned gid, const VfioGrantOptions& options) {
  if (auto grantable = check_not_granted(bdf, options); !grantable) return std::unexpected(grantable.error());
  auto group = group_to_grant(bdf, options);
  if (!group) return std::unexpected(group.error());
  auto previous = bound_driver(options.paths.sysfs, bdf);
  if (!previous) return std::unexpected(previous.error());

  VfioGrant grant;
  grant.bdf = bdf;
  grant.previous_driver = *previous;
  grant.group = *group;
  grant.group_node = options.paths.dev_vfio + "/" + std::to_string(*group);
  grant.uid = uid;
  grant.gid = gid;

  if (!*previous || **previous != "vfio-pci") {
    if (auto bound = bind_driver(options.paths.sysfs, bdf, "vfio-pci", options.bind); !bound) {
      return std::unexpected(bound.error());
    }
  }
  wait_for_group_node(grant.group_node);
  if (auto handed = record_and_hand_over(grant, options); !handed) return std::unexpected(handed.error());
  grant.spoilers = spoilers_of(bdf, options);
  return grant;
}

Result<std::optional<std::string>> release_vfio_access(const Bdf& bdf, const VfioGrantOptions& options) {
  const std::string name = bdf.to_string();
  auto record = read_record(bdf, options);
  if (!record) return std::unexpected(record.error());
  if (!*record) {
    return std::unexpected(make_error(Errc::not_found, "release VFIO access", name, "no grant is recorded for it",
                                      "pciectl bind " + name + " --restore gives a device to the driver the kernel picks"));
  }
  const Record& granted = **record;
  const std::string node = options.paths.dev_vfio + "/" + std::to_string(granted.grant.group);
  if (!group_granted_elsewhere(bdf, granted.grant.group, options) && sys::path_exists(node)) {
    if (auto restored = sys::change_ownership(node, granted.node_before); !restored) return std::unexpected(restored.error());
  }
  const std::optional<std::string>& previous = granted.grant.previous_driver;
  if (!previous || *previous != "vfio-pci") {
    if (auto returned = return_to_previous_driver(bdf, previous, options); !returned) {
      return std::unexpected(returned.error());
    }
  }
  if (auto removed = sys::remove_file(record_path(options, bdf)); !removed) return std::unexpected(removed.error());
  return bound_driver(options.paths.sysfs, bdf);
}

}  // namespace pcie
