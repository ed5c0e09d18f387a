// Only C headers here: this file is compiled with -mavx2, and C++ inline functions it
// instantiated could be shared (COMDAT) with the rest of the program.
#include "bench/rte_memcpy_wrapper.h"

#include <rte_memcpy.h>

namespace pcie::bench {
void rte_memcpy_out_of_line(void* destination, const void* source, std::size_t length) {
  rte_memcpy(destination, source, length);
}
}  // namespace pcie::bench
