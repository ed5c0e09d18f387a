#include "src/pci/config_file.h"

#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <span>

#include "pcie/config_space.h"
#include "src/sys/syscalls.h"

namespace pcie::detail {

Result<UniqueFd> open_config_file(const std::string& path, bool writable) {
  auto fd = sys::open_file(path, writable ? O_RDWR : O_RDONLY, "open config space of");
  if (!fd) {
    Error error = fd.error();
    if (error.code == Errc::not_found) error.hint = "no such device; list devices with 'pciectl ls'";
    if (error.code == Errc::permission_denied) error.hint = "writing config space needs root";
    return std::unexpected(error);
  }
  return fd;
}

Error short_config_error(const std::string& path, std::size_t readable) {
  return make_error(Errc::malformed, "open config space of", path,
                    fmt::format("only {} bytes readable; a config header is 64 bytes", readable));
}

Result<ConfigBytes> read_config_file(const std::string& path, std::size_t length, bool with_file_size) {
  auto fd = open_config_file(path, false);
  if (!fd) return std::unexpected(fd.error());
  std::uint64_t file_bytes = 0;
  if (with_file_size) {
    auto size = sys::file_size(fd->get(), path);
    if (!size) return std::unexpected(size.error());
    file_bytes = *size;
  }
  ConfigBytes config;
  config.bytes.resize(length);
  auto n = sys::pread_once(fd->get(), std::as_writable_bytes(std::span(config.bytes)), 0, path);
  if (!n) return std::unexpected(n.error());
  if (*n < cfg::kUnprivilegedSize) return std::unexpected(short_config_error(path, *n));
  config.bytes.resize(*n);
  if (with_file_size) {
    config.file_size = std::max(static_cast<std::size_t>(std::min<std::uint64_t>(file_bytes, cfg::kExtendedSize)), *n);
  }
  return config;
}

}  // namespace pcie::detail
