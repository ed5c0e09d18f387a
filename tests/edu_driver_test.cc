// The edu reference driver's logic on the testing kit (pcie/testing/device_model.h), no VM:
// a model of QEMU's edu (docs/specs/edu.rst) behind a DeviceModel, whose DMA engine moves
// bytes through the driver's bus addresses and whose interrupts are eventfds. The same
// driver runs on the real edu in tests/vm (guest_vfio_test, guest_noiommu_test).
#include "examples/edu/edu_driver.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>

#include "pcie/testing/device_model.h"

namespace {

using namespace std::chrono_literals;
using pcie::Width;
using pcie::testing::DeviceModel;
using pcie::testing::DeviceModelOptions;
using pcie::testing::RegisterAccess;
using pcie::testing::RegisterModel;
namespace edu = examples::edu;

// QEMU's edu, as far as the driver uses it.
class EduModel {
 public:
  explicit EduModel(const DeviceModelOptions& options = {}) : fake_(options), bar_(fake_.add_bar(0, 1 << 20)) {
    bar_.set32(edu::kIdentification, 0x010000ed);
    bar_.read_only(edu::kIdentification, Width::bits32);
    bar_.on_write(edu::kLiveness, [](const RegisterAccess& access) { return ~access.value & 0xffffffffu; });
    bar_.on_write(edu::kFactorial, [this](const RegisterAccess& access) {
      std::uint32_t result = 1;
      for (std::uint64_t i = 2; i <= access.value; ++i) result *= static_cast<std::uint32_t>(i);
      if (bar_.get32(edu::kStatus) & edu::kStatusIrqWhenDone) raise(edu::kIrqFactorial);
      return result;
    });
    bar_.on_write(edu::kStatus, [this](const RegisterAccess& access) {  // bit 0 is the device's
      return (access.value & ~std::uint64_t{edu::kStatusComputing}) | (bar_.get32(edu::kStatus) & edu::kStatusComputing);
    });
    bar_.read_only(edu::kIrqStatus, Width::bits32);
    bar_.on_write(edu::kIrqRaise, [this](const RegisterAccess& access) {
      raise(static_cast<std::uint32_t>(access.value));
      return 0;
    });
    bar_.on_write(edu::kIrqAcknowledge, [this](const RegisterAccess& access) {
      bar_.set32(edu::kIrqStatus, bar_.get32(edu::kIrqStatus) & ~static_cast<std::uint32_t>(access.value));
      return 0;
    });
    bar_.on_write(edu::kDmaCommand, [this](const RegisterAccess& access) { return run_dma(access.value); });
  }

  DeviceModel& fake() { return fake_; }
  RegisterModel& bar() { return bar_; }
  std::array<std::byte, edu::kInternalBufferSize>& buffer() { return buffer_; }
  unsigned dma_errors() const { return dma_errors_; }
  std::unique_ptr<pcie::Device> device() { return fake_.open(); }

 private:
  void raise(std::uint32_t status) {
    bar_.set32(edu::kIrqStatus, bar_.get32(edu::kIrqStatus) | status);
    if (!fake_.fire(pcie::IrqKind::msi)) fake_.fire(pcie::IrqKind::intx);
  }

  // Runs a DMA at once; returns the command register's value afterwards (not running).
  std::uint64_t run_dma(std::uint64_t command) {
    if (!(command & edu::kDmaStart)) return command;
    const std::uint64_t mask = (std::uint64_t{1} << edu::kDmaMaskBits) - 1;  // edu truncates
    const std::uint64_t source = bar_.get64(edu::kDmaSource) & mask;
    const std::uint64_t destination = bar_.get64(edu::kDmaDestination) & mask;
    const std::uint64_t count = bar_.get64(edu::kDmaCount);
    const bool to_ram = command & edu::kDmaToRam;
    const std::uint64_t internal = to_ram ? source : destination;
    if (internal < edu::kInternalBuffer || count > edu::kInternalBufferSize ||
        internal - edu::kInternalBuffer > edu::kInternalBufferSize - count) {
      ++dma_errors_;
    } else {
      const auto inside = std::span(buffer_).subspan(internal - edu::kInternalBuffer, count);
      auto moved = to_ram ? fake_.dma_write(destination, inside) : fake_.dma_read(source, inside);
      if (!moved) ++dma_errors_;
    }
    if (command & edu::kDmaIrq) raise(edu::kIrqDma);
    return command & ~edu::kDmaStart;
  }

