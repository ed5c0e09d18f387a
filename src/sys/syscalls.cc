#include "src/sys/syscalls.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <linux/membarrier.h>
#include <sys/file.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <memory>

namespace pcie::sys {

Result<UniqueFd> open_file(const std::string& path, int flags, std::string_view operation) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return std::unexpected(make_errno_error(errno, std::string(operation), path));
  return UniqueFd(fd);
}

Result<void> lock_exclusive(int fd, const std::string& path) {
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return {};
    if (errno != EINTR) return std::unexpected(make_errno_error(errno, "lock", path));
  }
}

Result<std::size_t> pread_upto(int fd, std::span<std::byte> buffer, std::uint64_t offset,
                               const std::string& path) {
  std::size_t done = 0;
  while (done < buffer.size()) {
    const ssize_t n = ::pread(fd, buffer.data() + done, buffer.size() - done,
                              static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::unexpected(make_io_errno_error(errno, "read", path));
    }
    if (n == 0) break;  // end of file: sysfs truncates config reads for non-root users
    done += static_cast<std::size_t>(n);
  }
  return done;
}

Result<std::size_t> pread_once(int fd, std::span<std::byte> buffer, std::uint64_t offset,
                               const std::string& path) {
  for (;;) {
    const ssize_t n = ::pread(fd, buffer.data(), buffer.size(), static_cast<off_t>(offset));
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) return std::unexpected(make_io_errno_error(errno, "read", path));
  }
}

Result<void> pread_exact(int fd, std::span<std::byte> buffer, std::uint64_t offset,
                         const std::string& path) {
  auto n = pread_upto(fd, buffer, offset, path);
  if (!n) return std::unexpected(n.error());
  if (*n != buffer.size()) {
    return std::unexpected(make_error(Errc::io_error, "read", path,
                                      "short read: " + std::to_string(*n) + " of " +
                                          std::to_string(buffer.size()) + " bytes at offset " +
                                          std::to_string(offset)));
  }
  return {};
}

Result<void> pwrite_all(int fd, std::span<const std::byte> data, std::uint64_t offset,
                        const std::string& path) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done,
                               static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::unexpected(make_io_errno_error(errno, "write", path));
    }
    if (n == 0) {
      return std::unexpected(make_error(Errc::io_error, "write", path,
                                        "short write: the file accepted no more bytes"));
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Result<std::uint64_t> file_size(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return std::unexpected(make_errno_error(errno, "stat", path));
  return static_cast<std::uint64_t>(st.st_size);
}

Result<Mapping> map_shared(int fd, std::size_t length, std::uint64_t offset, int prot,
                           const std::string& path) {
  void* addr = ::mmap(nullptr, length, prot, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (addr == MAP_FAILED) return std::unexpected(make_errno_error(errno, "mmap", path));
  return Mapping(addr, length);
}

Result<Mapping> map_memfd(std::size_t length, unsigned memfd_flags, std::string_view name) {
  const std::string label(name);
  const int raw = ::memfd_create(label.c_str(), memfd_flags | MFD_CLOEXEC);
  if (raw < 0) return std::unexpected(make_errno_error(errno, "memfd_create", label));
  const UniqueFd fd(raw);  // the mapping keeps the memory; the fd can go
  if (::ftruncate(fd.get(), static_cast<off_t>(length)) != 0) {
    return std::unexpected(make_errno_error(errno, "size memfd", label));
  }
  void* addr = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd.get(), 0);
  if (addr == MAP_FAILED) return std::unexpected(make_errno_error(errno, "mmap memfd", label));
  return Mapping(addr, length);
}

Result<Mapping> map_anonymous(std::size_t length) {
  void* addr = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (addr == MAP_FAILED) return std::unexpected(make_errno_error(errno, "mmap", "anonymous memory"));
  return Mapping(addr, length);
}

Result<void> advise(const Mapping& mapping, int advice, std::string_view what) {
  if (::madvise(mapping.data(), mapping.size(), advice) != 0) {
    return std::unexpected(make_errno_error(errno, "madvise", std::string(what)));
  }
  return {};
}

// glibc has no membarrier() wrapper (2.36): the call goes through syscall(2).
Result<void> register_private_expedited_membarrier() {
  if (::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0) {
    return std::unexpected(make_errno_error(errno, "membarrier", "register private expedited"));
  }
  return {};
}

Result<void> private_expedited_membarrier() {
  if (::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
    return std::unexpected(make_errno_error(errno, "membarrier", "private expedited"));
  }
  return {};
}

// mlock and munlock go to the kernel directly: AddressSanitizer replaces the libc calls with
// ones that succeed without locking anything ("AddressSanitizer ignores mlock"), which would
// leave a physical-address DMA buffer free to be swapped out or migrated under the device in
// a sanitized program while reporting it pinned.
Result<void> lock_memory(const Mapping& mapping, std::string_view what) {
  if (::syscall(SYS_mlock, mapping.data(), mapping.size()) != 0) {
    return std::unexpected(make_errno_error(errno, "mlock", std::string(what)));
  }
  return {};
}

Result<void> unlock_memory(const Mapping& mapping, std::string_view what) {
  if (::syscall(SYS_munlock, mapping.data(), mapping.size()) != 0) {
    return std::unexpected(make_errno_error(errno, "munlock", std::string(what)));
  }
  return {};
}

Result<std::size_t> read_some(int fd, std::span<std::byte> buffer, const std::string& path) {
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) return std::unexpected(make_io_errno_error(errno, "read", path));
  }
}

