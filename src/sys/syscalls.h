// The library's one choke point for the kernel: every open, pread, pwrite, mmap, readlink
// and directory listing goes through these functions, which capture errno immediately and
// turn it into an Error naming the path. Private to the library.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pcie/error.h"
#include "pcie/sys/mapping.h"
#include "pcie/sys/unique_fd.h"

namespace pcie::sys {

// open(2) with O_CLOEXEC added. `operation` names what the caller is doing, for the error.
Result<UniqueFd> open_file(const std::string& path, int flags, std::string_view operation);

// flock(2) LOCK_EX | LOCK_NB on `fd`: held by this open file description until it is
// closed; busy (EWOULDBLOCK) while another open of the same file holds it, in this process
// or another. Retries on EINTR.
Result<void> lock_exclusive(int fd, const std::string& path);

// pread(2) until `buffer` is full or end of file; returns the bytes read (short at EOF).
// Retries on EINTR.
Result<std::size_t> pread_upto(int fd, std::span<std::byte> buffer, std::uint64_t offset,
                               const std::string& path);

// One pread(2) at `offset` (retried on EINTR); returns the bytes it gave. For files that
// give everything they hold up to the buffer's size in one read: sysfs' config and
// attribute files, regular files. pread_upto's second call, which only sees the end of
// the file, is a syscall that costs microseconds on a paravirtualized machine.
Result<std::size_t> pread_once(int fd, std::span<std::byte> buffer, std::uint64_t offset,
                               const std::string& path);

// pread(2) exactly `buffer.size()` bytes at `offset`; end of file first is an io_error
// naming the offset (a register file that stopped answering).
Result<void> pread_exact(int fd, std::span<std::byte> buffer, std::uint64_t offset,
                         const std::string& path);

// pwrite(2) all of `data` at `offset`; a short write is an error.
Result<void> pwrite_all(int fd, std::span<const std::byte> data, std::uint64_t offset,
                        const std::string& path);

// The size fstat(2) reports for an open file.
Result<std::uint64_t> file_size(int fd, const std::string& path);

// mmap(2) MAP_SHARED of `length` bytes at file `offset` with protection `prot`.
Result<Mapping> map_shared(int fd, std::size_t length, std::uint64_t offset, int prot,
                           const std::string& path);

// Memory for DMA: a memfd (memfd_create(2), with MFD_HUGETLB flags for huge pages) sized
// with ftruncate(2), then mapped MAP_SHARED | MAP_POPULATE so every page exists before the
// IOMMU pins it. Fails with the errno of the step that failed (ENOMEM / EINVAL when no huge
// pages of that size are reserved).
Result<Mapping> map_memfd(std::size_t length, unsigned memfd_flags, std::string_view name);

// Anonymous private memory, populated (mmap(2) MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE).
Result<Mapping> map_anonymous(std::size_t length);

// madvise(2) on a whole mapping (e.g. MADV_DONTFORK).
Result<void> advise(const Mapping& mapping, int advice, std::string_view what);

// mlock(2) of a whole mapping: its pages stay in memory (never swapped out). Counted against
// RLIMIT_MEMLOCK without CAP_IPC_LOCK.
Result<void> lock_memory(const Mapping& mapping, std::string_view what);
// munlock(2) of a whole mapping: what lock_memory() did is undone (the pages count against
// RLIMIT_MEMLOCK no more).
Result<void> unlock_memory(const Mapping& mapping, std::string_view what);

// membarrier(2) MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: this process may then use
// private_expedited_membarrier(). Linux 4.14 and later; fails with the errno (ENOSYS on an
// older kernel or under a sandbox that refuses the call, EINVAL where the command is
// unknown).
Result<void> register_private_expedited_membarrier();
// membarrier(2) MEMBARRIER_CMD_PRIVATE_EXPEDITED: when it returns, every other running thread
// of this process has executed a full memory barrier (and a thread that was not running
// does so when it is scheduled), so a thread that fences only against its compiler is
// ordered against the caller (Documentation/scheduler/membarrier.rst). Needs
// register_private_expedited_membarrier() first (EPERM without it).
Result<void> private_expedited_membarrier();

// read(2) of up to `buffer.size()` bytes from the current position (character devices such
// as /dev/uioN); returns the bytes read. Retries on EINTR.
Result<std::size_t> read_some(int fd, std::span<std::byte> buffer, const std::string& path);

// write(2) of all of `data` in one call (character devices); a short write is an error.
Result<void> write_once(int fd, std::span<const std::byte> data, const std::string& path);

// Waits up to `timeout_ms` for the first of `fds` to become readable (poll(2)); returns its
// index, nullopt on timeout. Reads nothing. POLLERR/POLLHUP count as readable (the next
// read reports the error).
Result<std::optional<std::size_t>> wait_readable(std::span<const int> fds, int timeout_ms);

// eventfd(2), non-blocking and close-on-exec: where VFIO signals interrupts.
Result<UniqueFd> make_eventfd();

// `count` eventfds as make_eventfd(), with their descriptors as plain ints (what
// VFIO_DEVICE_SET_IRQS takes); the ints stay valid while `owned` holds them.
struct Eventfds {
  std::vector<UniqueFd> owned;
  std::vector<int> raw;
};
Result<Eventfds> make_eventfds(unsigned count);

// Waits up to `timeout_ms` for an eventfd to be signalled (poll(2)), then reads and returns
// its counter (how many signals arrived); 0 when the timeout passed first.
Result<std::uint64_t> wait_eventfd(int fd, int timeout_ms);

// RLIMIT_MEMLOCK's soft limit in bytes (RLIM_INFINITY as ~0).
std::uint64_t memlock_limit();

// Reads a small text file (a sysfs attribute) of at most `max_bytes`; a longer file is
// `malformed`, since sysfs attributes are never that long and the data is untrusted.
Result<std::string> read_text_file(const std::string& path, std::size_t max_bytes = 4096);

// Reads a sysfs attribute (one value, at most a page) in one pread(2): sysfs hands the
// whole text to the first read at offset 0, as a regular file (a fake tree) gives all it
// holds, so the read that read_text_file makes to see the end is not needed. Errors as
// read_text_file's. Not for files whose reads may stop short of the end (procfs' seq
// files such as mountinfo, pipes): read_text_file reads those.
Result<std::string> read_attribute(const std::string& path, std::size_t max_bytes = 4096);

// Writes `text` to a small file (a sysfs attribute such as driver/unbind) in one write(2),
// as the kernel expects for attributes. `operation` names what is being done, for the error.
Result<void> write_text_file(const std::string& path, std::string_view text, std::string_view operation);

// readlink(2), returning the target text.
Result<std::string> read_link(const std::string& path);

// realpath(3): the canonical absolute path, every link resolved.
Result<std::string> real_path(const std::string& path);

// Names in a directory, without "." and "..", unsorted.
Result<std::vector<std::string>> list_directory(const std::string& path);

// True when `path` exists (stat(2) succeeds).
bool path_exists(const std::string& path);

// Which file `path` names now (stat(2)'s device and inode, links followed); nullopt when
// it does not exist (ENOENT, ENOTDIR). A sysfs node removed and made again (a device
// unplugged and another added at the same address) has a new identity. Fails with stat's
// error otherwise (EACCES, ENOMEM, a seccomp refusal): that says nothing about the file.
struct FileIdentity {
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  friend bool operator==(const FileIdentity&, const FileIdentity&) = default;
};
Result<std::optional<FileIdentity>> identity_of(const std::string& path);

// Whether this process may open `path` for reading and writing (access(2) with R_OK | W_OK,
// against the real uid): the errno as an error (permission_denied, not_found) when not.
Result<void> check_read_write_access(const std::string& path, std::string_view operation);

// Who owns a file and its permission bits (stat(2)).
struct FileOwnership {
  unsigned uid = 0;
  unsigned gid = 0;
  unsigned mode = 0;  // the permission bits (07777)
};
Result<FileOwnership> file_ownership(const std::string& path);
// chown(2) and chmod(2) of `path`.
Result<void> change_ownership(const std::string& path, const FileOwnership& ownership);

// Writes a whole small file, creating it (0644) or replacing its contents; mkdir -p of a
// directory (0755); unlink(2) (absent is not an error).
Result<void> write_whole_file(const std::string& path, std::string_view text);
Result<void> make_directories(const std::string& path);
Result<void> remove_file(const std::string& path);

}  // namespace pcie::sys

namespace pcie::sys {

// sysconf(_SC_PAGESIZE).
std::uint64_t page_size();

// geteuid(2).
unsigned effective_uid();

}  // namespace pcie::sys
