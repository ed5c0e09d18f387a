// DMA buffers: memory pinned and made reachable by a device, each knowing the bus address
// the device must use for it (bus_address()): an IOVA behind an IOMMU (VFIO type1), or the
// CPU physical address without one (pcie/dma_backend.h, opt-in). Memory comes from 1 GiB or
// 2 MiB huge pages when reserved (memfd with MFD_HUGETLB), else ordinary pages; the choice
// is reported. Every buffer is MADV_DONTFORK (a child must not share pinned pages), and it
// is unmapped from its backend before its memory is freed.
//
// One API over every backend: a driver takes a DmaAllocator and never asks which backend
// made it (DmaAllocator::create for a VFIO container, with or without an IOMMU;
// create_physical for UIO or the sysfs path).
//
// Lifetimes: a buffer keeps its backend (and through it the VFIO container's descriptor)
// alive, so it is unmapped through the right descriptor whenever it goes, even after the
// VfioContainer object: allocators and buffers may be destroyed in any order.
//
// Threads: a DmaAllocator may be used from several threads at once, and copies of it too;
// every allocator of a container hands out addresses from the container's one IOVA space,
// so buffers never overlap whichever allocator made them. A DmaPool may be shared by
// threads (see DmaPool for its per-thread caches). A DmaBuffer or DmaSlice is one owner's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <utility>

#include "pcie/dma_backend.h"
#include "pcie/bus_address.h"
#include "pcie/error.h"
#include "pcie/sys/mapping.h"

namespace pcie {

class VfioContainer;  // pcie/vfio.h

// How DmaAllocator::allocate (and a DmaPool's chunks) take memory and map it for the device.
struct DmaBufferOptions {
  // The last bus address the device can reach: dma_mask_limit(bits) of its DMA mask.
  std::uint64_t dma_limit = ~std::uint64_t{0};
  // The largest backing to use, tried first. Which others are tried, and how often, is the
  // backend's DmaBackend::memory_plan: behind an IOMMU every smaller one (huge pages only
  // for a buffer that fills half of one); with physical addresses only pages that can hold
  // the buffer contiguously, and below a DMA limit a 2 MiB page as the last resort even
  // after `pages` (physical_memory_plan in pcie/dma_backend.h).
  DmaBacking prefer = DmaBacking::huge_2m;
  bool device_reads = true;   // the device may read the buffer (host-to-device)
  bool device_writes = true;  // the device may write it (device-to-host)
  // The bus address's alignment, a power of two up to 1 GiB; 0: the backing's page size.
  // For controllers with pages above 4 KiB (NVMe CC.MPS, 64 KiB DMA segments). Behind an
  // IOMMU any backing can be aligned so; with physical addresses only a page as large
  // (smaller backings are skipped: reserve huge pages).
  std::uint64_t bus_alignment = 0;
};


// A pinned buffer the device can reach. Move-only; destruction unmaps it from its backend
// (the IOMMU, giving its IOVA back), then frees the memory.
class DmaBuffer {
 public:
  // An empty buffer (as after release()): no memory, size 0, bus address 0; for a driver's
  // queue struct built step by step.
  DmaBuffer() = default;
  // False for an empty buffer (default-constructed, moved from or released): it holds no
  // memory and data() is nullptr.
  bool valid() const { return memory_.valid(); }
  // Move-only: the memory and its mapping for the device go to the new object, and the
  // moved-from buffer is empty (valid() false, size 0, bus address 0).
  DmaBuffer(DmaBuffer&& other) noexcept;
  // Releases this buffer (as release(), its error ignored), then takes `other`'s memory;
  // `other` is left empty, with size 0.
  DmaBuffer& operator=(DmaBuffer&& other) noexcept;
  ~DmaBuffer();

  // The buffer's first byte in this process's address space; nullptr when empty.
  std::byte* data() const { return memory_.data(); }
  // The bytes asked for at allocate() (the mapping behind them may be rounded up to a page).
  std::size_t size() const { return size_; }
  // data() and size() as one span: what a ring (pcie/queue.h) is built on.
  std::span<std::byte> bytes() const { return {data(), size()}; }
  // The address the device must use for the first byte, whatever the backend.
  BusAddress bus_address() const { return iova_; }
  Iova iova() const { return iova_; }  // the same as bus_address()
  // The CPU physical address of the first byte when the backend hands out physical
  // addresses (no IOMMU); nullopt behind an IOMMU, where the device never sees it.
  std::optional<std::uint64_t> physical_address() const;
  // The pages the memory is made of (4 KiB, 2 MiB or 1 GiB: see DmaBufferOptions::prefer).
  DmaBacking backing() const { return backing_; }
  // The backend that made the buffer reachable ("VFIO type1 IOMMU", ...).
  std::string_view backend_name() const;

  // The bus address of a CPU pointer inside this buffer; out_of_range for any other pointer.
  Result<Iova> iova_of(const void* cpu_pointer) const;

