// The one ioctl(2) call the VFIO and iommufd wrappers share: retried on EINTR, errno taken
// right after the call.
#pragma once

#include <sys/ioctl.h>

#include <cerrno>
#include <string>

#include "pcie/error.h"

namespace pcie::sys {

// ioctl(2) with a pointer or integer argument, retried on EINTR; its result, or -errno.
template <class Argument>
int checked_ioctl(int fd, unsigned long request, Argument argument) {
  int result = 0;
  do {
    result = ::ioctl(fd, request, argument);
  } while (result < 0 && errno == EINTR);
  return result < 0 ? -errno : result;
}

// The Error for a checked_ioctl() result of -errno (on an open descriptor: ENODEV is
// device_removed).
inline Error ioctl_error(int negative_errno, std::string operation, std::string object) {
  return make_io_errno_error(-negative_errno, std::move(operation), std::move(object));
}

}  // namespace pcie::sys
