#include "src/vfio/type1_backend.h"

#include <fmt/format.h>

#include <mutex>
#include <optional>
#include <string>

#include "src/sys/syscalls.h"
#include "src/sys/vfio_ioctls.h"
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

class VfioType1Backend final : public DmaBackend {
 public:
  explicit VfioType1Backend(std::shared_ptr<VfioContainerState> container) : container_(std::move(container)) {}

  std::string_view name() const override { return "VFIO type1 IOMMU"; }
  bool bus_addresses_are_physical() const override { return false; }

  Result<BusAddress> map(const Mapping& memory, const DmaMapRequest& request) override {
    const std::uint64_t length = memory.size();
    // Aligned to the page size, so the IOMMU can use large pages for it too. The address is
    // taken under the container's lock; the ioctl comes after it.
    Result<Iova> iova = [&] {
      std::lock_guard lock(container_->mutex);
      return container_->iovas->allocate(length, request.page_size, request.dma_limit);
    }();
    if (!iova) return std::unexpected(iova.error());
    auto mapped = sys::vfio::map_dma(container_->fd.get(), reinterpret_cast<std::uint64_t>(memory.data()), iova->value,
                                     length, request.device_reads, request.device_writes);
    std::lock_guard lock(container_->mutex);
    if (!mapped) {
      container_->iovas->release(*iova, length);
      return std::unexpected(explain_map_failure(mapped.error(), length));
    }
    container_->mapped_bytes += length;
    return *iova;
  }

  bool retry_with_other_memory(const Error& error) const override {
    // Out of IOVA space for this page size: a smaller backing needs less alignment.
    return error.code == Errc::out_of_range;
  }

  Result<void> unmap(BusAddress address, const Mapping& memory) override {
    const std::uint64_t length = memory.size();
    auto unmapped = sys::vfio::unmap_dma(container_->fd.get(), address.value, length);
    if (!unmapped) return std::unexpected(unmapped.error());
    // Only an IOVA the kernel no longer maps may be handed out again.
    {
      std::lock_guard lock(container_->mutex);
      container_->iovas->release(address, length);
      container_->mapped_bytes -= std::min(container_->mapped_bytes, length);
    }
    if (*unmapped != length) {
      // 0 means the kernel had nothing mapped there: our bookkeeping and the kernel's differ.
      return std::unexpected(make_error(Errc::io_error, "unmap DMA buffer", fmt::format("IOVA {:#x}", address.value),
                                        fmt::format("the kernel unmapped {} of {} bytes", *unmapped, length)));
    }
    return {};
  }

  std::uint64_t mapped_bytes() const override {
    std::lock_guard lock(container_->mutex);
    return container_->mapped_bytes;
  }

 private:
  std::shared_ptr<VfioContainerState> container_;
};

}  // namespace

std::shared_ptr<DmaBackend> make_vfio_type1_backend(std::shared_ptr<VfioContainerState> container) {
  return std::make_shared<VfioType1Backend>(std::move(container));
}

}  // namespace pcie::detail