  // Call after the CPU wrote data the device will read, and before the device wrote data
  // the CPU will read. On x86 (coherent DMA) these are fences; the calls keep driver code
  // correct on hosts that need cache maintenance.
  void sync_for_device() const;
  // The second of the pair above: call after the device wrote (a completion seen) and
  // before the CPU reads what it wrote (an lfence on x86).
  void sync_for_cpu() const;

  // Unmaps from the backend now and reports what the kernel said (the destructor ignores
  // it); the memory is freed either way, and the buffer is left empty (valid() false, size
  // 0, bus address 0). On an empty buffer, does nothing and succeeds.
  Result<void> release();

 private:
  friend class DmaAllocator;
  DmaBuffer(std::shared_ptr<DmaBackend> backend, Mapping memory, std::size_t size, Iova iova, DmaBacking backing)
      : backend_(std::move(backend)), memory_(std::move(memory)), size_(size), iova_(iova), backing_(backing) {}

  std::shared_ptr<DmaBackend> backend_;  // declared first: outlives the memory
  Mapping memory_;
  std::size_t size_ = 0;  // what the user asked for; the mapping may be rounded up
  Iova iova_;
  DmaBacking backing_ = DmaBacking::pages;
};

// Allocates DMA buffers through one backend. Thread-safe; copies share the backend (and a
// container's IOVA space: see the top of this header).
class DmaAllocator {
 public:
  // Buffers for the devices of a VFIO container. With an IOMMU (type1) the container must
  // have a group attached (open a device first): the IOVA ranges come from its IOMMU;
  // fails with not_supported otherwise. A no-IOMMU container
  // (VfioContainer::open_without_iommu) gives physical-address buffers, the user having
  // acknowledged what that means when opening it.
  static Result<DmaAllocator> create(const VfioContainer& container);
  // Physical-address buffers for a device without an IOMMU (UIO, the sysfs path, VFIO
  // no-IOMMU): the device can reach all of memory (pcie/dma_backend.h). Needs root
  // (pagemap shows physical addresses only to CAP_SYS_ADMIN); allocate() says so.
  static DmaAllocator create_physical(DeviceMayReachAllMemory acknowledgement, const PhysicalDmaOptions& options = {});
  // Over a backend of the caller's own (a test double, a future IOMMU interface).
  static DmaAllocator create(std::shared_ptr<DmaBackend> backend) { return DmaAllocator(std::move(backend)); }

  // A buffer of `size` bytes (rounded up to its page size), zeroed. Errors: invalid_argument
  // (size 0, a bus alignment that is not a power of two up to 1 GiB), out_of_range (no
  // IOVA space, or no memory, below options.dma_limit), permission_denied with how much
  // RLIMIT_MEMLOCK it needs (counting what the whole process has locked already) or why
  // physical addresses are hidden, busy when the kernel's mapping limit is reached,
  // not_supported when no backing gives physically contiguous memory, or before any memory
  // is taken when the backend's plan cannot meet the request (physical addresses aligned
  // beyond 4 KiB without huge pages allowed) or names no memory, and the memory's own
  // error (io_error with the errno, ENOMEM when none is free) when no page of any planned
  // backing could be had.
  Result<DmaBuffer> allocate(std::size_t size, const DmaBufferOptions& options = {}) const;

  // Bytes currently mapped through the backend, by every allocator of it.
  std::uint64_t mapped_bytes() const;
  // The backend buffers are made through (its name, whether its addresses are physical).
  const DmaBackend& backend() const { return *backend_; }

 private:
  explicit DmaAllocator(std::shared_ptr<DmaBackend> backend) : backend_(std::move(backend)) {}
  std::shared_ptr<DmaBackend> backend_;
};

namespace detail {
struct DmaPoolState;
}

// A small DMA buffer carved from a pool's chunk. Move-only; gives its range back to the
// pool when destroyed (the chunk stays mapped for the next one). A slice keeps its pool's
// chunks mapped, even after the last DmaPool handle is gone.
class DmaSlice {
 public:
  // Move-only: the moved-from slice is empty (data() nullptr, size 0, bus address 0) and
  // gives nothing back when destroyed.
  DmaSlice(DmaSlice&& other) noexcept
      : pool_(std::exchange(other.pool_, nullptr)), data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)), iova_(std::exchange(other.iova_, Iova{})), chunk_(other.chunk_),
        size_class_(other.size_class_) {}
  // Gives this slice's range back to its pool, then takes `other`'s; `other` is left empty.
  DmaSlice& operator=(DmaSlice&& other) noexcept;
  ~DmaSlice() {
    if (pool_ != nullptr) give_back();
  }

  // The slice's first byte in this process's address space; nullptr for a moved-from slice.
  std::byte* data() const { return data_; }
  // The bytes asked for at DmaPool::allocate (the slot behind them may be larger).
  std::size_t size() const { return size_; }
  // data() and size() as one span: what a ring (pcie/queue.h) is built on.
  std::span<std::byte> bytes() const { return {data_, size_}; }
  // The address the device must use for the first byte (aligned as allocate() was asked).
  BusAddress bus_address() const { return iova_; }
  Iova iova() const { return iova_; }  // the same as bus_address()
  // The bus address of a CPU pointer inside this slice; out_of_range for any other pointer.
  Result<Iova> iova_of(const void* cpu_pointer) const;
  // As DmaBuffer's: after the CPU wrote what the device will read, and before reading
  // what the device wrote.
  void sync_for_device() const;
  // As DmaBuffer::sync_for_cpu: before the CPU reads what the device wrote.
  void sync_for_cpu() const;

 private:
  friend class DmaPool;
  DmaSlice(detail::DmaPoolState* pool, std::byte* data, std::size_t size, Iova iova, std::uint32_t chunk,
           std::uint32_t size_class)
      : pool_(pool), data_(data), size_(size), iova_(iova), chunk_(chunk), size_class_(size_class) {}
  // Gives the range back to pool_ (which must be set) and deletes the pool's state when it
  // was the last user of a pool without handles.
  void give_back();

  detail::DmaPoolState* pool_ = nullptr;  // counted in the pool's state, under its lock
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  Iova iova_;
  std::uint32_t chunk_ = 0;       // the chunk of a slice from the first-fit path
  std::uint32_t size_class_ = 0;  // its size class's index, or the first-fit path's
};

