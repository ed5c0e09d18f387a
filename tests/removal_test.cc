// Surviving a device that goes away (pcie/removal.h), on the host: a file that shrinks under
// its mapping faults with SIGBUS exactly as a removed device's zapped mapping does, so the
// guard's whole path (fault, replacement, retried access, device_removed from the checked
// accessors) runs here; the VM test (tests/vm/guest_hotplug_test.cc) does it with QEMU's
// device_del.
#include "pcie/removal.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csetjmp>
#include <chrono>
#include <cstring>
#include <array>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "pcie/copy.h"
#include "pcie/mmio.h"
#include "pcie/sys/mapping.h"
#include "pcie/sysfs_bar.h"
#include "pcie/testing/device_model.h"
#include "pcie/testing/fake_sysfs.h"
#include "src/sys/guard_table.h"

namespace pcie {
namespace {

using namespace std::chrono_literals;

const Bdf kEdu = testing::kVmEdu;
const Bdf kIvshmem = testing::kVmIvshmem;

// A memfd of `bytes` mapped shared; truncating the memfd makes the mapping fault (SIGBUS).
struct ShrinkableMapping {
  int fd = -1;
  Mapping mapping;
  explicit ShrinkableMapping(std::size_t bytes) {
    fd = ::memfd_create("removal-test", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) return;
    void* addr = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr != MAP_FAILED) mapping = Mapping(addr, bytes);
    std::memset(mapping.data(), 0x5a, bytes);
  }
  ~ShrinkableMapping() {
    if (fd >= 0) ::close(fd);
  }
  void remove_device() { ASSERT_EQ(::ftruncate(fd, 0), 0); }
  std::uint32_t read32(std::size_t offset) const {
    return *reinterpret_cast<const volatile std::uint32_t*>(mapping.data() + offset);
  }
};

TEST(RemovalGuard, AFaultInAGuardedMappingReadsAllOnesAndTheProcessLives) {
  ASSERT_TRUE(install_removal_guard());
  ASSERT_TRUE(removal_guard_installed());
  // Three chunks' worth (the guard maps all ones 2 MiB at a time where accesses land).
  constexpr std::size_t kBytes = std::size_t{5} << 20;
  ShrinkableMapping device(kBytes);
  ASSERT_TRUE(device.mapping.valid());
  ASSERT_TRUE(device.mapping.guard_as_device_memory(kEdu));
  EXPECT_TRUE(device.mapping.guarded());
  EXPECT_EQ(device.read32(0x100), 0x5a5a5a5au);
  EXPECT_FALSE(device.mapping.revoked());
  EXPECT_FALSE(mapping_revoked(device.mapping.data()));

  device.remove_device();
  EXPECT_EQ(device.read32(0x100), 0xffffffffu);  // SIGBUS, replaced, retried
  EXPECT_TRUE(device.mapping.revoked());
  EXPECT_TRUE(mapping_revoked(device.mapping.data() + 0x100));
  // Every offset reads all ones: the same chunk, and chunks reached only through the
  // inaccessible remainder (SIGSEGV there is the guard's too).
  for (std::size_t offset : {std::size_t{0}, std::size_t{4096}, (std::size_t{2} << 20) + 8, kBytes - 4}) {
    SCOPED_TRACE(offset);
    EXPECT_EQ(device.read32(offset), 0xffffffffu);
  }
  // A write lands in private memory, and nothing faults.
  *reinterpret_cast<volatile std::uint32_t*>(device.mapping.data() + 0x200) = 7;
  EXPECT_EQ(device.read32(0x200), 7u);
}

TEST(RemovalGuard, RegionAccessorsReportTheRemoval) {
  ASSERT_TRUE(install_removal_guard());
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree) << tree.error().message();
  auto bar = BarMapping::map(tree->paths(), kEdu, 0);
  ASSERT_TRUE(bar) << bar.error().message();
  ASSERT_TRUE(bar->write(Width::bits32, 0x4, 0x12345678));
  EXPECT_FALSE(bar->revoked());

