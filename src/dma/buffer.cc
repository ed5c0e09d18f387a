// DmaAllocator and DmaBuffer over any DmaBackend: memory first, of the backings the
// backend's plan names (huge pages when the size warrants and they are reserved), then the
// backend makes it reachable.
#include <linux/memfd.h>
#include <sys/mman.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "pcie/barriers.h"
#include "pcie/dma.h"
#include "src/sys/syscalls.h"

namespace pcie {

namespace {

Result<Mapping> allocate_memory(std::size_t rounded, DmaBacking backing) {
  if (backing == DmaBacking::pages) return sys::map_anonymous(rounded);
  const unsigned flags = MFD_HUGETLB | (backing == DmaBacking::huge_1g ? MFD_HUGE_1GB : MFD_HUGE_2MB);
  return sys::map_memfd(rounded, flags, "pcie-dma");
}

Result<void> check_request(std::size_t size, std::uint64_t alignment) {
  if (size == 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "allocate DMA buffer", "0 bytes", "the size is zero"));
  }
  constexpr std::uint64_t kMaxBusAlignment = 1ull << 30;
  if (alignment != 0 && ((alignment & (alignment - 1)) != 0 || alignment > kMaxBusAlignment)) {
    return std::unexpected(make_error(Errc::invalid_argument, "allocate DMA buffer",
                                      fmt::format("{} bytes aligned to {:#x}", size, alignment),
                                      "the bus alignment must be a power of two up to 1 GiB (or 0)"));
  }
  return {};
}

struct MappedMemory {
  Mapping memory;
  BusAddress address;
};

// The error to report when no backing works. A backend's refusal of memory found earlier
// says more than the lack of memory of a fallback, so once the backend has refused, a
// lack of memory does not replace its error.
struct BackingSearch {
  Error last_error;
  bool refused_by_backend = false;
};

// Memory of one step of the backend's plan that the backend could map; nullopt when the
// next step should be tried (why is in `search`), an error when the allocation must give up.
Result<std::optional<MappedMemory>> map_step(DmaBackend& backend, std::size_t rounded, DmaMemoryStep step,
                                             const DmaMapRequest& request, BackingSearch& search) {
  // Memory the backend refused for where it lies (physical pages above the DMA limit)
  // is held until this step is given up, so that the next piece is other pages.
  std::vector<Mapping> rejected;
  const unsigned pieces = std::clamp(step.pieces, 1u, 64u);
  for (unsigned piece = 0; piece < pieces; ++piece) {
    auto mapping = allocate_memory(rounded, step.backing);
    if (!mapping) {
      if (!search.refused_by_backend) search.last_error = mapping.error();
      break;  // no (more) memory of this backing: try the next
    }
    // A child process must not share pages the device writes into (after fork they would
    // be copy-on-write, and the parent could end up with a copy the device never sees).
    if (auto advised = sys::advise(*mapping, MADV_DONTFORK, "DMA buffer"); !advised) {
      return std::unexpected(advised.error());
    }
    auto address = backend.map(*mapping, request);
    if (address) return std::optional<MappedMemory>(MappedMemory{std::move(*mapping), *address});
    search.last_error = address.error();
    search.refused_by_backend = true;
    if (!backend.retry_with_other_memory(search.last_error)) {
      // The backend refused for a reason other memory does not change (limits, rights),
      // except that a smaller backing needs less IOVA alignment.
      if (search.last_error.code == Errc::out_of_range) break;
      return std::unexpected(search.last_error);
    }
    rejected.push_back(std::move(*mapping));
  }
  return std::optional<MappedMemory>{};
}

}  // namespace

DmaAllocator DmaAllocator::create_physical(DeviceMayReachAllMemory acknowledgement, const PhysicalDmaOptions& options) {
  return DmaAllocator(make_physical_dma_backend(acknowledgement, options));
}

std::uint64_t DmaAllocator::mapped_bytes() const { return backend_->mapped_bytes(); }