  DeviceModel fake_;
  RegisterModel& bar_;
  std::array<std::byte, edu::kInternalBufferSize> buffer_{};
  unsigned dma_errors_ = 0;
};

TEST(EduDriverOnModel, OpenSetsTheDeviceUpInOrder) {
  EduModel model;
  EXPECT_FALSE(model.fake().bus_master());
  auto driver = examples::EduDriver::open(model.device());
  ASSERT_TRUE(driver) << driver.error().message();
  EXPECT_TRUE(model.fake().bus_master());
  EXPECT_TRUE(model.fake().interrupts_enabled(pcie::IrqKind::msi));
  EXPECT_TRUE(model.fake().interrupts_enabled(pcie::IrqKind::request));
  EXPECT_EQ(driver->interrupt_kind(), pcie::IrqKind::msi);
  EXPECT_GE(model.fake().dma_mapped_bytes(), edu::kInternalBufferSize);
  EXPECT_LT(driver->buffer().bus_address().value + driver->buffer().size(), std::uint64_t{1} << edu::kDmaMaskBits);
  EXPECT_EQ(driver->identification(), 0x010000edu);
  EXPECT_EQ(driver->liveness(0x12345678), ~0x12345678u);
}

TEST(EduDriverOnModel, RefusesADeviceThatIsNotEduAndTouchesNothing) {
  EduModel model;
  model.bar().set32(edu::kIdentification, 0x12345678);
  auto driver = examples::EduDriver::open(model.device());
  ASSERT_FALSE(driver);
  EXPECT_EQ(driver.error().code, pcie::Errc::not_supported);
  EXPECT_FALSE(model.fake().bus_master());
  for (const RegisterAccess& access : model.bar().log()) EXPECT_FALSE(access.write) << access.offset;
}

// edu has no reset: a DMA a previous owner started must end before bus mastering is on.
TEST(EduDriverOnModel, OpenWaitsForAPreviousOwnersDmaBeforeBusMastering) {
  EduModel model;
  model.bar().set64(edu::kDmaCommand, edu::kDmaStart);
  std::atomic<bool> bus_master_while_running{false};
  std::thread previous_owner([&] {
    std::this_thread::sleep_for(100ms);
    bus_master_while_running = model.fake().bus_master();
    model.bar().set64(edu::kDmaCommand, 0);
  });
  const auto start = std::chrono::steady_clock::now();
  auto driver = examples::EduDriver::open(model.device());
  previous_owner.join();
  ASSERT_TRUE(driver) << driver.error().message();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  EXPECT_FALSE(bus_master_while_running);
  EXPECT_TRUE(model.fake().bus_master());
}

TEST(EduDriverOnModel, QuiesceGivesUpOnAStuckDevice) {
  EduModel model;
  model.bar().set32(edu::kStatus, edu::kStatusComputing);
  auto region = model.bar().open_region();
  auto idle = examples::EduDriver::quiesce(*region, 50ms);
  ASSERT_FALSE(idle);
  EXPECT_EQ(idle.error().code, pcie::Errc::io_error);
  model.bar().set32(edu::kStatus, 0);
  EXPECT_TRUE(examples::EduDriver::quiesce(*region, 50ms));
}

TEST(EduDriverOnModel, FactorialAsksForTheInterruptAndAcknowledgesIt) {
  EduModel model;
  auto driver = examples::EduDriver::open(model.device());
  ASSERT_TRUE(driver);
  model.bar().clear_log();
  EXPECT_EQ(driver->factorial(10).value_or(0), 3628800u);
  EXPECT_EQ(driver->factorial(12).value_or(0), 479001600u);
  EXPECT_EQ(model.bar().get32(edu::kIrqStatus), 0u) << "the interrupt was not acknowledged";
  // The order the device needs: interrupt-when-done before the operand.
  const auto log = model.bar().log();
  ASSERT_GE(log.size(), 2u);
  EXPECT_TRUE(log[0].write && log[0].offset == edu::kStatus && log[0].value == edu::kStatusIrqWhenDone);
  EXPECT_TRUE(log[1].write && log[1].offset == edu::kFactorial && log[1].value == 10);
  EXPECT_TRUE(driver->raise_interrupt(0x40));
}

TEST(EduDriverOnModel, DmaRoundTripGoesThroughTheDriversBusAddresses) {
  EduModel model;
  auto driver = examples::EduDriver::open(model.device());
  ASSERT_TRUE(driver);
  std::vector<std::byte> data(1000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = std::byte(i * 7 + 3);
  ASSERT_TRUE(driver->dma_to_device(data));
  EXPECT_EQ(std::memcmp(model.buffer().data(), data.data(), data.size()), 0);
  EXPECT_EQ(model.bar().get64(edu::kDmaSource), driver->buffer().bus_address().value);
  std::memset(driver->buffer().data(), 0, driver->buffer().size());
  auto back = driver->dma_from_device(data.size());
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back, data);
  EXPECT_EQ(model.dma_errors(), 0u);
  EXPECT_EQ(model.fake().dma_faults(), 0u);

  model.bar().clear_log();
  for (std::size_t size : {std::size_t{0}, edu::kInternalBufferSize}) {
    auto refused = driver->dma_from_device(size);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, pcie::Errc::invalid_argument);
  }
  EXPECT_TRUE(model.bar().log().empty()) << "a refused transfer touched the device";
}

