// DMA buffers: memory pinned and mapped into a VFIO container's IOMMU, each knowing the bus
// address (IOVA) a device must use for it. Memory comes from 1 GiB or 2 MiB huge pages
// when reserved (memfd with MFD_HUGETLB), else ordinary pages; the choice is reported.
// Every buffer is MADV_DONTFORK (a child must not share pinned pages), and its IOMMU mapping
// is removed before its memory is freed.
//
// Lifetimes: a buffer keeps its container (and so the IOMMU mapping's context) open, so it
// is unmapped through the right descriptor whenever it goes, even after the VfioContainer
// object: allocators and buffers may be destroyed in any order.
//
// Threads: a DmaAllocator may be used from several threads at once, and copies of it too;
// every allocator of a container hands out addresses from the container's one IOVA space,
// so buffers never overlap whichever allocator made them. A DmaPool may be shared by
// threads (it takes a lock per allocation). A DmaBuffer or DmaSlice is one owner's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "pcie/error.h"
#include "pcie/iova.h"
#include "pcie/sys/mapping.h"
#include "pcie/vfio.h"

namespace pcie {

namespace detail {
struct VfioContainerState;
}

enum class DmaBacking {
  pages,     // ordinary 4 KiB pages
  huge_2m,   // 2 MiB huge pages
  huge_1g,   // 1 GiB huge pages
};
std::string_view dma_backing_name(DmaBacking backing);

struct DmaBufferOptions {
  // The last bus address the device can reach: dma_mask_limit(bits) of its DMA mask.
  std::uint64_t dma_limit = ~std::uint64_t{0};
  // Backing to try first; smaller ones are tried after it. `pages` never tries huge pages.
  DmaBacking prefer = DmaBacking::huge_2m;
  bool device_reads = true;   // the device may read the buffer (host-to-device)
  bool device_writes = true;  // the device may write it (device-to-host)
};


// A pinned, IOMMU-mapped buffer. Move-only; destruction unmaps it from the IOMMU, gives its
// IOVA back, then frees the memory.
class DmaBuffer {
 public:
  DmaBuffer(DmaBuffer&&) noexcept = default;
  DmaBuffer& operator=(DmaBuffer&& other) noexcept;
  ~DmaBuffer();

  std::byte* data() const { return memory_.data(); }
  std::size_t size() const { return size_; }
  Iova iova() const { return iova_; }
  DmaBacking backing() const { return backing_; }

  // The bus address of a CPU pointer inside this buffer; out_of_range for any other pointer.
  Result<Iova> iova_of(const void* cpu_pointer) const;

  // Call after the CPU wrote data the device will read, and before the device wrote data
  // the CPU will read. On x86 (coherent DMA) these are fences; the calls keep driver code
  // correct on hosts that need cache maintenance.
  void sync_for_device() const;
  void sync_for_cpu() const;

  // Unmaps from the IOMMU now and reports what the kernel said (the destructor ignores it).
  Result<void> release();

 private:
  friend class DmaAllocator;
  DmaBuffer(std::shared_ptr<detail::VfioContainerState> container, Mapping memory, std::size_t size, Iova iova,
            DmaBacking backing)
      : container_(std::move(container)), memory_(std::move(memory)), size_(size), iova_(iova), backing_(backing) {}

  std::shared_ptr<detail::VfioContainerState> container_;  // declared first: outlives the memory
  Mapping memory_;
  std::size_t size_ = 0;  // what the user asked for; the mapping may be rounded up
  Iova iova_;
  DmaBacking backing_ = DmaBacking::pages;
};

// Allocates DMA buffers in one container. Thread-safe; copies share the container's IOVA
// space (see the top of this header).
class DmaAllocator {
 public:
  // The container must have a group attached (open a device first): the IOVA ranges come
  // from its IOMMU. Fails with not_supported otherwise.
  static Result<DmaAllocator> create(const VfioContainer& container);

  // A buffer of `size` bytes (rounded up to its page size), zeroed. Errors: invalid_argument
  // (size 0), out_of_range (no IOVA space below options.dma_limit), permission_denied with
  // how much RLIMIT_MEMLOCK it needs (counting what the whole process has locked already),
  // busy when the kernel's mapping limit is reached.
  Result<DmaBuffer> allocate(std::size_t size, const DmaBufferOptions& options = {}) const;

  // Bytes currently mapped into the container's IOMMU, by every allocator of it.
  std::uint64_t mapped_bytes() const;

 private:
  explicit DmaAllocator(std::shared_ptr<detail::VfioContainerState> container) : container_(std::move(container)) {}
  std::shared_ptr<detail::VfioContainerState> container_;
};

namespace detail {
struct DmaPoolState;
}

// A small DMA buffer carved from a pool's chunk. Move-only; gives its range back to the
// pool when destroyed (the chunk stays mapped for the next one).
class DmaSlice {
 public:
  DmaSlice(DmaSlice&&) noexcept = default;
  DmaSlice& operator=(DmaSlice&& other) noexcept;
  ~DmaSlice();

  std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  Iova iova() const { return iova_; }
  // The bus address of a CPU pointer inside this slice; out_of_range for any other pointer.
  Result<Iova> iova_of(const void* cpu_pointer) const;

 private:
  friend class DmaPool;
  DmaSlice(std::shared_ptr<detail::DmaPoolState> pool, std::size_t chunk, std::uint64_t offset, std::byte* data,
           std::size_t size, Iova iova)
      : pool_(std::move(pool)), chunk_(chunk), offset_(offset), data_(data), size_(size), iova_(iova) {}
  void give_back();

  std::shared_ptr<detail::DmaPoolState> pool_;
  std::size_t chunk_ = 0;
  std::uint64_t offset_ = 0;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  Iova iova_;
};

// Small buffers (descriptors, rings, completion records) without a page and an IOMMU
// mapping each: the pool maps chunks of `chunk_size` bytes through a DmaAllocator and
// hands out aligned pieces of them. Chunks stay mapped until the pool and all its slices
// are gone. Thread-safe: allocate() and a slice's destruction take the pool's lock.
class DmaPool {
 public:
  static Result<DmaPool> create(const DmaAllocator& allocator, const DmaBufferOptions& options = {},
                                std::size_t chunk_size = 64 * 1024);

  // `size` bytes aligned to `alignment` (a power of two, at most the chunk's page), zeroed.
  // Fails with invalid_argument for a size of 0 or larger than a chunk.
  Result<DmaSlice> allocate(std::size_t size, std::size_t alignment = 64);

  std::size_t chunk_count() const;

 private:
  explicit DmaPool(std::shared_ptr<detail::DmaPoolState> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::DmaPoolState> state_;
};

}  // namespace pcie
