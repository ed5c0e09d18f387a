#include "examples/edu/edu_driver.h"

#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "pcie/wait.h"

namespace examples {

using pcie::Errc;
using pcie::make_error;

pcie::Result<void> EduDriver::removed_error() const {
  return std::unexpected(make_error(Errc::device_removed, "use edu", device_->bdf().to_string(),
                                    "the kernel asked for the device back (unbind or hot unplug)",
                                    "destroy the driver so that the kernel can take the device"));
}

namespace {
// QEMU 7.2's edu aborts on a transfer of 0 bytes or of its whole 4096-byte buffer.
pcie::Result<void> check_transfer_size(const pcie::Bdf& bdf, std::size_t size) {
  if (size == 0 || size >= edu::kInternalBufferSize) {
    return std::unexpected(make_error(Errc::invalid_argument, "edu DMA", bdf.to_string(),
                                      std::to_string(size) + " bytes; edu takes 1 to 4095"));
  }
  return {};
}
}  // namespace

EduDriver::EduDriver(std::unique_ptr<pcie::Device> device, std::unique_ptr<pcie::Region> bar0,
                     std::unique_ptr<pcie::Interrupts> irq, std::unique_ptr<pcie::Interrupts> request,
                     pcie::DmaBuffer buffer)
    : device_(std::move(device)), bar0_(std::move(bar0)), irq_(std::move(irq)), request_(std::move(request)),
      buffer_(std::move(buffer)), quiesce_(*device_, quiesce_steps(*bar0_)) {}

pcie::QuiesceSteps EduDriver::quiesce_steps(pcie::Region& registers) {
  pcie::Region* regs = &registers;  // the BAR outlives the Quiescer (declared before it)
  return {
      // No completion interrupt for a factorial still running: its MSI would be a memory
      // write arriving after the vectors are gone.
      .stop = [regs] { return regs->write(pcie::Width::bits32, edu::kStatus, 0); },
      // edu cannot abort a DMA or a factorial: wait for both to finish.
      .idle = [regs]() -> pcie::Result<bool> {
        auto dma = regs->read(pcie::Width::bits64, edu::kDmaCommand);
        if (!dma) return std::unexpected(dma.error());
        auto status = regs->read(pcie::Width::bits32, edu::kStatus);
        if (!status) return std::unexpected(status.error());
        return (*dma & edu::kDmaRunning) == 0 && (*status & edu::kStatusComputing) == 0;
      },
      .wait = {.timeout = std::chrono::seconds(5), .spin = std::chrono::microseconds(20)},
  };
}

pcie::Result<void> EduDriver::usable() const {
  if (released_) return removed_error();
  if (quiesce_.done()) {
    return std::unexpected(make_error(Errc::io_error, "use edu", device_->bdf().to_string(),
                                      "the driver stopped the device after an error", "reopen the driver"));
  }
  return {};
}

pcie::Error EduDriver::stop_after(pcie::Error cause) {
  if (auto quiesced = quiesce_.run(); !quiesced) cause.reason += "; quiescing failed too: " + quiesced.error().reason;
  cause.hint = "the device was stopped (bus mastering off): reopen the driver";
  return cause;
}

pcie::Result<EduDriver> EduDriver::open(pcie::VfioContainer& container, const pcie::Bdf& bdf) {
  auto device = container.open_device(bdf);
  if (!device) return std::unexpected(device.error());
  return open(std::make_unique<pcie::VfioDevice>(std::move(*device)));
}

pcie::Result<EduDriver> EduDriver::open(std::unique_ptr<pcie::Device> device, const EduOptions& options) {
  const std::string name = device->bdf().to_string();
  auto bar0 = device->open_bar(0);
  if (!bar0) return std::unexpected(bar0.error());
  const pcie::Region& regs = **bar0;
  auto id = regs.read(pcie::Width::bits32, edu::kIdentification);
  if (!id) return std::unexpected(id.error());
  if ((*id & 0xff) != 0xed) {
    return std::unexpected(make_error(Errc::not_supported, "open edu", name,
                                      "identification register reads " + std::to_string(*id) + ", not edu's"));
  }
  // edu has no reset: a DMA a previous owner started may still be running. Enabling bus
  // mastering now would let it finish into whatever this driver maps at its address.
  if (auto idle = quiesce(regs, std::chrono::seconds(5)); !idle) return std::unexpected(idle.error());
  // DMA and MSI are both memory writes by the device: nothing happens without bus mastering.
  if (auto enabled = device->enable_bus_master(); !enabled) return std::unexpected(enabled.error());
  // Until the driver (and its Quiescer) exists, a failure below turns bus mastering off again.
  bool opened = false;
  struct BusMasterOffUnlessOpened {
    const pcie::Device* device;
    const bool* opened;
    ~BusMasterOffUnlessOpened() {
      if (!*opened) (void)device->enable_bus_master(false);
    }
  } bus_master_guard{device.get(), &opened};
  // MSI where the backend offers it, else INTx (uio_pci_generic has nothing else).
  auto msi_vectors = device->vector_count(pcie::IrqKind::msi);
  if (!msi_vectors) return std::unexpected(msi_vectors.error());
  auto irq = device->enable_interrupts(*msi_vectors > 0 ? pcie::IrqKind::msi : pcie::IrqKind::intx, 1);
  if (!irq) return std::unexpected(irq.error());
  auto request = enable_request_irq(*device);
  if (!request) return std::unexpected(request.error());
  auto allocator = device->dma_allocator();
  if (!allocator) return std::unexpected(allocator.error());
  // edu truncates bus addresses to its DMA mask: the buffer must lie below it.
  auto buffer = allocator->allocate(edu::kInternalBufferSize,
                                    {.dma_limit = pcie::dma_mask_limit(options.dma_mask_bits), .prefer = pcie::DmaBacking::pages});
  if (!buffer) return std::unexpected(buffer.error());
  opened = true;
  return EduDriver(std::move(device), std::move(*bar0), std::move(*irq), std::move(*request), std::move(*buffer));
}

// The kernel's "give the device back" (VFIO's request IRQ); nullptr where the backend has none.
pcie::Result<std::unique_ptr<pcie::Interrupts>> EduDriver::enable_request_irq(const pcie::Device& device) {
  auto vectors = device.vector_count(pcie::IrqKind::request);
  if (!vectors) return std::unexpected(vectors.error());
  if (*vectors == 0) return std::unique_ptr<pcie::Interrupts>();
  return device.enable_interrupts(pcie::IrqKind::request, 1);
}

pcie::Result<void> EduDriver::quiesce(const pcie::Region& registers, std::chrono::milliseconds timeout) {
  const pcie::WaitOptions options{.timeout = timeout, .all_ones_means_removed = false};
  for (const auto& [offset, width, busy] :
       {std::tuple{edu::kDmaCommand, pcie::Width::bits64, edu::kDmaRunning},
        std::tuple{edu::kStatus, pcie::Width::bits32, std::uint64_t{edu::kStatusComputing}}}) {
    std::optional<pcie::Error> failed;
    auto idle = pcie::wait_until(
        [&] {
          auto value = registers.read(width, offset);
          if (!value) failed = value.error();
          return value.value_or(0);
        },
        [&](std::uint64_t value) { return failed.has_value() || (value & busy) == 0; }, options);
    if (failed) return std::unexpected(*failed);
    if (!idle) return std::unexpected(idle.error());
    if (!idle->matched) {
      return std::unexpected(make_error(Errc::io_error, "quiesce edu", registers.name(),
                                        "its DMA engine or factorial unit is still busy",
                                        "the device is stuck; it has no reset, so restart the VM or hot-plug it"));
    }
  }
  return {};
}

std::uint32_t EduDriver::read32(std::uint64_t offset) const {
  return static_cast<std::uint32_t>(bar0_->read(pcie::Width::bits32, offset).value_or(0xffffffffu));
}

pcie::Result<void> EduDriver::write32(std::uint64_t offset, std::uint32_t value) const {
  return bar0_->write(pcie::Width::bits32, offset, value);
}

pcie::Result<void> EduDriver::write64(std::uint64_t offset, std::uint64_t value) const {
  return bar0_->write(pcie::Width::bits64, offset, value);
}

std::uint32_t EduDriver::identification() const { return read32(edu::kIdentification); }

std::uint32_t EduDriver::liveness(std::uint32_t value) const {
  (void)write32(edu::kLiveness, value);
  return read32(edu::kLiveness);
}

pcie::Result<void> EduDriver::wait_for(std::uint32_t irq, std::chrono::milliseconds timeout) {
  if (auto ok = usable(); !ok) return ok;
  std::vector<pcie::InterruptVector> vectors = {{irq_.get(), 0}};
  if (request_) vectors.push_back({request_.get(), 0});
  auto fired = pcie::wait_any(vectors, timeout);
  if (!fired) return std::unexpected(stop_after(fired.error()));  // the device may still be working
  if (!*fired) {
    // The device may still be working on it, into this driver's buffer: stop it first.
    return std::unexpected(
        stop_after(make_error(Errc::io_error, "wait for edu", device_->bdf().to_string(), "no interrupt in time")));
  }
  if (**fired == 1) {
    // The kernel wants the device: let it go in order now, before the owner destroys us.
    released_ = true;
    (void)quiesce_.run();  // whatever it says, bus mastering is off and every call ends here
    return removed_error();
  }
  auto read = bar0_->read(pcie::Width::bits32, edu::kIrqStatus);
  if (!read) return std::unexpected(read.error());
  const auto status = static_cast<std::uint32_t>(*read);
  // Lower it before the next one.
  if (auto acknowledged = write32(edu::kIrqAcknowledge, status); !acknowledged) return acknowledged;
  // INTx was masked when it fired (by VFIO, or uio_pci_generic's Interrupt Disable): now
  // that the device has lowered it, let it fire again. Nothing to do for MSI.
  if (auto rearmed = irq_->rearm(0); !rearmed) return rearmed;
  if (!(status & irq)) {
    // What was waited for may still be running: stop the device before reporting.
    return std::unexpected(stop_after(make_error(Errc::io_error, "wait for edu", device_->bdf().to_string(),
                                                 "unexpected interrupt status " + std::to_string(status))));
  }
  return {};
}

pcie::Result<std::uint32_t> EduDriver::factorial(std::uint32_t n, std::chrono::milliseconds timeout) {
  if (auto ok = usable(); !ok) return std::unexpected(ok.error());
  if (auto set = write32(edu::kStatus, edu::kStatusIrqWhenDone); !set) return std::unexpected(set.error());
  if (auto started = write32(edu::kFactorial, n); !started) return std::unexpected(started.error());
  if (auto done = wait_for(edu::kIrqFactorial, timeout); !done) return std::unexpected(done.error());
  auto result = bar0_->read(pcie::Width::bits32, edu::kFactorial);
  if (!result) return std::unexpected(result.error());
  return static_cast<std::uint32_t>(*result);
}

pcie::Result<void> EduDriver::raise_interrupt(std::uint32_t status, std::chrono::milliseconds timeout) {
  if (auto ok = usable(); !ok) return ok;
  if (auto raised = write32(edu::kIrqRaise, status); !raised) return raised;
  return wait_for(status, timeout);
}

pcie::Result<void> EduDriver::run_dma(std::uint64_t source, std::uint64_t destination, std::size_t size, bool to_ram) {
  if (auto ok = usable(); !ok) return ok;
  if (auto valid = check_transfer_size(device_->bdf(), size); !valid) return valid;
  for (const auto& [offset, value] : {std::pair{edu::kDmaSource, source}, std::pair{edu::kDmaDestination, destination},
                                      std::pair{edu::kDmaCount, std::uint64_t{size}},
                                      std::pair{edu::kDmaCommand, edu::kDmaStart | edu::kDmaIrq | (to_ram ? edu::kDmaToRam : 0)}}) {
    if (auto written = write64(offset, value); !written) return written;
  }
  return wait_for(edu::kIrqDma, std::chrono::seconds(5));
}

pcie::Result<void> EduDriver::dma_to_device(std::span<const std::byte> data) {
  if (auto valid = check_transfer_size(device_->bdf(), data.size()); !valid) return valid;
  std::memcpy(buffer_.data(), data.data(), data.size());
  buffer_.sync_for_device();  // the data is in memory before the device is told to read it
  return run_dma(buffer_.bus_address().value, edu::kInternalBuffer, data.size(), false);
}

pcie::Result<std::vector<std::byte>> EduDriver::dma_from_device(std::size_t size) {
  if (auto done = run_dma(edu::kInternalBuffer, buffer_.bus_address().value, size, true); !done) {
    return std::unexpected(done.error());
  }
  buffer_.sync_for_cpu();  // read what the device wrote, not what was there before
  return std::vector<std::byte>(buffer_.data(), buffer_.data() + size);
}

}  // namespace examples
