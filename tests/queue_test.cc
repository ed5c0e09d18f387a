// The driver kit's queues, doorbells, waits and split 64-bit registers, against a device
// simulated in host memory: register windows are plain memory, the "device" is test code
// (or a thread) that reads the doorbells and writes completions as a controller would.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "pcie/mmio.h"
#include "pcie/queue.h"
#include "pcie/region.h"
#include "pcie/wait.h"

namespace pcie {
namespace {

using namespace std::chrono_literals;

// A register window in ordinary memory.
struct FakeRegisters {
  explicit FakeRegisters(std::size_t bytes, WidthSet widths = WidthSet::all(),
                         MemoryType type = MemoryType::uncached)
      : words(bytes / 8 + 1, 0), view(reinterpret_cast<std::byte*>(words.data()), bytes, widths, "fake BAR0", type) {}
  std::uint32_t u32(std::uint64_t offset) const {
    std::uint32_t value = 0;
    std::memcpy(&value, reinterpret_cast<const std::byte*>(words.data()) + offset, 4);
    return value;
  }
  std::vector<std::uint64_t> words;
  MmioView view;
};

// NVMe-shaped entries: a 64-byte command, a 16-byte completion whose status word (bytes
// 14-15) carries the phase tag in bit 0.
struct Command {
  std::uint8_t opcode = 0;
  std::uint8_t flags = 0;
  std::uint16_t command_id = 0;
  std::uint8_t rest[60] = {};
};
struct Completion {
  std::uint32_t result = 0;
  std::uint32_t reserved = 0;
  std::uint16_t sq_head = 0;
  std::uint16_t sq_id = 0;
  std::uint16_t command_id = 0;
  std::uint16_t status = 0;  // bit 0: phase tag
};
static_assert(sizeof(Command) == 64 && sizeof(Completion) == 16);
constexpr CompletionTag kNvmePhase{.byte_offset = 14, .mask = 1, .kind = CompletionTag::Kind::phase};

// DMA memory stand-in, aligned like a page.
struct alignas(4096) Memory {
  std::array<std::byte, 16384> bytes{};
};

TEST(Doorbell, PlacementIsCheckedAndRingWritesTheValue) {
  FakeRegisters registers(0x2000);
  auto bell = Doorbell::at(registers.view, 0x1000);
  ASSERT_TRUE(bell) << bell.error().message();
  bell->ring(17);
  EXPECT_EQ(registers.u32(0x1000), 17u);

  EXPECT_EQ(Doorbell::at(registers.view, 0x2000).error().code, Errc::out_of_range);
  EXPECT_EQ(Doorbell::at(registers.view, 0x1ffe).error().code, Errc::misaligned);
  FakeRegisters wide_only(0x2000, WidthSet::only(Width::bits64));
  EXPECT_EQ(Doorbell::at(wide_only.view, 0x1000).error().code, Errc::width_not_allowed);

  // NVMe's array: queue 3's completion head with CAP.DSTRD = 1 (8-byte stride).
  auto cq3 = Doorbell::in_array(registers.view, 0x1000, 2 * 3 + 1, 4 << 1);
  ASSERT_TRUE(cq3) << cq3.error().message();
  EXPECT_EQ(cq3->offset(), 0x1038u);
  cq3->ring(5);
  EXPECT_EQ(registers.u32(0x1038), 5u);
  // Hostile strides and indexes: overflow, past the end, below a register.
  EXPECT_EQ(Doorbell::in_array(registers.view, 0x1000, ~0ull / 2, 4).error().code, Errc::out_of_range);
  EXPECT_EQ(Doorbell::in_array(registers.view, ~0ull - 2, 1, 4).error().code, Errc::out_of_range);
  EXPECT_EQ(Doorbell::in_array(registers.view, 0x1000, 1024, 4).error().code, Errc::out_of_range);
  EXPECT_EQ(Doorbell::in_array(registers.view, 0x1000, 1, 2).error().code, Errc::invalid_argument);
  // Write-combined registers take the sfence path and still land.
  FakeRegisters combined(0x2000, WidthSet::all(), MemoryType::write_combined);
  Doorbell::at(combined.view, 0x8).value().ring(9);
  EXPECT_EQ(combined.u32(0x8), 9u);
  EXPECT_FALSE(Doorbell().valid());
}

TEST(Rings, CreationRefusesBadMemoryAndDepth) {
  Memory memory;
  const std::span<std::byte> all(memory.bytes);
  EXPECT_TRUE(SubmissionRing<Command>::create(all, 256, {}));  // exactly 16 KiB
  EXPECT_EQ(SubmissionRing<Command>::create(all, 257, {}).error().code, Errc::invalid_argument);
  EXPECT_EQ(SubmissionRing<Command>::create(all, 1, {}).error().code, Errc::invalid_argument);
  EXPECT_EQ(SubmissionRing<Command>::create(all, 0, {}).error().code, Errc::invalid_argument);
  EXPECT_EQ(SubmissionRing<Command>::create(all, ~0u, {}).error().code, Errc::invalid_argument);
  EXPECT_EQ(SubmissionRing<Completion>::create(all.subspan(2), 4, {}).error().code, Errc::invalid_argument)
      << "misaligned for the entry";
  EXPECT_EQ(SubmissionRing<Command>::create({}, 4, {}).error().code, Errc::invalid_argument);
  EXPECT_EQ(CompletionRing<Completion>::create(all, 4, {.byte_offset = 16, .mask = 1}, {}).error().code,
            Errc::invalid_argument);
  EXPECT_EQ(CompletionRing<Completion>::create(all, 4, {.byte_offset = 14, .mask = 0}, {}).error().code,
            Errc::invalid_argument);
  EXPECT_FALSE(SubmissionRing<Command>().valid());
  EXPECT_FALSE(CompletionRing<Completion>().valid());
}

// Default-constructed rings (a queue struct built step by step) fail or find nothing, as
// every other empty handle does, instead of writing or reading through a null pointer.
TEST(Rings, EmptyRingsFailOrFindNothing) {
  SubmissionRing<Command> submissions;
  EXPECT_FALSE(submissions.valid());
  EXPECT_EQ(submissions.free_slots(), 0u);
  EXPECT_EQ(submissions.in_flight(), 0u);
  auto pushed = submissions.push(Command{});
  ASSERT_FALSE(pushed);
  EXPECT_EQ(pushed.error().code, Errc::invalid_argument);
  EXPECT_EQ(submissions.consumed_up_to(0).error().code, Errc::out_of_range);
  EXPECT_EQ(submissions.slot(0), nullptr);
  submissions.ring();  // no doorbell: nothing happens

  CompletionRing<Completion> completions;
  EXPECT_FALSE(completions.valid());
  EXPECT_FALSE(completions.peek());
  completions.pop();  // nothing to consume: nothing happens
  EXPECT_EQ(completions.head(), 0u);
  completions.ring();
  auto waited = completions.wait({.timeout = 0ms});
  ASSERT_TRUE(waited);
  EXPECT_FALSE(waited->has_value());
}

TEST(Rings, FullRingIsBusyAndHostileHeadsChangeNothing) {
  Memory memory;
  FakeRegisters registers(0x2000);
  auto sq = SubmissionRing<Command>::create(memory.bytes, 4, Doorbell::at(registers.view, 0x1000).value()).value();
  for (std::uint16_t id = 0; id < 3; ++id) ASSERT_TRUE(sq.push(Command{.opcode = 1, .command_id = id}));
  EXPECT_EQ(sq.free_slots(), 0u);
  auto refused = sq.push(Command{});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::busy);
  EXPECT_EQ(registers.u32(0x1000), 0u) << "nothing announced before ring()";
  sq.ring();
  EXPECT_EQ(registers.u32(0x1000), 3u);
  // The device claims a head beyond the tail, or outside the ring: refused, nothing changes.
  for (std::uint32_t head : {4u, 100u, ~0u}) {
    EXPECT_EQ(sq.consumed_up_to(head).error().code, Errc::out_of_range) << head;
  }
  EXPECT_EQ(sq.in_flight(), 3u);
  ASSERT_TRUE(sq.consumed_up_to(2));
  EXPECT_EQ(sq.free_slots(), 2u);
  EXPECT_EQ(sq.consumed_up_to(1).error().code, Errc::out_of_range) << "a head cannot go backwards";
  ASSERT_TRUE(sq.push(Command{.command_id = 3}));
  ASSERT_TRUE(sq.push(Command{.command_id = 4}));
  EXPECT_EQ(sq.tail(), 1u) << "wrapped";
  EXPECT_EQ(sq.slot(0)->command_id, 4);
}

// A controller in test code: takes every command between its head and the SQ tail
// doorbell and posts a completion for each with the phase of its pass over the CQ.
struct SimulatedController {
  FakeRegisters& registers;
  std::span<Command> sq;
  std::span<Completion> cq;
  std::uint32_t sq_head = 0;
  std::uint32_t cq_tail = 0;
  std::uint16_t phase = 1;

