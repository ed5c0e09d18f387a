// UioDevice: a device bound to uio_pci_generic, its BARs through sysfs, its command register
// through the config file.
#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "pcie/binding.h"
#include "pcie/config_space.h"
#include "pcie/dma.h"
#include "pcie/sysfs_bar.h"
#include "pcie/uio.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"
#include "src/uio/state.h"

namespace pcie {

namespace {

// The N of the only "uioN" entry in <device>/uio; not_supported when the device has none
// (it is not bound to a UIO driver).
Result<int> find_uio_number(const UioPaths& paths, const Bdf& bdf) {
  const std::string name = bdf.to_string();
  const std::string device_dir = paths.sysfs.device_dir(bdf);
  if (!sys::path_exists(device_dir)) {
    return std::unexpected(make_error(Errc::not_found, "open through UIO", name, "no such device"));
  }
  auto entries = sys::list_directory(device_dir + "/uio");
  if (!entries) {
    auto driver = bound_driver(paths.sysfs, bdf);
    const std::string bound = driver && *driver ? "it is bound to " + **driver : "it has no driver";
    return std::unexpected(make_error(
        Errc::not_supported, "open through UIO", name, "the device is not bound to a UIO driver (" + bound + ")",
        fmt::format("bind it to uio_pci_generic: modprobe uio_pci_generic; echo uio_pci_generic > "
                    "{0}/driver_override; echo {1} > {0}/driver/unbind (if bound); echo {1} > "
                    "/sys/bus/pci/drivers_probe (or pciectl bind {1} uio_pci_generic)",
                    device_dir, name)));
  }
  std::vector<int> numbers;
  for (const std::string& entry : *entries) {
    if (!entry.starts_with("uio")) continue;
    auto number = sysfs::parse_number(entry.substr(3));
    if (number && *number >= 0 && *number <= 1'000'000) numbers.push_back(static_cast<int>(*number));
  }
  if (numbers.size() != 1) {
    return std::unexpected(make_error(Errc::malformed, "open through UIO", device_dir + "/uio",
                                      fmt::format("{} uioN entries, expected one", numbers.size())));
  }
  return numbers[0];
}

// One owner at a time, as VFIO allows one open of a device: uio_pci_generic clears Bus
// Master Enable whenever a holder of the node closes it, and a second owner's interrupt
// handle would mask the first's INTx. So the lock is taken first, on the sysfs directory
// (whose close does nothing to the device), and the node opened only by its holder: a
// refused second UioDevice, here or in another process, never opens (or closes) the node.
Result<UniqueFd> take_owner_lock(const std::string& uio_dir) {
  auto lock = sys::open_file(uio_dir, O_RDONLY | O_DIRECTORY, "open UIO device directory");
  if (!lock) return std::unexpected(lock.error());
  if (auto locked = sys::lock_exclusive(lock->get(), uio_dir); !locked) {
    Error error = locked.error();
    if (error.sys_errno == EWOULDBLOCK) {
      error.code = Errc::busy;
      error.reason = "another UioDevice (in this process or another) holds the device";
      error.hint = "use the Device already open; closing a second one would clear Bus Master Enable under the first";
    }
    return std::unexpected(error);
  }
  return std::move(*lock);
}

// /dev/uioN, read/write and non-blocking, with a hint where it cannot be opened.
Result<UniqueFd> open_node(const std::string& node) {
  auto fd = sys::open_file(node, O_RDWR | O_NONBLOCK, "open UIO device");
  if (fd) return std::move(*fd);
  Error error = fd.error();
  if (error.code == Errc::permission_denied) {
    error.hint = fmt::format("{} is root's by default: run as root, or give the user the node "
                             "(chown, or a udev rule) and the device's resource and config files",
                             node);
  } else if (error.code == Errc::not_found) {
    error.hint = "devtmpfs (or udev) makes the node; check that /dev is devtmpfs";
  }
  return std::unexpected(error);
}

}  // namespace

Result<UioDevice> UioDevice::open(const Bdf& bdf, const UioOptions& options, const UioPaths& paths) {
  auto number = find_uio_number(paths, bdf);
  if (!number) return std::unexpected(number.error());
  auto state = std::make_shared<detail::UioDeviceState>();
  state->bdf = bdf;
  state->paths = paths;
  state->number = *number;
  state->node = paths.dev + "/uio" + std::to_string(*number);
  state->uio_dir = paths.sysfs.device_dir(bdf) + "/uio/uio" + std::to_string(*number);
  auto lock = take_owner_lock(state->uio_dir);
  if (!lock) return std::unexpected(lock.error());
  state->owner_lock = std::move(*lock);
  auto fd = open_node(state->node);
  if (!fd) return std::unexpected(fd.error());
  state->fd = std::move(*fd);
  auto config = ConfigSpace::open(paths.sysfs, bdf, ConfigSpace::Mode::read_write);
  if (!config) return std::unexpected(config.error());
  state->config.emplace(std::move(*config));
  if (options.dma) state->dma = make_physical_dma_backend(*options.dma, options.physical);
  return UioDevice(std::move(state));
}

UioDevice::UioDevice() = default;
UioDevice::UioDevice(std::shared_ptr<detail::UioDeviceState> state) : state_(std::move(state)) {}
UioDevice::UioDevice(UioDevice&&) noexcept = default;
UioDevice& UioDevice::operator=(UioDevice&&) noexcept = default;
UioDevice::~UioDevice() = default;

namespace {
const Bdf kNoDevice{};
}  // namespace

const Bdf& UioDevice::bdf() const { return state_ ? state_->bdf : kNoDevice; }
int UioDevice::uio_number() const { return state_ ? state_->number : -1; }

Result<std::unique_ptr<Region>> UioDevice::open_bar(unsigned bar) const {
  if (!state_) return std::unexpected(detail::empty_uio_device_error("open BAR of"));
  return open_sysfs_bar(state_->paths.sysfs, state_->bdf, bar);
}

Result<void> UioDevice::enable_bus_master(bool enable) const {
  if (!state_) return std::unexpected(detail::empty_uio_device_error("enable bus mastering of"));
  const ConfigSpace* config = &*state_->config;
  std::lock_guard lock(state_->mutex);
  if (auto present = config->check_present(); !present) return present;
  auto command = config->read16(cfg::kCommand);
  if (!command) return std::unexpected(command.error());
  std::uint16_t value = *command;
  if (enable) {
    value |= cfg::kCommandBusMaster | cfg::kCommandMemorySpace;
  } else {
    value &= static_cast<std::uint16_t>(~cfg::kCommandBusMaster);
  }
  if (value == *command) return {};
  return config->write16(cfg::kCommand, value);
}

Result<unsigned> UioDevice::vector_count(IrqKind kind) const {
  if (!state_) return std::unexpected(detail::empty_uio_device_error("count vectors of"));
  if (kind != IrqKind::intx) return 0u;
  auto config = ConfigSpace::open(state_->paths.sysfs, state_->bdf);
  if (!config) return std::unexpected(config.error());
  auto pin = config->read8(cfg::kInterruptPin);
  if (!pin) return std::unexpected(pin.error());
  if (*pin == 0 || *pin > 4) return 0u;  // no pin (or all ones: gone)
  // uio_pci_generic offers no interrupt when the kernel routed none (pdev->irq == 0).
  auto irq = sys::read_text_file(state_->paths.sysfs.device_dir(state_->bdf) + "/irq");
  if (!irq) return 1u;  // a fake tree without the attribute: the pin decides
  auto number = sysfs::parse_number(*irq);
  return number && *number > 0 ? 1u : 0u;
}

Result<std::unique_ptr<Interrupts>> UioDevice::enable_interrupts(IrqKind kind, unsigned count) const {
  if (!state_) return std::unexpected(detail::empty_uio_device_error("enable interrupts of"));
  if (kind != IrqKind::intx) {
    return std::unexpected(make_error(Errc::not_supported, "enable interrupts",
                                      fmt::format("{} {}", state_->bdf.to_string(), to_string(kind)),
                                      "uio_pci_generic offers INTx only",
                                      "use INTx, or bind the device to vfio-pci (with no-IOMMU mode where there is "
                                      "no IOMMU) for MSI and MSI-X"));
  }
  if (count != 1) {
    return std::unexpected(make_error(Errc::out_of_range, "enable interrupts", state_->bdf.to_string() + " INTx",
                                      fmt::format("{} vectors asked; INTx has one", count)));
  }
  auto interrupts = enable_intx();
  if (!interrupts) return std::unexpected(interrupts.error());
  return std::unique_ptr<Interrupts>(std::make_unique<UioInterrupts>(std::move(*interrupts)));
}

Result<DmaAllocator> UioDevice::dma_allocator() const {
  if (!state_) return std::unexpected(detail::empty_uio_device_error("create DMA allocator for"));
  if (!state_->dma) {
    return std::unexpected(make_error(Errc::not_supported, "create DMA allocator", state_->bdf.to_string() + " (UIO)",
                                      "a UIO device has no IOMMU: its DMA uses physical addresses, through which it "
                                      "can reach all of memory",
                                      "open it with UioOptions{.dma = DeviceMayReachAllMemory::acknowledged} if "
                                      "that is acceptable, or use VFIO with an IOMMU"));
  }
  return DmaAllocator::create(state_->dma);
}

}  // namespace pcie
