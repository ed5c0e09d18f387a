// `pciectl ls -t`: the bus tree, drawn as lspci -t draws it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pcie/discovery.h"

namespace pciectl {

// The bus tree lspci -t prints, built from each bridge's bus numbers in config space
// (DeviceInfo::bridge_buses, so discover with read_capabilities) and placed the way
// lspci 3.9 places devices, malformed bus numbers included: a device goes to the root
// bus it sits on, else to the last bridge (in BDF order) whose [secondary, subordinate]
// range holds its bus, else to a root bus of its own. `devices` must be sorted by BDF, as
// discover() returns them.
//
// `selected[i]` says whether devices[i] is to be shown; an empty vector shows all, and then
// the output equals `lspci -t` (with `with_names`, `lspci -tv -nn`) line for line. With a
// selection, the tree keeps only the selected devices and the bridges above them (lspci 3.9
// instead draws the connectors of the devices it leaves out). A bridge met again below
// itself (bus numbers that make a loop) is drawn as a leaf, not followed.
std::string render_tree(const std::vector<pcie::DeviceInfo>& devices, const std::vector<bool>& selected,
                        bool with_names);

// Devices the tree cannot reach from a root bus: bus numbers that place a bridge below
// itself strand it and what sits below it (lspci leaves them out as well). In BDF order.
std::vector<pcie::Bdf> devices_outside_the_tree(const std::vector<pcie::DeviceInfo>& devices);

// The same tree as JSON: an array of root buses, each {"domain", "bus", "devices": [...]};
// a bridge's entry has "secondary_bus", "subordinate_bus" and "buses" (the buses below it).
nlohmann::ordered_json tree_to_json(const std::vector<pcie::DeviceInfo>& devices, const std::vector<bool>& selected);

}  // namespace pciectl
