// The XDMA example driver (examples/dma-engine) on the testing kit's XDMA-shaped engine
// model (pcie/testing/dma_engine_model.h), no FPGA: data moved both ways through the
// driver's descriptor chains and bus addresses, completion by write-back and by interrupt,
// the engine's errors and hostile reports, work left in flight at a timeout and at the
// driver's end, and the model's own protocol checks.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "examples/dma-engine/dma_engine_driver.h"
#include "pcie/testing/dma_engine_model.h"

namespace {

using namespace std::chrono_literals;
using examples::DmaEngineDriver;
using examples::DmaEngineOptions;
using pcie::Errc;
using pcie::testing::DeviceModel;
using pcie::testing::DmaEngineModel;
using pcie::testing::DmaEngineModelOptions;
using Completion = DmaEngineOptions::Completion;
using Direction = DmaEngineModel::Direction;

constexpr std::size_t kCardBytes = 8 << 20;

std::vector<std::byte> random_bytes(std::size_t size, unsigned seed) {
  std::mt19937 generator(seed);
  std::vector<std::byte> bytes(size);
  for (auto& byte : bytes) byte = static_cast<std::byte>(generator());
  return bytes;
}

// The model on a fake device with MSI-X for both channels (and MSI), and 8 MiB of card memory.
DmaEngineModel make_model(DmaEngineModelOptions options = {}, unsigned msix_vectors = 2) {
  if (options.card_memory_bytes == DmaEngineModelOptions{}.card_memory_bytes) options.card_memory_bytes = kCardBytes;
  return DmaEngineModel(DeviceModel({.msix_vectors = msix_vectors}), options);
}

std::string joined(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  return text;
}

bool mentions(const pcie::Error& error, const std::string& text) {
  return error.message().find(text) != std::string::npos;
}

TEST(DmaEngineDriver, OpenChecksTheEngineAndSetsItUp) {
  auto model = make_model();
  EXPECT_FALSE(model.device().bus_master());
  auto driver = DmaEngineDriver::open(model.device().open());
  ASSERT_TRUE(driver) << driver.error().message();
  EXPECT_TRUE(driver->armed());
  EXPECT_TRUE(model.device().bus_master());
  EXPECT_FALSE(model.device().interrupts_enabled(pcie::IrqKind::msix)) << "polled by default";
  // The write-back addresses lie in memory the driver mapped.
  const std::uint64_t h2c = model.bar().get32(0x88) | std::uint64_t{model.bar().get32(0x8c)} << 32;
  const std::uint64_t c2h = model.bar().get32(0x1088) | std::uint64_t{model.bar().get32(0x108c)} << 32;
  EXPECT_NE(h2c, 0u);
  EXPECT_EQ(c2h, h2c + 64);
  EXPECT_TRUE(model.violations().empty()) << joined(model.violations());
}

TEST(DmaEngineDriver, RefusesADeviceThatIsNotXdmaAndTouchesNothing) {
  DeviceModel fake;
  pcie::testing::RegisterModel& bar = fake.add_bar(0, 0x10000);
  bar.set32(0x0, 0x12345678);
  auto driver = DmaEngineDriver::open(fake.open());
  ASSERT_FALSE(driver);
  EXPECT_EQ(driver.error().code, Errc::not_supported);
  EXPECT_TRUE(mentions(driver.error(), "0x12345678")) << driver.error().message();
  EXPECT_FALSE(fake.bus_master());
  for (const auto& access : bar.log()) EXPECT_FALSE(access.write) << access.offset;
  // A channel the engine does not have is refused the same way.
  auto model = make_model();
  EXPECT_EQ(DmaEngineDriver::open(model.device().open(), {.channel = 1}).error().code, Errc::not_supported);
  EXPECT_EQ(DmaEngineDriver::open(model.device().open(), {.channel = 4}).error().code, Errc::invalid_argument);
  EXPECT_EQ(DmaEngineDriver::open(model.device().open(), {.max_descriptor_bytes = 0}).error().code,
            Errc::invalid_argument);
}

// A chain a previous owner left running: open() stops the channel and waits until the
// engine has finished the descriptor in progress before it takes the device.
TEST(DmaEngineDriver, OpenStopsAnEngineAPreviousOwnerLeftRunning) {
  auto model = make_model({.execution = DmaEngineModelOptions::Execution::on_advance});
  auto previous = model.device().open();
  auto bar = previous->open_bar(0).value();
  auto memory = previous->dma_allocator()->allocate(4096).value();
  ASSERT_TRUE(previous->enable_bus_master());
  auto* descriptors = reinterpret_cast<examples::xdma::Descriptor*>(memory.data());
  for (std::uint32_t i = 0; i < 2; ++i) {
    descriptors[i] = {.control = examples::xdma::kMagic | (i == 1 ? examples::xdma::kStop : 0u),
                      .length = 64,
                      .source = memory.bus_address().value + 2048,
                      .destination = 64u * i,
                      .next = i == 1 ? 0 : memory.bus_address().value + 32};
  }
  ASSERT_TRUE(bar->write(pcie::Width::bits32, 0x4080, static_cast<std::uint32_t>(memory.bus_address().value)));
  ASSERT_TRUE(bar->write(pcie::Width::bits32, 0x4084, static_cast<std::uint32_t>(memory.bus_address().value >> 32)));
  ASSERT_TRUE(bar->write(pcie::Width::bits32, 0x04, 1));
  ASSERT_TRUE(model.busy(Direction::h2c));
  std::thread engine([&] {
    std::this_thread::sleep_for(50ms);
    model.advance();  // Run was cleared: the descriptor in progress completes, the channel stops
  });
  const auto start = std::chrono::steady_clock::now();
  auto driver = DmaEngineDriver::open(model.device().open());
  engine.join();
  ASSERT_TRUE(driver) << driver.error().message();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 40ms) << "open waited for the engine";
  EXPECT_EQ(model.completed_count(Direction::h2c), 1u) << "stopped after the descriptor in progress";
  EXPECT_FALSE(model.busy(Direction::h2c));
  EXPECT_TRUE(model.violations().empty()) << joined(model.violations());
}