TEST(EduDriverOnModel, AMissingInterruptIsATimeoutNotAHang) {
  EduModel model;
  auto driver = examples::EduDriver::open(model.device());
  ASSERT_TRUE(driver);
  model.bar().on_write(edu::kFactorial, [](const RegisterAccess& access) { return access.value; });  // no IRQ
  const auto start = std::chrono::steady_clock::now();
  auto result = driver->factorial(5, 50ms);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, pcie::Errc::io_error);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST(EduDriverOnModel, AnUnexpectedInterruptStatusIsAnError) {
  EduModel model;
  auto driver = examples::EduDriver::open(model.device());
  ASSERT_TRUE(driver);
  model.bar().on_write(edu::kIrqRaise, [&](const RegisterAccess&) {
    model.bar().set32(edu::kIrqStatus, 0x2);  // another cause than the one raised
    model.fake().fire(pcie::IrqKind::msi);
    return 0;
  });
  auto raised = driver->raise_interrupt(0x40, 1s);
  ASSERT_FALSE(raised);
  EXPECT_NE(raised.error().message().find("unexpected interrupt status"), std::string::npos) << raised.error().message();
}

TEST(EduDriverOnModel, TheRequestIrqEndsEveryCallWithDeviceRemoved) {
  EduModel model;
  auto driver = examples::EduDriver::open(model.device());
  ASSERT_TRUE(driver);
  model.bar().on_write(edu::kFactorial, [](const RegisterAccess& access) { return access.value; });  // no IRQ
  ASSERT_TRUE(model.fake().fire(pcie::IrqKind::request));
  auto result = driver->factorial(5, 5s);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, pcie::Errc::device_removed);
  for (auto error : {driver->factorial(3).error(), driver->raise_interrupt(1).error(),
                     driver->dma_from_device(16).error()}) {
    EXPECT_EQ(error.code, pcie::Errc::device_removed) << error.message();
  }
}

// A factorial that takes `duration` of the device's time, as QEMU's runs in a thread of its
// own: the status register says "computing" until it is done, and the completion interrupt
// comes then (if still asked for). Counts messages the device tried to send without bus
// mastering (they would have been memory writes after the driver let go).
class SlowFactorial {
 public:
  SlowFactorial(EduModel& model, std::chrono::milliseconds duration) : model_(model) {
    model.bar().on_write(edu::kFactorial, [this, duration](const RegisterAccess& access) {
      start(duration);
      return access.value;
    });
  }
  ~SlowFactorial() {
    if (worker_.joinable()) worker_.join();
  }
  // Leftover work, as a previous call left it: computing for `duration` from now.
  void start(std::chrono::milliseconds duration) {
    if (worker_.joinable()) worker_.join();
    RegisterModel& bar = model_.bar();
    bar.set32(edu::kStatus, bar.get32(edu::kStatus) | edu::kStatusComputing);
    worker_ = std::thread([this, duration, &bar] {
      std::this_thread::sleep_for(duration);
      const bool interrupt = bar.get32(edu::kStatus) & edu::kStatusIrqWhenDone;
      bar.set32(edu::kStatus, bar.get32(edu::kStatus) & ~edu::kStatusComputing);
      if (!interrupt) return;
      bar.set32(edu::kIrqStatus, bar.get32(edu::kIrqStatus) | edu::kIrqFactorial);
      if (!model_.fake().bus_master()) ++messages_without_bus_master;
      (void)model_.fake().fire(pcie::IrqKind::msi);
    });
  }
  bool computing() const { return model_.bar().get32(edu::kStatus) & edu::kStatusComputing; }
  std::atomic<unsigned> messages_without_bus_master{0};