  // The resource file shrinks under the mapping: the next access faults.
  std::filesystem::resize_file(tree->device_dir(kEdu) + "/resource0", 0);
  for (Width width : {Width::bits8, Width::bits16, Width::bits32, Width::bits64}) {
    auto value = bar->read(width, 0x8);
    ASSERT_FALSE(value);
    EXPECT_EQ(value.error().code, Errc::device_removed) << value.error().message();
  }
  EXPECT_TRUE(bar->revoked());
  auto write = bar->write(Width::bits32, 0x4, 1);
  ASSERT_FALSE(write);
  EXPECT_EQ(write.error().code, Errc::device_removed);
  EXPECT_NE(write.error().message().find("removal guard"), std::string::npos) << write.error().message();

  const MmioView view = bar->mmio();
  auto checked = view.checked_read<std::uint32_t>(0x4);
  ASSERT_FALSE(checked);
  EXPECT_EQ(checked.error().code, Errc::device_removed);
  EXPECT_EQ(view.read<std::uint32_t>(0x4), 0xffffffffu);
  auto polled = view.poll<std::uint32_t>(0x20, 0x1, 0, WaitOptions{.timeout = 1s, .all_ones_means_removed = true});
  ASSERT_FALSE(polled);
  EXPECT_EQ(polled.error().code, Errc::device_removed);
  // The bulk copies too, through the Region and through a view, in both directions.
  std::array<std::byte, 256> data{};
  for (CopyKernel kernel : {CopyKernel::registers, CopyKernel::automatic}) {
    SCOPED_TRACE(static_cast<int>(kernel));
    const CopyOptions options{.kernel = kernel};
    EXPECT_EQ(copy_to_device(*bar, 0x40, data.data(), data.size(), options).error().code, Errc::device_removed);
    EXPECT_EQ(copy_to_device(view, 0x40, data.data(), data.size(), options).error().code, Errc::device_removed);
    EXPECT_EQ(copy_from_device(data.data(), *bar, 0x40, data.size(), options).error().code, Errc::device_removed);
    EXPECT_EQ(copy_from_device(data.data(), view, 0x40, data.size(), options).error().code, Errc::device_removed);
  }
}

// A device that goes away during a bulk copy: the copy's own accesses fault, the guard
// replaces the mapping, and the copy reports device_removed instead of handing back the
// guard's all ones as the device's data.
TEST(RemovalGuard, ACopyDuringWhichTheDeviceGoesAwayReportsIt) {
  ASSERT_TRUE(install_removal_guard());
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree) << tree.error().message();
  auto bar = BarMapping::map(tree->paths(), kEdu, 0);
  ASSERT_TRUE(bar) << bar.error().message();
  std::array<std::byte, 4096> data{};
  ASSERT_TRUE(copy_from_device(data.data(), *bar, 0, data.size()));
  std::filesystem::resize_file(tree->device_dir(kEdu) + "/resource0", 0);
  EXPECT_FALSE(bar->revoked()) << "nothing has touched the mapping since";
  auto copied = copy_from_device(data.data(), *bar, 0, data.size());
  ASSERT_FALSE(copied);
  EXPECT_EQ(copied.error().code, Errc::device_removed) << copied.error().message();
  EXPECT_TRUE(bar->revoked());
  EXPECT_EQ(data[0], std::byte{0xff}) << "the guard's all ones";
}

// What the watcher does on a removal: the old mapping is cut off from whatever answers at
// that address afterwards (here the file, standing for a new device in the same slot).
TEST(RemovalGuard, RevokingADeviceCutsItsMappingsOffAndOnlyItsOwn) {
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree) << tree.error().message();
  auto edu = BarMapping::map(tree->paths(), kEdu, 0);
  auto edu_again = BarMapping::map(tree->paths(), kEdu, 0);
  auto ivshmem = BarMapping::map(tree->paths(), kIvshmem, 2);
  ASSERT_TRUE(edu && edu_again && ivshmem);
  ASSERT_TRUE(ivshmem->write(Width::bits32, 0, 0xabcd));

  auto revoked = revoke_device_mappings(kEdu);
  ASSERT_TRUE(revoked) << revoked.error().message();
  EXPECT_EQ(*revoked, 2u);
  EXPECT_TRUE(edu->revoked());
  EXPECT_TRUE(edu_again->revoked());
  EXPECT_FALSE(ivshmem->revoked());
  EXPECT_EQ(ivshmem->read(Width::bits32, 0).value_or(0), 0xabcdu);

  // The "new device" behind the file: writes through the old mapping never reach it.
  ASSERT_TRUE(tree->write_device_bytes(kEdu, "resource0", 0x40, std::vector<std::uint8_t>{1, 2, 3, 4}));
  EXPECT_EQ(edu->mmio().read<std::uint32_t>(0x40), 0xffffffffu);
  edu->mmio().write<std::uint32_t>(0x44, 0x99);
  EXPECT_EQ(tree->read_device_bytes(kEdu, "resource0", 0x44, 4).value_or(std::vector<std::uint8_t>{}),
            (std::vector<std::uint8_t>{0, 0, 0, 0}));
  // A second revocation finds nothing left to revoke; a mapping made afterwards is live.
  EXPECT_EQ(revoke_device_mappings(kEdu).value_or(99), 0u);
  auto reopened = BarMapping::map(tree->paths(), kEdu, 0);
  ASSERT_TRUE(reopened);
  EXPECT_FALSE(reopened->revoked());
  EXPECT_EQ(reopened->read(Width::bits32, 0x40).value_or(0), 0x04030201u);
}