// Small buffers (descriptors, rings, completion records) without a page and a backend
// mapping each: the pool maps chunks of `chunk_size` bytes through a DmaAllocator and
// hands out aligned pieces of them. Chunks stay mapped until the pool and all its slices
// are gone. Copies of a DmaPool share one pool.
//
// Threads: a pool may be used from several threads at once. Each thread keeps up to 16 free
// slots of each size class (at most 16 KiB of a class) of each of the last four pools it
// allocated from or released to, so that most allocations and releases of class slices
// take no lock, as malloc's per-thread cache does; the slots go back to the pool in
// batches, when the thread exits, when it turns to a fifth pool, and when the pool's last
// handle goes (taken back from every thread, idle ones too, with membarrier(2)). Where
// membarrier's private expedited command is refused (Linux before 4.14, some sandboxes)
// threads keep no slots and every allocation and release takes the pool's lock; where it
// is refused only after threads began to keep slots, a closed pool stays mapped until those
// threads exit or turn to other pools. In a child of fork(), which should exec or _exit,
// no thread keeps slots.
//
// Sizes: a slice of up to 4 KiB whose alignment is at most its size rounded up to a power
// of two (at least 64 B) takes a slot of that size class, and a released slot is kept for
// the next slice of its class rather than merged with its neighbours: the chunks grow to
// about the sum of each class's peak use. Other slices are placed first-fit and merged
// back on release.
class DmaPool {
 public:
  // A pool whose chunks `allocator` maps with `options`; maps nothing yet. Fails with
  // invalid_argument when chunk_size is not a nonzero multiple of 4096.
  static Result<DmaPool> create(const DmaAllocator& allocator, const DmaBufferOptions& options = {},
                                std::size_t chunk_size = 64 * 1024);

  // `size` bytes aligned to `alignment` (a power of two up to 4096, in CPU and bus
  // addresses), zeroed. Fails with invalid_argument for a size of 0 or larger than a chunk,
  // or another alignment; or, when no chunk has room, with DmaAllocator::allocate's error
  // for a new chunk.
  // A moved-from pool fails with invalid_argument.
  Result<DmaSlice> allocate(std::size_t size, std::size_t alignment = 64);

  // Chunks mapped so far; 0 for a moved-from pool.
  std::size_t chunk_count() const;

 private:
  explicit DmaPool(std::shared_ptr<detail::DmaPoolState> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::DmaPoolState> state_;
};

// The bus addresses of the device pages that bytes [offset, offset + length) of a DMA
// buffer or slice (bus address `base`, `size` bytes) cover, for a device that takes memory
// as a list of pages of `page_size` bytes: the first entry is the range's own start (with
// its offset into its page), each further one the start of the next page: NVMe's PRP
// entries (NVMe base spec 2.0, 4.1.1), a scatter list of page-sized segments. A DMA buffer
// is contiguous in bus addresses, so the entries are computed, not looked up. Writes up
// to out.size() entries and returns how many the range needs; fails with invalid_argument
// (page_size not a power of two in [512, 1 GiB], length 0), out_of_range (the range is
// not inside the buffer, overflow-safe), or out_of_range when `out` is too small (its
// error says how many entries are needed).
Result<std::size_t> device_pages(BusAddress base, std::size_t size, std::size_t offset, std::size_t length,
                                 std::uint64_t page_size, std::span<std::uint64_t> out);
// As above, for the bytes of `buffer` (its bus address and size).
inline Result<std::size_t> device_pages(const DmaBuffer& buffer, std::size_t offset, std::size_t length,
                                        std::uint64_t page_size, std::span<std::uint64_t> out) {
  return device_pages(buffer.bus_address(), buffer.size(), offset, length, page_size, out);
}
// As above, for a DmaSlice from a pool.
inline Result<std::size_t> device_pages(const DmaSlice& slice, std::size_t offset, std::size_t length,
                                        std::uint64_t page_size, std::span<std::uint64_t> out) {
  return device_pages(slice.bus_address(), slice.size(), offset, length, page_size, out);
}

}  // namespace pcie
