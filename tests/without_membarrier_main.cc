// A GoogleTest main that first makes every membarrier(2) call of the process fail with
// ENOSYS (tests/refuse_membarrier.h), then runs the tests linked with it: the DMA pool's
// tests then cover the path where threads keep no slot caches (src/dma/pool.cc).
#include <gtest/gtest.h>

#include "tests/refuse_membarrier.h"

int main(int argc, char** argv) {
  if (!pcie::sandboxing::refuse_membarrier()) return 1;
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