// ---- Round trips ----

struct Mode {
  const char* name;
  Completion completion;
  std::size_t max_descriptor_bytes;
};

class RoundTrips : public ::testing::TestWithParam<Mode> {};

// H2C then C2H over a table of sizes (1 byte to several MiB, runs of the bounce buffer and
// odd remainders) at odd card offsets: what the card holds and what comes back both match.
TEST_P(RoundTrips, ManySizesAtOddOffsetsComeBackAsWritten) {
  const Mode& mode = GetParam();
  auto model = make_model();
  auto driver = DmaEngineDriver::open(
      model.device().open(), {.completion = mode.completion, .max_descriptor_bytes = mode.max_descriptor_bytes});
  ASSERT_TRUE(driver) << driver.error().message();
  struct Case {
    std::size_t size;
    std::uint64_t offset;
  };
  unsigned seed = 1;
  for (const Case& c : {Case{1, 0}, Case{1, 4095}, Case{2, 7}, Case{31, 1}, Case{4095, 4097}, Case{4096, 0},
                        Case{4097, 13}, Case{65535, 3}, Case{65536, 65536}, Case{65537, 1}, Case{(1 << 20) - 1, 5},
                        Case{1 << 20, 0}, Case{(1 << 20) + 13, 77}, Case{(3 << 20) + 5, 1023}}) {
    const auto data = random_bytes(c.size, seed++);
    auto written = driver->write(c.offset, data);
    ASSERT_TRUE(written) << c.size << " at " << c.offset << ": " << written.error().message();
    EXPECT_EQ(model.card_memory(c.offset, c.size).value(), data) << c.size << " at " << c.offset;
    auto back = driver->read(c.offset, c.size);
    ASSERT_TRUE(back) << c.size << " at " << c.offset << ": " << back.error().message();
    EXPECT_EQ(*back, data) << c.size << " at " << c.offset;
  }
  EXPECT_TRUE(model.violations().empty()) << joined(model.violations());
  EXPECT_EQ(model.device().dma_faults(), 0u);
  if (mode.completion == Completion::interrupt) {
    EXPECT_GT(driver->interrupts_seen(), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, RoundTrips,
                         ::testing::Values(Mode{"polled", Completion::polled, 64 * 1024},
                                           Mode{"interrupt", Completion::interrupt, 64 * 1024},
                                           // 256 descriptors a run: chains of 8 KiB, across 4 KiB pages
                                           Mode{"polled_small_descriptors", Completion::polled, 4096},
                                           Mode{"interrupt_odd_descriptors", Completion::interrupt, 1000}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(DmaEngineDriver, InterruptsFallBackToMsi) {
  auto model = make_model({}, 0);  // no MSI-X
  auto driver = DmaEngineDriver::open(model.device().open(), {.completion = Completion::interrupt});
  ASSERT_TRUE(driver) << driver.error().message();
  EXPECT_TRUE(model.device().interrupts_enabled(pcie::IrqKind::msi));
  const auto data = random_bytes(10000, 7);
  ASSERT_TRUE(driver->write(100, data));
  EXPECT_EQ(driver->read(100, data.size()).value(), data);
  EXPECT_GT(driver->interrupts_seen(), 0u);
}

// Chains the driver builds cross 4 KiB pages, and the C2H chain starts mid-page (after the
// H2C chain's 1049 descriptors): the model checks every block it fetches (none across a
// page, next pointers that agree with Nxt_adj, Stop only at a block's end).
TEST(DmaEngineDriver, DescriptorChainsAcross4KiBPagesKeepXdmasRules) {
  auto model = make_model();
  auto driver = DmaEngineDriver::open(model.device().open(), {.max_descriptor_bytes = 1000});
  ASSERT_TRUE(driver);
  const auto data = random_bytes(600 * 1000 + 3, 3);  // 601 descriptors: about 19 KiB of chain
  const auto before = model.descriptors_completed();
  ASSERT_TRUE(driver->write(0, data));
  EXPECT_EQ(model.completed_count(Direction::h2c), 601u);
  EXPECT_EQ(model.card_memory(0, data.size()).value(), data);
  EXPECT_EQ(driver->read(0, data.size()).value(), data);
  EXPECT_EQ(model.completed_count(Direction::c2h), 601u);
  EXPECT_EQ(model.descriptors_completed() - before, 2 * 601u);
  EXPECT_TRUE(model.violations().empty()) << joined(model.violations());
  // Each channel's first block as the engine was told: at most 63 more, within the page.
  for (const std::uint64_t sgdma : {0x4000u, 0x5000u}) {
    const std::uint32_t adjacent = model.bar().get32(sgdma + 0x88);
    const std::uint64_t first = model.bar().get32(sgdma + 0x80) | std::uint64_t{model.bar().get32(sgdma + 0x84)} << 32;
    EXPECT_LE(adjacent, 63u);
    EXPECT_EQ(first / 4096, (first + 32 * (adjacent + 1) - 1) / 4096) << std::hex << first;
    if (sgdma == 0x5000) {
      EXPECT_EQ(first % 4096, 1049u * 32 % 4096) << "the C2H chain starts mid-page";
    }
  }
}

// ---- Errors and recovery ----

class ErrorModes : public ::testing::TestWithParam<Completion> {};

TEST_P(ErrorModes, ACorruptedDescriptorStopsTheChannelThenRearmRecovers) {
  auto model = make_model();
  auto driver = DmaEngineDriver::open(model.device().open(), {.completion = GetParam(), .max_descriptor_bytes = 4096});
  ASSERT_TRUE(driver);
  const auto data = random_bytes(5 * 4096, 11);
  model.flip_magic(Direction::h2c, 0, 2);
  auto failed = driver->write(0, data);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, Errc::io_error);
  EXPECT_TRUE(mentions(failed.error(), "H2C0")) << failed.error().message();
  EXPECT_TRUE(mentions(failed.error(), "magic stopped")) << failed.error().message();
  EXPECT_EQ(model.completed_count(Direction::h2c), 2u) << "the engine stopped at the bad descriptor";
  EXPECT_FALSE(driver->armed());
  // Refused until re-armed, and nothing reaches the device meanwhile.
  model.bar().clear_log();
  auto refused = driver->read(0, 16);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::busy);
  EXPECT_TRUE(model.bar().log().empty());
  ASSERT_TRUE(driver->rearm());
  ASSERT_TRUE(driver->write(0, data));
  EXPECT_EQ(driver->read(0, data.size()).value(), data);
  EXPECT_TRUE(model.violations().empty()) << joined(model.violations());
}

TEST_P(ErrorModes, ACardAddressOutsideCardMemoryIsTheEnginesDecodeError) {
  auto model = make_model();
  auto driver = DmaEngineDriver::open(model.device().open(), {.completion = GetParam()});
  ASSERT_TRUE(driver);
  auto failed = driver->write(kCardBytes - 10, random_bytes(100, 1));
  ASSERT_FALSE(failed);
  EXPECT_TRUE(mentions(failed.error(), "write error: AXI decode")) << failed.error().message();
  ASSERT_TRUE(driver->rearm());
  auto read = driver->read(kCardBytes, 1);
  ASSERT_FALSE(read);
  EXPECT_TRUE(mentions(read.error(), "C2H0")) << read.error().message();
  EXPECT_TRUE(mentions(read.error(), "read error: AXI decode")) << read.error().message();
}

INSTANTIATE_TEST_SUITE_P(Completions, ErrorModes, ::testing::Values(Completion::polled, Completion::interrupt),
                         [](const auto& info) {
                           return std::string(info.param == Completion::polled ? "polled" : "interrupt");
                         });

TEST(DmaEngineDriver, AHostileWriteBackCountIsMalformed) {
  auto model = make_model();
  auto driver = DmaEngineDriver::open(model.device().open());
  ASSERT_TRUE(driver);
  ASSERT_TRUE(driver->write(0, random_bytes(4096, 5)));
  // Counts beyond the chain (one descriptor here): far ahead, and one too many.
  for (const std::uint32_t word : {0x00ffffffu, 0x00000002u}) {
    model.write_back_instead(Direction::c2h, 0, word);
    auto read = driver->read(0, 4096);
    ASSERT_FALSE(read);
    EXPECT_EQ(read.error().code, Errc::malformed) << read.error().message();
    EXPECT_TRUE(mentions(read.error(), "C2H0")) << read.error().message();
    EXPECT_TRUE(mentions(read.error(), "stray write-back")) << read.error().message();
    ASSERT_TRUE(driver->rearm());
  }
  // The error bit without an error status.
  model.write_back_instead(Direction::h2c, 0, 0x80000001u);
  auto written = driver->write(0, random_bytes(10, 6));
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, Errc::io_error);
  EXPECT_TRUE(mentions(written.error(), "write-back reports an error")) << written.error().message();
  ASSERT_TRUE(driver->rearm());
  EXPECT_TRUE(driver->read(0, 4096));
}

TEST(DmaEngineDriver, EmptyAndWrappingTransfersAreRefusedBeforeTheDevice) {
  auto model = make_model();
  auto driver = DmaEngineDriver::open(model.device().open());
  ASSERT_TRUE(driver);
  model.bar().clear_log();
  EXPECT_EQ(driver->write(0, {}).error().code, Errc::invalid_argument);
  EXPECT_EQ(driver->read(0, 0).error().code, Errc::invalid_argument);
  EXPECT_EQ(driver->read(~0ull - 2, 8).error().code, Errc::out_of_range);
  EXPECT_TRUE(model.bar().log().empty());
  EXPECT_TRUE(driver->armed()) << "refused arguments do not disarm";
}

// ---- Work in flight ----

// The engine moves only when the test says: a driver's waits see work in flight.
TEST(DmaEngineDriver, WaitsForAnEngineThatTakesItsTime) {
  for (const Completion completion : {Completion::polled, Completion::interrupt}) {
    auto model = make_model({.execution = DmaEngineModelOptions::Execution::on_advance});
    auto driver = DmaEngineDriver::open(model.device().open(),
                                        {.completion = completion, .max_descriptor_bytes = 4096, .timeout = 10s});
    ASSERT_TRUE(driver);
    std::atomic<bool> done{false};
    std::thread engine([&] {
      while (!done) {
        model.advance(3);
        std::this_thread::sleep_for(200us);
      }
    });
    const auto data = random_bytes(100 * 1024 + 7, 9);
    auto written = driver->write(12345, data);
    auto back = driver->read(12345, data.size());
    done = true;
    engine.join();
    ASSERT_TRUE(written) << written.error().message();
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(*back, data);
    EXPECT_TRUE(model.violations().empty()) << joined(model.violations());
  }
}

// A run that does not finish in time: the driver stops the channel and is disarmed; at its
// end the Quiescer waits for the engine to finish the descriptor in progress before bus
// mastering goes off and the buffers are freed.
TEST(DmaEngineDriver, ATimeoutWithWorkInFlightIsQuiescedBeforeTheBuffersGo) {
  auto model = make_model({.execution = DmaEngineModelOptions::Execution::on_advance});
  std::optional<DmaEngineDriver> driver;
  {
    auto opened = DmaEngineDriver::open(model.device().open(), {.timeout = 50ms, .quiesce_timeout = 5s});
    ASSERT_TRUE(opened);
    driver.emplace(std::move(*opened));
  }
  auto written = driver->write(0, random_bytes(200000, 4));
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, Errc::io_error);
  EXPECT_TRUE(mentions(written.error(), "timed out")) << written.error().message();
  EXPECT_TRUE(mentions(written.error(), "busy")) << written.error().message();
  EXPECT_TRUE(model.busy(Direction::h2c)) << "still in flight";
  EXPECT_EQ(driver->read(0, 1).error().code, Errc::busy);
  std::atomic<bool> bus_master_while_busy{false};
  std::thread engine([&] {
    std::this_thread::sleep_for(100ms);
    bus_master_while_busy = !model.device().bus_master();
    model.advance();  // Run was cleared: the descriptor in progress completes, the channel stops
  });
  const auto start = std::chrono::steady_clock::now();
  driver.reset();  // the Quiescer: stop, wait for Busy to clear, bus mastering off
  engine.join();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms) << "the quiesce waited for the engine";
  EXPECT_FALSE(bus_master_while_busy) << "bus mastering went off while the engine was busy";
  EXPECT_FALSE(model.busy(Direction::h2c));
  EXPECT_FALSE(model.device().bus_master());
  EXPECT_EQ(model.device().dma_mapped_bytes(), 0u);
  EXPECT_TRUE(model.violations().empty()) << joined(model.violations());
}

