#include "pcie/error.h"

#include <cerrno>
#include <cstring>
#include <utility>

namespace pcie {

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_found: return "not_found";
    case Errc::permission_denied: return "permission_denied";
    case Errc::busy: return "busy";
    case Errc::out_of_range: return "out_of_range";
    case Errc::misaligned: return "misaligned";
    case Errc::width_not_allowed: return "width_not_allowed";
    case Errc::device_removed: return "device_removed";
    case Errc::malformed: return "malformed";
    case Errc::driver_owns_region: return "driver_owns_region";
    case Errc::lockdown: return "lockdown";
    case Errc::not_supported: return "not_supported";
    case Errc::io_error: return "io_error";
  }
  return "unknown";
}

std::string Error::message() const {
  std::string text = operation;
  if (!object.empty()) {
    text += ' ';
    text += object;
  }
  text += ": ";
  text += reason;
  if (!hint.empty()) {
    text += " (hint: ";
    text += hint;
    text += ')';
  }
  return text;
}

Error make_error(Errc code, std::string operation, std::string object, std::string reason,
                 std::string hint) {
  return Error{code, std::move(operation), std::move(object), std::move(reason),
               std::move(hint), 0};
}

static Errc errc_from_errno(int err) {
  switch (err) {
    case EPERM:
    case EACCES: return Errc::permission_denied;
    case ENOENT:
    case ENODEV:
    case ENXIO: return Errc::not_found;
    case EBUSY: return Errc::busy;
    default: return Errc::io_error;
  }
}

Error make_errno_error(int err, std::string operation, std::string object, std::string hint) {
  Error error = make_error(errc_from_errno(err), std::move(operation), std::move(object),
                           std::strerror(err), std::move(hint));
  error.sys_errno = err;
  return error;
}

}  // namespace pcie
