// Turning discovery results into pciectl's human and JSON output.
#pragma once

#include <nlohmann/json.hpp>
#include <map>
#include <string>
#include <vector>

#include "pcie/discovery.h"
#include "tools/pciectl/vfio_nodes.h"

namespace pciectl {

// The memory types the kernel has granted mappings of a device's memory BARs now (x86
// PAT), where that can be read (root, debugfs): for info's output.
struct BarMemoryTypes {
  bool verified = false;
  std::string note;                                   // why not, when not verified
  std::map<unsigned, std::vector<std::string>> by_bar; // BAR index -> granted type names
};
BarMemoryTypes read_bar_memory_types(const pcie::SysfsPaths& paths, const pcie::DeviceInfo& device);

// One lspci -nn -D style line: "0000:01:00.0 Class [0108]: Vendor Device [1b36:0010] (rev 02)".
std::string render_line(const pcie::DeviceInfo& device, bool with_prog_if = false);
// One lspci -mm -nn -D line: the slot, then quoted class, vendor and device names with
// their IDs, -rXX (revision, when not 0), -pXX (prog-if), and the quoted subsystem vendor
// and subsystem names ("" "" without subsystem IDs).
std::string render_machine_line(const pcie::DeviceInfo& device);
// One lspci -vmm -nn -D record ("Slot:\t...\n" lines; the caller adds the blank line):
// with_driver adds the Driver line of -k.
std::string render_machine_record(const pcie::DeviceInfo& device, bool with_driver);
// Everything discovery knows, as indented text (with the BARs' current memory types and
// the VFIO nodes and backend when given).
std::string render_details(const pcie::DeviceInfo& device, const BarMemoryTypes* memory_types = nullptr,
                           const VfioNodes* vfio = nullptr);
// Everything discovery knows, as a JSON object ("vfio": null when `vfio` is null).
nlohmann::ordered_json to_json(const pcie::DeviceInfo& device, const BarMemoryTypes* memory_types = nullptr,
                               const VfioNodes* vfio = nullptr);
// Prints the device's warnings (what discovery could not read) on stderr, one
// "pciectl: warning: BDF: ..." line each: for outputs that have no room for them.
void print_warnings(const pcie::DeviceInfo& device);
// "16 KiB", "8 GiB", "256 B".
std::string human_size(std::uint64_t bytes);

}  // namespace pciectl