TEST(RemovalGuard, MovedAndReleasedMappingsLeaveTheTable) {
  ASSERT_TRUE(install_removal_guard());
  constexpr Bdf kLonely{0, 0x42, 0, 0};
  {
    ShrinkableMapping device(4096);
    ASSERT_TRUE(device.mapping.guard_as_device_memory(kLonely));
    Mapping moved = std::move(device.mapping);
    EXPECT_FALSE(device.mapping.guarded());
    EXPECT_TRUE(moved.guarded());
    ASSERT_TRUE(moved.unmap());
    EXPECT_FALSE(moved.guarded());
  }
  EXPECT_EQ(revoke_device_mappings(kLonely).value_or(99), 0u);
  // Thousands of registrations come and go without filling the table.
  for (int i = 0; i < 10000; ++i) {
    ShrinkableMapping device(4096);
    ASSERT_TRUE(device.mapping.guard_as_device_memory(kLonely)) << i;
  }
}

// Whether an unregister can return while a replacement over the slot's range is still to
// come (after which the owner unmaps and anyone may map that range: the MAP_FIXED would
// land on their memory). The hook runs before every MAP_FIXED over a guarded range; for the
// slot under test it lets another thread unregister, gives it 200 ms, and counts an
// unregister that finished before the replacement it precedes.
std::atomic<int> g_watched_slot{-1};
std::atomic<bool> g_unregister_go{false};
std::atomic<bool> g_unregister_done{false};
std::atomic<int> g_replacements_seen{0};
std::atomic<int> g_unregisters_too_early{0};

void hold_the_replacement(int slot) noexcept {
  if (slot != g_watched_slot.load()) return;
  g_replacements_seen.fetch_add(1);
  g_unregister_go.store(true);
  timespec pause{0, 200'000'000};
  ::nanosleep(&pause, nullptr);
  if (g_unregister_done.load()) g_unregisters_too_early.fetch_add(1);
}

// A guarded anonymous range of 5 MiB (three all-ones chunks) in slot `slot`.
struct GuardedRange {
  static constexpr std::size_t kBytes = std::size_t{5} << 20;
  std::uint8_t* data = nullptr;
  int slot = -1;
  explicit GuardedRange(const Bdf& device) {
    void* addr = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (addr == MAP_FAILED) return;
    data = static_cast<std::uint8_t*>(addr);
    slot = detail::guard_table_register(addr, kBytes, device).value_or(-1);
  }
};

