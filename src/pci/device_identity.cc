#include "src/pci/device_identity.h"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <optional>
#include <string>

#include "pcie/config_space.h"
#include "src/pci/sysfs_attributes.h"
#include "src/sys/syscalls.h"

namespace pcie::detail {
namespace {

// `tag` then exactly `digits` hex digits, taken off the front of `text`.
bool take_field(std::string_view& text, std::string_view tag, std::size_t digits, std::uint32_t& value) {
  if (!text.starts_with(tag) || text.size() < tag.size() + digits) return false;
  const char* first = text.data() + tag.size();
  const char* last = first + digits;
  const auto [end, ec] = std::from_chars(first, last, value, 16);
  if (ec != std::errc() || end != last) return false;
  text.remove_prefix(tag.size() + digits);
  return true;
}

void class_from(std::uint32_t class_code, DeviceInfo& info) {
  info.base_class = static_cast<std::uint8_t>(class_code >> 16);
  info.subclass = static_cast<std::uint8_t>(class_code >> 8);
  info.prog_if = static_cast<std::uint8_t>(class_code);
}

// An optional attribute holding a number up to `max`; nullopt when absent, and when it
// cannot be read or holds something else, with a warning that says so.
std::optional<std::uint32_t> read_optional_id(const std::string& path, std::uint32_t max,
                                              std::vector<std::string>& warnings) {
  const auto value = sysfs::read_optional_number(path, warnings);
  if (!value) return std::nullopt;
  if (*value < 0 || *value > max) {
    warnings.push_back(fmt::format("{} holds no number from 0 to 0x{:x}: {}", path, max, *value));
    return std::nullopt;
  }
  return static_cast<std::uint32_t>(*value);
}

// The attributes libpci reads, for a tree without a modalias the kernel would write.
Result<void> read_id_attributes(const std::string& dir, DeviceInfo& info, std::vector<std::string>& warnings) {
  std::uint32_t values[3] = {};
  const std::pair<const char*, std::uint32_t> required[] = {
      {"/vendor", 0xffff}, {"/device", 0xffff}, {"/class", 0xffffff}};
  for (std::size_t i = 0; i < 3; ++i) {
    auto value = sysfs::read_required_number(dir + required[i].first, info.bdf, required[i].second);
    if (!value) return std::unexpected(value.error());
    values[i] = *value;
  }
  info.vendor_id = static_cast<std::uint16_t>(values[0]);
  info.device_id = static_cast<std::uint16_t>(values[1]);
  class_from(values[2], info);
  // An unreadable subsystem attribute is said, not taken for a value.
  std::vector<std::string> problems;
  const auto vendor = read_optional_id(dir + "/subsystem_vendor", 0xffff, problems);
  const auto subsystem = read_optional_id(dir + "/subsystem_device", 0xffff, problems);
  info.subsystem_vendor_id = static_cast<std::uint16_t>(vendor.value_or(0));
  info.subsystem_id = static_cast<std::uint16_t>(subsystem.value_or(0));
  for (std::string& problem : problems) warnings.push_back("subsystem IDs: " + std::move(problem));
  return {};
}

std::uint8_t read_revision(const std::string& dir, std::span<const std::uint8_t> config,
                           std::vector<std::string>& warnings) {
  if (header_answers_revision(config)) return config[cfg::kRevisionId];
  return static_cast<std::uint8_t>(read_optional_id(dir + "/revision", 0xff, warnings).value_or(0xff));
}

}  // namespace

std::optional<KernelIds> parse_modalias(std::string_view text) {
  if (text.ends_with('\n')) text.remove_suffix(1);
  std::uint32_t fields[7] = {};
  const std::pair<std::string_view, std::size_t> layout[] = {{"pci:v", 8}, {"d", 8}, {"sv", 8}, {"sd", 8},
                                                             {"bc", 2},    {"sc", 2}, {"i", 2}};
  for (std::size_t i = 0; i < 7; ++i) {
    if (!take_field(text, layout[i].first, layout[i].second, fields[i])) return std::nullopt;
  }
  if (!text.empty()) return std::nullopt;
  for (std::size_t i = 0; i < 4; ++i) {
    if (fields[i] > 0xffff) return std::nullopt;
  }
  return KernelIds{static_cast<std::uint16_t>(fields[0]), static_cast<std::uint16_t>(fields[1]),
                   static_cast<std::uint16_t>(fields[2]), static_cast<std::uint16_t>(fields[3]),
                   fields[4] << 16 | fields[5] << 8 | fields[6]};
}

bool header_answers_revision(std::span<const std::uint8_t> config) {
  return config.size() >= cfg::kUnprivilegedSize && !config_reads_all_ones(config);
}

Result<void> read_identity(const std::string& device_dir, std::span<const std::uint8_t> config, DeviceInfo& info,
                           std::vector<std::string>& warnings) {
  // A modalias that cannot be read or parsed is not used: the attributes below say the
  // same, one file each. One that is there and yet unusable is said (a warning, and in the
  // error should the attributes fail too); a tree without one (written by hand) is not.
  auto modalias = sys::read_attribute(device_dir + "/modalias", 256);
  if (const auto ids = modalias ? parse_modalias(*modalias) : std::nullopt) {
    info.vendor_id = ids->vendor_id;
    info.device_id = ids->device_id;
    info.subsystem_vendor_id = ids->subsystem_vendor_id;
    info.subsystem_id = ids->subsystem_id;
    class_from(ids->class_code, info);
  } else {
    std::optional<std::string> unusable;
    if (modalias) {
      unusable = fmt::format("{}/modalias is not the kernel's pci:v...d...sv...sd...bc..sc..i.. form: '{}'",
                             device_dir, printable(modalias->substr(0, 64)));
    } else if (modalias.error().sys_errno != ENOENT) {
      unusable = modalias.error().message();
    }
    if (auto read = read_id_attributes(device_dir, info, warnings); !read) {
      Error error = read.error();
      if (unusable) error.reason += fmt::format(" (and {})", *unusable);
      return std::unexpected(error);
    }
    if (unusable) warnings.push_back(*unusable + "; the IDs come from the vendor, device and class attributes");
  }
  info.revision = read_revision(device_dir, config, warnings);
  return {};
}

}  // namespace pcie::detail