 private:
  EduModel& model_;
  std::thread worker_;
};

// The class of issue 22's DMAR fault: a driver must not let go (bus mastering off,
// interrupts disabled, buffer unmapped) while the device is still working. Each path that
// lets go: a timeout, the kernel's request, the destructor.
TEST(EduDriverOnModel, ATimeoutStopsTheDeviceOnlyOnceItIsIdle) {
  EduModel model;
  SlowFactorial slow(model, 200ms);
  auto driver = examples::EduDriver::open(model.device());
  ASSERT_TRUE(driver);
  auto result = driver->factorial(5, 20ms);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, pcie::Errc::io_error);
  EXPECT_FALSE(slow.computing()) << "the driver gave up while the device was still working";
  EXPECT_FALSE(model.fake().bus_master());
  auto later = driver->factorial(3);
  ASSERT_FALSE(later);
  EXPECT_EQ(later.error().code, pcie::Errc::io_error) << "a stopped driver starts no new work";
  EXPECT_EQ(slow.messages_without_bus_master.load(), 0u);
}

TEST(EduDriverOnModel, TheRequestIrqLetsGoOnlyOnceTheDeviceIsIdle) {
  EduModel model;
  SlowFactorial slow(model, 200ms);
  auto driver = examples::EduDriver::open(model.device());
  ASSERT_TRUE(driver);
  std::thread kernel([&] {
    std::this_thread::sleep_for(30ms);
    (void)model.fake().fire(pcie::IrqKind::request);
  });
  auto result = driver->factorial(5, 5s);
  kernel.join();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, pcie::Errc::device_removed);
  EXPECT_FALSE(slow.computing()) << "let go while the factorial was still running";
  EXPECT_FALSE(model.fake().bus_master()) << "the device could still write after the driver announced the release";
  EXPECT_EQ(slow.messages_without_bus_master.load(), 0u) << "the completion interrupt was still asked for";
}

TEST(EduDriverOnModel, DestroyingTheDriverMidWorkWaitsThenTurnsBusMasteringOffBeforeUnmapping) {
  EduModel model;
  SlowFactorial slow(model, 150ms);
  std::optional<examples::EduDriver> driver;
  if (auto opened = examples::EduDriver::open(model.device())) driver.emplace(std::move(*opened));
  ASSERT_TRUE(driver.has_value());
  EXPECT_GT(model.fake().dma_mapped_bytes(), 0u);
  slow.start(150ms);  // work still running when the owner lets go
  driver.reset();
  EXPECT_FALSE(slow.computing()) << "the buffer was unmapped while the device was working";
  EXPECT_FALSE(model.fake().bus_master());
  EXPECT_EQ(model.fake().dma_mapped_bytes(), 0u);
  EXPECT_FALSE(model.fake().interrupts_enabled(pcie::IrqKind::msi));
}

TEST(EduDriverOnModel, FallsBackToIntxWhereTheBackendHasNoMsi) {
  EduModel model(DeviceModelOptions{.msi_vectors = 0, .request_vectors = 0});
  auto driver = examples::EduDriver::open(model.device());
  ASSERT_TRUE(driver) << driver.error().message();
  EXPECT_EQ(driver->interrupt_kind(), pcie::IrqKind::intx);
  EXPECT_FALSE(model.fake().interrupts_enabled(pcie::IrqKind::request));
  EXPECT_EQ(driver->factorial(6).value_or(0), 720u);
}

}  // namespace
