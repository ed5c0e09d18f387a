#include "src/pci/sysfs_attributes.h"

#include <fmt/format.h>

#include <cerrno>

#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"

namespace pcie::sysfs {

std::optional<std::int64_t> read_optional_number(const std::string& path, std::vector<std::string>& warnings) {
  auto text = sys::read_attribute(path, 64);
  if (!text) {
    if (text.error().sys_errno != ENOENT) warnings.push_back("cannot read " + path + ": " + text.error().reason);
    return std::nullopt;
  }
  auto value = parse_number(*text);
  if (!value) warnings.push_back(fmt::format("{} holds no number: '{}'", path, printable(*text)));
  return value;
}

Error required_attribute_error(const Error& read, const std::string& path, const Bdf& bdf) {
  Error error = make_error(read.code, "read device attributes of", bdf.to_string(),
                           fmt::format("{} {}: {}", read.operation, path, read.reason));
  error.sys_errno = read.sys_errno;
  if (read.sys_errno == ENOENT || read.sys_errno == ENOTDIR) {
    error.code = Errc::malformed;
    error.hint = "is the sysfs tree complete? compare with 'ls -l' of the device directory";
  } else if (read.sys_errno == EACCES || read.sys_errno == EPERM) {
    error.hint = "sysfs attributes of PCI devices are readable by every user; check the mount and any LSM policy";
  } else {
    error.hint = read.hint;
  }
  return error;
}

Result<std::uint32_t> read_required_number(const std::string& path, const Bdf& bdf, std::uint32_t max) {
  auto text = sys::read_attribute(path, 64);
  if (!text) return std::unexpected(required_attribute_error(text.error(), path, bdf));
  const auto value = parse_number(*text);
  if (!value || *value < 0 || *value > max) {
    return std::unexpected(make_error(
        Errc::malformed, "read device attributes of", bdf.to_string(),
        fmt::format("{} holds no number from 0 to 0x{:x}: '{}'", path, max, printable(*text))));
  }
  return static_cast<std::uint32_t>(*value);
}

}  // namespace pcie::sysfs
