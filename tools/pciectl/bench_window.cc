#include "tools/pciectl/bench_window.h"

#include <fmt/format.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pcie/sysfs_bar.h"

namespace pciectl::bench {
namespace {

pcie::Result<Window> map_vfio_window(const pcie::VfioPaths& paths, const Plan& plan, const BenchOptions& options,
                                     pcie::MemoryType type) {
  if (type != pcie::MemoryType::uncached) {
    return std::unexpected(
        pcie::make_error(pcie::Errc::not_supported, "bench", plan.bar_name, "vfio-pci maps BARs uncached only"));
  }
  auto container = pcie::VfioContainer::open(paths);
  if (!container) return std::unexpected(container.error());
  auto device = container->open_device(plan.bdf, pcie::VfioDeviceOptions{.reset_on_open = false});
  if (!device) return std::unexpected(device.error());
  auto region =
      device->open_region(pcie::kVfioBar0Region + plan.bar_index, {.map = true, .writable = options.allow_write});
  if (!region) return std::unexpected(region.error());
  auto view = region->mmio_at(plan.offset, plan.length);
  if (!view) {
    return std::unexpected(pcie::make_error(
        pcie::Errc::not_supported, "bench", plan.bar_name,
        "vfio-pci does not map this window (a sparse BAR: its MSI-X table lies in it)",
        "choose --offset/--length around the MSI-X table"));
  }
  Window window{nullptr, *view, pcie::MemoryType::uncached,
                {pcie::MemoryType::uncached, std::nullopt, "", "vfio-pci maps BARs uncached (not checked)"}};
  window.owner = std::make_unique<pcie::VfioRegion>(std::move(*region));
  return window;
}

pcie::Result<Window> map_sysfs_window(const pcie::SysfsPaths& paths, const Plan& plan, const BenchOptions& options,
                                      pcie::MemoryType type) {
  auto mapped = pcie::BarMapping::map(paths, plan.bdf, plan.bar_index,
                                      {.memory_type = type,
                                       .offset = plan.offset,
                                       .length = plan.length,
                                       .writable = options.allow_write,
                                       .enable_decoding = options.enable});
  if (!mapped) return std::unexpected(mapped.error());
  Window window{nullptr, mapped->mmio(), mapped->memory_type(), mapped->memory_type_report()};
  window.owner = std::make_unique<pcie::BarMapping>(std::move(*mapped));
  return window;
}

}  // namespace

pcie::Result<Window> map_window(const pcie::VfioPaths& paths, const Plan& plan, const BenchOptions& options,
                                pcie::MemoryType type) {
  if (options.vfio) return map_vfio_window(paths, plan, options, type);
  return map_sysfs_window(paths.sysfs, plan, options, type);
}

pcie::Result<void> probe_mappings(const pcie::VfioPaths& paths, Plan& plan, const BenchOptions& options) {
  std::vector<std::string> notes;
  for (auto type = plan.mappings.begin(); type != plan.mappings.end();) {
    auto trial = map_window(paths, plan, options, *type);
    // With the default "all", a BAR the kernel offers no write-combined mapping of (PAT
    // off) is measured uncached only, and says so; asked for by name, it is an error.
    if (!trial && *type == pcie::MemoryType::write_combined && options.mapping == "all" &&
        trial.error().code == pcie::Errc::not_supported) {
      notes.push_back("write-combined: not measured: " + trial.error().reason);
      type = plan.mappings.erase(type);
      continue;
    }
    if (!trial) return std::unexpected(trial.error());
    ++type;
  }
  for (const std::string& note : notes) fmt::print(stderr, "pciectl bench: {}\n", pcie::printable(note));
  return {};
}

}  // namespace pciectl::bench
