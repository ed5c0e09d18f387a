// The 82574L model's register map: which offsets hold registers, what a driver's read and
// write of each does, reset, the link, the EEPROM behind EERD, the PHY behind MDIC, and the
// clear-on-read statistics (82574 datasheet, 10.2).
#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "src/testing/e1000e_core.h"

namespace pcie::testing {

using namespace e1000e;

namespace {

// Registers a driver writes during setup that the model stores without giving them an effect.
bool stored_register(std::uint64_t offset) {
  switch (offset) {
    case kEecd: case kCtrlExt: case kFcal: case kFcah: case kFct: case kVet: case kItr: case kEiac: case kIam:
    case kIvar: case kFcttv: case kTxcw: case kRxcw: case kTipg: case kLedctl: case kExtcnfCtrl: case kPba:
    case kFcrtl: case kFcrth: case kRdtr: case kRxdctl: case kRadv: case kRsrpd: case kRaid: case kKabgtxd:
    case kTidv: case kTxdctl: case kTadv: case kTarc0: case kRxcsum: case kMrqc: case kGcr: case kSwsm:
    case kFwsm: case kPbaclr: case kPsrctl: case kWuc: case kWufc: case kManc:
      return true;
    default:
      break;
  }
  return (offset >= kEitr && offset < kEitr + 4 * kMaxVectors) || (offset >= kMta && offset < kMtaEnd) ||
         (offset >= kRal0 && offset < kRaEnd) || (offset >= kVfta && offset < kVftaEnd);
}

// Registers whose reads or writes do more than store.
bool active_register(std::uint64_t offset) {
  switch (offset) {
    case kCtrl: case kStatus: case kEerd: case kMdic: case kIcr: case kIcs: case kIms: case kImc: case kRctl:
    case kTctl: case kRfctl: case kRdbal: case kRdbah: case kRdlen: case kRdh: case kRdt: case kTdbal:
    case kTdbah: case kTdlen: case kTdh: case kTdt:
      return true;
    default:
      return false;
  }
}

}  // namespace

bool E1000eModel::Core::stores_only(std::uint64_t offset) { return offset % 4 == 0 && stored_register(offset); }

namespace {

bool statistic(std::uint64_t offset) { return offset >= kStatsBegin && offset < kStatsEnd; }

bool is_register(std::uint64_t offset) {
  return offset % 4 == 0 && (active_register(offset) || stored_register(offset) || statistic(offset));
}

// The high half of a 64-bit counter: reading it clears both halves.
bool high_half(std::uint64_t offset) {
  return offset == kGorch || offset == kGotch || offset == kTorh || offset == kToth;
}

// Why an RCTL/RFCTL pair asks for descriptors or buffers the model does not have; "" if none.
std::string rx_format_problem(std::uint32_t rctl, std::uint32_t rfctl) {
  if (rfctl & kRfctlExsten) return "RFCTL.EXSTEN asks for extended receive descriptors";
  if (rctl & kRctlDtypMask) return "RCTL.DTYP asks for packet-split descriptors";
  if (rctl & kRctlFlxbufMask) return "RCTL.FLXBUF asks for flexible buffer sizes";
  if ((rctl & kRctlBsex) && ((rctl >> 16) & 3) == 0) return "RCTL.BSEX with BSIZE 00b is a reserved buffer size";
  return "";
}

// PHY registers (the 82574's PHY, address 1) that ignore writes.
bool phy_read_only(unsigned reg) {
  return reg == 1 || reg == 2 || reg == 3 || reg == 5 || reg == 6 || reg == 10 || reg == 15;
}

}  // namespace

E1000eModel::Core::Core(const E1000eModelOptions& given)
    : options([&] {
        E1000eModelOptions clamped = given;
        clamped.device.msix_vectors = std::min(clamped.device.msix_vectors, kMaxVectors);
        return clamped;
      }()),
      device(options.device), bar0(device.add_bar(0, kBar0Size)), bar3(device.add_bar(3, kBar3Size)),
      regs(kBar0Size / 4), cable(options.cable) {
  // The EEPROM: the station address in words 0-2, the checksum word 0x3F making the sum of
  // words 0x00-0x3F 0xBABA.
  for (unsigned word = 0; word < 3; ++word) {
    eeprom[word] = static_cast<std::uint16_t>(options.mac[2 * word] | options.mac[2 * word + 1] << 8);
  }
  std::uint16_t sum = 0;
  for (unsigned word = 0; word < 0x3f; ++word) sum = static_cast<std::uint16_t>(sum + eeprom[word]);
  eeprom[0x3f] = static_cast<std::uint16_t>(0xbaba - sum);
  power_on();
}

// ---- Driver accesses ----

std::uint64_t E1000eModel::Core::driver_read(const RegisterAccess& access) {
  if (access.width != Width::bits32) {
    violation(e1000e_rule::kRegisterWidth,
              fmt::format("a {}-bit read at 0x{:x}; the 82574's registers take 32-bit accesses only (read as 0)",
                          bit_count(access.width), access.offset),
              kCiteRegisters);
    return 0;
  }
  if (!is_register(access.offset)) {
    violation(e1000e_rule::kUnknownRegister,
              fmt::format("a read at 0x{:x}, where the model has no register (read as 0)", access.offset),
              kCiteRegisters);
    return 0;
  }
  return read(access.offset);
}

std::uint64_t E1000eModel::Core::driver_write(const RegisterAccess& access) {
  if (access.width != Width::bits32) {
    violation(e1000e_rule::kRegisterWidth,
              fmt::format("a {}-bit write of 0x{:x} at 0x{:x}; the 82574's registers take 32-bit accesses only "
                          "(dropped)",
                          bit_count(access.width), access.value, access.offset),
              kCiteRegisters);
    return bar0.get(access.width, access.offset);
  }
  if (!is_register(access.offset)) {
    violation(e1000e_rule::kUnknownRegister,
              fmt::format("a write of 0x{:x} at 0x{:x}, where the model has no register (dropped)", access.value,
                          access.offset),
              kCiteRegisters);
    return 0;
  }
  write(access.offset, static_cast<std::uint32_t>(access.value));
  return peek(access.offset);  // the register model's storage mirrors the model's view
}

std::uint32_t E1000eModel::Core::read(std::uint64_t offset) {
  if (offset == kIcr) return read_icr();
  if (statistic(offset)) return read_statistic(offset);
  return peek(offset);
}

std::uint32_t E1000eModel::Core::peek(std::uint64_t offset) const {
  if (offset >= kBar0Size || !is_register(offset)) return 0;
  switch (offset) {
    case kStatus: return status();
    case kIcs: return reg(kIcr);  // ICS reads as ICR without clearing it (QEMU; real hardware)
    case kImc: return 0;          // write-only
    default: return reg(offset);
  }
}

void E1000eModel::Core::write(std::uint64_t offset, std::uint32_t value) {
  switch (offset) {
    case kCtrl: return write_control(value);
    case kStatus: return;  // read-only
    case kEerd: return write_eerd(value);
    case kMdic: return write_mdic(value);
    case kIcr: return write_icr(value);
    case kIcs: return raise(value & ~kIntAsserted);
    case kIms: return write_ims(value);
    case kImc: return write_imc(value);
    case kRctl: {
      const std::string before = rx_format_problem(reg(kRctl), reg(kRfctl));
      const std::string after = rx_format_problem(value, reg(kRfctl));
      if (!after.empty() && after != before) {
        violation(e1000e_rule::kUnsupportedRxFormat, after + "; the model writes legacy descriptors only",
                  kCiteReceive);
      }
      const bool was_enabled = ring_enabled(kRxRing);
      reg(kRctl) = value;
      return enable_changed(kRxRing, was_enabled);
    }
    case kRfctl: {
      const std::string before = rx_format_problem(reg(kRctl), reg(kRfctl));
      const std::string after = rx_format_problem(reg(kRctl), value);
      if (!after.empty() && after != before) {
        violation(e1000e_rule::kUnsupportedRxFormat, after + "; the model writes legacy descriptors only",
                  kCiteReceive);
      }
      reg(kRfctl) = value;
      return;
    }
    case kTctl: {
      const bool was_enabled = ring_enabled(kTxRing);
      reg(kTctl) = value;
      return enable_changed(kTxRing, was_enabled);
    }
    case kRdt: return write_tail(kRxRing, value);
    case kTdt: return write_tail(kTxRing, value);
    case kRdbal: case kRdbah: case kRdlen: case kRdh: return write_ring_register(kRxRing, offset, value);
    case kTdbal: case kTdbah: case kTdlen: case kTdh: return write_ring_register(kTxRing, offset, value);
    default: break;
  }
  if (statistic(offset)) return;  // counters are read-only
  reg(offset) = value;
}

// ---- Control, status, reset, link ----

std::uint32_t E1000eModel::Core::status() const {
  std::uint32_t value = kStatusFd | kStatusSpeed1000;
  if (link) value |= kStatusLu;
  if (!(reg(kCtrl) & kCtrlGioMasterDisable) || !options.master_requests_drain) value |= kStatusGioMasterEnable;
  return value;
}

void E1000eModel::Core::write_control(std::uint32_t value) {
  if (value & kCtrlRst) {
    // A reset cuts off whatever DMA is in flight: with bus mastering on, master requests
    // must have been disabled (and STATUS polled for none pending) before it.
    if (device.bus_master() && !(reg(kCtrl) & kCtrlGioMasterDisable)) {
      violation(e1000e_rule::kResetWithoutMasterDisable,
                "CTRL.RST written with bus mastering on and CTRL.GIO Master Disable clear: DMA in flight may be cut off",
                kCiteReset);
    }
    reset();
    return;
  }
  reg(kCtrl) = value;
  update_link();
}

// Registers at their defaults, the station address from the EEPROM, link down.
void E1000eModel::Core::power_on() {
  std::fill(regs.begin(), regs.end(), 0u);
  reg(kEecd) = 0x300;  // EEPROM present, auto-read done
  reg(kTipg) = 0x00602008;
  reg(kPba) = 0x00140014;
  reg(kRxcsum) = 0x300;
  reg(kRxdctl) = 0x00010000;
  reg(kTxdctl) = 0x00010000;
  reg(kRal0) = eeprom[0] | std::uint32_t{eeprom[1]} << 16;
  reg(kRah0) = eeprom[2] | kRahAv;
  phy = {};
  phy[0] = 0x1140;  // auto-negotiation enabled, full duplex, 1000 Mb/s
  phy[2] = 0x0141;  // PHY identifier
  phy[3] = 0x0cb1;
  phy[4] = 0x0de1;
  phy[6] = 0x0001;
  phy[9] = 0x0e00;
  phy[15] = 0x3000;
  link = false;
  rx = {};
  tx = {};
  tx_frame = {};
  arriving.clear();
  causes_pending = 0;
}

// CTRL.RST: the whole MAC back to its power-on state; what the NIC already sent stays sent.
void E1000eModel::Core::reset() {
  power_on();
  ++resets;
}

void E1000eModel::Core::update_link() {
  const bool up = cable && (reg(kCtrl) & kCtrlSlu) != 0;
  if (up == link) return;
  link = up;
  raise(kLsc);
}

// ---- EEPROM and PHY ----

void E1000eModel::Core::write_eerd(std::uint32_t value) {
  const std::uint32_t address = (value >> 2) & 0x3fff;
  if (!(value & kEerdStart) || address >= eeprom.size()) {
    reg(kEerd) = address << 2;
    return;
  }
  reg(kEerd) = kEerdDone | address << 2 | std::uint32_t{eeprom[address]} << 16;
}

void E1000eModel::Core::write_mdic(std::uint32_t value) {
  const unsigned phy_reg = (value >> 16) & 0x1f;
  const unsigned phy_address = (value >> 21) & 0x1f;
  if (phy_address != 1) {
    value = reg(kMdic) | kMdicError;  // only PHY 1 answers (QEMU keeps the old value)
  } else if ((value & (3u << 26)) == kMdicOpRead) {
    std::uint16_t data = phy[phy_reg];
    if (phy_reg == 1) data = link ? 0x796d : 0x7949;  // link status, auto-negotiation complete
    if (phy_reg == 5) data = link ? 0x45e1 : 0;       // link partner ability
    if (phy_reg == 10) data = link ? 0x3c00 : 0;      // 1000BASE-T status
    value = (value & ~0xffffu) | data;
  } else if ((value & (3u << 26)) == kMdicOpWrite) {
    if (phy_read_only(phy_reg)) {
      value |= kMdicError;
    } else {
      // Reset (bit 15) and restart auto-negotiation (bit 9) of the control register self-clear.
      phy[phy_reg] = static_cast<std::uint16_t>(phy_reg == 0 ? value & ~0x8200u : value);
    }
  }
  reg(kMdic) = value | kMdicReady;
  if (value & kMdicInterrupt) raise(kMdac);
}

// ---- Statistics ----

std::uint32_t E1000eModel::Core::read_statistic(std::uint64_t offset) {
  const std::uint32_t value = reg(offset);
  reg(offset) = 0;
  if (high_half(offset)) reg(offset - 4) = 0;
  return value;
}

void E1000eModel::Core::count(std::uint64_t offset, std::uint64_t amount) {
  const std::uint64_t sum = std::uint64_t{reg(offset)} + amount;
  reg(offset) = static_cast<std::uint32_t>(std::min<std::uint64_t>(sum, std::numeric_limits<std::uint32_t>::max()));
}

void E1000eModel::Core::count64(std::uint64_t low, std::uint64_t amount) {
  const std::uint64_t now = reg(low) | std::uint64_t{reg(low + 4)} << 32;
  const std::uint64_t sum = amount > ~now ? ~std::uint64_t{0} : now + amount;
  reg(low) = static_cast<std::uint32_t>(sum);
  reg(low + 4) = static_cast<std::uint32_t>(sum >> 32);
}

}  // namespace pcie::testing
