// The NVMe reference driver (examples/nvme) on the testing kit's strict NVMe model
// (pcie/testing/nvme_model.h), no VM: where QEMU's nvme forgives a reused command
// identifier, a missing PRP2, a buffer reused under a timed-out command or queue memory
// freed under an enabled controller, the model records a violation, and every test here
// ends with none. The same driver runs on QEMU's nvme in tests/vm.
#include "examples/nvme/nvme_driver.h"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "pcie/testing/nvme_model.h"

namespace {

using namespace std::chrono_literals;
using examples::NvmeDriver;
using examples::NvmeOptions;
using pcie::testing::NvmeCompletionOrder;
using pcie::testing::NvmeModel;
using pcie::testing::NvmeModelOptions;
using pcie::testing::NvmeNamespace;

std::string listed(const std::vector<std::string>& texts) {
  std::string out;
  for (const auto& text : texts) out += "\n  " + text;
  return out;
}

std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>((i * 7 + seed * 29 + i / 512) & 0xff);
  return bytes;
}

// A namespace of 2 MiB in blocks of 1 << shift bytes.
NvmeModelOptions one_namespace(unsigned shift) {
  return {.namespaces = {NvmeNamespace{.id = 1, .blocks = (2u << 20) >> shift, .block_shift = shift}}};
}

#define EXPECT_NO_VIOLATIONS(model) EXPECT_TRUE((model).violations().empty()) << listed((model).violations())

TEST(NvmeDriverOnModel, IdentifiesAControllerWithoutNamespaces) {
  // QEMU's -device nvme without a drive: NN 256, none active.
  NvmeModel model({.namespaces = {}, .namespace_count = 256, .serial = "EMPTY1", .model = "no drive"});
  auto driver = NvmeDriver::open(model.open());
  ASSERT_TRUE(driver) << driver.error().message();
  const auto& identity = driver->identity();
  EXPECT_EQ(identity.serial, "EMPTY1");
  EXPECT_EQ(identity.model, "no drive");
  EXPECT_EQ(identity.version, 0x00010400u);
  EXPECT_TRUE(identity.active_namespaces.empty());
  EXPECT_EQ(identity.namespace_id, 0u);
  EXPECT_EQ(identity.block_size, 0u);
  auto read = driver->read(0, 1);
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().code, pcie::Errc::not_found);
  EXPECT_NO_VIOLATIONS(model);
}

TEST(NvmeDriverOnModel, IdentifiesTheFirstActiveNamespaceAndUsesOthersOnRequest) {
  NvmeModel model({.namespaces = {{.id = 5, .blocks = 64, .block_shift = 12}, {.id = 3, .blocks = 1000, .block_shift = 9}}});
  auto driver = NvmeDriver::open(model.open());
  ASSERT_TRUE(driver) << driver.error().message();
  EXPECT_EQ(driver->identity().active_namespaces, (std::vector<std::uint32_t>{3, 5}));
  EXPECT_EQ(driver->identity().namespace_id, 3u);
  EXPECT_EQ(driver->identity().namespace_blocks, 1000u);
  EXPECT_EQ(driver->identity().block_size, 512u);
  const auto data = pattern(4096, 1);
  ASSERT_TRUE(driver->write(7, data));  // namespace 3: 8 blocks
  EXPECT_EQ(model.read_blocks(3, 7, 8).value(), data);
  auto wrong = driver->read(0, 1, 4);  // inactive, in 1..NN
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, pcie::Errc::io_error);
  EXPECT_NE(wrong.error().reason.find("Invalid Field"), std::string::npos) << wrong.error().message();
  EXPECT_EQ(driver->controller_resets(), 0u) << "a refused command is not a reason to reset";
  EXPECT_NO_VIOLATIONS(model);
}

// Another active namespace is read and written in its own block size, not the first one's.
TEST(NvmeDriverOnModel, AnotherNamespaceIsUsedInItsOwnBlockSize) {
  NvmeModel model({.namespaces = {{.id = 5, .blocks = 64, .block_shift = 12}, {.id = 3, .blocks = 1000, .block_shift = 9}}});
  auto driver = NvmeDriver::open(model.open());
  ASSERT_TRUE(driver) << driver.error().message();
  ASSERT_EQ(driver->identity().block_size, 512u);  // namespace 3, the first active one
  const auto block = pattern(4096, 2);
  ASSERT_TRUE(driver->write(9, block, 5)) << "one 4 KiB block of namespace 5";
  EXPECT_EQ(model.read_blocks(5, 9, 1).value(), block);
  auto back = driver->read(9, 2, 5);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->size(), 2u * 4096);
  EXPECT_TRUE(std::equal(block.begin(), block.end(), back->begin()));
  auto partial = driver->write(0, pattern(512, 3), 5);
  ASSERT_FALSE(partial) << "512 bytes are not a whole block of namespace 5";
  EXPECT_EQ(partial.error().code, pcie::Errc::invalid_argument);
  EXPECT_EQ(driver->identity().namespace_id, 3u) << "the identified namespace stays the default";
  EXPECT_EQ(driver->identity().block_size, 512u);
  EXPECT_NO_VIOLATIONS(model);
}

