#include "pcie/bar_opener.h"

#include <fmt/format.h>

#include "pcie/binding.h"
#include "pcie/sysfs_bar.h"

namespace pcie {
namespace {

Result<std::unique_ptr<Region>> open_through_sysfs(const Bdf& bdf, unsigned bar, const BarOpenOptions& options) {
  BarMapOptions map;
  map.writable = options.writable;
  map.enable_decoding = options.enable_decoding;
  return open_sysfs_bar(options.paths.sysfs, bdf, bar, map);
}

Result<std::unique_ptr<Region>> open_through_vfio(const Bdf& bdf, unsigned bar, const BarOpenOptions& options) {
  auto container = VfioContainer::open(options.paths);
  if (!container) return std::unexpected(container.error());
  // No reset: opening to look at a register must not wipe the device's state.
  auto device = container->open_device(bdf, VfioDeviceOptions{.reset_on_open = false});
  if (!device) return std::unexpected(device.error());
  auto region = device->open_region(kVfioBar0Region + bar, VfioRegionOptions{.map = true, .writable = options.writable});
  if (!region) return std::unexpected(region.error());
  // The region keeps the device and its container open; the handles here may go.
  return std::unique_ptr<Region>(std::make_unique<VfioRegion>(std::move(*region)));
}

// How much an error tells the user: a path that simply does not apply (the device is not
// bound to vfio-pci; no VFIO at all) tells least.
int weight(BarPath path, const Error& error, bool bound_to_vfio) {
  if (path == BarPath::vfio && !bound_to_vfio) return 0;
  if (path == BarPath::sysfs && bound_to_vfio && error.code == Errc::driver_owns_region) return 0;
  switch (error.code) {
    case Errc::not_found: return 1;
    case Errc::invalid_argument:
    case Errc::out_of_range: return 3;  // the same for every path: the caller's mistake
    default: return 2;
  }
}

// The paths to try, in order.
std::vector<BarPath> paths_to_try(BarPathPreference preference, bool bound_to_vfio) {
  switch (preference) {
    case BarPathPreference::sysfs_only: return {BarPath::sysfs};
    case BarPathPreference::vfio_only: return {BarPath::vfio};
    case BarPathPreference::automatic: break;
  }
  // Only a device bound to vfio-pci can be opened through VFIO, so only then is it tried.
  return bound_to_vfio ? std::vector{BarPath::vfio, BarPath::sysfs} : std::vector{BarPath::sysfs};
}

// The most telling error, with what the other path said where that differs.
Error with_other_refusals(Error error, const std::vector<BarPath>& order, const std::vector<std::string>& refused) {
  if (order.size() > 1) {
    const std::string first = error.message();
    std::string others;
    for (const std::string& refusal : refused) {
      if (refusal.find(first) == std::string::npos) others += "; " + refusal;
    }
    error.reason += fmt::format(" (tried {} and {}{})", to_string(order[0]), to_string(order[1]), others);
  }
  return error;
}

}  // namespace

const char* to_string(BarPath path) { return path == BarPath::vfio ? "VFIO" : "sysfs"; }

Result<OpenedBar> open_bar(const Bdf& bdf, unsigned bar, const BarOpenOptions& options) {
  const std::string object = fmt::format("{} BAR{}", bdf.to_string(), bar);
  if (bar > 5) {
    return std::unexpected(make_error(Errc::invalid_argument, "open BAR", object, "a device has BARs 0 to 5"));
  }
  // Which driver owns the device decides the order; not knowing it is no reason to fail
  // (a removed device, say, fails below with its own error).
  auto driver = bound_driver(options.paths.sysfs, bdf);
  const bool bound_to_vfio = driver && driver->has_value() && **driver == "vfio-pci";
  const std::vector<BarPath> order = paths_to_try(options.preference, bound_to_vfio);
  OpenedBar opened;
  std::optional<Error> best;
  int best_weight = -1;
  for (BarPath path : order) {
    auto region = path == BarPath::sysfs ? open_through_sysfs(bdf, bar, options) : open_through_vfio(bdf, bar, options);
    if (region) {
      opened.region = std::move(*region);
      opened.path = path;
      return opened;
    }
    opened.refused.push_back(fmt::format("{}: {}", to_string(path), region.error().message()));
    const int w = weight(path, region.error(), bound_to_vfio);
    if (w > best_weight) {
      best = region.error();
      best_weight = w;
    }
  }
  return std::unexpected(with_other_refusals(*best, order, opened.refused));
}

}  // namespace pcie
