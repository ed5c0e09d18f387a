#include "pcie/link.h"

#include <fmt/format.h>

#include <cerrno>
#include <charconv>

#include "pcie/config_space.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"

namespace pcie {

std::optional<double> link_speed_gts(std::uint8_t encoding) {
  switch (encoding) {
    case 1: return 2.5;
    case 2: return 5.0;
    case 3: return 8.0;
    case 4: return 16.0;
    case 5: return 32.0;
    case 6: return 64.0;
    default: return std::nullopt;
  }
}

Result<std::optional<LinkInfo>> decode_link(std::span<const std::uint8_t> config,
                                            const std::vector<Capability>& capabilities) {
  const auto express = find_capability(capabilities, Capability::Space::standard, cap::kPciExpress);
  if (!express) return std::optional<LinkInfo>{};
  const std::size_t base = express->offset;
  if (base + pcie_cap::kMinimumLength > config.size()) {
    return std::unexpected(make_error(
        Errc::out_of_range, "decode link", fmt::format("PCI Express capability at 0x{:02x}", base),
        fmt::format("link registers lie beyond the {} readable bytes", config.size())));
  }
  const std::uint8_t port_type = (load_le16(config, base + pcie_cap::kCapabilities) >> 4) & 0xf;
  if (port_type == pcie_cap::kTypeRootComplexIntegratedEndpoint ||
      port_type == pcie_cap::kTypeRootComplexEventCollector) {
    return std::optional<LinkInfo>{};  // integrated into the root complex: no link
  }
  const std::uint32_t link_caps = load_le32(config, base + pcie_cap::kLinkCapabilities);
  const std::uint16_t link_status = load_le16(config, base + pcie_cap::kLinkStatus);
  LinkInfo link;
  link.max_speed_gts = link_speed_gts(link_caps & 0xf).value_or(0);
  link.max_width = (link_caps >> 4) & 0x3f;
  link.current_speed_gts = link_speed_gts(link_status & 0xf).value_or(0);
  link.current_width = (link_status >> 4) & 0x3f;
  link.source = LinkInfo::Source::config_space;
  return std::optional<LinkInfo>{link};
}

namespace {

// sysfs attributes end in a newline.
std::string_view trim_trailing(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  return text;
}

}  // namespace

std::optional<double> parse_sysfs_link_speed(std::string_view text) {
  text = trim_trailing(text);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  // from_chars takes "nan" and "inf" too: a speed is a finite, positive number of GT/s,
  // and no PCIe generation comes near 1000.
  if (ec != std::errc{} || !(value > 0 && value < 1000)) return std::nullopt;
  const std::string_view rest(end, static_cast<std::size_t>(text.data() + text.size() - end));
  if (!rest.starts_with(" GT/s")) return std::nullopt;
  return value;
}

namespace {

std::optional<unsigned> parse_sysfs_width(std::string_view text) {
  const auto value = sysfs::parse_number(text);
  if (!value || *value < 0 || *value > 32) return std::nullopt;
  return static_cast<unsigned>(*value);
}

}  // namespace

Result<std::optional<LinkInfo>> read_sysfs_link(const std::string& device_dir) {
  auto current_speed = sys::read_attribute(device_dir + "/current_link_speed", 64);
  auto current_width = sys::read_attribute(device_dir + "/current_link_width", 64);
  auto max_speed = sys::read_attribute(device_dir + "/max_link_speed", 64);
  auto max_width = sys::read_attribute(device_dir + "/max_link_width", 64);
  // Absent (ENOENT): a device without a PCIe link. Present but unreadable: an error, not
  // "no link".
  for (const auto* file : {&current_speed, &current_width, &max_speed, &max_width}) {
    if (!*file && file->error().sys_errno != ENOENT) return std::unexpected(file->error());
  }
  if (!current_speed || !current_width || !max_speed || !max_width) return std::optional<LinkInfo>{};
  LinkInfo link;
  link.source = LinkInfo::Source::sysfs;
  link.current_speed_gts = parse_sysfs_link_speed(*current_speed).value_or(0);
  link.max_speed_gts = parse_sysfs_link_speed(*max_speed).value_or(0);
  link.current_width = parse_sysfs_width(*current_width).value_or(0);
  link.max_width = parse_sysfs_width(*max_width).value_or(0);
  if (link.max_speed_gts == 0 && link.max_width == 0) return std::optional<LinkInfo>{};
  return std::optional<LinkInfo>(link);
}

}  // namespace pcie
