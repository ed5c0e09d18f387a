#include "pcie/error.h"

#include <algorithm>
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
    case Errc::device_disabled: return "device_disabled";
    case Errc::malformed: return "malformed";
    case Errc::driver_owns_region: return "driver_owns_region";
    case Errc::lockdown: return "lockdown";
    case Errc::not_supported: return "not_supported";
    case Errc::io_error: return "io_error";
  }
  return "unknown";
}

namespace {

// The length of the well-formed UTF-8 sequence at the start of `text` (Unicode 15.0,
// table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF), or 0.
std::size_t utf8_sequence_length(std::string_view text) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xbf;  // the allowed range of the second byte
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) low = 0xa0;
    if (lead == 0xed) high = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) low = 0x90;
    if (lead == 0xf4) high = 0x8f;
  } else {
    return 0;
  }
  if (text.size() < length || byte(1) < low || byte(1) > high) return 0;
  for (std::size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  }
  return length;
}

// Well-formed characters that still steer a terminal or the reading order: the C1 controls
// U+0080-U+009F (U+009B is an 8-bit CSI), and the bidirectional marks, embeddings,
// overrides and isolates (U+200E-U+200F, U+202A-U+202E, U+2066-U+2069, Unicode UAX #9).
bool is_control_sequence(std::string_view sequence) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(sequence[i]); };
  if (sequence.size() == 2) return byte(0) == 0xc2 && byte(1) <= 0x9f;
  if (sequence.size() != 3 || byte(0) != 0xe2) return false;
  if (byte(1) == 0x80) return byte(2) == 0x8e || byte(2) == 0x8f || (byte(2) >= 0xaa && byte(2) <= 0xae);
  return byte(1) == 0x81 && byte(2) >= 0xa6 && byte(2) <= 0xa9;
}

}  // namespace

std::string printable(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    const std::size_t length = c >= 0x80 ? utf8_sequence_length(text.substr(i)) : 0;
    if (length != 0 && !is_control_sequence(text.substr(i, length))) {
      out.append(text.substr(i, length));
      i += length;
      continue;
    }
    for (std::size_t end = i + std::max<std::size_t>(length, 1); i < end; ++i) {
      const auto escaped = static_cast<unsigned char>(text[i]);
      out += "\\x";
      out += kHex[escaped >> 4];
      out += kHex[escaped & 0xf];
    }
  }
  return out;
}

std::string Error::message() const {
  std::string text = printable(operation);
  if (!object.empty()) {
    text += ' ';
    text += printable(object);
  }
  text += ": ";
  text += printable(reason);
  if (!hint.empty()) {
    text += " (hint: ";
    text += printable(hint);
    text += ')';
  }
  return text;
}

Error make_error(Errc code, std::string operation, std::string object, std::string reason,
                 std::string hint) {
  return Error{code, std::move(operation), std::move(object), std::move(reason),
               std::move(hint), 0};
}

Error empty_object_error(std::string operation, std::string type_name, std::string hint) {
  return make_error(Errc::invalid_argument, std::move(operation), std::move(type_name),
                    "the object is empty (default-constructed, moved from, or released)", std::move(hint));
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

Error make_io_errno_error(int err, std::string operation, std::string object, std::string hint) {
  if (err == ENODEV && hint.empty()) {
    hint = "the device was removed (hot unplug, surprise removal); release it and open it again when it is back";
  }
  Error error = make_errno_error(err, std::move(operation), std::move(object), std::move(hint));
  if (err == ENODEV) error.code = Errc::device_removed;
  return error;
}

}  // namespace pcie
