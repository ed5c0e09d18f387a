#include "pcie/binding.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <set>
#include <sstream>

#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"

namespace pcie {
namespace {

constexpr unsigned kInterfaceUp = 0x1;  // IFF_UP in <net/if.h>
// Holder chains are short (partition -> LV -> crypt -> ...); a longer one is a loop or a
// hostile tree, and counts as a use.
constexpr int kMaxHolderDepth = 16;

std::string trimmed(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  return std::string(text);
}

// Whether `path` lies strictly below the directory `dir` (both canonical).
bool below(const std::string& path, const std::string& dir) {
  return path.size() > dir.size() && path.starts_with(dir) && path[dir.size()] == '/';
}

// Whether the interface is up (IFF_UP in its flags), or nullopt when the flags cannot be read.
std::optional<bool> interface_is_up(const std::string& interface_dir) {
  auto flags = sys::read_text_file(interface_dir + "/flags", 64);
  if (!flags) return std::nullopt;
  const auto value = sysfs::parse_number(*flags);  // "0x1003"
  if (!value || *value < 0) return std::nullopt;
  return (*value & kInterfaceUp) != 0;
}

// /proc's escapes for blanks and backslashes in paths (\040 is a space), decoded.
std::string unescape_octal(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && text.size() - i >= 4 && text[i + 1] >= '0' && text[i + 1] <= '3' && text[i + 2] >= '0' && text[i + 2] <= '7' && text[i + 3] >= '0' &&
        text[i + 3] <= '7') {
      out += static_cast<char>((text[i + 1] - '0') * 64 + (text[i + 2] - '0') * 8 + (text[i + 3] - '0'));
      i += 3;
    } else {
      out += text[i];
    }
  }
  return out;
}

struct Mount {
  std::string device_number;  // "major:minor" of the mounted file system (0:N: anonymous)
  std::string source;         // "/dev/nvme0n1p2", "/dev/mapper/vg-root", "rpool/ROOT", ...
  std::string target;
};

// /proc/self/mountinfo (Documentation/filesystems/proc.rst, 3.5): every line has at least
// "id parent major:minor root target options", optional fields, "-", "type source".
// A line that does not parse makes the whole table unusable: the guard cannot tell.
Result<std::vector<Mount>> read_mountinfo(const std::string& path) {
  auto text = sys::read_text_file(path, 16 << 20);
  if (!text) return std::unexpected(text.error());
  std::vector<Mount> mounts;
  std::istringstream lines(*text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::vector<std::string> words;
    for (std::string word; fields >> word;) words.push_back(word);
    const auto separator = std::find(words.begin(), words.end(), "-");
    const auto numbers = words.size() > 2 ? words[2] : "";
    const auto colon = numbers.find(':');
    const bool numeric = colon != std::string::npos && colon > 0 && colon + 1 < numbers.size() &&
                         std::all_of(numbers.begin(), numbers.end(), [](char c) { return c == ':' || std::isdigit(static_cast<unsigned char>(c)); });
    if (words.size() < 6 || separator == words.end() || separator - words.begin() < 6 || words.end() - separator < 3 ||
        !numeric) {
      return std::unexpected(make_error(Errc::malformed, "read mount table", path,
                                        fmt::format("cannot parse the line '{}'", line)));
    }
    mounts.push_back({numbers, unescape_octal(*(separator + 2)), unescape_octal(words[4])});
  }
  return mounts;
}

// The device or file of each swap area in /proc/swaps (after its header line).
Result<std::vector<std::string>> read_swaps(const std::string& path) {
  auto text = sys::read_text_file(path, 1 << 20);
  if (!text) return std::unexpected(text.error());
  std::vector<std::string> areas;
  std::istringstream lines(*text);
  std::string line;
  std::getline(lines, line);  // Filename Type Size Used Priority
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string file;
    if (fields >> file) areas.push_back(unescape_octal(file));
  }
  return areas;
}

struct BlockDevice {
  std::string name;     // "nvme0n1p2", "dm-0"
  std::string dev;      // "259:2"; empty when unreadable
  std::string dm_name;  // "vg-root" for device-mapper devices
  std::string label() const { return dm_name.empty() ? name : fmt::format("{} ({})", name, dm_name); }
  // Whether a path from the mount table or the swap list names this device.
  bool named_by(const std::string& source) const {
    return source == "/dev/" + name || (!dm_name.empty() && source == "/dev/mapper/" + dm_name);
  }
};

