// Which devices a discovery lists: lspci's -s and -d filters. libpci parses them
// (pci_filter_parse_slot/_id, so the syntax and its errors stay lspci's); they are matched
// here, by pci_filter_match's rules (libpci 3.9, lib/filter.c), against what discovery
// read itself: libpci's match would fill a pci_dev from the sysfs attributes again. Private.
#pragma once

#include "pcie/bdf.h"
#include "pcie/discovery.h"
#include "pcie/error.h"
#include "src/pci/libpci_session.h"

namespace pcie::detail {

class DeviceFilter {
 public:
  // options.slot_filter and options.id_filter (either may be empty: match all). Fails with
  // invalid_argument, naming the filter and libpci's reason.
  static Result<DeviceFilter> parse(LibpciSession& session, const DiscoveryOptions& options);
  explicit DeviceFilter(const pci_filter& filter) : filter_(filter) {}

  // Domain, bus, device and function: decided from the address alone, before any read.
  bool matches_address(const Bdf& bdf) const;
  // Vendor and device ID, class (under the filter's mask) and prog-if.
  bool matches_ids(const DeviceInfo& info) const;

 private:
  pci_filter filter_;
};

}  // namespace pcie::detail