Result<void> write_once(int fd, std::span<const std::byte> data, const std::string& path) {
  for (;;) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n == static_cast<ssize_t>(data.size())) return {};
    if (n >= 0) {
      return std::unexpected(make_error(Errc::io_error, "write", path,
                                        "short write: " + std::to_string(n) + " of " + std::to_string(data.size()) + " bytes"));
    }
    if (errno != EINTR) return std::unexpected(make_io_errno_error(errno, "write", path));
  }
}

Result<std::optional<std::size_t>> wait_readable(std::span<const int> fds, int timeout_ms) {
  std::vector<pollfd> waiting;
  for (const int fd : fds) waiting.push_back({.fd = fd, .events = POLLIN, .revents = 0});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const int ready = ::poll(waiting.data(), waiting.size(), static_cast<int>(std::max<std::int64_t>(0, left.count())));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return std::unexpected(make_errno_error(errno, "poll", "interrupt descriptors"));
    if (ready == 0) return std::optional<std::size_t>{};
    for (std::size_t i = 0; i < waiting.size(); ++i) {
      if (waiting[i].revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) return std::optional<std::size_t>(i);
    }
  }
}

Result<UniqueFd> make_eventfd() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return std::unexpected(make_errno_error(errno, "eventfd", "interrupt"));
  return UniqueFd(fd);
}

Result<Eventfds> make_eventfds(unsigned count) {
  Eventfds eventfds;
  for (unsigned i = 0; i < count; ++i) {
    auto fd = make_eventfd();
    if (!fd) return std::unexpected(fd.error());
    eventfds.raw.push_back(fd->get());
    eventfds.owned.push_back(std::move(*fd));
  }
  return eventfds;
}

Result<std::uint64_t> wait_eventfd(int fd, int timeout_ms) {
  const int fds[] = {fd};
  auto ready = wait_readable(fds, timeout_ms);
  if (!ready) return std::unexpected(ready.error());
  if (!*ready) return 0;
  std::uint64_t count = 0;
  if (::read(fd, &count, sizeof count) != static_cast<ssize_t>(sizeof count)) {
    if (errno == EAGAIN) return 0;  // another reader took it
    return std::unexpected(make_errno_error(errno, "read", "interrupt eventfd"));
  }
  return count;
}

std::uint64_t memlock_limit() {
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_MEMLOCK, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return ~std::uint64_t{0};
  return limit.rlim_cur;
}

Result<std::string> read_text_file(const std::string& path, std::size_t max_bytes) {
  auto fd = open_file(path, O_RDONLY, "open");
  if (!fd) return std::unexpected(fd.error());
  // Grown as it is read, so that a generous limit (a mount table, the PAT list: megabytes
  // at most) costs nothing for the usual few bytes; one byte past the limit is read so that
  // an over-long file is detected rather than cut.
  std::string text;
  std::size_t chunk = 4096;
  for (;;) {
    const std::size_t want = std::min(chunk, max_bytes + 1 - text.size());
    const std::size_t had = text.size();
    text.resize(had + want);
    auto n = pread_upto(fd->get(), std::as_writable_bytes(std::span(text).subspan(had)), had, path);
    if (!n) return std::unexpected(n.error());
    text.resize(had + *n);
    if (text.size() > max_bytes) {
      return std::unexpected(make_error(Errc::malformed, "read", path,
                                        "file longer than " + std::to_string(max_bytes) +
                                            " bytes; not a sysfs attribute"));
    }
    if (*n < want) return text;  // end of file
    chunk = std::min<std::size_t>(chunk * 2, 1 << 20);
  }
}