Result<DmaBuffer> DmaAllocator::allocate(std::size_t size, const DmaBufferOptions& options) const {
  if (auto valid = check_request(size, options.bus_alignment); !valid) return std::unexpected(valid.error());
  DmaMapRequest request{.dma_limit = options.dma_limit,
                        .device_reads = options.device_reads,
                        .device_writes = options.device_writes,
                        .bus_alignment = options.bus_alignment};
  // Which memory, and how many pieces of it, is the backend's to say (DmaBackend::memory_plan).
  auto plan = backend_->memory_plan(size, options.prefer, request);
  if (!plan) return std::unexpected(plan.error());
  if (plan->empty()) {
    return std::unexpected(make_error(Errc::not_supported, "allocate DMA buffer",
                                      fmt::format("{} bytes ({})", size, backend_->name()),
                                      fmt::format("the backend names no memory to try for {} or smaller pages",
                                                  dma_backing_name(options.prefer)),
                                      "allow larger pages (DmaBufferOptions::prefer)"));
  }
  BackingSearch search{make_error(Errc::io_error, "allocate DMA buffer", fmt::format("{} bytes", size), "no backing")};
  for (const DmaMemoryStep& step : *plan) {
    const std::uint64_t page = dma_backing_page_size(step.backing);
    if (size > ~std::uint64_t{0} - page) break;
    const std::size_t rounded = (size + page - 1) / page * page;
    request.page_size = page;
    auto mapped = map_step(*backend_, rounded, step, request, search);
    if (!mapped) return std::unexpected(mapped.error());
    if (*mapped) return DmaBuffer(backend_, std::move((*mapped)->memory), size, (*mapped)->address, step.backing);
  }
  return std::unexpected(search.last_error);
}

DmaBuffer::DmaBuffer(DmaBuffer&& other) noexcept
    : backend_(std::move(other.backend_)), memory_(std::move(other.memory_)), size_(std::exchange(other.size_, 0)),
      iova_(std::exchange(other.iova_, Iova{})), backing_(std::exchange(other.backing_, DmaBacking::pages)) {}

DmaBuffer& DmaBuffer::operator=(DmaBuffer&& other) noexcept {
  if (this != &other) {
    (void)release();
    backend_ = std::move(other.backend_);
    memory_ = std::move(other.memory_);
    size_ = std::exchange(other.size_, 0);
    iova_ = std::exchange(other.iova_, Iova{});
    backing_ = std::exchange(other.backing_, DmaBacking::pages);
  }
  return *this;
}

DmaBuffer::~DmaBuffer() { (void)release(); }

Result<void> DmaBuffer::release() {
  if (!backend_ || !memory_.valid()) return {};
  Result<void> result = backend_->unmap(iova_, memory_);
  // The memory goes after the backend's mapping. If the unmap failed, the kernel still
  // holds its pins on these pages, so the device cannot reach memory that is reused.
  memory_ = Mapping();
  backend_.reset();
  size_ = 0;  // empty as a default-constructed buffer: bytes() is an empty span
  iova_ = Iova{};
  backing_ = DmaBacking::pages;
  return result;
}

std::optional<std::uint64_t> DmaBuffer::physical_address() const {
  if (!backend_ || !backend_->bus_addresses_are_physical()) return std::nullopt;
  return iova_.value;
}

std::string_view DmaBuffer::backend_name() const { return backend_ ? backend_->name() : std::string_view("released"); }

Result<Iova> DmaBuffer::iova_of(const void* cpu_pointer) const {
  const auto* pointer = static_cast<const std::byte*>(cpu_pointer);
  if (pointer < data() || pointer >= data() + size_) {
    return std::unexpected(make_error(Errc::out_of_range, "translate to bus address", fmt::format("{}", cpu_pointer),
                                      fmt::format("not inside this DMA buffer ({} bytes at {})", size_,
                                                  static_cast<const void*>(data()))));
  }
  return Iova{iova_.value + static_cast<std::uint64_t>(pointer - data())};
}

void DmaBuffer::sync_for_device() const { barrier_before_doorbell(); }
void DmaBuffer::sync_for_cpu() const { barrier_before_reading_dma_data(); }

}  // namespace pcie
