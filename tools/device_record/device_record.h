// A device's description as one record for every front end: `pciectl info/ls --json` and
// the Python module's dicts (pcie.devices(), pcie.describe()) are both built from it, so
// their fields never drift apart. Everything discovery knows, with what could not be read
// as "warnings". Every field below is always there: null where discovery could not learn
// it or it does not apply (bridge_buses of a device that is not a bridge, link without a
// PCIe capability); only a standard capability has no "version".
#pragma once

#include <nlohmann/json.hpp>

#include "pcie/discovery.h"

namespace pcie_records {

// How the record spells IDs (vendor, device, subsystem, class, prog-if): as lspci's hex
// strings for JSON ("1b36", "010802"), or as integers for Python (0x1b36, 0x010802).
// Addresses, sizes, offsets and counts are integers in both.
enum class IdStyle { hex_strings, integers };

// The record of `device`: bdf; vendor_id, device_id, subsystem_vendor_id, subsystem_id,
// revision, class (24 bits: base class, subclass, prog-if), class_id (16 bits), prog_if;
// the five names; driver, iommu_group, numa_node, physical_slot, bridge_buses; bars (index,
// type "memory"/"io", bus_address, size, is_64bit, prefetchable, assigned) and rom; link;
// physical_function, virtual_functions, sriov; capabilities (space, id, offset, name, and
// version for extended ones); config_bytes_readable, config_file_bytes; warnings. Every
// text field is as displayable() gives it. Cannot fail.
nlohmann::ordered_json device_record(const pcie::DeviceInfo& device, IdStyle ids);

// `device` with every text that came from outside (pci.ids names, the driver and slot
// names from sysfs, warnings that quote paths) passed through pcie::printable: bytes that
// are not UTF-8 and control characters become \xNN, so JSON stays valid, Python gets a
// str, and a terminal gets no escape sequence. For output only: the driver name it gives
// may differ from the kernel's. Cannot fail.
pcie::DeviceInfo displayable(const pcie::DeviceInfo& device);

}  // namespace pcie_records