// ---- Round trips of 1 block up to the largest transfer, and past it (split) ----

class NvmeDriverRoundTrip : public testing::TestWithParam<unsigned> {};

TEST_P(NvmeDriverRoundTrip, WritesAndReadsBackEverySize) {
  const unsigned shift = GetParam();
  NvmeModel model(one_namespace(shift));
  auto driver = NvmeDriver::open(model.open());
  ASSERT_TRUE(driver) << driver.error().message();
  const std::uint32_t block = 1u << shift;
  ASSERT_EQ(driver->identity().block_size, block);
  const auto max_blocks = static_cast<std::uint32_t>(driver->identity().max_transfer_bytes / block);
  ASSERT_GE(max_blocks, 1u);
  std::vector<std::uint32_t> sizes{1, 2, 3, max_blocks, max_blocks + 1, 3 * max_blocks};
  unsigned seed = 0;
  std::uint64_t lba = 0;
  for (const std::uint32_t blocks : sizes) {
    SCOPED_TRACE(testing::Message() << blocks << " blocks of " << block);
    if (blocks == 0 || std::size_t{blocks} * block > (1u << 20)) continue;  // the driver's data area
    const auto data = pattern(std::size_t{blocks} * block, ++seed);
    ASSERT_TRUE(driver->write(lba, data));
    EXPECT_EQ(model.read_blocks(1, lba, blocks).value(), data);
    auto back = driver->read(lba, blocks);
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, data);
    lba = (lba + blocks + 1) % (((2u << 20) >> shift) - 3 * max_blocks);
  }
  EXPECT_TRUE(driver->flush());
  EXPECT_EQ(driver->controller_resets(), 0u);
  EXPECT_NO_VIOLATIONS(model);
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, NvmeDriverRoundTrip, testing::Values(9u, 12u, 13u, 14u),
                         [](const auto& info) { return std::to_string(1u << info.param) + "B"; });

TEST(NvmeDriverOnModel, ATransferPastTheNamespaceIsRefusedByTheController) {
  NvmeModel model(one_namespace(9));
  auto driver = NvmeDriver::open(model.open());
  ASSERT_TRUE(driver) << driver.error().message();
  auto read = driver->read(driver->identity().namespace_blocks - 1, 2);
  ASSERT_FALSE(read);
  EXPECT_NE(read.error().reason.find("LBA Out of Range"), std::string::npos) << read.error().message();
  EXPECT_TRUE(driver->read(0, 1)) << "the driver still works";
  EXPECT_NO_VIOLATIONS(model);
}

// The peer-to-peer forms check their arguments before any command goes out. (Their PRPs
// into a peer's BAR run on QEMU's nvme and ivshmem in tests/vm/guest_nvme_test.cc: a
// window needs two VFIO devices.)
TEST(NvmeDriverOnModel, PeerTransfersRefuseWhatCannotBeDescribed) {
  NvmeModel model(one_namespace(9));
  auto driver = NvmeDriver::open(model.open());
  ASSERT_TRUE(driver) << driver.error().message();
  const std::size_t commands = model.completions().size();
  const pcie::PeerDmaWindow empty;
  for (const auto& result : {driver->read_to(0, 1, empty, 0), driver->write_from(0, 1, empty, 0)}) {
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().code, pcie::Errc::invalid_argument);
    EXPECT_NE(result.error().reason.find("the peer window is empty"), std::string::npos) << result.error().message();
  }
  EXPECT_EQ(model.completions().size(), commands) << "a refused transfer reached the controller";
  // The model has no controller memory buffer (CAP.CMBS 0).
  EXPECT_EQ(driver->read_to_cmb(0, 1, 0).error().code, pcie::Errc::invalid_argument);
  auto cmb = driver->enable_cmb();
  ASSERT_FALSE(cmb);
  EXPECT_EQ(cmb.error().code, pcie::Errc::not_supported);
  EXPECT_NE(cmb.error().reason.find("CAP.CMBS is 0"), std::string::npos) << cmb.error().message();
  EXPECT_EQ(driver->cmb_region(), nullptr);
  EXPECT_EQ(driver->block_size().value(), 512u);
  EXPECT_EQ(driver->block_size(7).value(), 512u) << "an inactive namespace: the identified one's, for the device to refuse";
  EXPECT_TRUE(driver->read(0, 1)) << "the driver still works";
  EXPECT_NO_VIOLATIONS(model);
}