// Unregisters `range` once the hook says go, then does what an owner does next: gives the
// range up, and (standing for whoever maps there afterwards) maps 0x5a memory over it, in
// one MAP_FIXED, so that a reader still retrying finds memory there, never a hole.
std::thread unregister_then_reuse(GuardedRange& range, std::atomic<bool>& reused_ok) {
  g_unregister_go = false;
  g_unregister_done = false;
  return std::thread([&range, &reused_ok] {
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (!g_unregister_go.load() && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
    detail::guard_table_unregister(range.slot);
    g_unregister_done.store(true);
    void* again = ::mmap(range.data, GuardedRange::kBytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (again != range.data) return;
    std::memset(again, 0x5a, GuardedRange::kBytes);
    reused_ok = true;
  });
}

bool reads_as(const std::uint8_t* data, std::size_t offset, std::uint8_t byte) {
  return *reinterpret_cast<const volatile std::uint8_t*>(data + offset) == byte;
}

TEST(RemovalGuard, AnUnregisterWaitsForEveryReplacementInFlight) {
  ASSERT_TRUE(install_removal_guard());
  detail::guard_table_set_replace_hook(hold_the_replacement);
  struct Unhook {
    ~Unhook() {
      detail::guard_table_set_replace_hook(nullptr);
      g_watched_slot = -1;
    }
  } unhook;
  constexpr Bdf kRaced{0, 0x43, 0, 0};

  // A revocation: the inaccessible replacement and the first all-ones chunk.
  {
    GuardedRange range(kRaced);
    ASSERT_GE(range.slot, 0);
    g_replacements_seen = 0;
    g_unregisters_too_early = 0;
    g_watched_slot = range.slot;
    std::atomic<bool> reused_ok{false};
    std::thread owner = unregister_then_reuse(range, reused_ok);
    EXPECT_EQ(revoke_device_mappings(kRaced).value_or(0), 1u);
    owner.join();
    EXPECT_EQ(g_replacements_seen.load(), 2);
    EXPECT_EQ(g_unregisters_too_early.load(), 0);
    ASSERT_TRUE(reused_ok);
    EXPECT_TRUE(reads_as(range.data, 0, 0x5a));  // the new owner's memory is its own
    ::munmap(range.data, GuardedRange::kBytes);
  }
  // A fault in a chunk of a revoked mapping that nothing touched yet: the handler's
  // replacement.
  {
    GuardedRange range(kRaced);
    ASSERT_GE(range.slot, 0);
    ASSERT_EQ(revoke_device_mappings(kRaced).value_or(0), 1u);
    g_replacements_seen = 0;
    g_unregisters_too_early = 0;
    g_watched_slot = range.slot;
    std::atomic<bool> reused_ok{false};
    std::thread owner = unregister_then_reuse(range, reused_ok);
    // SIGSEGV, all ones mapped, the read retried. Its value is not checked: by the retry
    // the owner may have unmapped and the new memory be there, filled or not yet.
    (void)*reinterpret_cast<const volatile std::uint8_t*>(range.data + (std::size_t{4} << 20));
    owner.join();
    EXPECT_EQ(g_replacements_seen.load(), 1);
    EXPECT_EQ(g_unregisters_too_early.load(), 0);
    ASSERT_TRUE(reused_ok);
    EXPECT_TRUE(reads_as(range.data, std::size_t{4} << 20, 0x5a));
    ::munmap(range.data, GuardedRange::kBytes);
  }
}

TEST(RemovalGuard, AnUnregisteredRangeIsNoLongerTheGuards) {
  ASSERT_TRUE(install_removal_guard());
  constexpr Bdf kGone{0, 0x44, 0, 0};
  GuardedRange range(kGone);
  ASSERT_GE(range.slot, 0);
  ASSERT_EQ(revoke_device_mappings(kGone).value_or(0), 1u);
  EXPECT_TRUE(mapping_revoked(range.data));
  detail::guard_table_unregister(range.slot);
  EXPECT_FALSE(mapping_revoked(range.data));
  EXPECT_FALSE(detail::guard_table_replace_at(reinterpret_cast<std::uintptr_t>(range.data), true));
  // Unregistering twice, or a slot out of range, does nothing.
  detail::guard_table_unregister(range.slot);
  detail::guard_table_unregister(-1);
  detail::guard_table_unregister(detail::kGuardSlots);
  ::munmap(range.data, GuardedRange::kBytes);
}

// Faults the guard does not own end the process as they would have without it: killed by
// the signal, or, under AddressSanitizer (whose handler was installed first), its report.
#if defined(__SANITIZE_ADDRESS__)
#define EXPECT_FAULT_ENDS_PROCESS(statement, signal_number, asan_name) \
  EXPECT_EXIT(statement, ::testing::ExitedWithCode(1), "AddressSanitizer: " asan_name)
#else
#define EXPECT_FAULT_ENDS_PROCESS(statement, signal_number, asan_name) \
  EXPECT_EXIT(statement, ::testing::KilledBySignal(signal_number), "")
#endif

TEST(RemovalGuardDeathTest, FaultsOutsideGuardedMappingsStillKill) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_FAULT_ENDS_PROCESS(
      {
        if (!install_removal_guard()) std::_Exit(3);
        ShrinkableMapping unguarded(4096);
        unguarded.remove_device();
        (void)unguarded.read32(0);
        std::_Exit(0);
      },
      SIGBUS, "BUS");
  EXPECT_FAULT_ENDS_PROCESS(
      {
        if (!install_removal_guard()) std::_Exit(3);
        void* page = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) std::_Exit(4);
        (void)*static_cast<volatile int*>(page);
        std::_Exit(0);
      },
      SIGSEGV, "SEGV");
}

