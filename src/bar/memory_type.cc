#include "pcie/memory_type.h"

#include <fmt/format.h>

#include <charconv>
#include <sstream>

#include "src/sys/syscalls.h"

namespace pcie {
namespace {

std::optional<std::uint64_t> parse_hex(std::string_view text) {
  if (!text.starts_with("0x")) return std::nullopt;
  text.remove_prefix(2);
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

Result<std::vector<PatEntry>> parse_pat_memtypes(std::string_view text) {
  std::vector<PatEntry> entries;
  std::istringstream lines{std::string(text)};
  for (std::string line; std::getline(lines, line);) {
    // The kernel heads the list with "PAT memtype list:" (memtype_seq_start).
    if (line.empty() || line == "PAT memtype list:") continue;
    // "PAT: [mem 0x00000000fd000000-0x00000000fe000000] write-combining"
    constexpr std::string_view kPrefix = "PAT: [mem ";
    const auto dash = line.find('-', kPrefix.size());
    const auto close = line.find("] ", kPrefix.size());
    std::optional<std::uint64_t> start, end;
    if (line.starts_with(kPrefix) && dash != std::string::npos && close != std::string::npos && dash < close) {
      start = parse_hex(std::string_view(line).substr(kPrefix.size(), dash - kPrefix.size()));
      end = parse_hex(std::string_view(line).substr(dash + 1, close - dash - 1));
    }
    if (!start || !end || *end < *start || close + 2 >= line.size()) {
      return std::unexpected(make_error(Errc::malformed, "parse PAT memory types", "",
                                        fmt::format("not an entry: '{}'", line)));
    }
    entries.push_back({*start, *end, line.substr(close + 2)});
  }
  return entries;
}

Result<std::vector<PatEntry>> read_pat_memtypes(const SysfsPaths& paths) {
  auto text = sys::read_text_file(paths.pat_memtype_list, 16 << 20);
  if (!text) return std::unexpected(text.error());
  return parse_pat_memtypes(*text);
}

std::vector<PatEntry> overlapping(const std::vector<PatEntry>& entries, std::uint64_t start, std::uint64_t length) {
  const std::uint64_t end = length > ~std::uint64_t{0} - start ? ~std::uint64_t{0} : start + length;
  std::vector<PatEntry> found;
  for (const PatEntry& entry : entries) {
    if (entry.start < end && start < entry.end) found.push_back(entry);
  }
  return found;
}

Result<std::vector<PatEntry>> pat_entries(const SysfsPaths& paths, std::uint64_t start, std::uint64_t length) {
  auto entries = read_pat_memtypes(paths);
  if (!entries) return std::unexpected(entries.error());
  return overlapping(*entries, start, length);
}

std::optional<MemoryType> memory_type_of_pat(std::string_view name) {
  if (name == "uncached-minus" || name == "uncached") return MemoryType::uncached;
  if (name == "write-combining") return MemoryType::write_combined;
  if (name == "write-back") return MemoryType::write_back;
  return std::nullopt;
}

MemoryTypeReport check_memory_type(const SysfsPaths& paths, MemoryType requested, std::uint64_t start,
                                   std::uint64_t length) {
  MemoryTypeReport report;
  report.requested = requested;
  auto entries = pat_entries(paths, start, length);
  if (!entries) {
    report.note = fmt::format("unverified: {} cannot be read ({}); it needs root and debugfs mounted at "
                              "/sys/kernel/debug",
                              paths.pat_memtype_list, entries.error().reason);
    return report;
  }
  if (entries->empty()) {
    report.note = fmt::format("unverified: the kernel lists no memory type for [0x{:x}, 0x{:x})", start, start + length);
    return report;
  }
  // Every reservation covering the range must have the same type; the first that differs
  // from what was asked for is what the mapping really got.
  const PatEntry* granted = &entries->front();
  for (const PatEntry& entry : *entries) {
    if (memory_type_of_pat(entry.type) != requested) {
      granted = &entry;
      break;
    }
  }
  report.granted_name = granted->type;
  const std::optional<MemoryType> known = memory_type_of_pat(granted->type);
  report.granted = known.value_or(MemoryType::uncached);
  report.mismatch = known != requested;
  if (report.mismatch) {
    report.note = fmt::format("asked for {}, the kernel granted {} (PAT gives every mapping of a range the type of "
                              "the first: another mapping of [0x{:x}, 0x{:x}) exists)",
                              to_string(requested), granted->type, granted->start, granted->end);
  }
  return report;
}

}  // namespace pcie
