// Runs in the test VM (pcie-vm --hotplug) and unplugs devices under a running driver with
// QEMU's device_del, asked through hotplug-relay on /dev/ttyS2:
//  - the example NVMe driver mid-I/O through VFIO: the request IRQ tells it, the kernel's
//    unplug waits while the device is held, and completes once the driver lets go;
//  - a register loop through a sysfs mapping of a new nvme in the same slot: the uevent
//    watcher revokes the mapping, the loop ends with device_removed instead of a crash,
//    and after a third device is hot-added in that slot the old mapping does not reach it;
//  - a SIGBUS on a VFIO mapping (edu, memory decoding turned off) read as all ones, with
//    device_removed from the region, and the device usable again once decoding is back.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "examples/nvme/nvme_driver.h"
#include "pcie/binding.h"
#include "pcie/removal.h"
#include "pcie/sysfs_bar.h"
#include "pcie/vfio.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const pcie::Bdf kSlot{0, 1, 0, 0};   // behind the root port at 00:1c.0
const pcie::Bdf kEdu{0, 0, 3, 0};
constexpr std::uint64_t kNvmeVersion = 0x08;  // VS
constexpr std::uint64_t kNvmeAdminQueues = 0x24;  // AQA: read/write while the controller is off

// The guest's end of hotplug-relay: one command line out, one answer line back.
class HotplugChannel {
 public:
  HotplugChannel() {
    fd_ = ::open("/dev/ttyS2", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd_ < 0) return;
    termios mode{};
    ::tcgetattr(fd_, &mode);
    ::cfmakeraw(&mode);
    ::tcsetattr(fd_, TCSANOW, &mode);
  }
  ~HotplugChannel() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool open() const { return fd_ >= 0; }

  std::string command(const std::string& line, std::chrono::seconds timeout = 60s) {
    const std::string out = line + "\n";
    if (::write(fd_, out.data(), out.size()) != static_cast<ssize_t>(out.size())) return "error: write";
    std::string answer;
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      pollfd waiting{fd_, POLLIN, 0};
      if (::poll(&waiting, 1, 100) <= 0) continue;
      char c = 0;
      if (::read(fd_, &c, 1) != 1) continue;
      if (c == '\n') return answer;
      if (c != '\r') answer += c;
    }
    return "error: no answer from hotplug-relay";
  }

 private:
  int fd_ = -1;
};

HotplugChannel& channel() {
  static HotplugChannel instance;
  return instance;
}

std::string node(const pcie::Bdf& bdf) { return "/sys/bus/pci/devices/" + bdf.to_string(); }