Result<std::string> read_attribute(const std::string& path, std::size_t max_bytes) {
  auto fd = open_file(path, O_RDONLY, "open");
  if (!fd) return std::unexpected(fd.error());
  // One byte past the limit, so that an over-long file is detected rather than cut; on
  // the stack up to a page, the most a sysfs attribute holds.
  std::array<char, 4096 + 1> page;
  std::string large;
  std::span<char> buffer(page.data(), std::min(page.size(), max_bytes + 1));
  if (max_bytes >= page.size()) {
    large.resize(max_bytes + 1);
    buffer = large;
  }
  auto n = pread_once(fd->get(), std::as_writable_bytes(buffer), 0, path);
  if (!n) return std::unexpected(n.error());
  if (*n > max_bytes) {
    return std::unexpected(make_error(Errc::malformed, "read", path,
                                      "file longer than " + std::to_string(max_bytes) +
                                          " bytes; not a sysfs attribute"));
  }
  return std::string(buffer.data(), *n);
}

Result<void> write_text_file(const std::string& path, std::string_view text, std::string_view operation) {
  // O_TRUNC as a shell's `echo x > attribute` does: sysfs ignores it, a regular file needs it.
  auto fd = open_file(path, O_WRONLY | O_TRUNC, operation);
  if (!fd) return std::unexpected(fd.error());
  ssize_t n = 0;
  do {
    n = ::write(fd->get(), text.data(), text.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return std::unexpected(make_errno_error(errno, std::string(operation), path));
  if (static_cast<std::size_t>(n) != text.size()) {
    return std::unexpected(make_error(Errc::io_error, std::string(operation), path, "short write"));
  }
  return {};
}

Result<FileOwnership> file_ownership(const std::string& path) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) return std::unexpected(make_errno_error(errno, "stat", path));
  return FileOwnership{status.st_uid, status.st_gid, status.st_mode & 07777u};
}

Result<void> change_ownership(const std::string& path, const FileOwnership& ownership) {
  if (::chown(path.c_str(), ownership.uid, ownership.gid) != 0) {
    return std::unexpected(make_errno_error(errno, "change the owner of", path));
  }
  if (::chmod(path.c_str(), ownership.mode) != 0) {
    return std::unexpected(make_errno_error(errno, "change the mode of", path));
  }
  return {};
}

Result<void> write_whole_file(const std::string& path, std::string_view text) {
  const int raw = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (raw < 0) return std::unexpected(make_errno_error(errno, "write", path));
  const UniqueFd fd(raw);
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::unexpected(make_errno_error(n < 0 ? errno : EIO, "write", path));
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Result<void> make_directories(const std::string& path) {
  for (std::size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    const std::string prefix = slash == std::string::npos ? path : path.substr(0, slash);
    if (!prefix.empty() && ::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return std::unexpected(make_errno_error(errno, "create directory", prefix));
    }
    if (slash == std::string::npos) return {};
  }
}

Result<void> remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return std::unexpected(make_errno_error(errno, "remove", path));
  return {};
}

Result<std::string> read_link(const std::string& path) {
  // On the stack: discovery reads three links per device, and a zeroed PATH_MAX string
  // for each showed in its profile.
  std::array<char, PATH_MAX> target;
  const ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
  if (n < 0) return std::unexpected(make_errno_error(errno, "readlink", path));
  // A target that fills the buffer may have been cut short (readlink does not say).
  if (static_cast<std::size_t>(n) == target.size()) {
    return std::unexpected(make_errno_error(ENAMETOOLONG, "readlink", path));
  }
  return std::string(target.data(), static_cast<std::size_t>(n));
}

Result<std::string> real_path(const std::string& path) {
  std::unique_ptr<char, void (*)(void*)> resolved(::realpath(path.c_str(), nullptr), &::free);
  if (!resolved) return std::unexpected(make_errno_error(errno, "resolve", path));
  return std::string(resolved.get());
}

Result<std::vector<std::string>> list_directory(const std::string& path) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.c_str()), &::closedir);
  if (!dir) return std::unexpected(make_errno_error(errno, "list", path));
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = ::readdir(dir.get())) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
    errno = 0;
  }
  if (errno != 0) return std::unexpected(make_errno_error(errno, "list", path));
  return names;
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

Result<std::optional<FileIdentity>> identity_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::optional<FileIdentity>();
    return std::unexpected(make_errno_error(errno, "stat", path));
  }
  return std::optional<FileIdentity>(
      FileIdentity{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)});
}

Result<void> check_read_write_access(const std::string& path, std::string_view operation) {
  if (::access(path.c_str(), R_OK | W_OK) != 0) {
    return std::unexpected(make_errno_error(errno, std::string(operation), path));
  }
  return {};
}

}  // namespace pcie::sys

namespace pcie::sys {

std::uint64_t page_size() { return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)); }

unsigned effective_uid() { return ::geteuid(); }

}  // namespace pcie::sys
