#include "src/vfio/iommufd_backend.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <string>

#include "src/sys/iommufd_ioctls.h"
#include "src/sys/syscalls.h"
#include "src/vfio/iommu_backend.h"
#include "src/vfio/memlock.h"

namespace pcie::detail {

// iommufd accounts pinned pages against RLIMIT_MEMLOCK per user by default (user->locked_vm,
// summed over every process of the user, and shown nowhere per process), or per process
// when a privileged program switched the iommufd to it (IOMMU_OPTION_RLIMIT_MODE, into
// mm->locked_vm, VmLck); either way this process's pins show in VmPin.
Error explain_iommufd_map_failure(const Error& raw, int iommufd, std::uint64_t bytes) {
  Error error = raw;
  error.operation = "map DMA buffer (iommufd)";
  if (raw.sys_errno != ENOMEM) return error;
  const std::uint64_t limit = sys::memlock_limit();
  const auto mode = sys::iommufd::rlimit_mode(iommufd);
  const auto pinned = process_status_bytes("VmPin");
  const std::uint64_t already = pinned.value_or(0);
  const std::string mine = pinned ? fmt::format("{} bytes", already) : "an unknown amount";
  error.code = Errc::permission_denied;
  if (mode && *mode == sys::iommufd::RlimitMode::per_process) {
    const auto locked = process_status_bytes("VmLck");
    error.reason = fmt::format("the kernel refused to pin {} bytes: RLIMIT_MEMLOCK is {} bytes, counted per process "
                               "(this iommufd's accounting mode), and this process has {} locked already (VmLck)",
                               bytes, limit, locked ? fmt::format("{} bytes", *locked) : "an unknown amount");
    const std::uint64_t need = locked.value_or(0) + bytes;
    error.hint = fmt::format("raise it to at least {} bytes (ulimit -l {}, or LimitMEMLOCK= for a service), or run "
                             "with CAP_IPC_LOCK",
                             need, (need + 1023) / 1024);
  } else {
    const std::uint64_t need = already + bytes;
    error.reason = fmt::format("the kernel refused to pin {} bytes: RLIMIT_MEMLOCK is {} bytes and iommufd counts it "
                               "per user, over every process of uid {} together; this process has {} pinned "
                               "already (VmPin)",
                               bytes, limit, ::getuid(), mine);
    error.hint = fmt::format("raise it to at least {} bytes, plus what other processes of uid {} pin (ulimit -l {}, or "
                             "LimitMEMLOCK= for a service), or run with CAP_IPC_LOCK; or use the type1 backend "
                             "(PCIE_VFIO_BACKEND=type1), which counts per process",
                             need, ::getuid(), (need + 1023) / 1024);
  }
  return error;
}

namespace {

class IommufdBackend final : public IommuDmaBackend {
 public:
  using IommuDmaBackend::IommuDmaBackend;
  std::string_view name() const override { return "iommufd IOAS"; }

 private:
  Result<void> map_in_kernel(std::uint64_t vaddr, Iova iova, std::uint64_t length,
                             const DmaMapRequest& request) override {
    auto mapped = sys::iommufd::ioas_map_fixed(container().fd.get(), container().ioas, vaddr, iova.value, length,
                                               request.device_reads, request.device_writes);
    if (!mapped) return std::unexpected(explain_iommufd_map_failure(mapped.error(), container().fd.get(), length));
    return {};
  }
  Result<std::uint64_t> unmap_in_kernel(Iova iova, std::uint64_t length) override {
    return sys::iommufd::ioas_unmap(container().fd.get(), container().ioas, iova.value, length);
  }
};

}  // namespace

std::shared_ptr<DmaBackend> make_iommufd_backend(std::shared_ptr<VfioContainerState> container) {
  return std::make_shared<IommufdBackend>(std::move(container));
}

}  // namespace pcie::detail
