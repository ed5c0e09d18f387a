// DPDK's rte_memcpy (header-only, from Debian's libdpdk-dev) behind an ordinary function,
// compiled for AVX2 as DPDK builds it on current x86 servers. Used by copy_bench only.
#pragma once

#include <cstddef>

namespace pcie::bench {
void rte_memcpy_out_of_line(void* destination, const void* source, std::size_t length);
}