void exit_42(int) { std::_Exit(42); }

TEST(RemovalGuardDeathTest, FaultsOutsideGuardedMappingsReachTheEarlierHandler) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ::signal(SIGBUS, exit_42);
        if (!install_removal_guard()) std::_Exit(3);
        ShrinkableMapping unguarded(4096);
        unguarded.remove_device();
        (void)unguarded.read32(0);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(42), "");
}

// A daemon that closes every descriptor it did not open (a sweep after fork, closefrom)
// closes the guard's all-ones memfd, and its own files then take that number: the guard
// must notice and never map the program's file over a revoked range.
TEST(RemovalGuardDeathTest, ADescriptorSweepNeverHandsTheProgramsFileToTheGuard) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        if (!install_removal_guard()) std::_Exit(3);
        ::close_range(3, ~0U, 0);
        for (int i = 0; i < 64; ++i) {  // zeros, where the guard's memory reads all ones
          const int fd = ::memfd_create("program-file", 0);
          if (fd < 0 || ::ftruncate(fd, std::size_t{4} << 20) != 0) std::_Exit(4);
        }
        ShrinkableMapping device(4096);
        if (!device.mapping.guard_as_device_memory(kEdu)) std::_Exit(5);
        device.remove_device();
        std::_Exit(device.read32(0x10) == 0xffffffffu ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// A foreign fault reaches the earlier handler as the kernel would have delivered it: with
// that handler's sa_mask and the signal blocked, and SA_RESETHAND honoured (the next
// foreign fault takes the default action).
sigjmp_buf g_after_fault;
std::atomic<bool> g_mask_as_asked{false};

std::atomic<int> g_previous_calls{0};

void previous_bus_handler(int) {
  if (g_previous_calls.fetch_add(1) > 0) std::_Exit(7);  // not reset: called again
  sigset_t now;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &now);
  g_mask_as_asked = sigismember(&now, SIGUSR1) == 1 && sigismember(&now, SIGBUS) == 1;
  ::siglongjmp(g_after_fault, 1);
}

TEST(RemovalGuardDeathTest, TheEarlierHandlerRunsWithItsMaskAndResetsWhenAsked) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        struct sigaction previous {};
        previous.sa_handler = previous_bus_handler;
        sigemptyset(&previous.sa_mask);
        sigaddset(&previous.sa_mask, SIGUSR1);
        previous.sa_flags = SA_RESETHAND;
        if (::sigaction(SIGBUS, &previous, nullptr) != 0) std::_Exit(2);
        if (!install_removal_guard()) std::_Exit(3);
        ShrinkableMapping unguarded(4096);
        unguarded.remove_device();
        if (sigsetjmp(g_after_fault, 1) == 0) {
          (void)unguarded.read32(0);
          std::_Exit(4);  // the read must have faulted
        }
        if (!g_mask_as_asked) std::_Exit(5);
        (void)unguarded.read32(0);  // reset to the default: killed
        std::_Exit(6);
      },
      ::testing::KilledBySignal(SIGBUS), "");
}

TEST(RemovalWatcher, ADeviceAlreadyGoneIsReportedAndRevokedAtOnce) {
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree) << tree.error().message();
  auto bar = BarMapping::map(tree->paths(), kEdu, 0);
  ASSERT_TRUE(bar);
  std::atomic<int> calls{0};
  std::atomic<std::size_t> revoked{0};
  RemovalWatchOptions options;
  options.sysfs_devices = tree->directory() + "/no-such-directory";
  auto watcher = RemovalWatcher::start(
      kEdu,
      [&](const RemovalNotice& notice) {
        EXPECT_EQ(notice.device, kEdu);
        EXPECT_EQ(notice.signal, RemovalSignal::removed);
        revoked = notice.mappings_revoked;
        ++calls;
      },
      options);
  ASSERT_TRUE(watcher) << watcher.error().message();
  for (int i = 0; i < 500 && calls == 0; ++i) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(revoked, 1u);
  EXPECT_TRUE(watcher->fired());
  EXPECT_TRUE(bar->revoked());
  auto read = bar->read(Width::bits32, 0);
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().code, Errc::device_removed);
}

