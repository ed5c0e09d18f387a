#include "pcie/sriov.h"

#include <fmt/format.h>

#include <cerrno>
#include <thread>

#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"

namespace pcie {
namespace {

Result<unsigned> read_count(const std::string& path) {
  auto text = sys::read_text_file(path, 64);
  if (!text) return std::unexpected(text.error());
  auto value = sysfs::parse_number(*text);
  if (!value || *value < 0 || *value > 0xffff) {
    return std::unexpected(make_error(Errc::malformed, "read", path, fmt::format("not a VF count: '{}'", printable(*text))));
  }
  return static_cast<unsigned>(*value);
}

// Writes sriov_numvfs, turning the kernel's errnos into what they mean here
// (drivers/pci/iov.c, sriov_numvfs_store).
Result<void> write_numvfs(const SysfsPaths& paths, const Bdf& pf, unsigned count) {
  const std::string path = paths.device_dir(pf) + "/sriov_numvfs";
  auto written = sys::write_text_file(path, std::to_string(count), "set sriov_numvfs");
  if (written) return {};
  Error error = written.error();
  error.object = fmt::format("{} ({} VFs)", pf.to_string(), count);
  switch (error.sys_errno) {
    case ENOENT:
    case ENOSYS:
      error.code = Errc::not_supported;
      error.hint = "the PF's driver cannot enable VFs (it has no sriov_configure); bind one that can";
      break;
    case EBUSY:
      error.code = Errc::busy;
      error.hint = "the kernel refused while VFs exist or are assigned: set 0 first, and release VFs given to guests";
      break;
    case EACCES:
    case EPERM:
      error.hint = "run as root";
      break;
    default: break;
  }
  return std::unexpected(error);
}

// Removing VFs: refuse while any is bound (fail closed on what cannot be read).
Result<void> refuse_bound_vfs(const SriovState& state, const Bdf& pf) {
  std::vector<std::string> in_use;
  for (const VirtualFunction& vf : state.vfs) {
    if (vf.driver) in_use.push_back(fmt::format("{} (bound to {})", vf.bdf.to_string(), *vf.driver));
  }
  if (in_use.empty()) return {};
  return std::unexpected(make_error(Errc::busy, "set VF count", pf.to_string(),
                                    fmt::format("its VFs are in use: {}", fmt::join(in_use, ", ")),
                                    "unbind them first (pciectl unbind BDF), or force"));
}

Result<void> write_drivers_autoprobe(const std::string& dir, bool autoprobe) {
  return sys::write_text_file(dir + "/sriov_drivers_autoprobe", autoprobe ? "1" : "0", "set sriov_drivers_autoprobe");
}

// Polls the PF's state until `count` VFs appear or `settle` has passed: the VFs'
// directories appear as the kernel adds them.
Result<SriovState> wait_for_vfs(const SysfsPaths& paths, const Bdf& pf, unsigned count,
                                std::chrono::milliseconds settle) {
  const auto deadline = std::chrono::steady_clock::now() + settle;
  for (;;) {
    auto state = sriov_state(paths, pf);
    if (!state) return std::unexpected(state.error());
    if (state->vfs.size() == count) return state;
    if (std::chrono::steady_clock::now() >= deadline) {
      return std::unexpected(make_error(Errc::io_error, "set VF count", pf.to_string(),
                                        fmt::format("sriov_numvfs took {}, but {} VFs appear after {} ms", count,
                                                    state->vfs.size(), settle.count())));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Goes from `current` VFs to `count` (through 0: the kernel changes a nonzero count only
// to 0), then waits for them to appear.
Result<SriovState> change_vf_count(const SysfsPaths& paths, const Bdf& pf, unsigned current, unsigned count,
                                   std::chrono::milliseconds settle) {
  if (current != 0 && count != 0) {
    if (auto cleared = write_numvfs(paths, pf, 0); !cleared) return std::unexpected(cleared.error());
  }
  if (auto set = write_numvfs(paths, pf, count); !set) return std::unexpected(set.error());
  return wait_for_vfs(paths, pf, count, settle);
}

// Binds every VF not yet bound to options.bind_driver to it, in order.
Result<void> bind_vfs(const SysfsPaths& paths, const SriovState& state, const SetVfCountOptions& options) {
  for (const VirtualFunction& vf : state.vfs) {
    if (vf.driver == options.bind_driver) continue;
    if (auto bound = bind_driver(paths, vf.bdf, options.bind_driver, BindOptions{.force = options.force}); !bound) {
      return std::unexpected(bound.error());
    }
  }
  return {};
}

}  // namespace

Result<SriovState> sriov_state(const SysfsPaths& paths, const Bdf& pf) {
  const std::string dir = paths.device_dir(pf);
  if (!sys::path_exists(dir)) {
    return std::unexpected(make_error(Errc::not_found, "read SR-IOV state", pf.to_string(), "no such device"));
  }
  if (!sys::path_exists(dir + "/sriov_totalvfs")) {
    auto physfn = sysfs::physical_function(paths, pf);
    const bool is_vf = physfn && *physfn;
    return std::unexpected(make_error(
        Errc::not_supported, "read SR-IOV state", pf.to_string(),
        is_vf ? fmt::format("it is a virtual function of {}", (*physfn)->to_string())
              : "it is not an SR-IOV physical function (no sriov_totalvfs)",
        is_vf ? "pciectl sriov " + (*physfn)->to_string() : "pciectl info shows its capabilities"));
  }
  SriovState state;
  state.physical_function = pf;
  auto total = read_count(dir + "/sriov_totalvfs");
  if (!total) return std::unexpected(total.error());
  auto enabled = read_count(dir + "/sriov_numvfs");
  if (!enabled) return std::unexpected(enabled.error());
  state.total_vfs = *total;
  state.num_vfs = *enabled;
  if (auto autoprobe = sys::read_text_file(dir + "/sriov_drivers_autoprobe", 16)) {
    state.drivers_autoprobe = autoprobe->starts_with("1");
  }
  auto vfs = sysfs::virtual_functions(paths, pf);
  if (!vfs) return std::unexpected(vfs.error());
  unsigned index = 0;
  for (const Bdf& vf : *vfs) {
    auto driver = sysfs::device_driver(paths, vf);
    if (!driver) return std::unexpected(driver.error());
    state.vfs.push_back({index++, vf, *driver});
  }
  return state;
}

Result<SriovState> set_vf_count(const SysfsPaths& paths, const Bdf& pf, unsigned count, const SetVfCountOptions& options) {
  auto state = sriov_state(paths, pf);
  if (!state) return std::unexpected(state.error());
  if (count > state->total_vfs) {
    return std::unexpected(make_error(Errc::out_of_range, "set VF count", pf.to_string(),
                                      fmt::format("{} VFs asked, the device offers {}", count, state->total_vfs)));
  }
  if (count != state->num_vfs && state->num_vfs != 0 && !options.force) {
    if (auto unbound = refuse_bound_vfs(*state, pf); !unbound) return std::unexpected(unbound.error());
  }
  if (options.drivers_autoprobe) {
    if (auto set = write_drivers_autoprobe(paths.device_dir(pf), *options.drivers_autoprobe); !set) {
      return std::unexpected(set.error());
    }
  }
  if (count != state->num_vfs) {
    state = change_vf_count(paths, pf, state->num_vfs, count, options.settle);
    if (!state) return std::unexpected(state.error());
  }
  if (!options.bind_driver.empty()) {
    if (auto bound = bind_vfs(paths, *state, options); !bound) return std::unexpected(bound.error());
    return sriov_state(paths, pf);
  }
  return state;
}

}  // namespace pcie
