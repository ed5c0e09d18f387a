// What a device is (vendor, device and subsystem IDs, class, revision) as the kernel holds
// it, which is what lspci shows: its fixups of broken devices' classes included, an SR-IOV
// VF's real IDs (its config space reads 0xffff there), a bridge's subsystem IDs (from its
// SSVID capability). Five of the six come from one file, <device>/modalias, where libpci
// reads six attribute files; the revision from config bytes already read, else its
// attribute. On a paravirtualized machine discovery's cost is its syscall count. Private.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/discovery.h"
#include "pcie/error.h"

namespace pcie::detail {

struct KernelIds {
  std::uint16_t vendor_id = 0;
  std::uint16_t device_id = 0;
  std::uint16_t subsystem_vendor_id = 0;
  std::uint16_t subsystem_id = 0;
  std::uint32_t class_code = 0;  // base class, subclass, prog-if
  friend bool operator==(const KernelIds&, const KernelIds&) = default;
};

// <device>/modalias as the kernel writes it, "pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X\n"
// (drivers/pci/pci-sysfs.c, modalias_show): every field its exact number of hex digits,
// IDs that fit 16 bits, one optional newline. nullopt for anything else.
std::optional<KernelIds> parse_modalias(std::string_view text);

// Whether config bytes answer the Revision ID as the kernel read it at enumeration: a
// header's 64 bytes or more, not all ones (a removed device, or one in reset).
bool header_answers_revision(std::span<const std::uint8_t> config);

// Fills info's IDs, class and revision. From <device>/modalias, or, where it is absent
// or does not parse, from the vendor, device and class attributes, which must then be
// there (read_required_number's errors), and subsystem_vendor/subsystem_device (absent:
// 0; unreadable: 0, with a warning "subsystem IDs: ..." appended to `warnings`). The
// revision from `config` (the bytes from offset 0 when the caller read them, else empty)
// where it answers, else the revision attribute (absent or unreadable: 0xff, as libpci
// reads an unreadable register; unreadable also a warning).
Result<void> read_identity(const std::string& device_dir, std::span<const std::uint8_t> config, DeviceInfo& info,
                           std::vector<std::string>& warnings);

}  // namespace pcie::detail
