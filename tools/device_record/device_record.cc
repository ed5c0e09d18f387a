// One record per device for pciectl's JSON and the Python module (device_record.h).
#include "tools/device_record/device_record.h"

#include <fmt/format.h>

#include <string>

#include "pcie/error.h"

namespace pcie_records {
namespace {

using Json = nlohmann::ordered_json;

Json optional_json(const auto& value) { return value ? Json(*value) : Json(); }

// An ID of `digits` hex digits: "8086" (lspci's spelling) or the integer.
Json id(std::uint32_t value, int digits, IdStyle ids) {
  if (ids == IdStyle::integers) return value;
  return fmt::format("{:0{}x}", value, digits);
}

// IDs, names, driver, IOMMU group, NUMA node, slot and bridge buses, in that order.
void add_identity(Json& json, const pcie::DeviceInfo& d, IdStyle ids) {
  json["bdf"] = d.bdf.to_string();
  json["vendor_id"] = id(d.vendor_id, 4, ids);
  json["device_id"] = id(d.device_id, 4, ids);
  json["subsystem_vendor_id"] = id(d.subsystem_vendor_id, 4, ids);
  json["subsystem_id"] = id(d.subsystem_id, 4, ids);
  json["revision"] = d.revision;
  json["class"] = id((std::uint32_t{d.base_class} << 16) | (std::uint32_t{d.subclass} << 8) | d.prog_if, 6, ids);
  json["class_id"] = id(d.class_id(), 4, ids);
  json["prog_if"] = id(d.prog_if, 2, ids);
  json["vendor_name"] = d.vendor_name;
  json["device_name"] = d.device_name;
  json["class_name"] = d.class_name;
  json["subsystem_name"] = d.subsystem_name;
  json["subsystem_vendor_name"] = d.subsystem_vendor_name;
  json["driver"] = optional_json(d.driver);
  json["iommu_group"] = optional_json(d.iommu_group);
  json["numa_node"] = optional_json(d.numa_node);
  json["physical_slot"] = optional_json(d.physical_slot);
  json["bridge_buses"] = d.bridge_buses ? Json{{"primary", d.bridge_buses->primary},
                                               {"secondary", d.bridge_buses->secondary},
                                               {"subordinate", d.bridge_buses->subordinate}}
                                        : Json();
}

// "bars" and "rom".
void add_bars(Json& json, const pcie::DeviceInfo& d) {
  json["bars"] = Json::array();
  for (const pcie::BarInfo& bar : d.bars) {
    json["bars"].push_back({{"index", bar.index},
                            {"type", bar.space == pcie::BarInfo::Space::io ? "io" : "memory"},
                            {"bus_address", bar.bus_address},
                            {"size", bar.size},
                            {"is_64bit", bar.is_64bit},
                            {"prefetchable", bar.prefetchable},
                            {"assigned", bar.assigned}});
  }
  json["rom"] = d.rom ? Json{{"bus_address", d.rom->bus_address}, {"size", d.rom->size}} : Json();
}

Json link_json(const pcie::DeviceInfo& d) {
  if (!d.link) return nullptr;
  return {{"current_speed_gts", d.link->current_speed_gts},
          {"current_width", d.link->current_width},
          {"max_speed_gts", d.link->max_speed_gts},
          {"max_width", d.link->max_width},
          {"source", d.link->source == pcie::LinkInfo::Source::sysfs               ? "sysfs"
                     : d.link->source == pcie::LinkInfo::Source::physical_function ? "physical_function"
                                                                                    : "config_space"}};
}

// The physical function, the virtual functions and the SR-IOV counts.
void add_sriov(Json& json, const pcie::DeviceInfo& d) {
  json["physical_function"] = d.physical_function ? Json(d.physical_function->to_string()) : Json();
  json["virtual_functions"] = Json::array();
  for (const pcie::Bdf& vf : d.virtual_functions) json["virtual_functions"].push_back(vf.to_string());
  json["sriov"] = d.sriov ? Json{{"total_vfs", d.sriov->total_vfs}, {"num_vfs", d.sriov->num_vfs}} : Json();
}

Json capabilities_json(const pcie::DeviceInfo& d) {
  Json list = Json::array();
  for (const pcie::Capability& capability : d.capabilities) {
    Json entry = {{"space", capability.space == pcie::Capability::Space::standard ? "standard" : "extended"},
                  {"id", capability.id},
                  {"offset", capability.offset},
                  {"name", capability.name()}};
    if (capability.space == pcie::Capability::Space::extended) entry["version"] = capability.version;
    list.push_back(entry);
  }
  return list;
}

}  // namespace

pcie::DeviceInfo displayable(const pcie::DeviceInfo& device) {
  pcie::DeviceInfo shown = device;
  for (std::string* text : {&shown.vendor_name, &shown.device_name, &shown.class_name, &shown.subsystem_name,
                            &shown.subsystem_vendor_name}) {
    *text = pcie::printable(*text);
  }
  if (shown.driver) shown.driver = pcie::printable(*shown.driver);
  if (shown.physical_slot) shown.physical_slot = pcie::printable(*shown.physical_slot);
  for (std::string& warning : shown.warnings) warning = pcie::printable(warning);
  return shown;
}

Json device_record(const pcie::DeviceInfo& raw, IdStyle ids) {
  const pcie::DeviceInfo device = displayable(raw);
  Json json;
  add_identity(json, device, ids);
  add_bars(json, device);
  json["link"] = link_json(device);
  add_sriov(json, device);
  json["capabilities"] = capabilities_json(device);
  json["config_bytes_readable"] = device.config_bytes_readable;
  json["config_file_bytes"] = device.config_file_bytes;
  json["warnings"] = device.warnings;
  return json;
}

}  // namespace pcie_records
