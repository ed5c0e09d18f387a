#include "examples/common/open_device.h"

#include <string>

#include "pcie/uio.h"
#include "pcie/vfio.h"

namespace examples {

bool known_backend(std::string_view backend) {
  return backend == "vfio" || backend == "vfio-noiommu" || backend == "uio";
}

pcie::Result<std::unique_ptr<pcie::Device>> open_device(std::string_view backend, const pcie::Bdf& bdf) {
  constexpr auto accepted = pcie::DeviceMayReachAllMemory::acknowledged;
  if (!known_backend(backend)) {
    return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "open", bdf.to_string(),
                                            "unknown backend '" + std::string(backend) + "'",
                                            std::string("use one of ") + kBackendNames));
  }
  if (backend == "uio") {
    auto device = pcie::UioDevice::open(bdf, {.dma = accepted});
    if (!device) return std::unexpected(device.error());
    return std::make_unique<pcie::UioDevice>(std::move(*device));
  }
  auto container = backend == "vfio-noiommu" ? pcie::VfioContainer::open_without_iommu(accepted)
                                             : pcie::VfioContainer::open();
  if (!container) return std::unexpected(container.error());
  // The device keeps its container open: the container object may go.
  auto device = container->open_device(bdf);
  if (!device) return std::unexpected(device.error());
  return std::make_unique<pcie::VfioDevice>(std::move(*device));
}

}  // namespace examples
