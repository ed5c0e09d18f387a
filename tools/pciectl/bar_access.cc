#include "tools/pciectl/bar_access.h"

#include <fmt/format.h>

#include <cstdio>

#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

pcie::BarPathPreference path_preference(const AccessOptions& access) {
  const std::string via = access.vfio ? "vfio" : access.via;
  return via == "sysfs"  ? pcie::BarPathPreference::sysfs_only
         : via == "vfio" ? pcie::BarPathPreference::vfio_only
                         : pcie::BarPathPreference::automatic;
}

}  // namespace

pcie::Result<BarAccess> open_bar_access(const GlobalOptions& global, const AccessOptions& access, bool writable,
                                        RemovalWatch::Span span) {
  auto width = pcie::width_from_bits(access.width_bits);
  if (!width) return std::unexpected(width.error());
  auto offset = parse_number(access.offset, "offset");
  if (!offset) return std::unexpected(offset.error());
  auto bdf = pcie::Bdf::parse(access.bdf);
  if (!bdf) return std::unexpected(bdf.error());
  auto bar = parse_bar(access.bar);
  if (!bar) return std::unexpected(bar.error());
  pcie::BarOpenOptions options;
  options.writable = writable;
  options.enable_decoding = access.enable;
  options.paths = vfio_paths_of(global);
  options.preference = path_preference(access);
  auto opened = pcie::open_bar(*bdf, *bar, options);
  if (!opened) return std::unexpected(opened.error());
  // Say which path was taken when another one was refused first.
  if (!opened->refused.empty() && !json_errors()) {
    fmt::print(stderr, "pciectl: {} BAR{} through {} ({})\n", bdf->to_string(), *bar, pcie::to_string(opened->path),
               pcie::printable(opened->refused.front()));
  }
  BarAccess access_to_bar{*width, *offset, std::move(opened->region), opened->path, std::nullopt};
  access_to_bar.removal.emplace(RemovalWatch::start(options.paths.sysfs, *bdf, span));
  return access_to_bar;
}

void add_bdf_and_bar(CLI::App* command, AccessOptions& access) {
  command->add_option("bdf", access.bdf, "device address")->required();
  command->add_option("bar", access.bar, "bar0 .. bar5")->required();
}

void add_path_choice(CLI::App* command, AccessOptions& access) {
  command->add_option("--via", access.via,
                      "how to reach the BAR: auto (VFIO first for a device bound to vfio-pci, sysfs first otherwise, "
                      "the other when the first fails), sysfs or vfio (default auto)")
      ->check(CLI::IsMember({"auto", "sysfs", "vfio"}));
  command->add_flag("--vfio", access.vfio, "same as --via vfio: through the device's VFIO group (vfio-pci)");
}

}  // namespace pciectl
