// Runs in the test VM (pcie-vm --hotplug) and unplugs devices under a running driver with
// QEMU's device_del, asked through hotplug-relay on /dev/ttyS2:
//  - the example NVMe driver mid-I/O through VFIO: the request IRQ tells it, the kernel's
//    unplug waits while the device is held, and completes once the driver lets go;
//  - a register loop through a sysfs mapping of a new nvme in the same slot: the uevent
//    watcher revokes the mapping, the loop ends with device_removed instead of a crash,
//    and after a third device is hot-added in that slot the old mapping does not reach it;
//  - the same loop on that third device bound to uio_pci_generic, through UioDevice and
//    a watcher started on the device: the uevent path a UIO driver relies on;
//  - a SIGBUS on a VFIO mapping (edu, memory decoding turned off) read as all ones, with
//    device_removed from the region, and the device usable again once decoding is back;
//  - pciectl bench on a fourth nvme in the slot, unplugged mid-run: exit 6, no table.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>

#include "examples/nvme/nvme_driver.h"
#include "tests/vm/hotplug_channel.h"
#include "pcie/binding.h"
#include "pcie/removal.h"
#include "pcie/sysfs_bar.h"
#include "pcie/uio.h"
#include "pcie/vfio.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const pcie::Bdf kSlot{0, 1, 0, 0};   // behind the root port at 00:1c.0
const pcie::Bdf kEdu{0, 0, 3, 0};
constexpr std::uint64_t kNvmeVersion = 0x08;  // VS
constexpr std::uint64_t kNvmeAdminQueues = 0x24;  // AQA: read/write while the controller is off

using pcie::vm::channel;

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

// Hot-added devices get no driver while it lives (/sys/bus/pci/drivers_autoprobe = 0), and
// the setting is put back after. A kernel with the nvme driver built in (our 7.3) would
// otherwise probe a hot-added nvme at a moment of its own, racing a test that unbinds it
// and then maps its BAR through sysfs, which 7.3 refuses for a claimed BAR
// (CONFIG_IO_STRICT_DEVMEM).
class NoAutoprobe {
 public:
  NoAutoprobe() {
    std::ifstream("/sys/bus/pci/drivers_autoprobe") >> old_;
    std::ofstream("/sys/bus/pci/drivers_autoprobe") << 0;
  }
  ~NoAutoprobe() { std::ofstream("/sys/bus/pci/drivers_autoprobe") << (old_.empty() ? "1" : old_); }
  NoAutoprobe(const NoAutoprobe&) = delete;
  NoAutoprobe& operator=(const NoAutoprobe&) = delete;

 private:
  std::string old_;
};

// A device driverless, as a sysfs mapping of its BAR needs under CONFIG_IO_STRICT_DEVMEM.
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

// Reads VS and writes AQA through a region, on its own thread, until an access fails.
class RegisterLoop {
 public:
  RegisterLoop(pcie::Region& bar, std::uint64_t version) : bar_(bar), version_(version), thread_([this] { run(); }) {}
  ~RegisterLoop() {
    // A loop still running would touch freed test state.
    if (!wait_until([this] { return done_.load(); }, 5s)) std::_Exit(97);
    thread_.join();
  }
  unsigned accesses() const { return accesses_; }
  bool done() const { return done_; }
  unsigned odd_values() const { return odd_values_; }
  // The error that ended the loop (after done()).
  const std::optional<pcie::Error>& error() const { return error_; }

 private:
  void run() {
    for (;;) {
      auto value = bar_.read(pcie::Width::bits32, kNvmeVersion);
      if (!value) {
        error_ = value.error();
        break;
      }
      if (*value != version_) ++odd_values_;
      if (auto write = bar_.write(pcie::Width::bits32, kNvmeAdminQueues, 0x001f001f); !write) {
        error_ = write.error();
        break;
      }
      ++accesses_;
    }
    done_ = true;
  }