BlockDevice describe_block(const SysfsPaths& paths, const std::string& name, std::vector<std::string>& uses) {
  const std::string dir = paths.class_block + "/" + name;
  BlockDevice block{name, "", ""};
  if (auto dev = sys::read_text_file(dir + "/dev", 64)) {
    block.dev = trimmed(*dev);
  } else {
    uses.push_back(fmt::format("{}: its device number cannot be read ({}), so whether it is mounted is unknown", name,
                               dev.error().reason));
  }
  if (auto dm = sys::read_text_file(dir + "/dm/name", 256)) block.dm_name = trimmed(*dm);
  return block;
}

// Collects every way the machine uses a block device: mounted, swap, or held by another
// block device (LVM, dm-crypt, md), followed down the holder chain. Anything it cannot
// read is itself reported as a use: the guard fails closed.
class BlockUses {
 public:
  BlockUses(const SysfsPaths& paths, std::vector<Mount> mounts, std::vector<std::string> swaps)
      : paths_(paths), mounts_(std::move(mounts)), swaps_(std::move(swaps)) {}

  void examine(const BlockDevice& block, int depth, std::vector<std::string>& uses) {
    if (!examined_.insert(block.name).second) return;
    for (const Mount& mount : mounts_) {
      if ((!block.dev.empty() && mount.device_number == block.dev) || block.named_by(mount.source)) {
        uses.push_back(fmt::format("{} is mounted on {}", block.label(), mount.target));
      }
    }
    for (const std::string& area : swaps_) {
      if (block.named_by(area)) uses.push_back(fmt::format("{} is used as swap", block.label()));
    }
    auto holders = sys::list_directory(paths_.class_block + "/" + block.name + "/holders");
    if (!holders) {
      uses.push_back(fmt::format("{}: its holders cannot be listed ({})", block.label(), holders.error().reason));
      return;
    }
    std::sort(holders->begin(), holders->end());
    for (const std::string& name : *holders) {
      const BlockDevice holder = describe_block(paths_, name, uses);
      uses.push_back(fmt::format("{} is held by {}", block.label(), holder.label()));
      if (depth >= kMaxHolderDepth) {
        uses.push_back(fmt::format("{}: the holder chain is longer than {}", holder.label(), kMaxHolderDepth));
        continue;
      }
      examine(holder, depth + 1, uses);
    }
  }

 private:
  const SysfsPaths& paths_;
  std::vector<Mount> mounts_;
  std::vector<std::string> swaps_;
  std::set<std::string> examined_;
};

// The entries of a /sys/class directory whose device lies below `device_real`, sorted.
// Every entry is resolved: one that cannot be might be this device's, so it is an error.
Result<std::vector<std::string>> class_members_below(const std::string& class_dir, const std::string& device_real) {
  auto names = sys::list_directory(class_dir);
  if (!names) return std::unexpected(names.error());
  std::sort(names->begin(), names->end());
  std::vector<std::string> members;
  for (const std::string& name : *names) {
    auto real = sys::real_path(class_dir + "/" + name);
    if (!real) return std::unexpected(real.error());
    if (below(*real, device_real)) members.push_back(name);
  }
  return members;
}

Error guard_error(const Bdf& bdf, Error error, std::string what) {
  error.operation = fmt::format("check host use of {}: {}", bdf.to_string(), what);
  error.hint = "the guard cannot tell whether this machine uses the device; check by hand, then force it";
  return error;
}

std::string unbind_file(const SysfsPaths& paths, const Bdf& bdf) { return paths.device_dir(bdf) + "/driver/unbind"; }

}  // namespace

Result<std::optional<std::string>> bound_driver(const SysfsPaths& paths, const Bdf& bdf) {
  auto driver = sysfs::device_driver(paths, bdf);
  if (!driver) {
    Error error = driver.error();
    error.operation = "read the driver link of " + bdf.to_string() + ": " + error.operation;
    return std::unexpected(error);
  }
  return *driver;
}