bool wait_for_node(const pcie::Bdf& bdf, bool present, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (std::filesystem::exists(node(bdf)) != present) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

template <class Predicate>
bool wait_until(Predicate done, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// A kernel with the nvme driver built in (our 6.12) takes a hot-added nvme: a sysfs
// mapping needs the device driverless (CONFIG_IO_STRICT_DEVMEM).
::testing::AssertionResult without_driver(const pcie::Bdf& bdf) {
  if (!std::filesystem::exists(node(bdf) + "/driver")) return ::testing::AssertionSuccess();
  auto unbound = pcie::unbind_driver(pcie::SysfsPaths{}, bdf);
  if (!unbound) return ::testing::AssertionFailure() << unbound.error().message();
  return ::testing::AssertionSuccess();
}

std::uint64_t bar0_address(const pcie::Bdf& bdf) {
  std::ifstream resource(node(bdf) + "/resource");
  std::string start;
  resource >> start;
  return start.empty() ? 0 : std::stoull(start, nullptr, 16);
}

TEST(GuestHotplug, RelayAnswers) {
  ASSERT_TRUE(channel().open()) << "no /dev/ttyS2: was pcie-vm given --hotplug?";
  EXPECT_EQ(channel().command("device_del no-such-device").substr(0, 7), "error: ");
  EXPECT_TRUE(std::filesystem::exists(node(kSlot)));
}

TEST(GuestHotplug, VfioDriverMidIoIsAskedAndTheUnplugWaitsForIt) {
  auto opened_container = pcie::VfioContainer::open();
  ASSERT_TRUE(opened_container) << opened_container.error().message();
  std::optional<pcie::VfioContainer> container(std::move(*opened_container));
  auto device = container->open_device(kSlot);
  ASSERT_TRUE(device) << device.error().message();
  std::atomic<bool> asked{false};
  std::atomic<int> signal{-1};
  auto watcher = pcie::RemovalWatcher::start(*device, [&](const pcie::RemovalNotice& notice) {
    signal = static_cast<int>(notice.signal);
    asked = true;
  });
  ASSERT_TRUE(watcher) << watcher.error().message();
  auto opened = examples::NvmeDriver::open(std::make_unique<pcie::VfioDevice>(std::move(*device)));
  ASSERT_TRUE(opened) << opened.error().message();
  std::optional<examples::NvmeDriver> driver(std::move(*opened));

  // The I/O loop: reads until the driver is told the device is wanted back.
  std::atomic<unsigned> reads{0};
  std::string io_error;
  std::thread io([&] {
    std::uint64_t lba = 0;
    while (!asked) {
      auto data = driver->read(lba, 8);
      if (!data) {
        io_error = data.error().message();
        return;
      }
      lba = (lba + 8) % 1024;
      ++reads;
    }
  });
  ASSERT_TRUE(wait_until([&] { return reads >= 20; }, 10s));
  const unsigned before = reads;
  const auto unplug = Clock::now();
  ASSERT_EQ(channel().command("device_del nvme"), "ok");
  ASSERT_TRUE(wait_until([&] { return asked.load(); }, 30s)) << "no request IRQ within 30 s";
  const auto asked_after = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - unplug);
  io.join();
  EXPECT_EQ(io_error, "");
  EXPECT_EQ(signal, static_cast<int>(pcie::RemovalSignal::request_irq));
  EXPECT_GT(reads.load(), before) << "the I/O loop was not running when the unplug came";
  const std::string backend(pcie::to_string(container->backend()));
  std::printf("VFIO backend %s: request IRQ %lld ms after device_del; %u reads done, %u of them after the unplug "
              "request\n",
              backend.c_str(), static_cast<long long>(asked_after.count()), reads.load(), reads.load() - before);

  // The kernel does not take the device from under the driver: the unplug waits.
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(std::filesystem::exists(node(kSlot)));
  EXPECT_EQ(channel().command("wait_deleted nvme 1"), "error: timeout");

  // Let go: the driver shuts the controller down; the watcher's request IRQ was the last
  // holder of the device file.
  EXPECT_TRUE(driver->shutdown());
  driver.reset();
  *watcher = pcie::RemovalWatcher();
  container.reset();
  const auto released = Clock::now();
  EXPECT_EQ(channel().command("wait_deleted nvme 30"), "ok");
  EXPECT_TRUE(wait_for_node(kSlot, false, 10s));
  std::printf("unplug completed %lld ms after the release\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - released).count()));
}

TEST(GuestHotplug, SysfsMappingIsRevokedAndNeverReachesTheNextDeviceInTheSlot) {
  ASSERT_FALSE(std::filesystem::exists(node(kSlot))) << "the previous test left the slot occupied";
  ASSERT_EQ(channel().command("device_add driver=nvme id=nvme2 serial=second bus=root-port"), "ok");
  ASSERT_TRUE(wait_for_node(kSlot, true, 15s));
  ASSERT_TRUE(wait_until([] { return bar0_address(kSlot) != 0; }, 10s));
  const std::uint64_t old_address = bar0_address(kSlot);
  ASSERT_TRUE(without_driver(kSlot));
  pcie::BarMapOptions options;
  options.enable_decoding = true;
  auto bar = pcie::BarMapping::map(pcie::SysfsPaths{}, kSlot, 0, options);
  ASSERT_TRUE(bar) << bar.error().message();
  auto version = bar->read(pcie::Width::bits32, kNvmeVersion);
  ASSERT_TRUE(version);
  ASSERT_NE(*version, 0xffffffffu);

  std::atomic<bool> removed{false};
  std::atomic<std::size_t> revoked{0};
  std::atomic<int> signal{-1};
  auto watcher = pcie::RemovalWatcher::start(kSlot, [&](const pcie::RemovalNotice& notice) {
    revoked = notice.mappings_revoked;
    signal = static_cast<int>(notice.signal);
    removed = true;
  });
  ASSERT_TRUE(watcher) << watcher.error().message();

  // The register loop: reads VS and writes AQA until an access fails.
  std::atomic<unsigned> accesses{0};
  std::atomic<bool> loop_done{false};
  std::optional<pcie::Error> loop_error;
  unsigned odd_values = 0;
  std::thread loop([&] {
    for (;;) {
      auto value = bar->read(pcie::Width::bits32, kNvmeVersion);
      if (!value) {
        loop_error = value.error();
        break;
      }
      if (*value != *version) ++odd_values;
      if (auto write = bar->write(pcie::Width::bits32, kNvmeAdminQueues, 0x001f001f); !write) {
        loop_error = write.error();
        break;
      }
      ++accesses;
    }
    loop_done = true;
  });
  ASSERT_TRUE(wait_until([&] { return accesses >= 1000; }, 10s));
  ASSERT_EQ(channel().command("device_del nvme2"), "ok");
  const bool told = wait_until([&] { return removed.load(); }, 30s);
  const bool ended = wait_until([&] { return loop_done.load(); }, 5s);
  if (!ended) std::_Exit(97);  // a loop still running would touch freed test state
  loop.join();
  ASSERT_TRUE(told) << "no removal uevent within 30 s";
  EXPECT_EQ(signal, static_cast<int>(pcie::RemovalSignal::removed));
  EXPECT_EQ(revoked, 1u);
  EXPECT_TRUE(bar->revoked());
  ASSERT_TRUE(loop_error.has_value());
  EXPECT_EQ(loop_error->code, pcie::Errc::device_removed) << loop_error->message();
  std::printf("register loop: %u accesses, %u odd values before the revocation, ended with: %s\n", accesses.load(),
              odd_values, loop_error->message().c_str());
  EXPECT_EQ(channel().command("wait_deleted nvme2 30"), "ok");

  // A new device in the same slot: the old process's mapping must not reach it.
  ASSERT_EQ(channel().command("device_add driver=nvme id=nvme3 serial=third bus=root-port"), "ok");
  ASSERT_TRUE(wait_for_node(kSlot, true, 15s));
  // The node appears before the kernel has assigned the BAR.
  ASSERT_TRUE(wait_until([] { return bar0_address(kSlot) != 0; }, 10s));
  const std::uint64_t new_address = bar0_address(kSlot);
  ASSERT_TRUE(without_driver(kSlot));
  std::printf("BAR0 of the removed device at 0x%llx, of the new one at 0x%llx\n",
              static_cast<unsigned long long>(old_address), static_cast<unsigned long long>(new_address));
  auto fresh = pcie::BarMapping::map(pcie::SysfsPaths{}, kSlot, 0, options);
  ASSERT_TRUE(fresh) << fresh.error().message();
  EXPECT_EQ(fresh->read(pcie::Width::bits32, kNvmeVersion).value_or(0), *version);
  // AQA is 0 after reset, or what a kernel driver that took the device first wrote.
  const auto admin_queues = fresh->read(pcie::Width::bits32, kNvmeAdminQueues);
  ASSERT_TRUE(admin_queues);
  ASSERT_NE(*admin_queues, 0x00070007u);

  EXPECT_EQ(bar->mmio().read<std::uint32_t>(kNvmeVersion), 0xffffffffu);
  auto stale = bar->read(pcie::Width::bits32, kNvmeVersion);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, pcie::Errc::device_removed);
  bar->mmio().write<std::uint32_t>(kNvmeAdminQueues, 0x00070007);
  EXPECT_EQ(fresh->read(pcie::Width::bits32, kNvmeAdminQueues).value_or(0), *admin_queues)
      << "a write through the old mapping reached the new device";
}

TEST(GuestHotplug, SigbusOnAVfioMappingReadsAllOnesAndTheDeviceComesBack) {
  ASSERT_TRUE(pcie::install_removal_guard());
  auto container = pcie::VfioContainer::open();
  ASSERT_TRUE(container) << container.error().message();
  auto device = container->open_device(kEdu);
  ASSERT_TRUE(device) << device.error().message();
  auto config = device->open_region(pcie::kVfioConfigRegion, {.map = false});
  ASSERT_TRUE(config);
  {
    auto bar = device->open_region(pcie::kVfioBar0Region);
    ASSERT_TRUE(bar) << bar.error().message();
    ASSERT_TRUE(device->enable_bus_master(false));  // leaves Memory Space Enable as it was
    auto command = config->read(pcie::Width::bits16, 0x04);
    ASSERT_TRUE(command);
    ASSERT_TRUE(config->write(pcie::Width::bits16, 0x04, *command | 0x2));
    EXPECT_EQ(bar->read(pcie::Width::bits32, 0).value_or(0), 0x010000edu);

    // Memory decoding off: vfio-pci zaps the mapping and refuses the fault (SIGBUS).
    ASSERT_TRUE(config->write(pcie::Width::bits16, 0x04, *command & ~std::uint64_t{0x2}));
    auto value = bar->read(pcie::Width::bits32, 0);
    ASSERT_FALSE(value);
    EXPECT_EQ(value.error().code, pcie::Errc::device_removed) << value.error().message();
    EXPECT_TRUE(bar->revoked());
    EXPECT_EQ(bar->mmio()->read<std::uint32_t>(0), 0xffffffffu);
    ASSERT_TRUE(config->write(pcie::Width::bits16, 0x04, *command | 0x2));
    // The revoked mapping stays revoked: it never reaches the device again.
    EXPECT_EQ(bar->mmio()->read<std::uint32_t>(0), 0xffffffffu);
  }
  auto reopened = device->open_region(pcie::kVfioBar0Region);
  ASSERT_TRUE(reopened);
  EXPECT_FALSE(reopened->revoked());
  EXPECT_EQ(reopened->read(pcie::Width::bits32, 0).value_or(0), 0x010000edu);
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
