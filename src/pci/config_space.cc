#include "pcie/config_space.h"

#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "src/pci/config_file.h"
#include "src/sys/syscalls.h"

namespace pcie {

Result<ConfigSpace> ConfigSpace::open(const SysfsPaths& paths, const Bdf& bdf, Mode mode) {
  const std::string path = paths.device_dir(bdf) + "/config";
  const bool writable = mode == Mode::read_write;
  auto fd = detail::open_config_file(path, writable);
  if (!fd) return std::unexpected(fd.error());
  auto file_bytes = sys::file_size(fd->get(), path);
  if (!file_bytes) return std::unexpected(file_bytes.error());

  // The kernel silently truncates reads for unprivileged users (drivers/pci/pci-sysfs.c),
  // so the only way to learn what we may read is to read it; one read gives all there is.
  std::array<std::byte, cfg::kExtendedSize> probe{};
  auto readable = sys::pread_once(fd->get(), probe, 0, path);
  if (!readable) return std::unexpected(readable.error());
  if (*readable < cfg::kUnprivilegedSize) return std::unexpected(detail::short_config_error(path, *readable));
  const std::size_t file = static_cast<std::size_t>(
      std::min<std::uint64_t>(*file_bytes, cfg::kExtendedSize));
  return ConfigSpace(bdf, path, std::move(*fd), *readable, std::max(file, *readable), writable);
}

Result<void> ConfigSpace::check_access(std::uint32_t offset, std::size_t width, std::size_t limit,
                                       std::string_view operation) const {
  const std::string object = fmt::format("{} config offset 0x{:x}", bdf_.to_string(), offset);
  if (width != 1 && width != 2 && width != 4) {
    return std::unexpected(make_error(Errc::width_not_allowed, std::string(operation), object,
                                      fmt::format("width of {} bytes; config space takes 1, 2 or 4",
                                                  width)));
  }
  if (offset % width != 0) {
    return std::unexpected(make_error(Errc::misaligned, std::string(operation), object,
                                      fmt::format("a {}-byte access must be {}-byte aligned",
                                                  width, width)));
  }
  // Written as a subtraction so that a huge offset cannot wrap around.
  if (offset > limit || width > limit - offset) {
    std::string hint;
    if (limit == readable_size_ && limited_by_privilege()) {
      hint = "unprivileged users see only the first 64 bytes; run as root";
    }
    return std::unexpected(make_error(Errc::out_of_range, std::string(operation), object,
                                      fmt::format("{}-byte access past the {} accessible bytes",
                                                  width, limit),
                                      hint));
  }
  return {};
}

Result<std::uint32_t> ConfigSpace::read(std::uint32_t offset, std::size_t width) const {
  auto ok = check_access(offset, width, readable_size_, "read");
  if (!ok) return std::unexpected(ok.error());
  std::array<std::uint8_t, 4> bytes{};
  auto read = sys::pread_exact(fd_.get(), std::as_writable_bytes(std::span(bytes.data(), width)), offset, path_);
  if (!read) return std::unexpected(read.error());
  return static_cast<std::uint32_t>(load_le(bytes, 0, width));
}

Result<std::uint8_t> ConfigSpace::read8(std::uint32_t offset) const {
  auto value = read(offset, 1);
  if (!value) return std::unexpected(value.error());
  return static_cast<std::uint8_t>(*value);
}
Result<std::uint16_t> ConfigSpace::read16(std::uint32_t offset) const {
  auto value = read(offset, 2);
  if (!value) return std::unexpected(value.error());
  return static_cast<std::uint16_t>(*value);
}
Result<std::uint32_t> ConfigSpace::read32(std::uint32_t offset) const { return read(offset, 4); }

Result<void> ConfigSpace::write(std::uint32_t offset, std::size_t width, std::uint32_t value) const {
  auto ok = check_access(offset, width, file_size_, "write");
  if (!ok) return std::unexpected(ok.error());
  if (!writable_) {
    return std::unexpected(make_error(Errc::permission_denied, "write", path_,
                                      "config space was opened read-only",
                                      "open it with ConfigSpace::Mode::read_write"));
  }
  if (width < 4 && (value >> (8 * width)) != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "write", path_,
                                      fmt::format("value 0x{:x} does not fit in {} bytes", value,
                                                  width)));
  }
  std::array<std::uint8_t, 4> bytes{};
  store_le(bytes, 0, width, value);
  return sys::pwrite_all(fd_.get(), std::as_bytes(std::span(bytes.data(), width)), offset, path_);
}

Result<void> ConfigSpace::write8(std::uint32_t offset, std::uint8_t value) const {
  return write(offset, 1, value);
}
Result<void> ConfigSpace::write16(std::uint32_t offset, std::uint16_t value) const {
  return write(offset, 2, value);
}
Result<void> ConfigSpace::write32(std::uint32_t offset, std::uint32_t value) const {
  return write(offset, 4, value);
}

Result<std::vector<std::uint8_t>> ConfigSpace::snapshot() const {
  std::vector<std::uint8_t> bytes(readable_size_);
  auto n = sys::pread_upto(fd_.get(), std::as_writable_bytes(std::span(bytes)), 0, path_);
  if (!n) return std::unexpected(n.error());
  bytes.resize(*n);
  return bytes;
}

Result<void> ConfigSpace::check_present() const {
  std::array<std::uint8_t, 8> header{};
  for (std::uint32_t offset : {0u, 4u}) {
    auto dword = read32(offset);
    if (!dword) return std::unexpected(dword.error());
    store_le(header, offset, 4, *dword);
  }
  if (config_reads_all_ones(header)) {
    return std::unexpected(make_error(Errc::device_removed, "read config space of", bdf_.to_string(),
                                      "the header reads all ones: the device is gone or in reset",
                                      "check 'dmesg' for surprise removal or a failed reset"));
  }
  return {};
}

bool config_reads_all_ones(std::span<const std::uint8_t> config) {
  if (config.size() < 8) return false;
  return std::all_of(config.begin(), config.begin() + 8, [](std::uint8_t byte) { return byte == 0xff; });
}

}  // namespace pcie
