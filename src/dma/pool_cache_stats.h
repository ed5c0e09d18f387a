// What the DMA pools' per-thread slot caches hold (src/dma/pool.cc), for tests that must
// see the caches at work, not only correct results (which the locked path also gives).
// Private to the library.
#pragma once

#include <cstddef>

namespace pcie::detail {

// Whether threads keep slot caches in this process (membarrier(2)'s private expedited
// command registered); false where it was refused. Registers it on the first call.
bool dma_pool_thread_caches_enabled();

// The slots this thread's cache holds now, of every pool; 0 where caches are off.
std::size_t dma_pool_slots_cached_by_this_thread();

}  // namespace pcie::detail
