// Capability names from the PCI Code and ID Assignment Specification 1.11.
#include <array>

#include "pcie/capabilities.h"

namespace pcie {

std::string_view standard_capability_name(std::uint8_t id) {
  static constexpr std::array<std::string_view, 0x16> kNames = {
      "Null",                          // 0x00
      "Power Management",              // 0x01
      "AGP",                           // 0x02
      "Vital Product Data",            // 0x03
      "Slot Identification",           // 0x04
      "MSI",                           // 0x05
      "CompactPCI Hot Swap",           // 0x06
      "PCI-X",                         // 0x07
      "HyperTransport",                // 0x08
      "Vendor Specific",               // 0x09
      "Debug Port",                    // 0x0a
      "CompactPCI Central Resource",   // 0x0b
      "PCI Hot-Plug",                  // 0x0c
      "Bridge Subsystem Vendor ID",    // 0x0d
      "AGP 8x",                        // 0x0e
      "Secure Device",                 // 0x0f
      "PCI Express",                   // 0x10
      "MSI-X",                         // 0x11
      "SATA Configuration",            // 0x12
      "Advanced Features",             // 0x13
      "Enhanced Allocation",           // 0x14
      "Flattening Portal Bridge",      // 0x15
  };
  return id < kNames.size() ? kNames[id] : "unknown";
}

std::string_view extended_capability_name(std::uint16_t id) {
  static constexpr std::array<std::string_view, 0x35> kNames = {
      "Null",                                     // 0x0000
      "Advanced Error Reporting",                 // 0x0001
      "Virtual Channel",                          // 0x0002
      "Device Serial Number",                     // 0x0003
      "Power Budgeting",                          // 0x0004
      "Root Complex Link Declaration",            // 0x0005
      "Root Complex Internal Link Control",       // 0x0006
      "Root Complex Event Collector Association", // 0x0007
      "Multi-Function Virtual Channel",           // 0x0008
      "Virtual Channel (MFVC present)",           // 0x0009
      "RCRB Header",                              // 0x000a
      "Vendor-Specific Extended",                 // 0x000b
      "Configuration Access Correlation",         // 0x000c
      "Access Control Services",                  // 0x000d
      "Alternative Routing-ID Interpretation",    // 0x000e
      "Address Translation Services",             // 0x000f
      "Single Root I/O Virtualization",           // 0x0010
      "Multi-Root I/O Virtualization",            // 0x0011
      "Multicast",                                // 0x0012
      "Page Request Interface",                   // 0x0013
      "Reserved for AMD",                         // 0x0014
      "Resizable BAR",                            // 0x0015
      "Dynamic Power Allocation",                 // 0x0016
      "TPH Requester",                            // 0x0017
      "Latency Tolerance Reporting",              // 0x0018
      "Secondary PCI Express",                    // 0x0019
      "Protocol Multiplexing",                    // 0x001a
      "Process Address Space ID",                 // 0x001b
      "LN Requester",                             // 0x001c
      "Downstream Port Containment",              // 0x001d
      "L1 PM Substates",                          // 0x001e
      "Precision Time Measurement",               // 0x001f
      "M-PCIe",                                   // 0x0020
      "FRS Queueing",                             // 0x0021
      "Readiness Time Reporting",                 // 0x0022
      "Designated Vendor-Specific",               // 0x0023
      "VF Resizable BAR",                         // 0x0024
      "Data Link Feature",                        // 0x0025
      "Physical Layer 16.0 GT/s",                 // 0x0026
      "Lane Margining at the Receiver",           // 0x0027
      "Hierarchy ID",                             // 0x0028
      "Native PCIe Enclosure Management",         // 0x0029
      "Physical Layer 32.0 GT/s",                 // 0x002a
      "Alternate Protocol",                       // 0x002b
      "System Firmware Intermediary",             // 0x002c
      "Shadow Functions",                         // 0x002d
      "Data Object Exchange",                     // 0x002e
      "Device 3",                                 // 0x002f
      "Integrity and Data Encryption",            // 0x0030
      "Physical Layer 64.0 GT/s",                 // 0x0031
      "Flit Logging",                             // 0x0032
      "Flit Performance Measurement",             // 0x0033
      "Flit Error Injection",                     // 0x0034
  };
  return id < kNames.size() ? kNames[id] : "unknown";
}

}  // namespace pcie
