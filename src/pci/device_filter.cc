#include "src/pci/device_filter.h"

#include <fmt/format.h>

#include <cstdint>
#include <string>

namespace pcie::detail {
namespace {

// A filter field: -1 matches anything.
bool field_matches(int wanted, std::int64_t value) { return wanted < 0 || wanted == value; }

}  // namespace

Result<DeviceFilter> DeviceFilter::parse(LibpciSession& session, const DiscoveryOptions& options) {
  pci_filter filter{};
  pci_filter_init(session.access(), &filter);
  // libpci's parsers write into the string they are given, so each gets its own copy.
  if (!options.slot_filter.empty()) {
    std::string slot = options.slot_filter;
    if (const char* problem = pci_filter_parse_slot(&filter, slot.data())) {
      return std::unexpected(make_error(Errc::invalid_argument, "parse slot filter",
                                        fmt::format("'{}'", options.slot_filter), problem,
                                        "expected [[[[domain]:]bus]:][device][.[func]]"));
    }
  }
  if (!options.id_filter.empty()) {
    std::string id = options.id_filter;
    if (const char* problem = pci_filter_parse_id(&filter, id.data())) {
      return std::unexpected(make_error(Errc::invalid_argument, "parse ID filter",
                                        fmt::format("'{}'", options.id_filter), problem,
                                        "expected [vendor]:[device][:class[:prog-if]] in hex"));
    }
  }
  return DeviceFilter(filter);
}

bool DeviceFilter::matches_address(const Bdf& bdf) const {
  return field_matches(filter_.domain, bdf.domain) && field_matches(filter_.bus, bdf.bus) &&
         field_matches(filter_.slot, bdf.device) && field_matches(filter_.func, bdf.function);
}

bool DeviceFilter::matches_ids(const DeviceInfo& info) const {
  if (!field_matches(filter_.vendor, info.vendor_id) || !field_matches(filter_.device, info.device_id)) return false;
  // Base class and subclass under the filter's mask: "::01xx" is base class 01, any subclass.
  if (filter_.device_class >= 0 &&
      ((static_cast<unsigned>(filter_.device_class) ^ info.class_id()) & filter_.device_class_mask) != 0) {
    return false;
  }
  return field_matches(filter_.prog_if, info.prog_if);
}

}  // namespace pcie::detail
