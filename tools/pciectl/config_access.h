// Config space for pciectl config: through sysfs (pcie::ConfigSpace) or, with --vfio,
// through the device's VFIO config region (a normal user given the group reads all of it;
// sysfs gives them 64 bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "pcie/config_space.h"
#include "pcie/vfio.h"
#include "tools/pciectl/global_options.h"

namespace pciectl {

class ConfigAccess {
 public:
  // Opens `bdf`'s config space, for writing when `writing`; through VFIO when `vfio` (the
  // region keeps the device, and its container, open).
  static pcie::Result<ConfigAccess> open(const GlobalOptions& global, const pcie::Bdf& bdf, bool writing, bool vfio);

  // One register of `width` bytes (1, 2 or 4) at `offset`.
  pcie::Result<std::uint32_t> read(std::uint32_t offset, std::size_t width) const;
  pcie::Result<void> write(std::uint32_t offset, std::size_t width, std::uint32_t value) const;
  // All of config space this user can read.
  pcie::Result<std::vector<std::uint8_t>> snapshot() const;
  // Whether sysfs shows this user less than the whole file (not root).
  bool limited_by_privilege() const { return sysfs_ && sysfs_->limited_by_privilege(); }
  std::size_t readable_size() const { return sysfs_ ? sysfs_->readable_size() : vfio_->size(); }
  std::size_t file_size() const { return sysfs_ ? sysfs_->file_size() : vfio_->size(); }

 private:
  static pcie::Result<ConfigAccess> open_vfio(const GlobalOptions& global, const pcie::Bdf& bdf, bool writing);

  std::optional<pcie::ConfigSpace> sysfs_;
  std::unique_ptr<pcie::VfioRegion> vfio_;
};

}  // namespace pciectl
