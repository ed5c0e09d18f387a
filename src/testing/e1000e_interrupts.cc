// The 82574L model's interrupt logic (82574 datasheet, 10.2.4), after QEMU 7.2's
// hw/net/e1000e_core.c (e1000e_update_interrupt_state, e1000e_send_msi,
// e1000e_msix_notify_one) with the differences the public header lists: causes collect in
// ICR; a message goes out for each cause in ICR & IMS not already signalled; in MSI-X mode
// RXQ0, TXQ0 and OTHER go to the vectors IVAR names.
#include <fmt/format.h>

#include "src/testing/e1000e_core.h"

namespace pcie::testing {

using namespace e1000e;

bool E1000eModel::Core::msix_enabled() const { return device.interrupts_enabled(IrqKind::msix); }

void E1000eModel::Core::raise(std::uint32_t causes) {
  reg(kIcr) |= causes;
  update_interrupts();
}

void E1000eModel::Core::update_interrupts() {
  const bool msix = msix_enabled();
  std::uint32_t& icr = reg(kIcr);
  if (msix && (icr & kOtherCauses)) icr |= kOther;
  icr = icr != 0 && icr != kIntAsserted ? icr | kIntAsserted : 0;
  if ((reg(kIms) & icr) == 0) {
    causes_pending = 0;
    return;
  }
  send_message(msix);
  // EIAC may have cleared every cause the message carried.
  if ((icr & ~kIntAsserted) == 0) icr = 0;
}

// One message for the causes in ICR & IMS that no message has carried since they were set
// (QEMU's msi_causes_pending): an edge per new cause, however often the state is updated.
void E1000eModel::Core::send_message(bool msix) {
  const std::uint32_t causes = reg(kIcr) & reg(kIms) & ~kIntAsserted;
  causes_pending &= causes;
  const std::uint32_t fresh = causes & ~causes_pending;
  if (fresh == 0) return;
  causes_pending |= fresh;
  if (msix) {
    if (fresh & kRxq0) notify_vector(kRxq0, kIvarRxq0);
    if (fresh & kRxq1) notify_vector(kRxq1, 4);
    if (fresh & kTxq0) notify_vector(kTxq0, kIvarTxq0);
    if (fresh & kTxq1) notify_vector(kTxq1, 12);
    if (fresh & kOther) notify_vector(kOther, kIvarOther);
    return;  // other causes have no vector in MSI-X mode
  }
  fire(device.interrupts_enabled(IrqKind::msi) ? IrqKind::msi : IrqKind::intx, 0, fresh);
}

void E1000eModel::Core::notify_vector(std::uint32_t cause, unsigned ivar_shift) {
  const std::uint32_t entry = (reg(kIvar) >> ivar_shift) & 0xf;
  const unsigned vector = entry & 0x7;
  if (!(entry & 0x8)) {
    violation(e1000e_rule::kMsixUnrouted,
              fmt::format("ICR cause 0x{:08x} is enabled in IMS in MSI-X mode, but its IVAR entry (bits {}-{}, "
                          "IVAR 0x{:08x}) is not valid: no vector is signalled",
                          cause, ivar_shift, ivar_shift + 3, reg(kIvar)),
              kCiteInterrupts);
  } else if (vector >= options.device.msix_vectors) {
    violation(e1000e_rule::kMsixUnrouted,
              fmt::format("ICR cause 0x{:08x} is routed by IVAR 0x{:08x} to MSI-X vector {}, but the device has "
                          "{}",
                          cause, reg(kIvar), vector, options.device.msix_vectors),
              kCiteInterrupts);
  } else {
    fire(IrqKind::msix, vector, cause);
  }
  if (reg(kCtrlExt) & kCtrlExtEiame) reg(kIms) &= ~(reg(kIam) & cause);
  const std::uint32_t auto_cleared = reg(kEiac) & cause;
  reg(kIcr) &= ~auto_cleared;
  causes_pending &= ~auto_cleared;
}

void E1000eModel::Core::fire(IrqKind kind, unsigned vector, std::uint32_t causes) {
  const bool delivered = device.fire(kind, vector);
  interrupts.push_back({kind, vector, causes, delivered});
}

// A read returns the causes; it clears them when IMS is 0 or outside MSI-X mode, and with
// CTRL_EXT.IAME a read that returns INT_ASSERTED clears them and masks the IAM bits.
std::uint32_t E1000eModel::Core::read_icr() {
  const std::uint32_t value = reg(kIcr);
  if (reg(kIms) == 0 || !msix_enabled()) reg(kIcr) = 0;
  if ((value & kIntAsserted) && (reg(kCtrlExt) & kCtrlExtIame)) {
    reg(kIcr) = 0;
    reg(kIms) &= ~reg(kIam);
  }
  update_interrupts();
  return value;
}

void E1000eModel::Core::write_icr(std::uint32_t value) {
  if ((reg(kIcr) & kIntAsserted) && (reg(kCtrlExt) & kCtrlExtIame)) reg(kIms) &= ~reg(kIam);
  std::uint32_t icr = reg(kIcr) & ~value;
  if (value & kOther) icr &= ~kOtherCauses;  // clearing OTHER clears what it stands for (QEMU)
  reg(kIcr) = icr;
  update_interrupts();
}

void E1000eModel::Core::write_ims(std::uint32_t value) {
  reg(kIms) |= value & kImsValid;
  update_interrupts();
}

void E1000eModel::Core::write_imc(std::uint32_t value) {
  reg(kIms) &= ~value;
  update_interrupts();
}

}  // namespace pcie::testing
