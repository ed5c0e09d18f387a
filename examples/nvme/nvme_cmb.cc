// The example NVMe driver's controller memory buffer (NVMe 2.0, 3.1.4.12 to 3.1.4.15 and
// 8.2): enabled the NVMe 1.4 way (CMBMSC.CRE makes CMBLOC and CMBSZ readable, CMBMSC.CMSE
// with CBA makes the controller take PRPs inside [CBA, CBA + size) as its own memory), then
// used as a place for the data of reads and writes.
#include <string>

#include "examples/nvme/nvme_driver.h"
#include "pcie/config_space.h"

namespace examples {

using pcie::Errc;
using pcie::make_error;
using pcie::Result;

namespace {

// The BAR's address as the device decodes it (PCI Local Bus 3.0, 6.2.5.1: bits 3:0 are
// flags; a 64-bit BAR's next register holds the upper half), from sysfs config.
Result<std::uint64_t> bar_bus_address(const pcie::Bdf& bdf, unsigned bar) {
  auto config = pcie::ConfigSpace::open({}, bdf);
  if (!config) return std::unexpected(config.error());
  auto low = config->read32(0x10 + 4 * bar);
  if (!low) return std::unexpected(low.error());
  if (*low != ~0u && (*low & 1u) != 0) {
    return std::unexpected(make_error(Errc::not_supported, "read BAR", bdf.to_string(),
                                      "BAR" + std::to_string(bar) + " is I/O space: no CMB can live there"));
  }
  std::uint64_t high = 0;
  if ((*low & 0x6u) == 0x4u && bar < 5) {
    auto upper = config->read32(0x10 + 4 * (bar + 1));
    if (!upper) return std::unexpected(upper.error());
    high = *upper;
  }
  if (*low == ~0u) {
    return std::unexpected(make_error(Errc::device_removed, "read BAR", bdf.to_string(), "its BAR reads all ones"));
  }
  return (high << 32) | (*low & ~0xfull);
}

}  // namespace

Result<void> NvmeDriver::write_cmb_control(std::uint64_t value) {
  if (auto high = bar0_->write(pcie::Width::bits32, nvme::kCmbMemorySpaceControl + 4, value >> 32); !high) return high;
  return bar0_->write(pcie::Width::bits32, nvme::kCmbMemorySpaceControl, value & 0xffffffffu);
}

// CMBLOC and CMBSZ, read once CMBMSC.CRE makes them readable (3.1.4.12, 3.1.4.13): where
// the CMB is and what it takes; malformed for a reserved size unit or BAR.
Result<NvmeCmb> NvmeDriver::read_cmb_registers(const char* operation) {
  // CMBLOC and CMBSZ read 0 until CMBMSC.CRE is set (3.1.4.14).
  if (auto on = write_cmb_control(1); !on) return std::unexpected(on.error());
  const std::uint32_t location = read32(nvme::kCmbLocation);
  const std::uint32_t size = read32(nvme::kCmbSize);
  const unsigned unit_code = (size >> 8) & 0xf;  // SZU: 4 KiB << 4n, up to 64 GiB (6)
  // BIR 1 is reserved: BAR0 and BAR1 are BAR0's 64-bit register pair (3.1.4.12).
  if (unit_code > 6 || (location & 7) > 5 || (location & 7) == 1) {
    return std::unexpected(make_error(Errc::malformed, operation, device_->bdf().to_string(),
                                      "CMBSZ.SZU or CMBLOC.BIR holds a reserved value"));
  }
  const std::uint64_t unit = std::uint64_t{4096} << (4 * unit_code);
  return NvmeCmb{.bar = location & 7,
                 .bar_offset = (location >> 12) * unit,
                 .size = (size >> 12) * unit,
                 .submission_queues = (size & 1) != 0,
                 .completion_queues = (size & 2) != 0,
                 .prp_lists = (size & 4) != 0,
                 .read_data = (size & 8) != 0,
                 .write_data = (size & 16) != 0};
}

Result<NvmeCmb> NvmeDriver::enable_cmb() {
  const char* operation = "enable NVMe controller memory buffer";
  if (auto ok = usable(operation); !ok) return std::unexpected(ok.error());
  if (cmb_) return *cmb_;
  const std::string name = device_->bdf().to_string();
  const std::uint64_t cap = bar0_->read64_halves(nvme::kCap, pcie::HalfOrder::low_first).value_or(0);
  if (((cap >> 57) & 1) == 0) {
    return std::unexpected(make_error(Errc::not_supported, operation, name,
                                      "the controller has no controller memory buffer (CAP.CMBS is 0)"));
  }
  auto cmb = read_cmb_registers(operation);
  if (cmb) cmb = place_cmb(*cmb, operation);
  if (!cmb) {
    // CRE off again: nothing was enabled. Ignored: the error above is the one to report.
    (void)write_cmb_control(0);
    return std::unexpected(cmb.error());
  }
  // CRE, CMSE and the address the controller is to take as its own.
  auto on = write_cmb_control(cmb->bus_address | 3);
  if (on && (read32(nvme::kCmbStatus) & 1) != 0) {  // CBAI: Controller Base Address Invalid
    on = std::unexpected(make_error(Errc::io_error, operation, name,
                                    "the controller refused the CMB's address (CMBSTS.CBAI)"));
  }
  if (!on) {
    (void)write_cmb_control(0);  // ignored, as above
    cmb_bar_.reset();
    return std::unexpected(on.error());
  }
  cmb_ = *cmb;
  return *cmb;
}

// Whether the CMB can be used where CMBLOC and CMBSZ put it, and its bus address; opens
// its BAR (cmb_bar_).
Result<NvmeCmb> NvmeDriver::place_cmb(NvmeCmb cmb, const char* operation) {
  const std::string name = device_->bdf().to_string();
  if (cmb.size == 0 || !cmb.read_data || !cmb.write_data) {
    return std::unexpected(make_error(Errc::not_supported, operation, name,
                                      "the CMB takes no data for reads and writes (CMBSZ.RDS, WDS or SZ is 0)"));
  }
  auto bar = device_->open_bar(cmb.bar);
  if (!bar) return std::unexpected(bar.error());
  if (cmb.bar_offset > (*bar)->size() || cmb.size > (*bar)->size() - cmb.bar_offset) {
    return std::unexpected(make_error(Errc::malformed, operation, name,
                                      "CMBLOC and CMBSZ place the CMB past the end of BAR" + std::to_string(cmb.bar)));
  }
  auto base = bar_bus_address(device_->bdf(), cmb.bar);
  if (!base) return std::unexpected(base.error());
  cmb.bus_address = *base + cmb.bar_offset;
  if (cmb.bus_address % 4096 != 0) {  // CBA holds bits 63:12
    return std::unexpected(make_error(Errc::not_supported, operation, name, "the CMB's bus address is not 4 KiB-aligned"));
  }
  // The controller takes every address in the range for its own memory: none of the
  // driver's buffers may have a bus address there (an IOVA can be anything the IOMMU
  // hands out). The driver allocates nothing after open(), so this holds from here on.
  if (const auto clash = buffer_in(cmb.bus_address, cmb.size)) {
    return std::unexpected(make_error(Errc::not_supported, operation, name,
                                      "the driver's " + *clash + " has a bus address inside the CMB's range (the "
                                      "IOMMU handed it out; the controller would take it for its own memory)",
                                      "leave the CMB off with this container"));
  }
  cmb_bar_ = std::move(*bar);
  return cmb;
}

std::optional<std::string> NvmeDriver::buffer_in(std::uint64_t start, std::uint64_t size) const {
  const auto overlaps = [&](std::uint64_t bus, std::uint64_t bytes) { return ranges_overlap(bus, bytes, start, size); };
  const auto pages_overlap = [&](const pcie::DmaPages& pages) {
    for (std::size_t i = 0; i < pages.count(); ++i) {
      if (overlaps(pages.bus(i).value, 4096)) return true;  // DmaPages of 4 KiB (CC.MPS 0)
    }
    return false;
  };
  for (const std::optional<QueuePair>* queue : {&admin_, &io_}) {
    if (!*queue) continue;
    const QueuePair& pair = **queue;
    if (overlaps(pair.sq_memory.bus_address().value, pair.sq_memory.size()) ||
        overlaps(pair.cq_memory.bus_address().value, pair.cq_memory.size())) {
      return std::string("queue ") + std::to_string(pair.id);
    }
    if (pages_overlap(pair.prp_lists)) return "PRP lists of queue " + std::to_string(pair.id);
  }
  if (pages_overlap(data_)) return std::string("data area");
  return std::nullopt;
}

Result<void> NvmeDriver::cmb_transfer(std::uint8_t opcode, const char* operation, std::uint64_t lba,
                                      std::uint32_t blocks, std::uint64_t offset, std::uint32_t namespace_id) {
  if (!cmb_) {
    return std::unexpected(make_error(Errc::invalid_argument, operation, device_->bdf().to_string(),
                                      "the controller memory buffer is not enabled", "call enable_cmb() first"));
  }
  auto range = bus_range_blocks(operation, blocks, offset, namespace_id);
  if (!range) return std::unexpected(range.error());
  const auto& [space, bytes] = *range;
  if (offset > cmb_->size || bytes > cmb_->size - offset) {
    return std::unexpected(make_error(Errc::out_of_range, operation, device_->bdf().to_string(),
                                      std::to_string(bytes) + " bytes at offset " + std::to_string(offset) +
                                          " of a " + std::to_string(cmb_->size) + "-byte CMB"));
  }
  return transfer(opcode, lba, bytes, space, cmb_->bus_address + offset);
}

Result<void> NvmeDriver::read_to_cmb(std::uint64_t lba, std::uint32_t blocks, std::uint64_t offset,
                                     std::uint32_t namespace_id) {
  return cmb_transfer(nvme::kRead, "NVMe read into the CMB", lba, blocks, offset, namespace_id);
}

Result<void> NvmeDriver::write_from_cmb(std::uint64_t lba, std::uint32_t blocks, std::uint64_t offset,
                                        std::uint32_t namespace_id) {
  return cmb_transfer(nvme::kWrite, "NVMe write from the CMB", lba, blocks, offset, namespace_id);
}

}  // namespace examples
