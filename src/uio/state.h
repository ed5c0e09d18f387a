// What a UIO device and its interrupt set share (private): /dev/uioN, opened once, since
// uio_pci_generic clears Bus Master Enable whenever it is closed.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "pcie/config_space.h"
#include "pcie/dma_backend.h"
#include "pcie/sys/unique_fd.h"
#include "pcie/uio.h"

namespace pcie::detail {

struct UioDeviceState {
  Bdf bdf;
  UioPaths paths;
  int number = -1;
  std::string node;      // /dev/uioN
  std::string uio_dir;   // <device>/uio/uioN in sysfs
  // uio_dir, open only to hold the one-owner lock (flock). Declared before fd, so that it is
  // released after the node is closed: the close clears Bus Master Enable still ours.
  UniqueFd owner_lock;
  UniqueFd fd;           // /dev/uioN, read/write, non-blocking
  // The config file, open for writing: INTx is re-enabled through the command register's
  // Interrupt Disable bit (uio_pci_generic has no irqcontrol: a write to /dev/uioN fails).
  std::optional<ConfigSpace> config;
  std::shared_ptr<DmaBackend> dma;  // the physical backend, when acknowledged
  std::mutex mutex;      // guards the command register's read-modify-writes and intx_enabled
  bool intx_enabled = false;
};

// The error of a call on an empty UioDevice (default-constructed or moved from).
inline Error empty_uio_device_error(std::string operation) {
  return empty_object_error(std::move(operation), "UioDevice", "open a device with UioDevice::open and move it in");
}

}  // namespace pcie::detail