  pcie::Region& bar_;
  const std::uint64_t version_;
  std::atomic<unsigned> accesses_{0};
  std::atomic<bool> done_{false};
  unsigned odd_values_ = 0;
  std::optional<pcie::Error> error_;
  std::thread thread_;  // last: started once the rest is built
};

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
  const NoAutoprobe no_autoprobe;
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

  {
    RegisterLoop loop(*bar, *version);
    ASSERT_TRUE(wait_until([&] { return loop.accesses() >= 1000; }, 10s));
    ASSERT_EQ(channel().command("device_del nvme2"), "ok");
    ASSERT_TRUE(wait_until([&] { return removed.load(); }, 30s)) << "no removal uevent within 30 s";
    ASSERT_TRUE(wait_until([&] { return loop.done(); }, 5s));
    EXPECT_EQ(signal, static_cast<int>(pcie::RemovalSignal::removed));
    EXPECT_EQ(revoked, 1u);
    EXPECT_TRUE(bar->revoked());
    ASSERT_TRUE(loop.error().has_value());
    EXPECT_EQ(loop.error()->code, pcie::Errc::device_removed) << loop.error()->message();
    std::printf("register loop: %u accesses, %u odd values before the revocation, ended with: %s\n", loop.accesses(),
                loop.odd_values(), loop.error()->message().c_str());
  }
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

// The third device of the slot (left driverless by the test above), bound to
// uio_pci_generic and driven through UioDevice: the watcher started on the device hears
// the uevent (UIO has no request IRQ: uio_pci_generic lets the device go at once), revokes
// the BAR mapping the device opened, and the loop ends with device_removed.
TEST(GuestHotplug, UioDeviceIsToldAndItsBarRevoked) {
  ASSERT_TRUE(std::filesystem::exists(node(kSlot))) << "the test above left no device in the slot";
  ASSERT_TRUE(pcie::bind_driver(pcie::SysfsPaths{}, kSlot, "uio_pci_generic"));
  auto device = pcie::UioDevice::open(kSlot);
  ASSERT_TRUE(device) << device.error().message();
  auto bar = device->open_bar(0);
  ASSERT_TRUE(bar) << bar.error().message();
  auto version = (*bar)->read(pcie::Width::bits32, kNvmeVersion);
  ASSERT_TRUE(version);
  ASSERT_NE(*version, 0xffffffffu);
  auto request_irq = device->enable_interrupts(pcie::IrqKind::request, 1);
  ASSERT_FALSE(request_irq) << "UIO has no request IRQ";
  EXPECT_EQ(request_irq.error().code, pcie::Errc::not_supported);

  std::atomic<bool> removed{false};
  std::atomic<std::size_t> revoked{0};
  std::atomic<int> signal{-1};
  auto watcher = pcie::RemovalWatcher::start(*device, [&](const pcie::RemovalNotice& notice) {
    revoked = notice.mappings_revoked;
    signal = static_cast<int>(notice.signal);
    removed = true;
  });
  ASSERT_TRUE(watcher) << watcher.error().message();
  const auto unplug = [&] {
    RegisterLoop loop(**bar, *version);
    if (!wait_until([&] { return loop.accesses() >= 1000; }, 10s)) return Clock::time_point{};
    const auto start = Clock::now();
    if (channel().command("device_del nvme3") != "ok") return Clock::time_point{};
    wait_until([&] { return removed.load(); }, 30s);
    const auto told = Clock::now();
    wait_until([&] { return loop.done(); }, 5s);
    if (loop.error()) {
      EXPECT_EQ(loop.error()->code, pcie::Errc::device_removed) << loop.error()->message();
      std::printf("UIO register loop: %u accesses, removal told %lld ms after device_del, ended with: %s\n",
                  loop.accesses(),
                  static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(told - start).count()),
                  loop.error()->message().c_str());
    }
    EXPECT_TRUE(loop.error().has_value()) << "the loop did not end";
    return start;
  }();
  ASSERT_NE(unplug, Clock::time_point{}) << "the loop did not start, or the relay refused device_del";
  ASSERT_TRUE(removed) << "no removal uevent within 30 s";
  EXPECT_EQ(signal, static_cast<int>(pcie::RemovalSignal::removed));
  EXPECT_EQ(revoked, 1u);
  EXPECT_TRUE((*bar)->revoked());
  EXPECT_EQ(channel().command("wait_deleted nvme3 30"), "ok");
  // The device's own calls now fail: its config file answers ENODEV.
  auto master = device->enable_bus_master();
  ASSERT_FALSE(master);
  EXPECT_EQ(master.error().code, pcie::Errc::device_removed) << master.error().message();
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

