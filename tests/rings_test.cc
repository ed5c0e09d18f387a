// The driver kit's other ring shapes, as tables of cases against a device simulated in host
// memory: a ring the device writes back in place (pcie/writeback_ring.h, an Intel NIC's
// legacy descriptors), completion by a counter the device writes (pcie/completion_counter.h,
// XDMA's poll-mode write-back and virtio's used index) and a linked descriptor chain
// (pcie/descriptor_chain.h, XDMA's format with its next-adjacent count).
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pcie/completion_counter.h"
#include "pcie/descriptor_chain.h"
#include "pcie/mmio.h"
#include "pcie/writeback_ring.h"

namespace pcie {
namespace {

using namespace std::chrono_literals;

// DMA memory stand-in, aligned like a page.
struct alignas(4096) Memory {
  std::array<std::byte, 16384> bytes{};
};

// A register window in ordinary memory.
struct FakeRegisters {
  FakeRegisters() : view(reinterpret_cast<std::byte*>(words.data()), 0x100, WidthSet::all(), "fake BAR0") {}
  std::uint32_t u32(std::uint64_t offset) const {
    std::uint32_t value = 0;
    std::memcpy(&value, reinterpret_cast<const std::byte*>(words.data()) + offset, 4);
    return value;
  }
  void set_u32(std::uint64_t offset, std::uint32_t value) {
    std::memcpy(reinterpret_cast<std::byte*>(words.data()) + offset, &value, 4);
  }
  std::array<std::uint64_t, 32> words{};
  MmioView view;
};

// ---- WritebackRing ----

// An 82574L legacy receive descriptor (datasheet 7.1.4): status at byte 12, DD bit 0.
struct RxDescriptor {
  std::uint64_t buffer = 0;
  std::uint16_t length = 0;
  std::uint16_t checksum = 0;
  std::uint8_t status = 0;
  std::uint8_t errors = 0;
  std::uint16_t special = 0;
};
static_assert(sizeof(RxDescriptor) == 16);
constexpr DoneBit kDd{.byte_offset = 12, .mask = 0x01};
constexpr std::uint64_t kRdt = 0x18;

// The device's side: writes back the descriptors from its head up to the tail register,
// the length first and the status byte with DD last (release), as a NIC's write-back.
struct SimulatedNic {
  std::span<RxDescriptor> ring;
  const FakeRegisters& registers;
  std::uint32_t head = 0;

