#include "tools/pciectl/config_access.h"

namespace pciectl {

pcie::Result<ConfigAccess> ConfigAccess::open(const GlobalOptions& global, const pcie::Bdf& bdf, bool writing,
                                              bool vfio) {
  if (vfio) return open_vfio(global, bdf, writing);
  ConfigAccess access;
  auto config = pcie::ConfigSpace::open(paths_of(global), bdf,
                                        writing ? pcie::ConfigSpace::Mode::read_write : pcie::ConfigSpace::Mode::read_only);
  if (!config) return std::unexpected(config.error());
  access.sysfs_.emplace(std::move(*config));
  return access;
}

pcie::Result<ConfigAccess> ConfigAccess::open_vfio(const GlobalOptions& global, const pcie::Bdf& bdf, bool writing) {
  ConfigAccess access;
  auto container = pcie::VfioContainer::open(vfio_paths_of(global));
  if (!container) return std::unexpected(container.error());
  auto device = container->open_device(bdf, pcie::VfioDeviceOptions{.reset_on_open = false});
  if (!device) return std::unexpected(device.error());
  auto region = device->open_region(pcie::kVfioConfigRegion, {.map = false, .writable = writing});
  if (!region) return std::unexpected(region.error());
  access.vfio_ = std::make_unique<pcie::VfioRegion>(std::move(*region));  // keeps the device open
  return access;
}

pcie::Result<std::uint32_t> ConfigAccess::read(std::uint32_t offset, std::size_t width) const {
  if (sysfs_) return sysfs_->read(offset, width);
  auto value = vfio_->read(static_cast<pcie::Width>(width), offset);
  if (!value) return std::unexpected(value.error());
  return static_cast<std::uint32_t>(*value);
}

pcie::Result<void> ConfigAccess::write(std::uint32_t offset, std::size_t width, std::uint32_t value) const {
  if (sysfs_) return sysfs_->write(offset, width, value);
  return vfio_->write(static_cast<pcie::Width>(width), offset, value);
}

pcie::Result<std::vector<std::uint8_t>> ConfigAccess::snapshot() const {
  if (sysfs_) return sysfs_->snapshot();
  std::vector<std::uint8_t> bytes(vfio_->size());
  for (std::size_t at = 0; at + 4 <= bytes.size(); at += 4) {
    auto word = vfio_->read(pcie::Width::bits32, at);
    if (!word) return std::unexpected(word.error());
    for (unsigned i = 0; i < 4; ++i) bytes[at + i] = static_cast<std::uint8_t>(*word >> (8 * i));
  }
  return bytes;
}

}  // namespace pciectl