// An engine that never stops: the quiesce gives up after its timeout and turns bus
// mastering off all the same; the engine's next DMA is refused, and the strict model says
// what that means.
TEST(DmaEngineDriver, AStuckEngineLosesBusMasteringAnyway) {
  auto model = make_model({.execution = DmaEngineModelOptions::Execution::on_advance});
  auto driver = DmaEngineDriver::open(model.device().open(), {.timeout = 20ms, .quiesce_timeout = 50ms});
  ASSERT_TRUE(driver);
  ASSERT_FALSE(driver->read(0, 100000));
  EXPECT_EQ(driver->rearm().error().code, Errc::io_error) << "still busy: stays disarmed";
  EXPECT_FALSE(driver->armed());
  auto closed = driver->close();
  ASSERT_FALSE(closed);
  EXPECT_EQ(closed.error().code, Errc::io_error);
  EXPECT_FALSE(model.device().bus_master());
  EXPECT_EQ(driver->write(0, random_bytes(1, 1)).error().code, Errc::device_disabled);
  EXPECT_TRUE(model.violations().empty()) << joined(model.violations());
  model.advance();  // the engine's next DMA (its descriptor fetch, its write-back) is refused
  const auto violations = model.violations();
  ASSERT_FALSE(violations.empty());
  for (const auto& line : violations) EXPECT_NE(line.find("bus mastering off"), std::string::npos) << line;
}