// ---- random_reads (the bench path) with completions out of order ----

class NvmeDriverRandomReads
    : public testing::TestWithParam<std::tuple<NvmeCompletionOrder, unsigned /*depth*/, unsigned /*shift*/>> {};

TEST_P(NvmeDriverRandomReads, EveryCommandHasItsOwnIdentifierBufferAndPrps) {
  const auto [order, depth, shift] = GetParam();
  NvmeModel model(one_namespace(shift));
  auto driver = NvmeDriver::open(model.open(), {.io_queue_depth = 64});
  ASSERT_TRUE(driver) << driver.error().message();
  model.set_completion_policy({.order = order, .window = 6, .seed = depth * 31 + shift});
  auto elapsed = driver->random_reads(depth, 400, 11);
  ASSERT_TRUE(elapsed) << elapsed.error().message();
  EXPECT_EQ(driver->controller_resets(), 0u);
  std::size_t reads = 0;
  for (const auto& record : model.completions()) {
    if (!record.command.admin()) {
      ++reads;
      EXPECT_TRUE(record.ok()) << "CID " << record.command.command_id;
    }
  }
  EXPECT_EQ(reads, 400u);
  EXPECT_NO_VIOLATIONS(model);  // no CID reused while outstanding, PRP2 set for two-page reads, ...
}

INSTANTIATE_TEST_SUITE_P(
    OutOfOrder, NvmeDriverRandomReads,
    testing::Combine(testing::Values(NvmeCompletionOrder::random, NvmeCompletionOrder::reverse),
                     testing::Values(8u, 31u, 63u), testing::Values(12u, 13u, 14u)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param) == NvmeCompletionOrder::random ? "random" : "reverse") + "_qd" +
             std::to_string(std::get<1>(info.param)) + "_" + std::to_string(1u << std::get<2>(info.param)) + "B";
    });

// ---- A command that never completes ----

TEST(NvmeDriverOnModel, ATimedOutReadIsEndedByAControllerResetBeforeAnythingIsReused) {
  NvmeModel model(one_namespace(9));
  auto driver = NvmeDriver::open(model.open(), {.command_timeout = 100ms});
  ASSERT_TRUE(driver) << driver.error().message();
  const auto data = pattern(8 * 512, 5);
  ASSERT_TRUE(driver->write(10, data));
  const auto resets_before = model.resets();

  model.hold_next_io(1);
  const auto start = std::chrono::steady_clock::now();
  auto lost = driver->read(10, 8);
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().code, pcie::Errc::io_error) << lost.error().message();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  EXPECT_EQ(driver->controller_resets(), 1u);
  EXPECT_EQ(model.resets(), resets_before + 1) << "CC.EN 1 -> 0 ended the held read";
  EXPECT_EQ(model.io_submission_queues(), 1u) << "the I/O queues were re-created";

  // The next read reuses the data area (and perhaps the CID) the lost one had: fine only
  // because the reset ended it. Were it still outstanding, the model would flag the shared
  // buffer, and releasing it would DMA into the new read's data.
  auto back = driver->read(10, 8);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back, data);
  EXPECT_TRUE(model.held().empty());
  EXPECT_EQ(model.dropped(), 1u);
  EXPECT_EQ(model.release(), 0u) << "nothing left to complete or DMA";
  EXPECT_NO_VIOLATIONS(model);  // no CID reuse, no DMA into a reused buffer
}

