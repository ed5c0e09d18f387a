#include "src/vfio/memlock.h"

#include <sstream>
#include <string>

#include "src/sys/syscalls.h"

namespace pcie::detail {

std::optional<std::uint64_t> process_status_bytes(std::string_view field) {
  auto status = sys::read_text_file("/proc/self/status", 64 * 1024);
  if (!status) return std::nullopt;
  const std::string prefix = std::string(field) + ":";
  std::istringstream lines(*status);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with(prefix)) continue;
    std::istringstream fields(line.substr(prefix.size()));
    std::uint64_t kilobytes = 0;
    if (fields >> kilobytes) return kilobytes * 1024;
  }
  return std::nullopt;
}

}  // namespace pcie::detail