Result<std::vector<std::string>> host_uses_of(const SysfsPaths& paths, const Bdf& bdf) {
  const std::string dir = paths.device_dir(bdf);
  if (!sys::path_exists(dir)) {
    return std::unexpected(make_error(Errc::not_found, "check host use of", bdf.to_string(), "no such device"));
  }
  auto device_real = sys::real_path(dir);
  if (!device_real) return std::unexpected(guard_error(bdf, device_real.error(), "resolve its directory"));
  std::vector<std::string> uses;

  // Interfaces at any depth below the device (a USB adapter behind an xHCI controller too).
  auto interfaces = class_members_below(paths.class_net, *device_real);
  if (!interfaces) return std::unexpected(guard_error(bdf, interfaces.error(), "list network interfaces"));
  for (const std::string& interface : *interfaces) {
    // Unknown counts as in use: refusing wrongly costs a --force, the opposite a machine.
    const auto up = interface_is_up(paths.class_net + "/" + interface);
    if (!up) {
      uses.push_back(fmt::format("network interface {} is in an unknown state", interface));
    } else if (*up) {
      uses.push_back(fmt::format("network interface {} is up", interface));
    }
  }

  // Disks and partitions at any depth below the device (NVMe, SATA, SAS HBAs, USB).
  auto blocks = class_members_below(paths.class_block, *device_real);
  if (!blocks) return std::unexpected(guard_error(bdf, blocks.error(), "list block devices"));
  if (blocks->empty()) return uses;
  auto mounts = read_mountinfo(paths.mountinfo_file);
  if (!mounts) return std::unexpected(guard_error(bdf, mounts.error(), "read the mount table"));
  auto swaps = read_swaps(paths.swaps_file);
  if (!swaps) return std::unexpected(guard_error(bdf, swaps.error(), "read the swap list"));
  BlockUses block_uses(paths, std::move(*mounts), std::move(*swaps));
  for (const std::string& name : *blocks) block_uses.examine(describe_block(paths, name, uses), 0, uses);
  return uses;
}

namespace {

// The guard: busy, listing the uses, when the machine uses the device; the error of the
// check when it cannot tell.
Result<void> check_not_in_use(const SysfsPaths& paths, const Bdf& bdf, const std::string& driver) {
  auto uses = host_uses_of(paths, bdf);
  if (!uses) return std::unexpected(uses.error());
  if (uses->empty()) return {};
  return std::unexpected(make_error(Errc::busy, "unbind " + driver + " from", bdf.to_string(),
                                    fmt::format("this machine uses it: {}", fmt::join(*uses, "; ")),
                                    "unmount, swapoff or stop what holds it, or take the interface down, first; "
                                    "or force it if you are sure"));
}

}  // namespace

Result<void> unbind_driver(const SysfsPaths& paths, const Bdf& bdf, const BindOptions& options) {
  auto driver = bound_driver(paths, bdf);
  if (!driver) return std::unexpected(driver.error());
  if (!*driver) return {};
  if (!options.force) {
    if (auto free = check_not_in_use(paths, bdf, **driver); !free) return free;
  }
  const std::string name = bdf.to_string();
  return sys::write_text_file(unbind_file(paths, bdf), name, "unbind " + **driver + " from " + name);
}

Result<void> bind_driver(const SysfsPaths& paths, const Bdf& bdf, std::string_view driver, const BindOptions& options) {
  const std::string name = bdf.to_string();
  auto current = bound_driver(paths, bdf);
  if (!current) return std::unexpected(current.error());
  if (*current == std::optional<std::string>(driver)) return {};
  if (auto unbound = unbind_driver(paths, bdf, options); !unbound) return unbound;
  const std::string operation = fmt::format("bind {} to", driver);
  if (auto set = sys::write_text_file(paths.device_dir(bdf) + "/driver_override", driver, operation); !set) return set;
  if (auto probed = sys::write_text_file(paths.pci_root + "/drivers_probe", name, operation); !probed) return probed;
  auto now = bound_driver(paths, bdf);
  if (!now) return std::unexpected(now.error());
  if (*now != std::optional<std::string>(driver)) {
    return std::unexpected(make_error(Errc::io_error, operation, name,
                                      fmt::format("{} did not take the device (driver now: {})", driver,
                                                  now->value_or("none")),
                                      fmt::format("is the {} module loaded (modprobe {})? dmesg says why a probe failed",
                                                  driver, driver)));
  }
  return {};
}

Result<std::optional<std::string>> restore_driver(const SysfsPaths& paths, const Bdf& bdf, const BindOptions& options) {
  const std::string name = bdf.to_string();
  // Checked before anything is written, so that a device in use, or whose state cannot be
  // read, is left exactly as it is.
  auto current = bound_driver(paths, bdf);
  if (!current) return std::unexpected(current.error());
  if (*current && !options.force) {
    if (auto free = check_not_in_use(paths, bdf, **current); !free) return std::unexpected(free.error());
  }
  // An empty write clears driver_override (drivers/pci/pci-sysfs.c, driver_override_store).
  if (auto cleared = sys::write_text_file(paths.device_dir(bdf) + "/driver_override", "\n", "restore the driver of");
      !cleared) {
    return std::unexpected(cleared.error());
  }
  if (auto unbound = unbind_driver(paths, bdf, {.force = true}); !unbound) return std::unexpected(unbound.error());
  if (auto probed = sys::write_text_file(paths.pci_root + "/drivers_probe", name, "restore the driver of"); !probed) {
    return std::unexpected(probed.error());
  }
  return bound_driver(paths, bdf);
}

}  // namespace pcie
