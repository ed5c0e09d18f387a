#include "src/pci/sysfs_links.h"

#include <charconv>

#include "src/sys/syscalls.h"

namespace pcie::sysfs {

std::optional<std::string> link_name(const std::string& link) {
  auto target = sys::read_link(link);
  if (!target) return std::nullopt;
  const auto slash = target->find_last_of('/');
  std::string name = slash == std::string::npos ? *target : target->substr(slash + 1);
  if (name.empty()) return std::nullopt;
  return name;
}

std::optional<std::string> device_driver(const SysfsPaths& paths, const Bdf& bdf) {
  return link_name(paths.device_dir(bdf) + "/driver");
}

std::optional<int> parse_group_number(std::string_view text) {
  int number = -1;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec != std::errc() || end != text.data() + text.size() || number < 0) return std::nullopt;
  return number;
}

std::optional<int> device_iommu_group(const SysfsPaths& paths, const Bdf& bdf) {
  auto name = link_name(paths.device_dir(bdf) + "/iommu_group");
  if (!name) return std::nullopt;
  return parse_group_number(*name);
}

}  // namespace pcie::sysfs
