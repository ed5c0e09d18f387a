#include "src/pci/sysfs_links.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>

#include "src/sys/syscalls.h"

namespace pcie::sysfs {

Result<std::optional<std::string>> read_link_name(const std::string& link) {
  auto target = sys::read_link(link);
  if (!target) {
    if (target.error().sys_errno == ENOENT) return std::optional<std::string>{};
    return std::unexpected(target.error());
  }
  const auto slash = target->find_last_of('/');
  std::string name = slash == std::string::npos ? *target : target->substr(slash + 1);
  if (name.empty()) {
    return std::unexpected(make_error(Errc::malformed, "readlink", link, "the link's target has no last component"));
  }
  return std::optional<std::string>(std::move(name));
}

std::optional<std::string> link_name(const std::string& link) {
  auto name = read_link_name(link);
  return name ? *name : std::nullopt;
}

Result<std::optional<std::string>> device_driver(const SysfsPaths& paths, const Bdf& bdf) {
  return read_link_name(paths.device_dir(bdf) + "/driver");
}

std::optional<std::int64_t> parse_number(std::string_view digits) {
  while (!digits.empty() && (digits.back() == '\n' || digits.back() == ' ')) digits.remove_suffix(1);
  const bool negative = digits.starts_with('-');
  if (negative) digits.remove_prefix(1);
  int base = 10;
  if (digits.starts_with("0x")) {
    digits.remove_prefix(2);
    base = 16;
  }
  // One sign, before the prefix: from_chars would take another '-' here, and negating
  // the INT64_MIN it can then return overflows.
  if (digits.starts_with('-')) return std::nullopt;
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return negative ? -value : value;
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

namespace {

// A link that must name a device (physfn, virtfnN).
Result<std::optional<Bdf>> linked_device(const std::string& link) {
  auto name = read_link_name(link);
  if (!name) return std::unexpected(name.error());
  if (!*name) return std::optional<Bdf>{};
  auto parsed = Bdf::parse(**name);
  if (!parsed) {
    return std::unexpected(make_error(Errc::malformed, "read", link, "it points to " + **name + ", not a device"));
  }
  return std::optional<Bdf>(*parsed);
}

// A slot's "address" text: "dddd:bb:dd" (a newline allowed) as three numbers.
std::optional<std::array<std::uint32_t, 3>> parse_slot_address(std::string_view text) {
  if (text.ends_with('\n')) text.remove_suffix(1);
  std::array<std::uint32_t, 3> fields{};
  const char* at = text.data();
  const char* const end = text.data() + text.size();
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i > 0 && (at == end || *at++ != ':')) return std::nullopt;
    const auto [next, ec] = std::from_chars(at, end, fields[i], 16);
    if (ec != std::errc() || next == at) return std::nullopt;
    at = next;
  }
  if (at != end) return std::nullopt;
  return fields;
}

}  // namespace

Result<PhysicalSlots> read_physical_slots(const SysfsPaths& paths) {
  const std::string dir = paths.pci_root + "/slots";
  auto names = sys::list_directory(dir);
  if (!names) {
    if (names.error().sys_errno == ENOENT) return PhysicalSlots{};
    return std::unexpected(names.error());
  }
  PhysicalSlots slots;
  const std::size_t count = std::min(names->size(), kMaxSlots);
  for (std::size_t i = 0; i < count; ++i) {
    const std::string& name = (*names)[i];
    auto text = sys::read_attribute(dir + "/" + name + "/address", 64);
    if (!text) continue;  // a slot without an address names no device
    const auto address = parse_slot_address(*text);
    if (!address) continue;
    auto [slot, added] = slots.try_emplace(*address, name);
    if (!added && name < slot->second) slot->second = name;
  }
  return slots;
}

std::optional<std::string> slot_of(const PhysicalSlots& slots, const Bdf& bdf) {
  const auto slot = slots.find(SlotAddress{bdf.domain, bdf.bus, bdf.device});
  if (slot == slots.end()) return std::nullopt;
  return slot->second;
}

Result<std::optional<std::string>> physical_slot(const SysfsPaths& paths, const Bdf& bdf) {
  auto slots = read_physical_slots(paths);
  if (!slots) return std::unexpected(slots.error());
  return slot_of(*slots, bdf);
}

Result<std::optional<Bdf>> physical_function(const SysfsPaths& paths, const Bdf& bdf) {
  return linked_device(paths.device_dir(bdf) + "/physfn");
}

Result<std::vector<Bdf>> virtual_functions(const SysfsPaths& paths, const Bdf& bdf) {
  std::vector<std::pair<unsigned, Bdf>> numbered;
  auto names = sys::list_directory(paths.device_dir(bdf));
  if (!names) return std::unexpected(names.error());
  for (const std::string& entry : *names) {
    if (!entry.starts_with("virtfn")) continue;
    unsigned index = 0;
    const std::string_view digits = std::string_view(entry).substr(6);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (ec != std::errc() || end != digits.data() + digits.size()) continue;
    auto vf = linked_device(paths.device_dir(bdf) + "/" + entry);
    if (!vf) return std::unexpected(vf.error());
    if (*vf) numbered.emplace_back(index, **vf);
  }
  std::sort(numbered.begin(), numbered.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Bdf> vfs;
  for (const auto& [index, vf] : numbered) vfs.push_back(vf);
  return vfs;
}

}  // namespace pcie::sysfs
