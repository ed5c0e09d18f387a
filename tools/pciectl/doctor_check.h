// pciectl doctor: what one check reports, and the small reads the checks make of sysfs,
// procfs and /dev (bounded, and empty or false where a file cannot be read: doctor reports
// what it finds and never fails on a missing file).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace pciectl::doctor {

enum class Status { ok, info, warn, fail };

struct Check {
  std::string name = {};    // stable, for --json: "iommu", "vfio_modules", ...
  Status status = Status::info;
  std::string detail = {};  // what was found
  std::string fix = {};     // what to do, when something is wrong
  bool blocks_device = false;  // a failure that keeps the device from a userspace driver
};

// The first `limit` bytes of a small text file (a sysfs attribute, a /proc file); empty
// when it cannot be read.
std::string slurp(const std::string& path, std::size_t limit = 1 << 20);

// `text` without its trailing newlines and spaces.
std::string trimmed(std::string text);

// Whether `path` exists; false where that cannot be told.
bool exists(const std::string& path);

// The names in directory `path`, sorted, at most 4096; empty when it cannot be read.
std::vector<std::string> list(const std::string& path);

}  // namespace pciectl::doctor