  // Writes back up to `count` descriptors; returns how many it did.
  unsigned receive(unsigned count) {
    unsigned done = 0;
    while (done < count && head != registers.u32(kRdt)) {
      RxDescriptor& slot = ring[head];
      slot.length = static_cast<std::uint16_t>(slot.buffer & 0xffff);
      __atomic_store_n(&slot.status, std::uint8_t{0x03}, __ATOMIC_RELEASE);  // DD | EOP
      head = (head + 1) % ring.size();
      ++done;
    }
    return done;
  }
};

struct WritebackCase {
  const char* name;
  std::uint32_t depth;
  unsigned batch;   // descriptors the device writes back per round
  unsigned rounds;  // enough for several passes over the ring
};

class WritebackRingCases : public ::testing::TestWithParam<WritebackCase> {};

TEST_P(WritebackRingCases, WrapsOverManyPassesAndReapClearsDone) {
  const WritebackCase& c = GetParam();
  Memory memory;
  FakeRegisters registers;
  auto ring =
      WritebackRing<RxDescriptor>::create(memory.bytes, c.depth, kDd, Doorbell::at(registers.view, kRdt).value());
  ASSERT_TRUE(ring) << ring.error().message();
  SimulatedNic nic{{reinterpret_cast<RxDescriptor*>(memory.bytes.data()), c.depth}, registers};
  std::uint64_t next_buffer = 0x1000;
  std::uint64_t expected = 0x1000;
  auto fill = [&](std::uint32_t slot) {
    EXPECT_EQ(slot, ring->tail());
    return RxDescriptor{.buffer = next_buffer++, .status = 0xff};  // a stale DD the ring must clear
  };
  ASSERT_EQ(*ring->refill(fill), c.depth - 1);
  EXPECT_EQ(registers.u32(kRdt), ring->tail());
  std::uint64_t reaped = 0;
  for (unsigned round = 0; round < c.rounds; ++round) {
    EXPECT_FALSE(ring->peek().has_value()) << "nothing is done before the device writes back";
    const unsigned written = nic.receive(c.batch);
    for (unsigned i = 0; i < written; ++i) {
      const std::uint32_t slot = ring->head();
      auto done = ring->peek();
      ASSERT_TRUE(done) << c.name << " round " << round;
      EXPECT_EQ(done->buffer, expected);
      EXPECT_EQ(done->length, expected & 0xffff);
      ASSERT_TRUE(ring->reap());
      EXPECT_EQ(nic.ring[slot].status & kDd.mask, 0) << "reap clears the done bit in place";
      ++expected;
      ++reaped;
    }
    ASSERT_TRUE(ring->refill(fill));
    EXPECT_EQ(ring->free_slots(), 0u);
  }
  EXPECT_GT(reaped, 2u * c.depth) << "several passes over the ring";
}

INSTANTIATE_TEST_SUITE_P(Table, WritebackRingCases,
                         ::testing::Values(WritebackCase{"smallest", 2, 1, 10},
                                           WritebackCase{"one_at_a_time", 8, 1, 30},
                                           WritebackCase{"batches", 16, 5, 20}, WritebackCase{"whole_ring", 32, 31, 5},
                                           WritebackCase{"odd_depth", 7, 4, 20}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(WritebackRing, FullIsBusyEmptyFindsNothingAndPostClearsDone) {
  Memory memory;
  FakeRegisters registers;
  auto ring =
      WritebackRing<RxDescriptor>::create(memory.bytes, 4, kDd, Doorbell::at(registers.view, kRdt).value()).value();
  EXPECT_EQ(ring.posted(), 0u);
  EXPECT_EQ(ring.free_slots(), 3u);
  EXPECT_FALSE(ring.peek());
  EXPECT_FALSE(ring.reap()) << "nothing posted";
  // A done bit in memory at the head with nothing posted is not a write-back.
  reinterpret_cast<RxDescriptor*>(memory.bytes.data())->status = 1;
  EXPECT_FALSE(ring.peek());
  for (int i = 0; i < 3; ++i) {
    auto slot = ring.post(RxDescriptor{.buffer = 0x100u + i, .status = 0x01});
    ASSERT_TRUE(slot);
    EXPECT_EQ(*slot, static_cast<std::uint32_t>(i));
    EXPECT_EQ(reinterpret_cast<RxDescriptor*>(memory.bytes.data())[i].status, 0) << "posted with DD cleared";
  }
  auto full = ring.post(RxDescriptor{});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::busy);
  EXPECT_EQ(registers.u32(kRdt), 0u) << "nothing announced before ring()";
  ring.ring();
  EXPECT_EQ(registers.u32(kRdt), 3u);
  EXPECT_FALSE(ring.peek()) << "posted, not yet written back";
  EXPECT_FALSE(ring.reap());
  // A refill of a full ring posts nothing and writes no tail.
  registers.set_u32(kRdt, 0xdead);
  EXPECT_EQ(*ring.refill([](std::uint32_t) { return RxDescriptor{}; }), 0u);
  EXPECT_EQ(registers.u32(kRdt), 0xdeadu);
}

TEST(WritebackRing, RefillStopsWhenTheFillHasNoBuffer) {
  Memory memory;
  FakeRegisters registers;
  auto ring =
      WritebackRing<RxDescriptor>::create(memory.bytes, 16, kDd, Doorbell::at(registers.view, kRdt).value()).value();
  int buffers = 5;
  auto posted = ring.refill([&](std::uint32_t slot) -> std::optional<RxDescriptor> {
    if (buffers == 0) return std::nullopt;
    --buffers;
    return RxDescriptor{.buffer = slot};
  });
  ASSERT_TRUE(posted);
  EXPECT_EQ(*posted, 5u);
  EXPECT_EQ(registers.u32(kRdt), 5u);
  EXPECT_EQ(ring.posted(), 5u);
}

TEST(WritebackRing, WaitSeesAWriteBackFromAnotherThread) {
  Memory memory;
  FakeRegisters registers;
  auto ring =
      WritebackRing<RxDescriptor>::create(memory.bytes, 8, kDd, Doorbell::at(registers.view, kRdt).value()).value();
  ASSERT_TRUE(ring.refill([](std::uint32_t slot) { return RxDescriptor{.buffer = 0x40u + slot}; }));
  auto timed_out = ring.wait({.timeout = 1ms});
  ASSERT_TRUE(timed_out);
  EXPECT_FALSE(timed_out->has_value());
  SimulatedNic nic{{reinterpret_cast<RxDescriptor*>(memory.bytes.data()), 8}, registers};
  std::thread device([&] {
    std::this_thread::sleep_for(20ms);
    nic.receive(1);
  });
  auto done = ring.wait({.timeout = 5s});
  device.join();
  ASSERT_TRUE(done && *done);
  EXPECT_EQ((*done)->buffer, 0x40u);
}

TEST(WritebackRing, CreationRefusesBadMemoryDepthAndDoneBit) {
  Memory memory;
  const std::span<std::byte> all(memory.bytes);
  struct Case {
    const char* name;
    std::span<std::byte> memory;
    std::uint32_t depth;
    DoneBit done;
  };
  for (const Case& c :
       {Case{"depth 1", all, 1, kDd}, Case{"depth 0", all, 0, kDd}, Case{"too deep for the memory", all, 1025, kDd},
        Case{"depth past 2^24", all, ~0u, kDd}, Case{"no memory", {}, 4, kDd},
        Case{"misaligned", all.subspan(4), 4, kDd}, Case{"done byte outside", all, 4, {.byte_offset = 16, .mask = 1}},
        Case{"mask 0", all, 4, {.byte_offset = 12, .mask = 0}}}) {
    auto ring = WritebackRing<RxDescriptor>::create(c.memory, c.depth, c.done, {});
    ASSERT_FALSE(ring) << c.name;
    EXPECT_EQ(ring.error().code, Errc::invalid_argument) << c.name;
  }
  EXPECT_TRUE(WritebackRing<RxDescriptor>::create(all, 1024, kDd, {})) << "exactly 16 KiB, no doorbell";
}

TEST(WritebackRing, EmptyRingFailsOrFindsNothing) {
  WritebackRing<RxDescriptor> ring;
  EXPECT_FALSE(ring.valid());
  EXPECT_EQ(ring.posted(), 0u);
  EXPECT_EQ(ring.free_slots(), 0u);
  EXPECT_EQ(ring.post(RxDescriptor{}).error().code, Errc::invalid_argument);
  EXPECT_EQ(ring.refill([](std::uint32_t) { return RxDescriptor{}; }).error().code, Errc::invalid_argument);
  EXPECT_FALSE(ring.peek());
  EXPECT_FALSE(ring.reap());
  ring.ring();  // no doorbell, no memory: nothing happens
  auto waited = ring.wait({.timeout = 0ms});
  ASSERT_TRUE(waited);
  EXPECT_FALSE(waited->has_value());
}

// ---- CompletionCounter ----

constexpr CounterLayout kXdma{.count_bits = 24, .error_mask = 1u << 31};

struct alignas(8) Word {
  std::array<std::byte, 8> bytes{};
  void device_writes(std::uint64_t value) { std::memcpy(bytes.data(), &value, 8); }
};

// One look: the driver expects `expect` more, the device writes `device`, and poll()
// returns `advance` or fails with `error`.
struct Step {
  std::uint64_t expect;
  std::uint64_t device;
  std::optional<std::uint64_t> advance;
  std::optional<Errc> error = std::nullopt;
};
struct CounterCase {
  const char* name;
  CounterLayout layout;
  std::uint64_t start;
  std::vector<Step> steps;
};

class CompletionCounterCases : public ::testing::TestWithParam<CounterCase> {};

TEST_P(CompletionCounterCases, CountsWrapsAndRefusesHostileValues) {
  const CounterCase& c = GetParam();
  Word word;
  auto counter = CompletionCounter<std::uint32_t>::create(word.bytes, c.layout);
  ASSERT_TRUE(counter) << counter.error().message();
  counter->reset(c.start);
  for (std::size_t i = 0; i < c.steps.size(); ++i) {
    const Step& step = c.steps[i];
    ASSERT_TRUE(counter->expect(step.expect));
    word.device_writes(step.device);
    const std::uint64_t last = counter->last_count();
    const std::uint64_t outstanding = counter->outstanding();
    auto advance = counter->poll();
    if (step.error) {
      ASSERT_FALSE(advance) << c.name << " step " << i;
      EXPECT_EQ(advance.error().code, *step.error) << c.name << " step " << i << ": " << advance.error().message();
      EXPECT_EQ(counter->last_count(), last) << "nothing changes";
      EXPECT_EQ(counter->outstanding(), outstanding) << "nothing changes";
    } else {
      ASSERT_TRUE(advance) << c.name << " step " << i << ": " << advance.error().message();
      EXPECT_EQ(*advance, *step.advance) << c.name << " step " << i;
      EXPECT_EQ(counter->outstanding(), outstanding - *step.advance);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, CompletionCounterCases,
    ::testing::Values(
        CounterCase{"counts_in_steps", kXdma, 0, {{5, 3, 3}, {0, 5, 2}, {0, 5, 0}, {4, 9, 4}}},
        CounterCase{"too_far_ahead", kXdma, 0, {{2, 3, std::nullopt, Errc::malformed}, {0, 2, 2}}},
        CounterCase{"behind", kXdma, 0, {{4, 3, 3}, {0, 2, std::nullopt, Errc::malformed}, {0, 4, 1}}},
        CounterCase{"wraps_at_24_bits", kXdma, 0xfffffe, {{4, 0x000001, 3}, {0, 0x000002, 1}}},
        CounterCase{"wrap_too_far", kXdma, 0xfffffe, {{2, 0x000001, std::nullopt, Errc::malformed}}},
        CounterCase{"reserved_bits_ignored", kXdma, 0, {{3, 0x7f000002, 2}}},
        CounterCase{"error_bit", kXdma, 0, {{3, 0x80000001, std::nullopt, Errc::io_error}, {0, 0x1, 1}}},
        CounterCase{"error_bit_with_hostile_count", kXdma, 0, {{1, 0x80ffffff, std::nullopt, Errc::io_error}}},
        CounterCase{"whole_word", {}, 0xfffffffe, {{3, 1, 3}, {1, 0xffffffff, std::nullopt, Errc::malformed}}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(CompletionCounter, VirtioUsedIndexWrapsAt16Bits) {
  alignas(2) std::array<std::byte, 2> word{};
  auto used = CompletionCounter<std::uint16_t>::create(word).value();
  used.reset(65534);
  ASSERT_TRUE(used.expect(3));
  const std::uint16_t index = 1;  // 65534 + 3, modulo 2^16
  std::memcpy(word.data(), &index, 2);
  EXPECT_EQ(*used.poll(), 3u);
  ASSERT_TRUE(used.expect(1));
  const std::uint16_t behind = 65535;
  std::memcpy(word.data(), &behind, 2);
  EXPECT_EQ(used.poll().error().code, Errc::malformed);
  EXPECT_EQ(used.expect(65535).error().code, Errc::out_of_range) << "65536 outstanding would look like none";
}

TEST(CompletionCounter, ExpectRefusesMoreThanTheCountCanTell) {
  Word word;
  auto counter = CompletionCounter<std::uint32_t>::create(word.bytes, kXdma).value();
  ASSERT_TRUE(counter.expect(0xffffff));
  auto refused = counter.expect(1);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::out_of_range);
  EXPECT_EQ(counter.outstanding(), 0xffffffu);
  auto wide = CompletionCounter<std::uint64_t>::create(word.bytes).value();
  ASSERT_TRUE(wide.expect(~0ull));
  EXPECT_EQ(wide.expect(1).error().code, Errc::out_of_range) << "no overflow of the outstanding count";
}

TEST(CompletionCounter, WaitForAtLeastNCompletions) {
  Word word;
  auto counter = CompletionCounter<std::uint32_t>::create(word.bytes, kXdma).value();
  ASSERT_TRUE(counter.expect(4));
  EXPECT_EQ(counter.wait(5, {.timeout = 0ms}).error().code, Errc::invalid_argument) << "only 4 outstanding";
  auto nothing = counter.wait(1, {.timeout = 2ms});
  ASSERT_TRUE(nothing);
  EXPECT_FALSE(nothing->matched);
  EXPECT_EQ(nothing->value, 0u);
  std::thread device([&] {
    for (std::uint32_t count = 1; count <= 4; ++count) {
      std::this_thread::sleep_for(5ms);
      __atomic_store_n(reinterpret_cast<std::uint32_t*>(word.bytes.data()), count, __ATOMIC_RELEASE);
    }
  });
  auto waited = counter.wait(4, {.timeout = 5s});
  device.join();
  ASSERT_TRUE(waited) << waited.error().message();
  EXPECT_TRUE(waited->matched);
  EXPECT_EQ(waited->value, 4u);
  EXPECT_EQ(counter.outstanding(), 0u);
  // An error bit ends the wait with io_error.
  ASSERT_TRUE(counter.expect(2));
  word.device_writes(0x80000005);
  EXPECT_EQ(counter.wait(2, {.timeout = 1s}).error().code, Errc::io_error);
}

TEST(CompletionCounter, CreationChecksTheWordAndTheLayout) {
  Word word;
  const std::span<std::byte> bytes(word.bytes);
  EXPECT_EQ(CompletionCounter<std::uint32_t>::create({}).error().code, Errc::invalid_argument);
  EXPECT_EQ(CompletionCounter<std::uint32_t>::create(bytes.first(3)).error().code, Errc::invalid_argument);
  EXPECT_EQ(CompletionCounter<std::uint32_t>::create(bytes.subspan(2)).error().code, Errc::misaligned);
  EXPECT_EQ(CompletionCounter<std::uint32_t>::create(bytes, {.count_bits = 33}).error().code, Errc::invalid_argument);
  EXPECT_EQ(CompletionCounter<std::uint32_t>::create(bytes, {.count_bits = 24, .error_mask = 1u << 23}).error().code,
            Errc::invalid_argument)
      << "an error bit inside the count";
  EXPECT_EQ(CompletionCounter<std::uint16_t>::create(bytes, {.count_bits = 8, .error_mask = 1u << 16}).error().code,
            Errc::invalid_argument)
      << "an error bit outside the word";
  word.device_writes(0x1234);
  ASSERT_TRUE(CompletionCounter<std::uint32_t>::create(bytes, kXdma));
  EXPECT_EQ(*reinterpret_cast<const std::uint32_t*>(bytes.data()), 0u) << "the word starts zeroed";
}

TEST(CompletionCounter, EmptyCounterFails) {
  CompletionCounter<std::uint32_t> counter;
  EXPECT_FALSE(counter.valid());
  EXPECT_EQ(counter.poll().error().code, Errc::invalid_argument);
  EXPECT_EQ(counter.expect(1).error().code, Errc::invalid_argument);
  EXPECT_EQ(counter.wait(0, {}).error().code, Errc::invalid_argument);
  counter.reset(5);  // nothing to write: does nothing
  EXPECT_EQ(counter.outstanding(), 0u);
}

// ---- DescriptorChain ----

// XDMA's descriptor (PG195 "Descriptors"): magic 0xAD4B in 31:16, Nxt_adj in 13:8, Stop in
// bit 0 of the control word.
struct XdmaDescriptor {
  std::uint32_t control = 0;
  std::uint32_t length = 0;
  std::uint64_t source = 0;
  std::uint64_t destination = 0;
  std::uint64_t next = 0;
};
static_assert(sizeof(XdmaDescriptor) == 32);
struct XdmaFormat {
  using Descriptor = XdmaDescriptor;
  static constexpr std::uint64_t kAlignment = 32;
  static constexpr std::uint32_t kMaxNextAdjacent = 63;
  static constexpr std::uint64_t kAdjacentBoundary = 4096;
  static void link(Descriptor& d, BusAddress next, std::uint32_t adjacent) {
    d.control = 0xad4b0000u | (adjacent << 8) | (d.control & 0xfeu);
    d.next = next.value;
  }
  static void mark_last(Descriptor& d) {
    d.control = 0xad4b0000u | (d.control & 0xfeu) | 0x1u;
    d.next = 0;
  }
};
std::uint32_t nxt_adj(const XdmaDescriptor& d) { return (d.control >> 8) & 0x3f; }

// A format without block fetches: every next-adjacent count is 0.
struct PlainFormat {
  using Descriptor = XdmaDescriptor;
  static constexpr std::uint64_t kAlignment = 8;
  static constexpr std::uint32_t kMaxNextAdjacent = 0;
  static constexpr std::uint64_t kAdjacentBoundary = 0;
  static void link(Descriptor& d, BusAddress next, std::uint32_t adjacent) { d.next = next.value | adjacent; }
  static void mark_last(Descriptor& d) { d.next = 1; }
};

struct ChainCase {
  const char* name;
  std::uint64_t start_offset;  // of the chain in its page
  std::uint32_t count;
  std::uint32_t first_adjacent;
  // (index, Nxt_adj) pairs checked: descriptor i's count of descriptors after i + 1.
  std::vector<std::pair<std::uint32_t, std::uint32_t>> nxt_adj;
};

class DescriptorChainCases : public ::testing::TestWithParam<ChainCase> {};

TEST_P(DescriptorChainCases, LinksInOrderAndCountsAdjacentWithinA4KiBBlock) {
  const ChainCase& c = GetParam();
  Memory memory;
  const BusAddress page{0x10000};
  auto chain = DescriptorChain<XdmaFormat>::create(std::span(memory.bytes).subspan(c.start_offset),
                                                   BusAddress{page.value + c.start_offset});
  ASSERT_TRUE(chain) << chain.error().message();
  for (std::uint32_t i = 0; i < c.count; ++i) {
    ASSERT_EQ(*chain->append(XdmaDescriptor{.control = 0x13, .length = i + 1}), i);  // EOP | Completed | Stop
  }
  auto start = chain->finish();
  ASSERT_TRUE(start) << start.error().message();
  EXPECT_EQ(start->first.value, page.value + c.start_offset);
  EXPECT_EQ(start->count, c.count);
  EXPECT_EQ(start->first_adjacent, c.first_adjacent) << c.name;
  for (std::uint32_t i = 0; i < c.count; ++i) {
    const XdmaDescriptor& d = *chain->descriptor(i);
    EXPECT_EQ(d.length, i + 1);
    EXPECT_EQ(d.control >> 16, 0xad4bu);
    EXPECT_EQ(d.control & 0x12, 0x12u) << "the descriptor's own flags are kept";
    const bool last = i + 1 == c.count;
    EXPECT_EQ(d.control & 1, last ? 1u : 0u) << c.name << " descriptor " << i << ": only the last stops";
    EXPECT_EQ(d.next, last ? 0 : chain->bus_address(i + 1).value);
    // Independently: the descriptors after i + 1 on i + 1's 4 KiB page, at most 63.
    if (!last) {
      const std::uint64_t next = chain->bus_address(i + 1).value;
      const std::uint64_t on_page = (4096 - next % 4096) / 32 - 1;
      const std::uint64_t expected = std::min<std::uint64_t>({c.count - 2 - i, 63, on_page});
      EXPECT_EQ(nxt_adj(d), expected) << c.name << " descriptor " << i;
    }
  }
  for (const auto& [index, adjacent] : c.nxt_adj) EXPECT_EQ(nxt_adj(*chain->descriptor(index)), adjacent) << index;
}

INSTANTIATE_TEST_SUITE_P(
    Table, DescriptorChainCases,
    ::testing::Values(ChainCase{"one", 0, 1, 0, {{0, 0}}}, ChainCase{"two", 0, 2, 1, {{0, 0}}},
                      // 3 descriptors left before the boundary: the first block holds 3, descriptor 1's next
                      // (2) is the page's last, descriptor 2's next (3) starts the next page.
                      ChainCase{"crosses_4k", 4096 - 3 * 32, 10, 2, {{0, 1}, {1, 0}, {2, 6}, {8, 0}}},
                      ChainCase{"capped_at_63", 0, 200, 63, {{0, 63}, {99, 27}, {126, 0}, {127, 63}}},
                      ChainCase{"last_on_page", 4096 - 32, 3, 0, {{0, 1}, {1, 0}}},
                      ChainCase{"three_pages", 2048, 300, 63, {{62, 0}, {63, 63}, {190, 0}, {191, 63}}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(DescriptorChain, CapacityLimitsAndReuse) {
  Memory memory;
  auto chain = DescriptorChain<XdmaFormat>::create(memory.bytes, BusAddress{0x2000}, 4).value();
  EXPECT_EQ(chain.capacity(), 4u);
  for (std::uint32_t i = 0; i < 4; ++i) ASSERT_TRUE(chain.append(XdmaDescriptor{.length = i}));
  auto full = chain.append(XdmaDescriptor{});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::out_of_range);
  ASSERT_TRUE(chain.finish());
  chain.clear();
  EXPECT_EQ(chain.size(), 0u);
  EXPECT_EQ(chain.finish().error().code, Errc::invalid_argument) << "no descriptors";
  ASSERT_EQ(*chain.append(XdmaDescriptor{.length = 9}), 0u);
  auto start = chain.finish().value();
  EXPECT_EQ(start.count, 1u);
  EXPECT_EQ(chain.descriptor(0)->control & 1, 1u);
  // More appended after a finish: finishing again links the former last and moves the stop.
  ASSERT_TRUE(chain.append(XdmaDescriptor{.length = 10}));
  start = chain.finish().value();
  EXPECT_EQ(start.count, 2u);
  EXPECT_EQ(chain.descriptor(0)->control & 1, 0u);
  EXPECT_EQ(chain.descriptor(0)->next, 0x2020u);
  EXPECT_EQ(start.first_adjacent, 1u);
  // As many as fit by default.
  EXPECT_EQ(DescriptorChain<XdmaFormat>::create(memory.bytes, BusAddress{0}).value().capacity(), 512u);
}

TEST(DescriptorChain, CreationChecksMemoryAndBusAddress) {
  Memory memory;
  const std::span<std::byte> all(memory.bytes);
  struct Case {
    const char* name;
    std::span<std::byte> memory;
    std::uint64_t bus;
    std::uint32_t capacity;
    Errc code;
  };
  for (const Case& c : {Case{"no memory", {}, 0x1000, 0, Errc::invalid_argument},
                        Case{"too small for one", all.first(31), 0x1000, 0, Errc::invalid_argument},
                        Case{"capacity beyond the memory", all, 0x1000, 513, Errc::invalid_argument},
                        Case{"misaligned memory", all.subspan(4), 0x1000, 0, Errc::invalid_argument},
                        Case{"misaligned bus address", all, 0x1010, 0, Errc::misaligned},
                        Case{"wraps past 2^64", all, ~0ull - 63, 4, Errc::out_of_range}}) {
    auto chain = DescriptorChain<XdmaFormat>::create(c.memory, BusAddress{c.bus}, c.capacity);
    ASSERT_FALSE(chain) << c.name;
    EXPECT_EQ(chain.error().code, c.code) << c.name << ": " << chain.error().message();
  }
  EXPECT_TRUE(DescriptorChain<XdmaFormat>::create(all, BusAddress{~0ull - 127}, 4)) << "ends at the last byte";
}

TEST(DescriptorChain, AFormatWithoutAdjacentBlocks) {
  Memory memory;
  auto chain = DescriptorChain<PlainFormat>::create(memory.bytes, BusAddress{0x8000}).value();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(chain.append(XdmaDescriptor{}));
  auto start = chain.finish().value();
  EXPECT_EQ(start.first_adjacent, 0u);
  for (std::uint32_t i = 0; i < 4; ++i) EXPECT_EQ(chain.descriptor(i)->next, 0x8000u + 32 * (i + 1));
  EXPECT_EQ(chain.descriptor(4)->next, 1u);
}

TEST(DescriptorChain, EmptyChainFails) {
  DescriptorChain<XdmaFormat> chain;
  EXPECT_FALSE(chain.valid());
  EXPECT_EQ(chain.append(XdmaDescriptor{}).error().code, Errc::invalid_argument);
  EXPECT_EQ(chain.finish().error().code, Errc::invalid_argument);
  EXPECT_EQ(chain.descriptor(0), nullptr);
  EXPECT_EQ(chain.adjacent_after(0), 0u);
  chain.clear();
}

}  // namespace
}  // namespace pcie