TEST(RemovalWatcher, APresentDeviceIsLeftAloneAndTheWatcherStopsCleanly) {
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree) << tree.error().message();
  auto bar = BarMapping::map(tree->paths(), kEdu, 0);
  ASSERT_TRUE(bar);
  std::atomic<int> calls{0};
  RemovalWatchOptions options;
  options.sysfs_devices = tree->paths().pci_root + "/devices";
  {
    auto watcher = RemovalWatcher::start(kEdu, [&](const RemovalNotice&) { ++calls; }, options);
    ASSERT_TRUE(watcher) << watcher.error().message();
    EXPECT_TRUE(watcher->active());
    std::this_thread::sleep_for(50ms);
    RemovalWatcher moved = std::move(*watcher);
    EXPECT_FALSE(watcher->active());
    EXPECT_TRUE(moved.active());
  }
  EXPECT_EQ(calls, 0);
  EXPECT_FALSE(bar->revoked());
  EXPECT_TRUE(bar->read(Width::bits32, 0));

  RemovalWatcher empty;
  EXPECT_FALSE(empty.active());
  EXPECT_FALSE(empty.fired());
  auto no_callback = RemovalWatcher::start(kEdu, nullptr, options);
  ASSERT_FALSE(no_callback);
  EXPECT_EQ(no_callback.error().code, Errc::invalid_argument);
}

TEST(RemovalWatcher, TheCallbackMayDestroyItsOwnWatcher) {
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree);
  RemovalWatchOptions options;
  options.sysfs_devices = tree->directory() + "/gone";
  options.revoke_mappings = false;
  std::optional<RemovalWatcher> holder;
  std::atomic<bool> done{false};
  std::mutex lock;
  {
    const std::lock_guard guard(lock);
    auto watcher = RemovalWatcher::start(
        kEdu,
        [&](const RemovalNotice&) {
          const std::lock_guard inside(lock);
          holder.reset();
          done = true;
        },
        options);
    ASSERT_TRUE(watcher);
    holder.emplace(std::move(*watcher));
  }
  for (int i = 0; i < 500 && !done; ++i) std::this_thread::sleep_for(2ms);
  EXPECT_TRUE(done);
  EXPECT_FALSE(holder.has_value());
}

// The uevent reader decides on the kernel's fields alone; everything else is refused.
// The request IRQ through any backend's Device (the testing kit's fake one here): fired, it
// reaches the callback once, as request_irq, and revokes nothing (the device is still there
// until the driver lets go). Also with poll(2) failing under the watcher (as below).
TEST(RemovalWatcher, ARequestIrqIsReportedEvenWithoutPoll) {
  for (const bool poll_fails : {false, true}) {
    SCOPED_TRACE(poll_fails ? "poll fails" : "poll works");
    auto tree = testing::make_vm_tree();
    ASSERT_TRUE(tree);
    testing::DeviceModel fake({.bdf = kEdu});
    auto device = fake.open();
    RemovalWatchOptions options;
    options.sysfs_devices = tree->paths().pci_root + "/devices";
    std::atomic<int> requests{0};
    std::atomic<int> others{0};
    auto watcher = RemovalWatcher::start(
        *device,
        [&](const RemovalNotice& notice) {
          if (notice.signal == RemovalSignal::request_irq && notice.mappings_revoked == 0) {
            ++requests;
          } else {
            ++others;
          }
        },
        options);
    ASSERT_TRUE(watcher) << watcher.error().message();
    EXPECT_TRUE(fake.interrupts_enabled(IrqKind::request));
    rlimit saved{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
    {
      struct RestoreLimit {
        rlimit saved;
        ~RestoreLimit() { ::setrlimit(RLIMIT_NOFILE, &saved); }
      } restore{saved};
      if (poll_fails) {
        const rlimit one{1, saved.rlim_max};
        ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &one), 0);
        std::this_thread::sleep_for(1500ms);  // the thread's poll (1 s timeout) returns and fails
      }
      ASSERT_TRUE(fake.fire(IrqKind::request));
      for (int i = 0; i < 300 && requests == 0; ++i) std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(requests, 1);
    ASSERT_TRUE(fake.fire(IrqKind::request));
    std::this_thread::sleep_for(250ms);
    EXPECT_EQ(requests, 1) << "called once, whatever follows";
    EXPECT_EQ(others, 0);
    *watcher = RemovalWatcher();
    EXPECT_FALSE(fake.interrupts_enabled(IrqKind::request)) << "the watcher let the request IRQ go";
  }
}