// ---- The model's own checks ----

TEST(DmaEngineModel, RecordsProtocolViolations) {
  auto model = make_model();
  auto device = model.device().open();
  auto bar = device->open_bar(0).value();
  ASSERT_TRUE(device->enable_bus_master());
  ASSERT_TRUE(bar->write(pcie::Width::bits32, 0x04, 1));    // Run with no descriptor address
  ASSERT_TRUE(bar->write(pcie::Width::bits64, 0x4080, 0));  // a 64-bit access
  const auto violations = model.violations();
  ASSERT_EQ(violations.size(), 3u) << joined(violations);
  EXPECT_NE(violations[0].find("no descriptor address"), std::string::npos) << violations[0];
  EXPECT_NE(violations[1].find("bus address 0x0"), std::string::npos) << violations[1];
  EXPECT_NE(violations[2].find("32-bit"), std::string::npos) << violations[2];
  // The fetch from address 0 faulted: the channel stopped (with a descriptor error, had
  // Control asked for it to be logged).
  EXPECT_FALSE(model.busy(Direction::h2c));
  EXPECT_EQ(model.device().dma_faults(), 1u);
}

// A chain built by hand with Nxt_adj claiming descriptors across a 4 KiB page, and a
// descriptor rewritten while the channel runs.
TEST(DmaEngineModel, CatchesBadAdjacentBlocksAndDescriptorsChangedInFlight) {
  auto model = make_model({.execution = DmaEngineModelOptions::Execution::on_advance});
  auto device = model.device().open();
  auto bar = device->open_bar(0).value();
  auto memory = device->dma_allocator()->allocate(3 * 4096).value();
  ASSERT_TRUE(device->enable_bus_master());
  auto* descriptors =
      reinterpret_cast<examples::xdma::Descriptor*>(memory.data() + 4096 - 64);  // 2 before the page end
  const std::uint64_t bus = memory.bus_address().value + 4096 - 64;
  for (std::uint32_t i = 0; i < 4; ++i) {
    descriptors[i] = {.control = examples::xdma::kMagic | (i == 3 ? examples::xdma::kStop : 0),
                      .length = 16,
                      .source = memory.bus_address().value + 8192,
                      .destination = 16u * i,
                      .next = i == 3 ? 0 : bus + 32 * (i + 1)};
  }
  ASSERT_TRUE(bar->write(pcie::Width::bits32, 0x4080, static_cast<std::uint32_t>(bus)));
  ASSERT_TRUE(bar->write(pcie::Width::bits32, 0x4084, static_cast<std::uint32_t>(bus >> 32)));
  ASSERT_TRUE(bar->write(pcie::Width::bits32, 0x4088, 3));  // 4 adjacent from 64 bytes before the page end
  ASSERT_TRUE(bar->write(pcie::Width::bits32, 0x04, 1));
  model.advance(1);
  descriptors[0].length = 32;  // in flight: the engine already has it
  model.run_until_idle();
  const std::string all = joined(model.violations());
  EXPECT_NE(all.find("crosses a 4 KiB boundary"), std::string::npos) << all;
  EXPECT_NE(all.find("changed while the channel was running"), std::string::npos) << all;
  EXPECT_EQ(model.completed_count(Direction::h2c), 4u);
}

}  // namespace
