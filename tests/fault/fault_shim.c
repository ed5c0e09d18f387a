/* An LD_PRELOAD shim that makes one chosen call fail: the Nth call (counted across open,
 * openat, fopen, opendir, mmap, pread, pwrite, ioctl and readlink, and their 64-bit names)
 * returns failure with a chosen errno. It also counts the calls and can log each one, so a
 * test first learns how many calls a command makes, then fails each of them in turn
 * (tests/fault_injection_test.cc).
 *
 * Environment:
 *   PCIE_FAULT_NTH=N        fail the Nth counted call (1-based); 0 or unset: fail none
 *   PCIE_FAULT_ERRNO=E      its errno, by number (default EIO)
 *   PCIE_FAULT_LOG=FILE     append "N function argument" for every counted call, and
 *                           "injected N" when failing one
 *
 * Calls made by the dynamic loader and by glibc internally (fopen's own open) are not
 * counted: they do not go through these symbols. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static long counted;
static long fail_at = -1;
static int fail_errno = EIO;
static int log_fd = -1;
static int ready;

static void setup(void) {
  if (ready) return;
  ready = 1;
  const char* nth = getenv("PCIE_FAULT_NTH");
  if (nth != NULL && atol(nth) > 0) fail_at = atol(nth);
  const char* err = getenv("PCIE_FAULT_ERRNO");
  if (err != NULL && atoi(err) > 0) fail_errno = atoi(err);
  const char* log = getenv("PCIE_FAULT_LOG");
  /* The raw system call: the shim's own open must neither be counted nor fail. */
  if (log != NULL) log_fd = (int)syscall(SYS_openat, AT_FDCWD, log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* Counts one call; returns 1 when this one must fail (errno is then set). */
static int should_fail(const char* function, const char* argument) {
  setup();
  const int saved = errno;
  ++counted;
  if (log_fd >= 0) {
    char line[600];
    int n = snprintf(line, sizeof line, "%ld %s %s\n", counted, function, argument != NULL ? argument : "-");
    if (n > 0) (void)syscall(SYS_write, log_fd, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1));
  }
  if (counted == fail_at) {
    if (log_fd >= 0) {
      char line[64];
      int n = snprintf(line, sizeof line, "injected %ld\n", counted);
      if (n > 0) (void)syscall(SYS_write, log_fd, line, (size_t)n);
    }
    errno = fail_errno;
    return 1;
  }
  errno = saved;
  return 0;
}

#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

/* What the descriptor is open on, for the log: /proc/self/fd/N, read by the raw system
 * call so that it is neither counted nor failed. */
static const char* fd_name(int fd) {
  static __thread char text[512];
  if (log_fd < 0) return "fd";
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  long n = syscall(SYS_readlinkat, AT_FDCWD, link, text, sizeof text - 1);
  if (n < 0) n = snprintf(text, sizeof text, "fd %d", fd);
  text[n] = 0;
  return text;
}

#define OPEN_LIKE(name)                                          \
  int name(const char* path, int flags, ...) {                  \
    mode_t mode = 0;                                             \
    if (flags & (O_CREAT | O_TMPFILE)) {                         \
      va_list args;                                              \
      va_start(args, flags);                                     \
      mode = va_arg(args, mode_t);                               \
      va_end(args);                                              \
    }                                                            \
    if (should_fail(#name, path)) return -1;                     \
    return REAL(name)(path, flags, mode);                        \
  }
OPEN_LIKE(open)
OPEN_LIKE(open64)

#define OPENAT_LIKE(name)                                        \
  int name(int dirfd, const char* path, int flags, ...) {       \
    mode_t mode = 0;                                             \
    if (flags & (O_CREAT | O_TMPFILE)) {                         \
      va_list args;                                              \
      va_start(args, flags);                                     \
      mode = va_arg(args, mode_t);                               \
      va_end(args);                                              \
    }                                                            \
    if (should_fail(#name, path)) return -1;                     \
    return REAL(name)(dirfd, path, flags, mode);                 \
  }
OPENAT_LIKE(openat)
OPENAT_LIKE(openat64)

FILE* fopen(const char* path, const char* mode) {
  if (should_fail("fopen", path)) return NULL;
  return REAL(fopen)(path, mode);
}
FILE* fopen64(const char* path, const char* mode) {
  if (should_fail("fopen64", path)) return NULL;
  return REAL(fopen64)(path, mode);
}

DIR* opendir(const char* path) {
  if (should_fail("opendir", path)) return NULL;
  return REAL(opendir)(path);
}

void* mmap(void* address, size_t length, int protection, int flags, int fd, off_t offset) {
  /* Anonymous mappings are the allocator's (malloc, thread stacks): not the library's. */
  if (!(flags & MAP_ANONYMOUS) && should_fail("mmap", fd_name(fd))) return MAP_FAILED;
  return REAL(mmap)(address, length, protection, flags, fd, offset);
}
void* mmap64(void* address, size_t length, int protection, int flags, int fd, off64_t offset) {
  if (!(flags & MAP_ANONYMOUS) && should_fail("mmap64", fd_name(fd))) return MAP_FAILED;
  return REAL(mmap64)(address, length, protection, flags, fd, offset);
}

ssize_t pread(int fd, void* buffer, size_t count, off_t offset) {
  if (should_fail("pread", fd_name(fd))) return -1;
  return REAL(pread)(fd, buffer, count, offset);
}
ssize_t pread64(int fd, void* buffer, size_t count, off64_t offset) {
  if (should_fail("pread64", fd_name(fd))) return -1;
  return REAL(pread64)(fd, buffer, count, offset);
}
ssize_t pwrite(int fd, const void* buffer, size_t count, off_t offset) {
  if (should_fail("pwrite", fd_name(fd))) return -1;
  return REAL(pwrite)(fd, buffer, count, offset);
}
ssize_t pwrite64(int fd, const void* buffer, size_t count, off64_t offset) {
  if (should_fail("pwrite64", fd_name(fd))) return -1;
  return REAL(pwrite64)(fd, buffer, count, offset);
}

int ioctl(int fd, unsigned long request, ...) {
  va_list args;
  va_start(args, request);
  void* argument = va_arg(args, void*);
  va_end(args);
  if (should_fail("ioctl", fd_name(fd))) return -1;
  return REAL(ioctl)(fd, request, argument);
}

ssize_t readlink(const char* path, char* buffer, size_t size) {
  if (should_fail("readlink", path)) return -1;
  return REAL(readlink)(path, buffer, size);
}