TEST(NvmeDriverOnModel, ATimedOutBenchReadResetsAndTheNextRunWorks) {
  NvmeModel model(one_namespace(12));
  auto driver = NvmeDriver::open(model.open(), {.io_queue_depth = 32, .command_timeout = 100ms});
  ASSERT_TRUE(driver) << driver.error().message();
  model.set_completion_policy({.order = NvmeCompletionOrder::random, .window = 4, .seed = 3});
  model.hold_if([](const pcie::testing::NvmeCommandInfo& info) { return !info.admin() && info.lba % 7 == 3; });
  auto stuck = driver->random_reads(16, 200, 5);
  ASSERT_FALSE(stuck);
  EXPECT_GE(driver->controller_resets(), 1u);
  model.hold_if({});
  EXPECT_EQ(model.release(), 0u);
  auto again = driver->random_reads(16, 200, 6);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_NO_VIOLATIONS(model);
}

TEST(NvmeDriverOnModel, AHeldCommandReleasedLateAfterTheResetNeverRuns) {
  NvmeModel model(one_namespace(9));
  auto driver = NvmeDriver::open(model.open(), {.command_timeout = 100ms});
  ASSERT_TRUE(driver) << driver.error().message();
  ASSERT_TRUE(model.write_blocks(1, 0, pattern(512, 1)));
  model.hold_next_io(1);
  const auto resets_before = model.resets();
  std::optional<std::size_t> released;
  std::thread late([&] {  // the "device" finishes the read once the driver has reset it
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (model.resets() == resets_before && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    released = model.release();
  });
  EXPECT_FALSE(driver->read(0, 1));
  late.join();
  EXPECT_EQ(released, 0u);
  EXPECT_TRUE(driver->read(0, 1));
  EXPECT_NO_VIOLATIONS(model);
}

// ---- Interrupts ----

class NvmeDriverInterrupts : public testing::TestWithParam<bool /*msix*/> {};

TEST_P(NvmeDriverInterrupts, IoCompletionsSignalTheVector) {
  NvmeModelOptions options = one_namespace(12);
  options.device = GetParam() ? pcie::testing::DeviceModelOptions{.msix_vectors = 4}
                              : pcie::testing::DeviceModelOptions{.msi_vectors = 1, .msix_vectors = 0};
  NvmeModel model(options);
  auto driver = NvmeDriver::open(model.open(), {.interrupts = true});
  ASSERT_TRUE(driver) << driver.error().message();
  EXPECT_TRUE(model.device().interrupts_enabled(GetParam() ? pcie::IrqKind::msix : pcie::IrqKind::msi));
  const auto data = pattern(64 * 1024, 2);
  ASSERT_TRUE(driver->write(0, data));
  auto back = driver->read(0, 16);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back, data);
  model.set_completion_policy({.order = NvmeCompletionOrder::random, .window = 3, .seed = 9});
  auto bench = driver->random_reads(31, 200, 4);
  ASSERT_TRUE(bench) << bench.error().message();
  EXPECT_GT(driver->interrupts_seen(), 0u);
  EXPECT_NO_VIOLATIONS(model);
}

INSTANTIATE_TEST_SUITE_P(Kinds, NvmeDriverInterrupts, testing::Bool(),
                         [](const auto& info) { return std::string(info.param ? "msix" : "msi"); });

// ---- Letting go ----

TEST(NvmeDriverOnModel, DestroyingTheDriverStopsTheControllerBeforeItsMemoryGoes) {
  NvmeModel model(one_namespace(9));
  {
    auto driver = NvmeDriver::open(model.open(), {.interrupts = true});
    ASSERT_TRUE(driver) << driver.error().message();
    ASSERT_TRUE(driver->write(0, pattern(4096, 3)));
    EXPECT_TRUE(model.device().bus_master());
    EXPECT_GT(model.device().dma_mapped_bytes(), 0u);
  }
  EXPECT_FALSE(model.device().bus_master());
  EXPECT_FALSE(model.ready());
  EXPECT_EQ(model.device().dma_mapped_bytes(), 0u);
  EXPECT_EQ(model.device().dma_without_bus_master(), 0u);
  EXPECT_FALSE(model.device().interrupts_enabled(pcie::IrqKind::msix));
  EXPECT_NO_VIOLATIONS(model);  // in particular no live queue memory unmapped
}

TEST(NvmeDriverOnModel, AnExplicitShutdownThenDestructionIsClean) {
  NvmeModel model(one_namespace(9));
  {
    auto driver = NvmeDriver::open(model.open());
    ASSERT_TRUE(driver) << driver.error().message();
    EXPECT_TRUE(driver->shutdown());
    EXPECT_FALSE(driver->read(0, 1)) << "refused after shutdown";
  }
  EXPECT_FALSE(model.device().bus_master());
  EXPECT_NO_VIOLATIONS(model);
}

}  // namespace