// A watch of the fake tree's edu that only counts what it hears (a removal 1, a request IRQ
// 100), without revoking anything: the watcher's own looks at the node, tested below.
struct CountingWatch {
  std::optional<testing::FakeSysfs> tree;
  RemovalWatchOptions options;
  std::atomic<int> removals{0};
  RemovalWatcher watcher;

  // Empty tree or watcher on failure (the caller asserts on started()).
  CountingWatch() {
    auto made = testing::make_vm_tree();
    if (!made) return;
    tree.emplace(std::move(*made));
    options.sysfs_devices = tree->paths().pci_root + "/devices";
    options.revoke_mappings = false;
    auto started = RemovalWatcher::start(
        kEdu, [this](const RemovalNotice& notice) { removals += notice.signal == RemovalSignal::removed ? 1 : 100; },
        options);
    if (started) watcher = std::move(*started);
  }
  bool started() const { return watcher.active(); }
  std::string node() const { return options.sysfs_devices + "/" + kEdu.to_string(); }
  // Waits up to 3 s for the first signal.
  void wait_for_signal() {
    for (int i = 0; i < 300 && removals == 0; ++i) std::this_thread::sleep_for(10ms);
  }
};

// poll(2) failing in the watcher's thread must not end the watch silently: a removal after
// it is still reported, and so is a remove and an add at the same address between two looks
// (a hot swap whose uevents were lost: a node is there, but another one). The failure here:
// a descriptor limit below the descriptors the thread polls (EINVAL), the soft limit only,
// so the test can raise it again.
TEST(RemovalWatcher, AWatchWhosePollFailsStillHearsTheRemovalOrTheReplacement) {
  for (const bool replaced : {false, true}) {
    SCOPED_TRACE(replaced ? "removed and another added at the address" : "removed");
    CountingWatch watch;
    ASSERT_TRUE(watch.started());
    rlimit saved{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
    {
      struct RestoreLimit {
        rlimit saved;
        ~RestoreLimit() { ::setrlimit(RLIMIT_NOFILE, &saved); }
      } restore{saved};
      const rlimit one{1, saved.rlim_max};
      ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &one), 0);
      std::this_thread::sleep_for(1500ms);  // the thread's poll (1 s timeout) returns and fails
      const std::string node = watch.node();
      ASSERT_EQ(::rename(node.c_str(), (node + ".gone").c_str()), 0);  // needs no descriptor
      if (replaced) {
        ASSERT_EQ(::mkdir(node.c_str(), 0755), 0) << "another device at the address at once";
      }
      watch.wait_for_signal();
    }
    EXPECT_EQ(watch.removals, 1);
    EXPECT_TRUE(watch.watcher.fired());
  }
}

// Where no uevent ever arrives (a network namespace owned by a user namespace other than the
// initial one, as in a rootless container; a fake tree, as here), the watch still sees the node go,
// or be replaced, by looking at it whenever poll(2) times out (each second): with poll
// working, unlike the test above.
TEST(RemovalWatcher, ARemovalWithoutAnyUeventIsSeenAtThePollTimeout) {
  for (const bool replaced : {false, true}) {
    SCOPED_TRACE(replaced ? "removed and another added at the address" : "removed");
    CountingWatch watch;
    ASSERT_TRUE(watch.started());
    std::this_thread::sleep_for(100ms);
    const std::string node = watch.node();
    ASSERT_EQ(::rename(node.c_str(), (node + ".gone").c_str()), 0);
    if (replaced) {
      ASSERT_EQ(::mkdir(node.c_str(), 0755), 0);
    }
    watch.wait_for_signal();
    EXPECT_EQ(watch.removals, 1);
    EXPECT_TRUE(watch.watcher.fired());
  }
}

