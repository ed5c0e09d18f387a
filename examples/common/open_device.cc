#include "examples/common/open_device.h"

#include <string>

#include "pcie/uio.h"
#include "pcie/vfio.h"

namespace examples {

bool known_backend(std::string_view backend) {
  return backend == "vfio" || backend == "vfio-noiommu" || backend == "uio";
}

namespace {

constexpr auto kAccepted = pcie::DeviceMayReachAllMemory::acknowledged;

pcie::Result<void> check_backend(std::string_view backend, const pcie::Bdf& bdf) {
  if (known_backend(backend)) return {};
  return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "open", bdf.to_string(),
                                          "unknown backend '" + std::string(backend) + "'",
                                          std::string("use one of ") + kBackendNames));
}

pcie::Result<pcie::VfioContainer> open_container(std::string_view backend) {
  return backend == "vfio-noiommu" ? pcie::VfioContainer::open_without_iommu(kAccepted) : pcie::VfioContainer::open();
}

}  // namespace

pcie::Result<std::unique_ptr<pcie::Device>> open_device(std::string_view backend, const pcie::Bdf& bdf) {
  if (auto known = check_backend(backend, bdf); !known) return std::unexpected(known.error());
  if (backend == "uio") {
    auto device = pcie::UioDevice::open(bdf, {.dma = kAccepted});
    if (!device) return std::unexpected(device.error());
    return std::make_unique<pcie::UioDevice>(std::move(*device));
  }
  auto container = open_container(backend);
  if (!container) return std::unexpected(container.error());
  // The device keeps its container open: the container object may go.
  auto device = container->open_device(bdf);
  if (!device) return std::unexpected(device.error());
  return std::make_unique<pcie::VfioDevice>(std::move(*device));
}

pcie::Result<DevicePair> open_device_and_peer(std::string_view backend, const pcie::Bdf& bdf, const pcie::Bdf& peer) {
  if (auto known = check_backend(backend, bdf); !known) return std::unexpected(known.error());
  if (backend == "uio" || bdf == peer) {
    return std::unexpected(pcie::make_error(
        bdf == peer ? pcie::Errc::invalid_argument : pcie::Errc::not_supported, "open for peer-to-peer DMA",
        bdf.to_string() + " and " + peer.to_string(),
        bdf == peer ? "one device named twice" : "peer DMA needs both devices in one VFIO container",
        bdf == peer ? "name the device that holds the BAR" : "bind both to vfio-pci and use --backend vfio or vfio-noiommu"));
  }
  auto container = open_container(backend);
  if (!container) return std::unexpected(container.error());
  auto device = container->open_device(bdf);
  if (!device) return std::unexpected(device.error());
  // The peer is a DMA target, not driven: opening it must not reset it (an FLR could wipe
  // the very memory its BAR holds, or undo what its owner set up).
  auto peer_device = container->open_device(peer, {.reset_on_open = false});
  if (!peer_device) return std::unexpected(peer_device.error());
  return DevicePair{std::make_unique<pcie::VfioDevice>(std::move(*device)),
                    std::make_unique<pcie::VfioDevice>(std::move(*peer_device))};
}

}  // namespace examples
