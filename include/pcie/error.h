// Errors as values. Every fallible operation in the library returns Result<T>; nothing
// prints, exits or aborts on a runtime error.
#pragma once

#include "pcie/version.h"  // also refuses, with a clear message, a compiler not in C++23 mode

#include <expected>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace pcie {

// The library's own error codes. Kernel errnos that vary between kernel versions for the
// same condition are mapped onto one of these, so callers can branch on `code` and never
// need to compare errnos.
enum class Errc {
  invalid_argument,   // a malformed argument (BDF text, BAR index, width name, ...)
  not_found,          // no such device, BAR, file or capability
  permission_denied,  // EPERM / EACCES: usually "run as root"
  busy,               // EBUSY: someone else owns the resource
  out_of_range,       // offset/length outside the object (overflow-safe checks)
  misaligned,         // an access not naturally aligned to its width
  width_not_allowed,  // a width the region does not accept (e.g. 8-bit on a 32-bit-only BAR)
  device_removed,     // config reads return all ones: surprise removal or device in reset
  device_disabled,    // the device does not decode the space asked for (Memory/I/O Space Enable off)
  malformed,          // untrusted data (sysfs, config space) failed validation
  driver_owns_region, // the kernel refuses a sysfs mapping because a driver claimed the BAR
  lockdown,           // kernel lockdown forbids raw device access
  not_supported,      // the object exists but cannot do this (e.g. mmap of an I/O BAR)
  io_error,           // any other errno from the kernel
};

// Short stable name of a code ("out_of_range"), for JSON output and logs.
std::string_view errc_name(Errc code);

// Why an operation failed: a code to branch on and the text to show a user (message()).
struct Error {
  Errc code = Errc::io_error;  // what kind of failure: branch on this, not on sys_errno
  std::string operation;  // what was being done: "map BAR", "read config"
  std::string object;     // what it was done to: "0000:03:00.0 BAR2", a path
  std::string reason;     // why it failed: the errno text or the violated rule
  std::string hint;       // what the user can do about it; may be empty
  int sys_errno = 0;      // the errno captured right after the failing call, 0 if none

  // "operation object: reason (hint: ...)", one line: every field goes through printable(),
  // so a newline or terminal escape in user input, a path or device data cannot break it.
  std::string message() const;
};

// `text` with control characters (below 0x20, and 0x7f), bytes that are not part of
// well-formed UTF-8, and the characters that steer a terminal or the reading order though
// well-formed (C1 controls U+0080-U+009F, bidirectional marks and overrides) written as
// \xNN, byte by byte; everything else, valid UTF-8 included, unchanged. Never fails.
std::string printable(std::string_view text);

// What every fallible call returns: the value, or the Error. Must-use ([[nodiscard]]): a
// dropped error is a compile warning, an error in our own build; a deliberate drop says so
// with (void). A std::expected<T, Error> (what and_then/transform make) converts to it.
template <class T>
class [[nodiscard("an error is a value: check it, or drop it with (void) where it cannot matter")]] Result
    : public std::expected<T, Error> {
 public:
  using std::expected<T, Error>::expected;
  // User-provided, not defaulted: `return {};` value-initializes, and a class whose default
  // constructor is not user-provided is zero-initialized first, all of it (C++23
  // [dcl.init.general]/9): the whole Error's storage, ~150 bytes by `rep stosq` per call,
  // which cost pcie::copy 14 ns at 64 bytes (8x memcpy) on AMD Zen 5 (bench/copy_bench).
  // As the base's: only where T is default-constructible (or void), constexpr, and noexcept
  // as T's default constructor is.
  constexpr Result() noexcept(std::is_nothrow_default_constructible_v<std::expected<T, Error>>)
    requires std::is_default_constructible_v<std::expected<T, Error>>
      : std::expected<T, Error>() {}
  // From the std::expected that and_then/transform return: the value or the error, copied.
  Result(const std::expected<T, Error>& other) : std::expected<T, Error>(other) {}
  // As above, moved.
  Result(std::expected<T, Error>&& other) : std::expected<T, Error>(std::move(other)) {}
  // From a Result of another value type: the value converted, an error kept an error.
  // Spelt out, because the base's constructor from any U would take a Result<int> holding
  // an error as the value `true` of a Result<bool> (libstdc++ 12 lacks LWG 3836's fix).
  template <class U>
    requires(!std::is_same_v<U, T> && !std::is_void_v<U> && !std::is_void_v<T> && std::is_constructible_v<T, const U&>)
  Result(const Result<U>& other)
      : std::expected<T, Error>(other.has_value() ? std::expected<T, Error>(std::in_place, *other)
                                                  : std::expected<T, Error>(std::unexpect, other.error())) {}
  // As above, moving the value or the error out of `other`.
  template <class U>
    requires(!std::is_same_v<U, T> && !std::is_void_v<U> && !std::is_void_v<T> && std::is_constructible_v<T, U &&>)
  Result(Result<U>&& other)
      : std::expected<T, Error>(other.has_value() ? std::expected<T, Error>(std::in_place, std::move(*other))
                                                  : std::expected<T, Error>(std::unexpect, std::move(other.error()))) {}

  // `result == value`: holds a value equal to `value`. Declared for Result itself, so that
  // clang does not find the base's comparison ambiguous with its reversed form
  // (-Wambiguous-reversed-operator, C++20 [over.match.oper]).
  template <class U>
    requires(!std::is_void_v<T> && !std::is_base_of_v<std::expected<T, Error>, U> &&
             requires(const T& held, const U& other) { static_cast<bool>(held == other); })
  friend bool operator==(const Result& result, const U& value) {
    return result.has_value() && static_cast<bool>(*result == value);
  }
};

// Builds an Error without an errno.
Error make_error(Errc code, std::string operation, std::string object, std::string reason,
                 std::string hint = {});

// Builds an Error from an errno value captured by the caller: the reason is strerror(err)
// and the code is mapped from the errno (EPERM/EACCES -> permission_denied, ENOENT ->
// not_found, EBUSY -> busy, anything else -> io_error).
Error make_errno_error(int err, std::string operation, std::string object,
                       std::string hint = {});

// make_errno_error() for an I/O (read, write, ioctl) on a descriptor that was already open:
// there ENODEV means the object went away under it (a sysfs attribute of a removed device
// answers -ENODEV once its kernfs node is deactivated; a VFIO device file after the device
// is unregistered), so the code is device_removed, with a hint when none is given. At open
// time ENODEV means "no such device" and make_errno_error's not_found stays right.
Error make_io_errno_error(int err, std::string operation, std::string object,
                          std::string hint = {});

// The error of a call on an empty handle (default-constructed, moved from, or released):
// invalid_argument, naming `type_name`, with `hint` saying how to get an object that works.
Error empty_object_error(std::string operation, std::string type_name, std::string hint);

}  // namespace pcie
