#include "src/pci/libpci_session.h"

#include "src/sys/syscalls.h"

#include <dlfcn.h>
#include <fcntl.h>

#include <cerrno>
#include <csetjmp>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace pcie::detail {
namespace {

// The landing pad of the innermost guarded libpci call on this thread, and what libpci
// said: its message and the errno at the moment it called back (its "Cannot open %s: %s"
// messages are strerror of that errno).
struct Trap {
  std::jmp_buf landing;
  char message[512];
  int error_number;
};
thread_local Trap* current_trap = nullptr;
thread_local std::vector<std::string>* current_warnings = nullptr;

// GNU's attribute, not [[noreturn]]: libpci declares the callback's type with it (PCI_NONRET),
// and clang counts it as part of the function's type.
__attribute__((noreturn)) void on_libpci_error(char* format, ...) {
  const int error_number = errno;  // before anything below can change it
  Trap* trap = current_trap;
  // Reaching libpci outside a guard is a bug in this library, not a runtime error.
  if (trap == nullptr) std::abort();
  trap->error_number = error_number;
  va_list args;
  va_start(args, format);
  std::vsnprintf(trap->message, sizeof trap->message, format, args);
  va_end(args);
  std::longjmp(trap->landing, 1);
}

void on_libpci_warning(char* format, ...) {
  if (current_warnings == nullptr) return;
  char text[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(text, sizeof text, format, args);
  va_end(args);
  current_warnings->emplace_back(text);
}

void on_libpci_debug(char*, ...) {}

// Runs `call(argument)` with libpci's error callback armed. Only plain C calls run inside:
// no C++ object with a destructor lives in a frame that longjmp could skip.
template <class Argument>
[[gnu::noinline]] bool run_guarded(void (*call)(Argument), Argument argument, Trap& trap,
                                   std::vector<std::string>* warnings) {
  Trap* const previous = current_trap;
  std::vector<std::string>* const previous_warnings = current_warnings;
  current_trap = &trap;
  current_warnings = warnings;
  bool ok = false;
  errno = 0;  // so that a stale errno is not taken for the cause of a parse error
  if (setjmp(trap.landing) == 0) {
    call(argument);
    ok = true;
  }
  current_trap = previous;
  current_warnings = previous_warnings;
  return ok;
}

// libpci's error as an Error. When its message carries the errno's text (a failed open or
// read), the code follows the errno and keeps it: EACCES/EPERM is permission_denied,
// anything but a missing file is io_error. A missing attribute, or data libpci cannot
// parse, means the sysfs tree is not what a kernel writes: malformed.
Error libpci_error(std::string operation, std::string object, const Trap& trap) {
  Error error = make_error(Errc::malformed, std::move(operation), std::move(object),
                           std::string("libpci: ") + trap.message,
                           "is the sysfs tree complete? compare with 'ls -l' of the device directory");
  const int err = trap.error_number;
  // A failed call libpci reports without its errno ("Cannot open %s" of a directory) gets
  // the errno appended; a parse error ("Syntax error in ...") is not a failed call.
  const bool failed_call = std::strncmp(trap.message, "Cannot ", 7) == 0 || std::strncmp(trap.message, "Error ", 6) == 0;
  const bool names_errno = err != 0 && std::strstr(trap.message, std::strerror(err)) != nullptr;
  if (err != 0 && failed_call && !names_errno) error.reason += std::string(": ") + std::strerror(err);
  if (err != 0 && (names_errno || failed_call)) {
    error.sys_errno = err;
    if (err == EACCES || err == EPERM) {
      error.code = Errc::permission_denied;
      error.hint = "sysfs attributes of PCI devices are readable by every user; check the mount and any LSM policy";
    } else if (err != ENOENT && err != ENOTDIR) {
      error.code = Errc::io_error;
      error.hint = "";
    }
  }
  return error;
}

}  // namespace

void LibpciSession::Deleter::operator()(pci_access* access) const { pci_cleanup(access); }

Result<LibpciSession> LibpciSession::open(const std::string& pci_root, const std::string& ids_path) {
  pci_access* raw = pci_alloc();
  if (raw == nullptr) {
    return std::unexpected(make_error(Errc::io_error, "initialise libpci", pci_root, "pci_alloc failed"));
  }
  std::unique_ptr<pci_access, Deleter> access(raw);
  auto warnings = std::make_unique<std::vector<std::string>>();
  access->error = on_libpci_error;
  access->warning = on_libpci_warning;
  access->debug = on_libpci_debug;
  access->method = PCI_ACCESS_SYS_BUS_PCI;
  // libpci keeps the pointers it is given in parameters and the name list path, so they
  // are copied into strings libpci owns (pci_set_param copies; the list path is strdup'd
  // and handed over with to_be_freed = 1).
  if (pci_set_param(raw, const_cast<char*>("sysfs.path"), const_cast<char*>(pci_root.c_str())) != 0) {
    return std::unexpected(make_error(Errc::not_supported, "initialise libpci", pci_root,
                                      "this libpci has no sysfs.path parameter"));
  }
  if (!ids_path.empty()) pci_set_name_list_path(raw, strdup(ids_path.c_str()), 1);
  Trap trap{};
  if (!run_guarded<pci_access*>(pci_init, raw, trap, warnings.get())) {
    return std::unexpected(libpci_error("initialise libpci", pci_root, trap));
  }
  return LibpciSession(std::move(access), std::move(warnings));
}

// libpci 3.9 tries to open the hwdb again on every lookup while it cannot (five failed
// opens each time), each time with a new udev context that the next attempt overwrites, and
// pci_cleanup frees the context only together with a hwdb: every failed attempt leaks one,
// and one name lookup can make several attempts (a subsystem's name is looked up three
// ways). So the first attempt is made here, alone: a vendor ID that pci.ids does not list
// sends libpci to the hwdb exactly once. If that fails, the context is given back with the
// libudev libpci loaded (found, not linked: the library does not use libudev) and names
// come from pci.ids alone.
void LibpciSession::probe_hwdb() {
  hwdb_probed_ = true;
  constexpr int kVendorNotInPciIds = 0x0002;
  struct ProbeRequest {
    pci_access* access;
    char buffer[256];
  } request{access_.get(), {}};
  auto call = [](ProbeRequest* r) {
    pci_lookup_name(r->access, r->buffer, sizeof r->buffer, PCI_LOOKUP_VENDOR | PCI_LOOKUP_NO_NUMBERS,
                    kVendorNotInPciIds);
  };
  Trap trap{};
  (void)run_guarded<ProbeRequest*>(call, &request, trap, warnings_.get());
  if (access_->id_udev_hwdb != nullptr) return;  // the hwdb is open for the session
  names_from_hwdb_ = false;
  if (access_->id_udev != nullptr) {
    using UdevUnref = void* (*)(void*);
    if (auto unref = reinterpret_cast<UdevUnref>(dlsym(RTLD_DEFAULT, "udev_unref"))) {
      unref(access_->id_udev);
      access_->id_udev = nullptr;
    }
  }
  hwdb_unavailable_ = why_no_hwdb();
}

std::string LibpciSession::lookup_name(int flags, int arg1, int arg2, int arg3, int arg4) {
  struct LookupRequest {
    pci_access* access;
    char buffer[256];
    int flags, arg1, arg2, arg3, arg4;
    const char* result;
  // Names come from pci.ids alone unless asked: libpci would otherwise query udev's hwdb
  // first on every lookup (reopening it each time, five failed opens where it is absent),
  // and the hwdb is itself generated from pci.ids.
  } request{access_.get(), {}, flags | PCI_LOOKUP_NO_NUMBERS | (names_from_hwdb_ ? 0 : PCI_LOOKUP_NO_HWDB),
            arg1, arg2, arg3, arg4, nullptr};
  auto call = [](LookupRequest* r) {
    r->result = pci_lookup_name(r->access, r->buffer, sizeof r->buffer, r->flags, r->arg1,
                                r->arg2, r->arg3, r->arg4);
  };
  load_names();
  if (names_from_hwdb_ && !hwdb_probed_) {
    probe_hwdb();
    if (!names_from_hwdb_) request.flags |= PCI_LOOKUP_NO_HWDB;
  }
  Trap trap{};
  const bool guarded = run_guarded<LookupRequest*>(call, &request, trap, warnings_.get());
  if (!guarded) return {};
  return request.result != nullptr ? std::string(request.result) : std::string();
}

// libudev (through libpci) keeps no reason when it cannot open the hwdb, so the places it
// looks in (systemd's sd-hwdb search path) are tried here: none there at all (containers,
// an initramfs) is normal and says nothing; anything else changes names lspci would show,
// and is said with its errno.
std::optional<std::string> LibpciSession::why_no_hwdb() {
  static constexpr const char* kHwdbPaths[] = {"/etc/systemd/hwdb/hwdb.bin", "/etc/udev/hwdb.bin",
                                               "/usr/lib/systemd/hwdb/hwdb.bin", "/usr/lib/udev/hwdb.bin"};
  for (const char* path : kHwdbPaths) {
    auto file = sys::open_file(path, O_RDONLY, "open udev's hwdb");
    if (file) {
      return std::string("names come from pci.ids alone: udev's hwdb could not be opened (") + path +
             " opens now; libudev kept no reason)";
    }
    if (file.error().sys_errno != ENOENT) {
      return "names come from pci.ids alone: udev's hwdb could not be opened: " + file.error().message();
    }
  }
  return std::nullopt;
}

void LibpciSession::load_names() {
  if (names_loaded_) return;
  names_loaded_ = true;
  // Loaded here rather than by the first lookup: a lookup that cannot load the list says
  // nothing and leaves errno to later calls (libpci then tries its online cache), while
  // right after pci_load_name_list errno is still why the file would not open.
  struct LoadRequest {
    pci_access* access;
    int loaded;
    int error_number;
  } request{access_.get(), 0, 0};
  auto call = [](LoadRequest* r) {
    r->loaded = pci_load_name_list(r->access);
    r->error_number = errno;
  };
  Trap trap{};
  const bool ok = run_guarded<LoadRequest*>(call, &request, trap, warnings_.get());
  if (ok && request.loaded) return;
  const std::string file = access_->id_file_name != nullptr ? access_->id_file_name : "pci.ids";
  names_unavailable_ = "names are left out: libpci could not load " + file + ": " +
                       (ok ? std::strerror(request.error_number) : trap.message);
}

}  // namespace pcie::detail
