#include "src/bar/register_file.h"

#include <array>
#include <span>

#include "pcie/byte_order.h"
#include "src/sys/syscalls.h"

namespace pcie {

Result<std::uint64_t> read_register_file(int fd, Width width, std::uint64_t offset, const std::string& path) {
  std::array<std::uint8_t, 8> bytes{};
  const std::size_t count = byte_count(width);
  auto read = sys::pread_exact(fd, std::as_writable_bytes(std::span(bytes.data(), count)), offset, path);
  if (!read) return std::unexpected(read.error());
  return load_le(bytes, 0, count);
}

Result<void> write_register_file(int fd, Width width, std::uint64_t offset, std::uint64_t value,
                                 const std::string& path) {
  std::array<std::uint8_t, 8> bytes{};
  const std::size_t count = byte_count(width);
  store_le(bytes, 0, count, value);
  return sys::pwrite_all(fd, std::as_bytes(std::span(bytes.data(), count)), offset, path);
}

}  // namespace pcie
