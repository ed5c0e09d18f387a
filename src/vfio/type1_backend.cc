#include "src/vfio/type1_backend.h"

#include <fmt/format.h>

#include <mutex>
#include <optional>
#include <string>

#include "src/sys/syscalls.h"
#include "src/sys/vfio_ioctls.h"
#include "src/vfio/iommu_backend.h"
#include "src/vfio/memlock.h"

namespace pcie::detail {
namespace {

Error explain_map_failure(const Error& raw, std::uint64_t bytes) {
  Error error = raw;
  error.operation = "map DMA buffer";
  if (raw.sys_errno == ENOMEM) {
    const std::uint64_t limit = sys::memlock_limit();
    // vfio_iommu_type1 accounts pinned pages in locked_vm (VmLck), with every other mlock
    // of the process.
    const auto locked = process_status_bytes("VmLck");
    const std::uint64_t already = locked.value_or(0);
    error.code = Errc::permission_denied;
    error.reason = fmt::format("the kernel refused to pin {} bytes: RLIMIT_MEMLOCK is {} bytes and this process "
                               "has {} locked already{}",
                               bytes, limit, locked ? std::to_string(already) + " bytes" : "an unknown amount",
                               locked ? " (VmLck, all its DMA buffers and mlocks)" : "");
    error.hint = fmt::format("raise it to at least {} bytes (ulimit -l {}, or LimitMEMLOCK= for a service), "
                             "or run with CAP_IPC_LOCK",
                             already + bytes, (already + bytes + 1023) / 1024);
  } else if (raw.sys_errno == ENOSPC) {
    error.code = Errc::busy;
    error.reason = "the kernel's limit on DMA mappings per container is reached";
    error.hint = "use fewer, larger buffers (or pool small ones), or raise vfio_iommu_type1's dma_entry_limit";
  }
  return error;
}

class VfioType1Backend final : public IommuDmaBackend {
 public:
  using IommuDmaBackend::IommuDmaBackend;
  std::string_view name() const override { return "VFIO type1 IOMMU"; }

 private:
  Result<void> map_in_kernel(std::uint64_t vaddr, Iova iova, std::uint64_t length,
                             const DmaMapRequest& request) override {
    auto mapped = sys::vfio::map_dma(container().fd.get(), vaddr, iova.value, length, request.device_reads,
                                     request.device_writes);
    if (!mapped) return std::unexpected(explain_map_failure(mapped.error(), length));
    return {};
  }
  Result<std::uint64_t> unmap_in_kernel(Iova iova, std::uint64_t length) override {
    return sys::vfio::unmap_dma(container().fd.get(), iova.value, length);
  }
};

}  // namespace

std::shared_ptr<DmaBackend> make_vfio_type1_backend(std::shared_ptr<VfioContainerState> container) {
  return std::make_shared<VfioType1Backend>(std::move(container));
}

}  // namespace pcie::detail