// Starts `command` through the shell with its stdout and stderr in `directory`'s out.txt and
// err.txt; returns its pid (-1 when fork fails).
pid_t start_in_background(const std::string& command, const std::string& directory) {
  const std::string line = command + " >" + directory + "/out.txt 2>" + directory + "/err.txt";
  const pid_t child = ::fork();
  if (child == 0) {
    ::execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return child;
}

// The exit status of `child`, -1 when it died by a signal or is still running at `timeout`
// (then it is killed).
int wait_for_exit(pid_t child, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  int status = 0;
  while (::waitpid(child, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(20ms);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// pciectl bench writing to an nvme's doorbells through a sysfs mapping when the device is
// unplugged (device_del): it ends within a row with device_removed, exit code 6, and prints
// no table (issue 26: it used to finish with exit 0 and a table measured against whatever
// the stale mapping reached).
TEST(GuestHotplug, PciectlBenchEndsWithDeviceRemovedAndNoTable) {
  ASSERT_FALSE(std::filesystem::exists(node(kSlot))) << "the tests above left the slot occupied";
  const NoAutoprobe no_autoprobe;
  ASSERT_EQ(channel().command("device_add driver=nvme id=nvme4 serial=fourth bus=root-port"), "ok");
  ASSERT_TRUE(wait_for_node(kSlot, true, 15s));
  ASSERT_TRUE(wait_until([] { return bar0_address(kSlot) != 0; }, 10s));
  ASSERT_TRUE(without_driver(kSlot));
  std::string scratch = "/tmp/bench-unplug.XXXXXX";
  ASSERT_NE(::mkdtemp(scratch.data()), nullptr);
  // The doorbells (BAR0 from 0x1000): with the controller off, writes there change nothing.
  // 20 repetitions of 50 ms a row: each row takes about a second, the whole run far longer
  // than the test waits.
  const pid_t bench = start_in_background(
      "pciectl bench 0000:01:00.0 bar0 --offset 0x1000 --length 4K --sizes 64,4K --widths 32,copy "
      "--min-time-ms 50 --repetitions 20 --latency-samples 10 --allow-write --enable --no-progress",
      scratch);
  ASSERT_GT(bench, 0);
  ASSERT_TRUE(wait_until([&] { return file_text(scratch + "/err.txt").find("will overwrite") != std::string::npos; },
                         20s))
      << file_text(scratch + "/err.txt");
  std::this_thread::sleep_for(500ms);  // measuring now
  const auto unplugged = Clock::now();
  ASSERT_EQ(channel().command("device_del nvme4"), "ok");
  const int status = wait_for_exit(bench, 60s);
  const auto ended = Clock::now();
  const std::string out = file_text(scratch + "/out.txt");
  const std::string err = file_text(scratch + "/err.txt");
  EXPECT_EQ(status, 6) << "stdout:\n" << out << "stderr:\n" << err;
  EXPECT_TRUE(out.empty()) << "a table for a removed device:\n" << out;
  EXPECT_NE(err.find("the device was removed while the command ran"), std::string::npos) << err;
  EXPECT_EQ(channel().command("wait_deleted nvme4 30"), "ok");
  std::printf("pciectl bench ended %lld ms after device_del with exit %d: %s",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(ended - unplugged).count()),
              status, err.substr(err.rfind("pciectl: error")).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