// A look at the node that fails (EACCES, ENOMEM, a seccomp refusal; here ELOOP, which root
// meets as well) says nothing about the device: no removal, and the mappings stay. Once the
// node is really gone (ENOENT), the removal is reported.
TEST(RemovalWatcher, ALookThatFailsIsNotARemoval) {
  CountingWatch watch;
  ASSERT_TRUE(watch.started());
  std::this_thread::sleep_for(100ms);
  const std::string node = watch.node();
  ASSERT_EQ(::rename(node.c_str(), (node + ".away").c_str()), 0);
  ASSERT_EQ(::symlink(node.c_str(), node.c_str()), 0);  // stat(2): ELOOP
  std::this_thread::sleep_for(2500ms);                   // two poll timeouts, two looks
  EXPECT_EQ(watch.removals, 0) << "a failed look was taken for a removal";
  EXPECT_FALSE(watch.watcher.fired());
  ASSERT_EQ(::unlink(node.c_str()), 0);                  // now it is gone
  watch.wait_for_signal();
  EXPECT_EQ(watch.removals, 1);
}

TEST(RemovalUevent, OnlyARemoveOfThisPciDeviceCounts) {
  using namespace std::string_view_literals;
  const Bdf device{0, 1, 0, 0};
  const auto removal =
      "remove@/devices/pci0000:00/0000:00:1c.0/0000:01:00.0\0ACTION=remove\0DEVPATH=/devices/pci0000:00/"
      "0000:00:1c.0/0000:01:00.0\0SUBSYSTEM=pci\0PCI_CLASS=10802\0PCI_SLOT_NAME=0000:01:00.0\0SEQNUM=1234\0"sv;
  EXPECT_TRUE(detail::uevent_removes(removal, device));
  EXPECT_FALSE(detail::uevent_removes(removal, Bdf{0, 1, 0, 1}));
  EXPECT_FALSE(detail::uevent_removes(removal, Bdf{1, 1, 0, 0}));
  // Without the trailing NUL, and with the fields in another order.
  EXPECT_TRUE(detail::uevent_removes("x\0PCI_SLOT_NAME=0000:01:00.0\0SUBSYSTEM=pci\0ACTION=remove"sv, device));
  const std::string_view refused[] = {
      "add@/x\0ACTION=add\0SUBSYSTEM=pci\0PCI_SLOT_NAME=0000:01:00.0\0"sv,
      "remove@/x\0ACTION=remove\0SUBSYSTEM=pci_bus\0PCI_SLOT_NAME=0000:01:00.0\0"sv,
      "remove@/x\0ACTION=remove\0SUBSYSTEM=pci\0"sv,
      "remove@/x\0ACTION=remove\0PCI_SLOT_NAME=0000:01:00.0\0"sv,
      "remove@/x\0SUBSYSTEM=pci\0PCI_SLOT_NAME=0000:01:00.0\0"sv,
      "remove@/x\0ACTION=remove\0SUBSYSTEM=pci\0PCI_SLOT_NAME=0000:01:00.0x\0"sv,
      "remove@/x\0ACTION=remove\0SUBSYSTEM=pci\0PCI_SLOT_NAME=\0"sv,
      "remove@/x\0ACTION=removed\0SUBSYSTEM=pci\0PCI_SLOT_NAME=0000:01:00.0\0"sv,
      "remove@/devices/pci0000:00/0000:00:1c.0/0000:01:00.0 ACTION=remove SUBSYSTEM=pci PCI_SLOT_NAME=0000:01:00.0"sv,
      ""sv,
      "\0\0\0"sv,
      // The device named by a later field than the first: the last one decides.
      "remove@/x\0ACTION=remove\0SUBSYSTEM=pci\0PCI_SLOT_NAME=0000:01:00.0\0PCI_SLOT_NAME=0000:02:00.0\0"sv,
  };
  for (const std::string_view message : refused) {
    SCOPED_TRACE(printable(message));
    EXPECT_FALSE(detail::uevent_removes(message, device));
  }
}

}  // namespace
}  // namespace pcie
