// Which memory type the kernel really granted a mapping of device memory.
//
// x86's PAT gives every mapping of a physical range the type of the first one: map a BAR
// uncached, then write-combined, and both mappings are uncached (and the reverse), while
// each caller believes it got what it asked for (arch/x86/mm/pat/memtype.c,
// memtype_reserve). The kernel lists what it granted in
// /sys/kernel/debug/x86/pat_memtype_list, which root can read where debugfs is mounted;
// elsewhere the type cannot be verified, and is reported as such.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/error.h"
#include "pcie/region.h"
#include "pcie/sysfs_paths.h"

namespace pcie {

// One line of pat_memtype_list: "PAT: [mem 0x...-0x...] write-combining".
struct PatEntry {
  std::uint64_t start = 0;  // first physical address of the range
  std::uint64_t end = 0;  // exclusive
  std::string type;       // the kernel's name: "uncached-minus", "write-combining", ...
  // Equal when range and type name are equal.
  friend bool operator==(const PatEntry&, const PatEntry&) = default;
};

// Parses the whole table. malformed for a line that is not such an entry.
Result<std::vector<PatEntry>> parse_pat_memtypes(std::string_view text);

// The whole of paths.pat_memtype_list. Fails with the reason it cannot be read
// (permission_denied without root, not_found when debugfs is not mounted or PAT is off),
// which callers report as "unverified", or malformed.
Result<std::vector<PatEntry>> read_pat_memtypes(const SysfsPaths& paths);

// The entries that overlap [start, start + length) (overflow-safe).
std::vector<PatEntry> overlapping(const std::vector<PatEntry>& entries, std::uint64_t start, std::uint64_t length);

// read_pat_memtypes, then overlapping.
Result<std::vector<PatEntry>> pat_entries(const SysfsPaths& paths, std::uint64_t start, std::uint64_t length);

// The MemoryType of a PAT type name: uncached and uncached-minus are uncached (on device
// memory, whose MTRR type is uncached, they behave alike), write-combining, write-back;
// nullopt for the others (write-through, write-protected).
std::optional<MemoryType> memory_type_of_pat(std::string_view name);

// Checks a mapping of [start, start + length) of physical memory made with `requested`.
MemoryTypeReport check_memory_type(const SysfsPaths& paths, MemoryType requested, std::uint64_t start,
                                   std::uint64_t length);

}  // namespace pcie