  void process() {
    const std::uint32_t tail = registers.u32(0x1000);
    while (sq_head != tail) {
      const Command& command = sq[sq_head];
      sq_head = (sq_head + 1) % sq.size();
      Completion completion{.result = command.opcode * 1000u + command.command_id,
                            .sq_head = static_cast<std::uint16_t>(sq_head),
                            .command_id = command.command_id};
      // The entry first, the status word with the phase last (a device's write order).
      std::memcpy(static_cast<void*>(&cq[cq_tail]), &completion, 14);
      __atomic_store_n(&cq[cq_tail].status, phase, __ATOMIC_RELEASE);
      if (++cq_tail == cq.size()) {
        cq_tail = 0;
        phase ^= 1;
      }
    }
  }
};

TEST(Rings, NvmeStyleQueuePairRunsManyLapsWithPhaseFlips) {
  Memory sq_memory;
  Memory cq_memory;
  FakeRegisters registers(0x2000);
  constexpr std::uint32_t kDepth = 8;
  auto sq = SubmissionRing<Command>::create(sq_memory.bytes, kDepth,
                                            Doorbell::in_array(registers.view, 0x1000, 0, 4).value())
                .value();
  auto cq = CompletionRing<Completion>::create(cq_memory.bytes, kDepth, kNvmePhase,
                                               Doorbell::in_array(registers.view, 0x1000, 1, 4).value())
                .value();
  SimulatedController device{registers,
                             {reinterpret_cast<Command*>(sq_memory.bytes.data()), kDepth},
                             {reinterpret_cast<Completion*>(cq_memory.bytes.data()), kDepth}};
  std::uint16_t next_id = 0;
  std::uint16_t expected_id = 0;
  unsigned phase_flips = 0;
  // Batches of 1..7 commands, 100 times: every wrap of both rings, at every offset.
  for (unsigned round = 0; round < 100; ++round) {
    const unsigned batch = 1 + round % (kDepth - 1);
    for (unsigned i = 0; i < batch; ++i) ASSERT_TRUE(sq.push(Command{.opcode = 2, .command_id = next_id++}));
    EXPECT_FALSE(cq.peek()) << "nothing completes before the doorbell";
    sq.ring();
    device.process();
    for (unsigned i = 0; i < batch; ++i) {
      const bool phase_before = cq.phase();
      auto completion = cq.peek();
      ASSERT_TRUE(completion) << "round " << round << " entry " << i;
      EXPECT_EQ(completion->command_id, expected_id);
      EXPECT_EQ(completion->result, 2000u + expected_id);
      ASSERT_TRUE(sq.consumed_up_to(completion->sq_head));
      cq.pop();
      if (cq.phase() != phase_before) ++phase_flips;
      ++expected_id;
    }
    EXPECT_FALSE(cq.peek()) << "a stale entry of the last pass is not new";
    cq.ring();
    EXPECT_EQ(registers.u32(0x1004), cq.head());
    EXPECT_EQ(sq.in_flight(), 0u);
  }
  EXPECT_EQ(phase_flips, expected_id / kDepth);
  EXPECT_GT(phase_flips, 10u);
}

TEST(Rings, DoneBitRingClearsWhatItConsumes) {
  struct Descriptor {
    std::uint64_t address = 0;
    std::uint16_t length = 0;
    std::uint8_t status = 0;  // bit 0: descriptor done
    std::uint8_t pad[5] = {};
  };
  alignas(64) std::array<Descriptor, 4> ring_memory{};
  auto rx = CompletionRing<Descriptor>::create(std::as_writable_bytes(std::span(ring_memory)), 4,
                                               {.byte_offset = 10, .mask = 1, .kind = CompletionTag::Kind::done}, {})
                .value();
  for (unsigned lap = 0; lap < 3; ++lap) {
    for (unsigned slot = 0; slot < 4; ++slot) {
      EXPECT_FALSE(rx.peek()) << "lap " << lap << " slot " << slot;
      ring_memory[slot].length = static_cast<std::uint16_t>(lap * 10 + slot);
      __atomic_store_n(&ring_memory[slot].status, std::uint8_t{1}, __ATOMIC_RELEASE);
      auto descriptor = rx.peek();
      ASSERT_TRUE(descriptor);
      EXPECT_EQ(descriptor->length, lap * 10 + slot);
      rx.pop();
      EXPECT_EQ(ring_memory[slot].status, 0) << "the done bit is cleared for the next lap";
    }
  }
  rx.ring();  // no doorbell: nothing to do, no crash
}

TEST(Rings, WaitSeesACompletionPostedLaterTimesOutOrStopsEarly) {
  Memory sq_memory;
  Memory cq_memory;
  FakeRegisters registers(0x2000);
  auto sq = SubmissionRing<Command>::create(sq_memory.bytes, 4, Doorbell::at(registers.view, 0x1000).value()).value();
  auto cq = CompletionRing<Completion>::create(cq_memory.bytes, 4, kNvmePhase, {}).value();
  SimulatedController device{registers,
                             {reinterpret_cast<Command*>(sq_memory.bytes.data()), 4},
                             {reinterpret_cast<Completion*>(cq_memory.bytes.data()), 4}};
  // Nothing posted: nullopt after the timeout.
  auto nothing = cq.wait({.timeout = 5ms});
  ASSERT_TRUE(nothing) << nothing.error().message();
  EXPECT_FALSE(*nothing);
  // Posted by another thread 20 ms later, past the spin: seen while sleeping.
  ASSERT_TRUE(sq.push(Command{.opcode = 7, .command_id = 42}));
  sq.ring();
  std::thread controller([&] {
    std::this_thread::sleep_for(20ms);
    device.process();
  });
  auto seen = cq.wait({.timeout = 5s});
  controller.join();
  ASSERT_TRUE(seen) << seen.error().message();
  ASSERT_TRUE(*seen);
  EXPECT_EQ((*seen)->command_id, 42);
  cq.pop();
  // A fatal status ends the wait at once with its error.
  int checks = 0;
  auto stopped = cq.wait({.timeout = 10s, .stop_if = [&checks]() -> Result<void> {
                            if (++checks < 3) return {};
                            return std::unexpected(make_error(Errc::io_error, "wait", "controller", "CSTS.CFS is set"));
                          }});
  ASSERT_FALSE(stopped);
  EXPECT_EQ(stopped.error().reason, "CSTS.CFS is set");
  EXPECT_EQ(checks, 3);
}

TEST(Wait, DmaWordMatchesTimesOutAndRefusesMisalignedWords) {
  alignas(8) std::array<std::uint32_t, 4> words{};
  auto timed_out = wait_for_dma_word<std::uint32_t>(&words[1], 0xff, 0x5a, {.timeout = 2ms});
  ASSERT_TRUE(timed_out);
  EXPECT_FALSE(timed_out->matched);
  words[1] = 0x1235a;
  auto matched = wait_for_dma_word<std::uint32_t>(&words[1], 0xff, 0x5a, {.timeout = 2ms});
  ASSERT_TRUE(matched);
  EXPECT_TRUE(matched->matched);
  EXPECT_EQ(matched->value, 0x1235au);
  const auto* odd = reinterpret_cast<const std::uint32_t*>(reinterpret_cast<const std::byte*>(words.data()) + 2);
  EXPECT_EQ(wait_for_dma_word<std::uint32_t>(odd, 1, 1, {}).error().code, Errc::misaligned);
  EXPECT_EQ(wait_for_dma_word<std::uint64_t>(nullptr, 1, 1, {}).error().code, Errc::invalid_argument);
}

TEST(Wait, TimeoutsAtTheEdgesNeitherOverflowNorHang) {
  std::uint32_t word = 1;
  // No deadline at all (nanoseconds::max()): matches at once, no overflow.
  auto forever = wait_for_dma_word<std::uint32_t>(&word, 1, 1, {.timeout = std::chrono::nanoseconds::max()});
  ASSERT_TRUE(forever);
  EXPECT_TRUE(forever->matched);
  // Zero and negative timeouts: exactly one read.
  for (std::chrono::nanoseconds timeout : std::vector<std::chrono::nanoseconds>{0ns, -5s, std::chrono::nanoseconds::min()}) {
    int reads = 0;
    auto once = wait_until([&reads] { return ++reads; }, [](int) { return false; }, {.timeout = timeout});
    ASSERT_TRUE(once);
    EXPECT_FALSE(once->matched);
    EXPECT_EQ(reads, 1);
  }
  // Hostile schedules: zero or negative sleeps, sleeps longer than the timeout.
  for (WaitOptions options : {WaitOptions{.timeout = 3ms, .spin = 0ns, .min_sleep = 0ns},
                              WaitOptions{.timeout = 3ms, .spin = -1s, .min_sleep = -1s, .max_sleep = -1s},
                              WaitOptions{.timeout = 3ms, .spin = 0ns, .min_sleep = 1h, .max_sleep = 24h},
                              WaitOptions{.timeout = 3ms, .spin = 0ns, .max_sleep = std::chrono::nanoseconds::max()}}) {
    const auto start = std::chrono::steady_clock::now();
    auto waited = wait_until([] { return 0; }, [](int value) { return value == 1; }, options);
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_TRUE(waited);
    EXPECT_FALSE(waited->matched);
    EXPECT_LT(took, 1s) << "the deadline bounds every sleep";
  }
}

// CPU time this thread has used.
std::chrono::microseconds thread_cpu_time() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return std::chrono::seconds(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         std::chrono::microseconds(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

TEST(Wait, LongWaitsSleepInsteadOfSpinning) {
  std::uint32_t word = 0;
  const auto cpu_before = thread_cpu_time();
  const auto start = std::chrono::steady_clock::now();
  auto waited = wait_for_dma_word<std::uint32_t>(&word, 1, 1, {.timeout = 200ms});
  const auto wall = std::chrono::steady_clock::now() - start;
  const auto cpu = thread_cpu_time() - cpu_before;
  ASSERT_TRUE(waited);
  EXPECT_FALSE(waited->matched);
  EXPECT_GE(wall, 200ms);
  EXPECT_LT(wall, 2s);
  // A spinning wait would use about 200 ms of CPU; backing off to 1 ms sleeps uses a few.
  EXPECT_LT(cpu, 60ms) << "CPU " << cpu.count() << " us over " << wall.count() << " ns";
}

TEST(MmioPoll, StopsOnAllOnesOnlyWhenAskedAndHonoursStopIf) {
  FakeRegisters registers(0x100);
  registers.words[0] = 0xffff'ffff'ffff'ffffull;  // offset 0 and 4: all ones
  auto removed = registers.view.poll<std::uint32_t>(0x0, 1, 0, {.timeout = 1s, .all_ones_means_removed = true});
  ASSERT_FALSE(removed);
  EXPECT_EQ(removed.error().code, Errc::device_removed);
  EXPECT_NE(removed.error().object.find("fake BAR0 offset 0x0"), std::string::npos) << removed.error().message();
  // All ones that the wait asks for is a match, not a removal.
  auto wanted = registers.view.poll<std::uint32_t>(0x0, 1, 1, {.timeout = 1s, .all_ones_means_removed = true});
  ASSERT_TRUE(wanted);
  EXPECT_TRUE(wanted->matched);
  // Without the option, all ones is just a value that does not match.
  auto plain = registers.view.poll<std::uint32_t>(0x0, 1, 0, {.timeout = 2ms});
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->matched);
  auto stopped = registers.view.poll<std::uint32_t>(
      0x8, 1, 1, {.timeout = 10s, .stop_if = []() -> Result<void> {
                    return std::unexpected(make_error(Errc::io_error, "poll", "CSTS", "fatal"));
                  }});
  ASSERT_FALSE(stopped);
  EXPECT_EQ(stopped.error().reason, "fatal");
  // The spin-only overload and the checks up front.
  EXPECT_FALSE(registers.view.poll<std::uint32_t>(0x8, 1, 1, 1ms).value().matched);
  EXPECT_EQ(registers.view.poll<std::uint32_t>(0x100, 1, 1, 1ms).error().code, Errc::out_of_range);
  EXPECT_EQ(registers.view.poll<std::uint32_t>(0x2, 1, 1, 1ms).error().code, Errc::misaligned);
}

// Records each access, in order, as (write?, offset, value).
class RecordingRegion : public Region {
 public:
  explicit RecordingRegion(WidthSet widths, bool writable = true) : Region(widths, writable) {}
  std::uint64_t size() const override { return 0x100; }
  const std::string& name() const override { return name_; }
  struct Access {
    bool write;
    std::uint64_t offset;
    std::uint64_t value;
    bool operator==(const Access&) const = default;
  };
  mutable std::vector<Access> accesses;

 protected:
  Result<std::uint64_t> read_checked(Width, std::uint64_t offset) const override {
    const std::uint64_t value = 0x1000 + offset;
    accesses.push_back({false, offset, value});
    return value;
  }
  Result<void> write_checked(Width, std::uint64_t offset, std::uint64_t value) override {
    accesses.push_back({true, offset, value});
    return {};
  }

 private:
  std::string name_ = "recording BAR";
};

TEST(SplitRegisters, HalvesGoInTheStatedOrder) {
  RecordingRegion region(WidthSet::only(Width::bits32));
  ASSERT_TRUE(region.write64_halves(0x10, 0x11223344'55667788ull, HalfOrder::low_first));
  ASSERT_TRUE(region.write64_halves(0x20, 0x11223344'55667788ull, HalfOrder::high_first));
  using A = RecordingRegion::Access;
  EXPECT_EQ(region.accesses, (std::vector<A>{{true, 0x10, 0x55667788},
                                             {true, 0x14, 0x11223344},
                                             {true, 0x24, 0x11223344},
                                             {true, 0x20, 0x55667788}}));
  region.accesses.clear();
  EXPECT_EQ(region.read64_halves(0x30, HalfOrder::high_first).value(), (0x1034ull << 32) | 0x1030);
  EXPECT_EQ(region.read64_halves(0x30, HalfOrder::low_first).value(), (0x1034ull << 32) | 0x1030);
  EXPECT_EQ(region.accesses, (std::vector<A>{{false, 0x34, 0x1034},
                                             {false, 0x30, 0x1030},
                                             {false, 0x30, 0x1030},
                                             {false, 0x34, 0x1034}}));
  // Refusals come before the first half: nothing is written.
  region.accesses.clear();
  EXPECT_EQ(region.write64_halves(0xfc, 1, HalfOrder::low_first).error().code, Errc::out_of_range);
  EXPECT_EQ(region.write64_halves(0x104, 1, HalfOrder::low_first).error().code, Errc::out_of_range);
  EXPECT_EQ(region.write64_halves(0x12, 1, HalfOrder::low_first).error().code, Errc::misaligned);
  EXPECT_EQ(region.write64_halves(~0ull - 3, 1, HalfOrder::high_first).error().code, Errc::out_of_range);
  EXPECT_EQ(region.read64_halves(0xfc, HalfOrder::high_first).error().code, Errc::out_of_range);
  RecordingRegion wide_only(WidthSet::only(Width::bits64));
  EXPECT_EQ(wide_only.write64_halves(0x10, 1, HalfOrder::low_first).error().code, Errc::width_not_allowed);
  RecordingRegion read_only(WidthSet::all(), false);
  EXPECT_EQ(read_only.write64_halves(0x10, 1, HalfOrder::high_first).error().code, Errc::permission_denied);
  EXPECT_TRUE(region.accesses.empty());
  EXPECT_TRUE(wide_only.accesses.empty());
  EXPECT_TRUE(read_only.accesses.empty());
}

TEST(SplitRegisters, MmioViewPutsEachHalfInPlace) {
  FakeRegisters registers(0x40, WidthSet::only(Width::bits32));
  for (HalfOrder order : {HalfOrder::low_first, HalfOrder::high_first}) {
    registers.words.assign(registers.words.size(), 0);
    ASSERT_TRUE(registers.view.checked_write64_halves(0x8, 0xaabbccdd'11223344ull, order));
    EXPECT_EQ(registers.u32(0x8), 0x11223344u);
    EXPECT_EQ(registers.u32(0xc), 0xaabbccddu);
    EXPECT_EQ(registers.view.checked_read64_halves(0x8, order).value(), 0xaabbccdd'11223344ull);
    EXPECT_EQ(registers.view.read64_halves(0x8, order), 0xaabbccdd'11223344ull);
  }
  EXPECT_EQ(registers.view.checked_write64_halves(0x3c, 1, HalfOrder::low_first).error().code, Errc::out_of_range);
  EXPECT_EQ(registers.u32(0x3c), 0u) << "nothing written when the high half is outside";
  EXPECT_EQ(registers.view.checked_read64_halves(0x6, HalfOrder::low_first).error().code, Errc::misaligned);
}

}  // namespace
}  // namespace pcie
