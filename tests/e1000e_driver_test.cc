// The e1000e example driver (examples/e1000e) on the testing kit's strict 82574L model
// (pcie/testing/e1000e_model.h), no VM: where QEMU's e1000e forgives a descriptor changed
// under the NIC, a tail handed back past the head or a ring freed under the DMA engine, the
// model records a violation, and every test here ends with none (except the DMA fault one
// provokes on purpose, which it checks and clears). The same driver runs on QEMU in tests/vm.
#include "examples/e1000e/e1000e_driver.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "examples/e1000e/frames.h"
#include "pcie/testing/e1000e_model.h"

namespace {

using namespace std::chrono_literals;
using examples::E1000eDriver;
using examples::E1000eInterruptMode;
using examples::E1000eOptions;
using examples::MacAddress;
using examples::Packet;
using pcie::Errc;
using pcie::IrqKind;
using pcie::Width;
using pcie::testing::E1000eModel;
using pcie::testing::E1000eModelOptions;
using pcie::testing::E1000eRxOutcome;
namespace e1000e = examples::e1000e;
namespace rule = pcie::testing::e1000e_rule;

using Frame = std::vector<std::byte>;

constexpr MacAddress kPeer{0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc};
constexpr std::uint32_t kRctlEnable = 1u << 1, kTctlEnable = 1u << 1;

std::string listed(const std::vector<pcie::testing::E1000eInterrupt>& messages) {
  std::string out;
  for (const auto& m : messages) {
    char causes[16];
    std::snprintf(causes, sizeof causes, "%08x", m.causes);
    out += "\n  kind " + std::to_string(static_cast<int>(m.kind)) + " vector " + std::to_string(m.vector) + " causes 0x" +
           causes + (m.delivered ? " delivered" : " not delivered");
  }
  return out;
}

std::string listed(const std::vector<std::string>& texts) {
  std::string out;
  for (const auto& text : texts) out += "\n  " + text;
  return out;
}

#define EXPECT_NO_VIOLATIONS(model) EXPECT_TRUE((model).violations().empty()) << listed((model).violations())

// A frame of `size` bytes (no FCS) from the peer to `destination`; the payload is a pattern
// of `seed`, whose low bytes also stand at offset 14 so that frames can be told apart.
Frame make_frame(const MacAddress& destination, std::size_t size, std::uint32_t seed) {
  Frame frame(size);
  for (std::size_t i = 0; i < size; ++i) frame[i] = static_cast<std::byte>((i * 31 + seed * 7 + i / 256) & 0xff);
  std::memcpy(frame.data(), destination.data(), std::min<std::size_t>(6, size));
  if (size >= 12) std::memcpy(frame.data() + 6, kPeer.data(), 6);
  if (size >= 14) frame[12] = std::byte{0x88}, frame[13] = std::byte{0xb5};
  if (size >= 18) std::memcpy(frame.data() + 14, &seed, 4);
  return frame;
}

Frame bytes_of(std::span<const std::byte> span) { return Frame(span.begin(), span.end()); }

// Small rings and pool, so that wrap-around and exhaustion come quickly.
E1000eOptions small(std::uint32_t rx = 8, std::uint32_t tx = 8, std::uint32_t buffers = 64) {
  return {.rx_ring_size = rx, .tx_ring_size = tx, .buffers = buffers, .link_timeout = 500ms};
}

// A caller-held packet holding `frame`.
Packet packet_with(E1000eDriver& nic, const Frame& frame) {
  auto packet = nic.allocate_packet();
  EXPECT_TRUE(packet) << packet.error().message();
  if (!packet) return {};
  packet->length = static_cast<std::uint16_t>(frame.size());
  std::memcpy(nic.buffer(*packet).data(), frame.data(), frame.size());
  return *packet;
}

bool has_rule(const std::vector<std::string>& violations, std::string_view name) {
  return std::any_of(violations.begin(), violations.end(), [&](const std::string& v) { return v.starts_with(name); });
}

// ---- open ----

TEST(E1000eDriverOnModel, OpenReadsTheEepromMacAndBringsTheLinkUp) {
  E1000eModel model({.mac = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55}});
  auto nic = E1000eDriver::open(model.open(), small());
  ASSERT_TRUE(nic) << nic.error().message();
  EXPECT_EQ(nic->mac(), (MacAddress{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}));
  EXPECT_EQ(examples::to_string(nic->mac()), "02:11:22:33:44:55");
  EXPECT_TRUE(nic->link_up());
  EXPECT_TRUE(model.link_up());
  EXPECT_EQ(nic->interrupt_mode(), E1000eInterruptMode::polled);
  EXPECT_TRUE(model.device().bus_master());
  EXPECT_EQ(model.resets(), 1u) << "open resets the NIC once";
  auto wait = nic->wait_for_interrupt(1ms);
  ASSERT_FALSE(wait);
  EXPECT_EQ(wait.error().code, Errc::not_supported);
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, OpenRejectsOptionsOutOfRange) {
  E1000eModel model;
  const E1000eOptions bad[] = {
      small(0), small(4), small(12), small(264), small(8, 7), small(8, 512), small(16, 8, 15), small(8, 8, 65537)};
  for (const auto& options : bad) {
    auto nic = E1000eDriver::open(model.open(), options);
    ASSERT_FALSE(nic) << options.rx_ring_size << "/" << options.tx_ring_size << "/" << options.buffers;
    EXPECT_EQ(nic.error().code, Errc::invalid_argument) << nic.error().message();
  }
  auto none = E1000eDriver::open(nullptr, small());
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, Errc::invalid_argument);
  EXPECT_EQ(model.resets(), 0u) << "options are checked before the NIC is touched";
  EXPECT_FALSE(model.device().bus_master());
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, OpenFailsWithIoErrorWhenTheLinkStaysDownAndLetsGoOfTheNic) {
  E1000eModel model({.cable = false});
  auto options = small();
  options.link_timeout = 50ms;
  const auto start = std::chrono::steady_clock::now();
  auto nic = E1000eDriver::open(model.open(), options);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(nic);
  EXPECT_EQ(nic.error().code, Errc::io_error) << nic.error().message();
  EXPECT_NE(nic.error().message().find("50 ms"), std::string::npos) << nic.error().message();
  EXPECT_GE(took, 50ms);
  EXPECT_LT(took, 1500ms);
  // The failed open stopped the NIC before its rings and buffers went.
  EXPECT_FALSE(model.device().bus_master());
  EXPECT_EQ(model.device().dma_mapped_bytes(), 0u);
  EXPECT_NO_VIOLATIONS(model);
}

// ---- transmit ----

TEST(E1000eDriverOnModel, TxBatchSendsFramesByteForByteInOrderAndReturnsTheBuffers) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small());
  ASSERT_TRUE(nic) << nic.error().message();
  const std::uint32_t free_at_start = nic->free_buffers();
  const std::vector<Frame> frames{make_frame(kPeer, 14, 1), make_frame(kPeer, 60, 2), make_frame(kPeer, 1514, 3),
                                  make_frame(kPeer, 61, 4)};
  std::vector<Packet> packets;
  for (const auto& frame : frames) packets.push_back(packet_with(*nic, frame));
  EXPECT_EQ(nic->free_buffers(), free_at_start - frames.size());
  auto sent = nic->tx_batch(packets);
  ASSERT_TRUE(sent) << sent.error().message();
  EXPECT_EQ(*sent, frames.size());
  auto wire = model.take_transmitted();
  ASSERT_EQ(wire.size(), frames.size());
  Frame padded = frames[0];
  padded.resize(60);  // TCTL.PSP pads a short frame with zeros on the wire
  EXPECT_EQ(wire[0], padded);
  for (std::size_t i = 1; i < frames.size(); ++i) EXPECT_EQ(wire[i], frames[i]) << "frame " << i;
  EXPECT_EQ(nic->reap_transmitted(), frames.size());
  EXPECT_EQ(nic->free_buffers(), free_at_start);
  EXPECT_EQ(nic->tx_in_flight(), 0u);
  EXPECT_TRUE(nic->buffer(packets[0]).empty()) << "a sent buffer is no longer the caller's";
  const auto& stats = nic->stats();
  EXPECT_EQ(stats.tx_packets, frames.size());
  EXPECT_EQ(stats.tx_refused, 0u);
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, AFullTransmitRingRefusesUntilTheNicHasSent) {
  E1000eModel model({.completion = E1000eModel::Completion::on_process});
  auto nic = E1000eDriver::open(model.open(), small(8, 8, 64));
  ASSERT_TRUE(nic) << nic.error().message();
  std::vector<Frame> frames;
  std::vector<Packet> packets;
  for (std::uint32_t i = 0; i < 10; ++i) {
    frames.push_back(make_frame(kPeer, 60 + i, i));
    packets.push_back(packet_with(*nic, frames.back()));
  }
  auto first = nic->tx_batch(packets);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(*first, 7u) << "ring_size - 1 descriptors";
  EXPECT_EQ(nic->tx_in_flight(), 7u);
  const std::span rest = std::span(packets).subspan(*first);
  auto second = nic->tx_batch(rest);
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(*second, 0u);
  EXPECT_EQ(nic->stats().tx_refused, 6u);
  EXPECT_TRUE(model.transmitted().empty());
  EXPECT_FALSE(nic->buffer(rest[0]).empty()) << "a refused packet stays the caller's";
  EXPECT_EQ(model.process(), 7u);
  EXPECT_EQ(nic->reap_transmitted(), 7u);
  auto third = nic->tx_batch(rest);
  ASSERT_TRUE(third) << third.error().message();
  EXPECT_EQ(*third, 3u);
  EXPECT_EQ(model.process(), 3u);
  EXPECT_EQ(model.take_transmitted(), frames) << "every frame once, in order";
  EXPECT_EQ(nic->reap_transmitted(), 3u);
  EXPECT_EQ(nic->stats().tx_packets, 10u);
  EXPECT_NO_VIOLATIONS(model);
}

// ---- receive ----

TEST(E1000eDriverOnModel, RxBatchDeliversEverySizeInOrderWithoutTheCrc) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small(16, 8, 64));
  ASSERT_TRUE(nic) << nic.error().message();
  const std::uint32_t free_at_start = nic->free_buffers();
  std::size_t size = 60;
  std::uint32_t seed = 0;
  std::array<Packet, 32> batch;
  while (size <= 1514) {
    std::vector<Frame> round;
    for (int i = 0; i < 15 && size <= 1514; ++i, ++size) {
      round.push_back(make_frame(nic->mac(), size, ++seed));
      ASSERT_EQ(model.receive(round.back()), E1000eRxOutcome::delivered) << size;
    }
    auto got = nic->rx_batch(batch);
    ASSERT_TRUE(got) << got.error().message();
    ASSERT_EQ(*got, round.size()) << "at size " << size;
    for (std::size_t i = 0; i < *got; ++i) {
      EXPECT_EQ(batch[i].length, round[i].size());
      EXPECT_EQ(bytes_of(nic->frame(batch[i])), round[i]) << "size " << round[i].size();
      ASSERT_TRUE(nic->release(batch[i]));
    }
  }
  // A runt is padded to 60 bytes by the NIC.
  const Frame runt = make_frame(nic->mac(), 42, 99);
  ASSERT_EQ(model.receive(runt), E1000eRxOutcome::delivered);
  auto got = nic->rx_batch(batch);
  ASSERT_TRUE(got);
  ASSERT_EQ(*got, 1u);
  Frame padded = runt;
  padded.resize(60);
  EXPECT_EQ(bytes_of(nic->frame(batch[0])), padded);
  ASSERT_TRUE(nic->release(batch[0]));
  ASSERT_TRUE(nic->rx_batch(batch));  // refills the ring
  EXPECT_EQ(nic->free_buffers(), free_at_start);
  const auto& stats = nic->stats();
  EXPECT_EQ(stats.rx_packets, 1514u - 60 + 2);
  EXPECT_EQ(stats.rx_dropped, 0u);
  EXPECT_EQ(stats.rx_no_buffers, 0u);
  EXPECT_EQ(stats.rx_missed, 0u);
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, TheReceiveRingIsRefilledRoundAfterRound) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small(8, 8, 32));
  ASSERT_TRUE(nic) << nic.error().message();
  std::array<Packet, 4> batch;  // smaller than a round: rx_batch is called twice per round
  std::uint32_t seed = 0, received = 0;
  for (int round = 0; round < 12; ++round) {
    std::vector<Frame> sent;
    for (int i = 0; i < 7; ++i) {  // the ring's 7 posted descriptors
      sent.push_back(make_frame(nic->mac(), 64 + seed, seed));
      ++seed;
      ASSERT_EQ(model.receive(sent.back()), E1000eRxOutcome::delivered) << "round " << round << " frame " << i;
    }
    std::size_t next = 0;
    while (next < sent.size()) {
      auto got = nic->rx_batch(batch);
      ASSERT_TRUE(got) << got.error().message();
      ASSERT_GT(*got, 0u) << "round " << round;
      for (std::size_t i = 0; i < *got; ++i, ++next) {
        EXPECT_EQ(bytes_of(nic->frame(batch[i])), sent[next]);
        ASSERT_TRUE(nic->release(batch[i]));
        ++received;
      }
    }
  }
  EXPECT_EQ(received, 84u);
  EXPECT_EQ(nic->stats().rx_no_buffers, 0u);
  EXPECT_EQ(nic->stats().rx_packets, 84u);
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, AnExhaustedPoolMakesTheNicDropUntilBuffersComeBack) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small(8, 8, 16));
  ASSERT_TRUE(nic) << nic.error().message();
  std::vector<Frame> delivered;
  std::vector<Packet> held;
  std::array<Packet, 16> batch;
  std::uint32_t seed = 0;
  E1000eRxOutcome outcome = E1000eRxOutcome::delivered;
  for (int guard = 0; guard < 64 && outcome == E1000eRxOutcome::delivered; ++guard) {
    Frame frame = make_frame(nic->mac(), 100, ++seed);
    outcome = model.receive(frame);
    if (outcome == E1000eRxOutcome::delivered) delivered.push_back(frame);
    if (seed % 4 == 0) {  // the caller takes its frames now and then, and keeps them
      auto got = nic->rx_batch(batch);
      ASSERT_TRUE(got) << got.error().message();
      held.insert(held.end(), batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(*got));
    }
  }
  EXPECT_EQ(outcome, E1000eRxOutcome::no_descriptors);
  auto got = nic->rx_batch(batch);
  ASSERT_TRUE(got) << got.error().message();
  held.insert(held.end(), batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(*got));
  EXPECT_EQ(held.size(), 16u) << "every buffer of the pool ends in the caller's hands";
  ASSERT_EQ(held.size(), delivered.size());
  for (std::size_t i = 0; i < held.size(); ++i) EXPECT_EQ(bytes_of(nic->frame(held[i])), delivered[i]) << i;
  EXPECT_EQ(nic->free_buffers(), 0u);
  auto allocated = nic->allocate_packet();
  ASSERT_FALSE(allocated);
  EXPECT_EQ(allocated.error().code, Errc::busy);
  EXPECT_EQ(model.receive(make_frame(nic->mac(), 100, 1000)), E1000eRxOutcome::no_descriptors);
  const auto& stats = nic->stats();
  EXPECT_GE(stats.rx_no_buffers, 2u);
  EXPECT_GE(stats.rx_missed, 2u);
  // Buffers back: the next rx_batch refills the ring and frames arrive again.
  for (const Packet& packet : held) ASSERT_TRUE(nic->release(packet));
  got = nic->rx_batch(batch);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, 0u);
  const Frame after = make_frame(nic->mac(), 1514, 2000);
  ASSERT_EQ(model.receive(after), E1000eRxOutcome::delivered);
  got = nic->rx_batch(batch);
  ASSERT_TRUE(got);
  ASSERT_EQ(*got, 1u);
  EXPECT_EQ(bytes_of(nic->frame(batch[0])), after);
  EXPECT_EQ(nic->stats().rx_dropped, 0u);
  EXPECT_NO_VIOLATIONS(model);
}

// ---- frames.h ----

TEST(E1000eDriverOnModel, EchoSendsEachFrameBackWithTheMacsSwapped) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small(64, 32, 256));
  ASSERT_TRUE(nic) << nic.error().message();
  const std::uint32_t free_at_start = nic->free_buffers();
  std::vector<Frame> frames;
  for (std::uint32_t i = 0; i < 50; ++i) {
    frames.push_back(make_frame(nic->mac(), 60 + 29 * i, i));
    ASSERT_EQ(model.receive(frames.back()), E1000eRxOutcome::delivered);
  }
  auto echoed = examples::echo(*nic, {.count = 50, .batch = 8, .idle = 2s, .keep_going = {}});
  ASSERT_TRUE(echoed) << echoed.error().message();
  EXPECT_EQ(echoed->echoed, 50u);
  EXPECT_EQ(echoed->dropped, 0u);
  EXPECT_FALSE(echoed->idle_timeout);
  auto wire = model.take_transmitted();
  ASSERT_EQ(wire.size(), frames.size());
  for (std::size_t i = 0; i < frames.size(); ++i) {
    Frame expected = frames[i];
    examples::swap_macs(expected);
    EXPECT_EQ(wire[i], expected) << "frame " << i;
    EXPECT_TRUE(std::equal(wire[i].begin(), wire[i].begin() + 6, kPeer.begin(),
                           [](std::byte a, std::uint8_t b) { return a == std::byte{b}; }));
  }
  nic->reap_transmitted();
  EXPECT_EQ(nic->free_buffers(), free_at_start);
  EXPECT_NO_VIOLATIONS(model);
}

// Ten frames in the ring; keep_going refuses the one whose seed is 5: frames 0-4 are echoed,
// 5 is released, and 6-9 stay for the caller's next rx_batch.
void echo_stops_at_seed_5(std::size_t batch_size) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small(16, 16, 64));
  ASSERT_TRUE(nic) << nic.error().message();
  const std::uint32_t free_at_start = nic->free_buffers();
  for (std::uint32_t i = 0; i < 10; ++i) ASSERT_EQ(model.receive(make_frame(nic->mac(), 80, i)), E1000eRxOutcome::delivered);
  auto seed_of = [](std::span<const std::byte> frame) {
    std::uint32_t seed = 0;
    std::memcpy(&seed, frame.data() + 14, 4);
    return seed;
  };
  auto echoed = examples::echo(*nic, {.count = 0, .batch = batch_size, .idle = 2s, .keep_going = [&](std::span<const std::byte> frame) {
                                        return seed_of(frame) != 5;
                                      }});
  ASSERT_TRUE(echoed) << echoed.error().message();
  EXPECT_EQ(echoed->echoed, 5u);
  EXPECT_FALSE(echoed->idle_timeout);
  auto wire = model.take_transmitted();
  ASSERT_EQ(wire.size(), 5u);
  for (std::uint32_t i = 0; i < 5; ++i) EXPECT_EQ(seed_of(wire[i]), i);
  std::vector<std::uint32_t> seeds;
  for (const Packet& left : echoed->left) {
    seeds.push_back(seed_of(nic->frame(left)));
    ASSERT_TRUE(nic->release(left));
  }
  std::array<Packet, 16> batch;
  auto rest = nic->rx_batch(batch);
  ASSERT_TRUE(rest);
  for (std::size_t i = 0; i < *rest; ++i) {
    seeds.push_back(seed_of(nic->frame(batch[i])));
    ASSERT_TRUE(nic->release(batch[i]));
  }
  EXPECT_EQ(seeds, (std::vector<std::uint32_t>{6, 7, 8, 9})) << "frames after the stopping one are the caller's";
  nic->reap_transmitted();
  ASSERT_TRUE(nic->rx_batch(batch));
  EXPECT_EQ(nic->free_buffers(), free_at_start);
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, EchoStopsWhereKeepGoingSaysNo) { echo_stops_at_seed_5(1); }

// Within a batch: the frames received after the refused one are handed back in EchoResult::left.
TEST(E1000eDriverOnModel, EchoStopsWhereKeepGoingSaysNoWithinABatch) { echo_stops_at_seed_5(4); }

TEST(E1000eDriverOnModel, LoopbackCopyMoves64KiBThroughTheMacLoopback) {
  E1000eModel model;
  auto options = small(32, 32, 128);
  options.loopback = true;
  auto nic = E1000eDriver::open(model.open(), options);
  ASSERT_TRUE(nic) << nic.error().message();
  std::vector<std::byte> in(64 * 1024), out(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::byte>((i * 13 + i / 1000) & 0xff);
  auto copied = examples::loopback_copy(*nic, in, out, 8);
  ASSERT_TRUE(copied) << copied.error().message();
  EXPECT_EQ(copied->frames, (in.size() + 1495) / 1496);
  EXPECT_EQ(out, in);
  EXPECT_TRUE(model.transmitted().empty()) << "looped back, not sent on the wire";
  std::vector<std::byte> shorter(10);
  auto mismatch = examples::loopback_copy(*nic, in, shorter);
  ASSERT_FALSE(mismatch);
  EXPECT_EQ(mismatch.error().code, Errc::invalid_argument);
  EXPECT_NO_VIOLATIONS(model);
}

// ---- interrupts ----

// Waits for interrupts until none comes for `quiet`: what open left pending.
void drain_interrupts(E1000eDriver& nic, std::chrono::milliseconds quiet = 20ms) {
  for (int i = 0; i < 10; ++i) {
    auto got = nic.wait_for_interrupt(quiet);
    ASSERT_TRUE(got) << got.error().message();
    if (!*got) return;
  }
}

// The vector each MSI-X message went to, by the cause it carried.
unsigned expected_vector(std::uint32_t causes) {
  if (causes & e1000e::kCauseRxQueue0) return 0;
  if (causes & e1000e::kCauseTxQueue0) return 1;
  return 2;
}

// Waits for interrupts until none comes for 20 ms.
void handle_all(E1000eDriver& nic) { drain_interrupts(nic, 20ms); }

TEST(E1000eDriverOnModel, MsixRoutesReceiveTransmitAndLinkToVectorsZeroOneTwo) {
  E1000eModel model;
  auto options = small();
  options.interrupts = true;
  auto nic = E1000eDriver::open(model.open(), options);
  ASSERT_TRUE(nic) << nic.error().message();
  ASSERT_EQ(nic->interrupt_mode(), E1000eInterruptMode::msix);
  EXPECT_TRUE(model.device().interrupts_enabled(IrqKind::msix));
  handle_all(*nic);
  const auto counts = nic->interrupt_counts();
  std::vector<pcie::testing::E1000eInterrupt> messages = model.take_interrupts();

  ASSERT_EQ(model.receive(make_frame(nic->mac(), 60, 1)), E1000eRxOutcome::delivered);
  handle_all(*nic);
  EXPECT_EQ(nic->interrupt_counts().rx, counts.rx + 1);
  EXPECT_EQ(nic->interrupt_counts().tx, counts.tx);
  std::array<Packet, 1> batch;
  ASSERT_EQ(nic->rx_batch(batch).value_or(0), 1u);
  ASSERT_EQ(nic->tx_batch(batch).value_or(0), 1u);
  handle_all(*nic);
  EXPECT_EQ(nic->interrupt_counts().tx, counts.tx + 1);
  EXPECT_EQ(nic->interrupt_counts().rx, counts.rx + 1);
  // After the driver re-enabled the causes, a second receive interrupts again.
  ASSERT_EQ(model.receive(make_frame(nic->mac(), 60, 2)), E1000eRxOutcome::delivered);
  handle_all(*nic);
  EXPECT_EQ(nic->interrupt_counts().rx, counts.rx + 2);
  ASSERT_EQ(nic->rx_batch(batch).value_or(0), 1u);
  ASSERT_TRUE(nic->release(batch[0]));

  const auto link = nic->interrupt_counts().link_changes;
  model.set_link(false);
  handle_all(*nic);
  EXPECT_GE(nic->interrupt_counts().link_changes, link + 1);
  EXPECT_GT(nic->interrupt_counts().other, counts.other);
  EXPECT_FALSE(nic->link_up());

  auto rest = model.take_interrupts();
  messages.insert(messages.end(), rest.begin(), rest.end());
  std::size_t rx = 0, tx = 0, other = 0;
  for (const auto& message : messages) {
    EXPECT_EQ(message.kind, IrqKind::msix);
    EXPECT_TRUE(message.delivered);
    EXPECT_EQ(message.vector, expected_vector(message.causes)) << listed(messages);
    (message.vector == 0 ? rx : message.vector == 1 ? tx : other)++;
  }
  EXPECT_EQ(rx, 2u);
  EXPECT_EQ(tx, 1u);
  EXPECT_GE(other, 1u);
  EXPECT_NO_VIOLATIONS(model);
}

// Each cause raises its own vector once: the link-up's LSC, cleared on the other vector,
// does not come back with every later frame (a defect this test found: ICR.LSC was read
// but never written back, and MSI-X mode does not clear ICR on read).
TEST(E1000eDriverOnModel, MsixSignalsEachCauseOnceOnItsVector) {
  E1000eModel model;
  auto options = small();
  options.interrupts = true;
  auto nic = E1000eDriver::open(model.open(), options);
  ASSERT_TRUE(nic) << nic.error().message();
  ASSERT_EQ(nic->interrupt_mode(), E1000eInterruptMode::msix);
  EXPECT_TRUE(model.device().interrupts_enabled(IrqKind::msix));
  drain_interrupts(*nic);
  model.take_interrupts();
  auto counts = nic->interrupt_counts();

  ASSERT_EQ(model.receive(make_frame(nic->mac(), 60, 1)), E1000eRxOutcome::delivered);
  auto messages = model.take_interrupts();
  ASSERT_EQ(messages.size(), 1u) << listed(messages);
  EXPECT_EQ(messages[0].kind, IrqKind::msix);
  EXPECT_EQ(messages[0].vector, 0u);
  EXPECT_TRUE(messages[0].delivered);
  auto got = nic->wait_for_interrupt(100ms);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(nic->interrupt_counts().rx, counts.rx + 1);
  EXPECT_EQ(nic->interrupt_counts().tx, counts.tx);

  std::array<Packet, 1> batch;
  ASSERT_EQ(nic->rx_batch(batch).value_or(0), 1u);
  ASSERT_EQ(nic->tx_batch(batch).value_or(0), 1u);
  messages = model.take_interrupts();
  ASSERT_GE(messages.size(), 1u);
  for (const auto& message : messages) EXPECT_EQ(message.vector, 1u) << "transmit on vector 1";
  got = nic->wait_for_interrupt(100ms);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(nic->interrupt_counts().tx, counts.tx + 1);

  // A second receive after the driver re-enabled the cause interrupts again.
  ASSERT_EQ(model.receive(make_frame(nic->mac(), 60, 2)), E1000eRxOutcome::delivered);
  messages = model.take_interrupts();
  ASSERT_EQ(messages.size(), 1u) << listed(messages);
  EXPECT_EQ(messages[0].vector, 0u) << "receive on vector 0, and nothing stale on vector 2";
  got = nic->wait_for_interrupt(100ms);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(nic->interrupt_counts().rx, counts.rx + 2);

  model.set_link(false);
  messages = model.take_interrupts();
  ASSERT_EQ(messages.size(), 1u) << listed(messages);
  EXPECT_EQ(messages[0].vector, 2u) << "link change on vector 2";
  got = nic->wait_for_interrupt(100ms);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(nic->interrupt_counts().other, counts.other + 1);
  EXPECT_EQ(nic->interrupt_counts().link_changes, counts.link_changes + 1);
  EXPECT_FALSE(nic->link_up());
  model.set_link(true);
  got = nic->wait_for_interrupt(100ms);
  ASSERT_TRUE(got && *got) << "the second link change interrupts too";
  EXPECT_EQ(nic->interrupt_counts().link_changes, counts.link_changes + 2);
  EXPECT_TRUE(nic->link_up());
  messages = model.take_interrupts();
  got = nic->wait_for_interrupt(10ms);
  ASSERT_TRUE(got);
  EXPECT_FALSE(*got) << "nothing else pending; since the link-down: " << listed(messages);
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, FallsBackToMsiWithoutMsix) {
  E1000eModel model({.device = {.msi_vectors = 1, .msix_vectors = 0}});
  auto options = small();
  options.interrupts = true;
  auto nic = E1000eDriver::open(model.open(), options);
  ASSERT_TRUE(nic) << nic.error().message();
  ASSERT_EQ(nic->interrupt_mode(), E1000eInterruptMode::msi);
  EXPECT_TRUE(model.device().interrupts_enabled(IrqKind::msi));
  drain_interrupts(*nic);
  model.take_interrupts();
  const auto counts = nic->interrupt_counts();
  for (std::uint32_t i = 1; i <= 3; ++i) {
    ASSERT_EQ(model.receive(make_frame(nic->mac(), 60, i)), E1000eRxOutcome::delivered);
    auto got = nic->wait_for_interrupt(100ms);
    ASSERT_TRUE(got && *got) << "receive " << i;
    EXPECT_EQ(nic->interrupt_counts().rx, counts.rx + i);
  }
  for (const auto& message : model.take_interrupts()) {
    EXPECT_EQ(message.kind, IrqKind::msi);
    EXPECT_TRUE(message.delivered);
  }
  std::array<Packet, 4> batch;
  ASSERT_EQ(nic->rx_batch(batch).value_or(0), 3u);
  ASSERT_EQ(nic->tx_batch(std::span(batch).first(1)).value_or(0), 1u);
  auto got = nic->wait_for_interrupt(100ms);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(nic->interrupt_counts().tx, counts.tx + 1);
  for (std::size_t i = 1; i < 3; ++i) ASSERT_TRUE(nic->release(batch[i]));
  // A link change is read from ICR (cleared by the read) and counted once.
  drain_interrupts(*nic);
  const auto link = nic->interrupt_counts().link_changes;
  model.set_link(false);
  got = nic->wait_for_interrupt(100ms);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(nic->interrupt_counts().link_changes, link + 1);
  EXPECT_FALSE(nic->link_up());
  got = nic->wait_for_interrupt(10ms);
  ASSERT_TRUE(got);
  EXPECT_FALSE(*got) << "nothing else pending";
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, UsesIntxWhenNeitherMsixNorMsiIsOffered) {
  E1000eModel model({.device = {.msi_vectors = 0, .msix_vectors = 0}});
  auto options = small();
  options.interrupts = true;
  auto nic = E1000eDriver::open(model.open(), options);
  ASSERT_TRUE(nic) << nic.error().message();
  ASSERT_EQ(nic->interrupt_mode(), E1000eInterruptMode::intx);
  drain_interrupts(*nic);
  model.take_interrupts();
  const auto counts = nic->interrupt_counts();
  for (std::uint32_t i = 1; i <= 3; ++i) {
    ASSERT_EQ(model.receive(make_frame(nic->mac(), 60, i)), E1000eRxOutcome::delivered);
    auto got = nic->wait_for_interrupt(100ms);
    ASSERT_TRUE(got && *got) << "receive " << i << ": the line was rearmed";
    EXPECT_EQ(nic->interrupt_counts().rx, counts.rx + i);
  }
  for (const auto& message : model.take_interrupts()) EXPECT_EQ(message.kind, IrqKind::intx);
  std::array<Packet, 4> batch;
  auto got = nic->rx_batch(batch);
  ASSERT_TRUE(got);
  for (std::size_t i = 0; i < *got; ++i) ASSERT_TRUE(nic->release(batch[i]));

  // ICR also shows causes the driver left masked (QEMU sets TXQE while the transmit ring is
  // empty): a link change is counted as one, not as a transmit too.
  auto side = model.open();
  auto bar = side->open_bar(0);
  ASSERT_TRUE(bar);
  ASSERT_TRUE((*bar)->write(Width::bits32, e1000e::kIcs, e1000e::kCauseTxQueueEmpty));
  model.set_link(false);
  auto link = nic->wait_for_interrupt(100ms);
  ASSERT_TRUE(link && *link);
  EXPECT_EQ(nic->interrupt_counts().other, counts.other + 1);
  EXPECT_EQ(nic->interrupt_counts().link_changes, counts.link_changes + 1);
  EXPECT_EQ(nic->interrupt_counts().tx, counts.tx) << "TXQE was masked: no transmit interrupt";
  EXPECT_NO_VIOLATIONS(model);
}

// The driver's 2 KiB buffers hold any frame (long packets off), but a NIC may still spread
// one over descriptors (a register changed behind the driver, a fault): the frame is
// dropped whole, and its last piece never handed on as a frame of its own.
TEST(E1000eDriverOnModel, AFrameSpreadOverDescriptorsIsDroppedWholeNotTruncated) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small(16, 8, 64));
  ASSERT_TRUE(nic) << nic.error().message();
  // 256-byte receive buffers (RCTL.BSIZE 11b), set through a second handle.
  auto side = model.open();
  auto bar = side->open_bar(0);
  ASSERT_TRUE(bar);
  const auto rctl = (*bar)->read(Width::bits32, 0x100);
  ASSERT_TRUE(rctl);
  ASSERT_TRUE((*bar)->write(Width::bits32, 0x100, *rctl | (3u << 16)));
  const Frame spread = make_frame(nic->mac(), 600, 1);  // three descriptors, EOP on the last
  const Frame whole = make_frame(nic->mac(), 200, 2);
  ASSERT_EQ(model.receive(spread), E1000eRxOutcome::delivered);
  ASSERT_EQ(model.receive(whole), E1000eRxOutcome::delivered);
  std::array<Packet, 8> batch;
  auto got = nic->rx_batch(batch);
  ASSERT_TRUE(got) << got.error().message();
  ASSERT_EQ(*got, 1u) << "only the frame that came in one descriptor";
  EXPECT_EQ(bytes_of(nic->frame(batch[0])), whole);
  EXPECT_EQ(nic->stats().rx_dropped, 1u) << "one frame dropped, counted once";
  ASSERT_TRUE(nic->release(batch[0]));
  EXPECT_NO_VIOLATIONS(model);
}

// ---- buffer ownership ----

TEST(E1000eDriverOnModel, RefusesBuffersTheCallerDoesNotHoldAndPostsNothing) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small(8, 8, 32));
  ASSERT_TRUE(nic) << nic.error().message();
  const Packet a = packet_with(*nic, make_frame(kPeer, 60, 1));
  const Packet b = packet_with(*nic, make_frame(kPeer, 60, 2));
  const std::uint32_t free_now = nic->free_buffers();

  const Packet twice[] = {a, b, a};
  auto doubled = nic->tx_batch(twice);
  ASSERT_FALSE(doubled);
  EXPECT_EQ(doubled.error().code, Errc::invalid_argument);
  const Packet forged[] = {a, Packet{.buffer = 32 + 5, .length = 60}};
  auto beyond = nic->tx_batch(forged);
  ASSERT_FALSE(beyond);
  EXPECT_EQ(beyond.error().code, Errc::invalid_argument);
  std::uint32_t in_pool = 0;  // a buffer the pool holds, not the caller
  while (in_pool == a.buffer || in_pool == b.buffer) ++in_pool;
  const Packet not_held[] = {Packet{.buffer = in_pool, .length = 60}};
  EXPECT_FALSE(nic->tx_batch(not_held));
  const Packet too_short[] = {Packet{.buffer = a.buffer, .length = 13, .generation = a.generation}};
  const Packet too_long[] = {Packet{.buffer = a.buffer, .length = 1515, .generation = a.generation}};
  EXPECT_EQ(nic->tx_batch(too_short).error().code, Errc::invalid_argument);
  EXPECT_EQ(nic->tx_batch(too_long).error().code, Errc::invalid_argument);
  const Packet empty[] = {Packet{}};
  EXPECT_FALSE(nic->tx_batch(empty));
  EXPECT_EQ(nic->tx_in_flight(), 0u) << "nothing posted";
  EXPECT_TRUE(model.transmitted().empty());
  EXPECT_EQ(nic->free_buffers(), free_now);
  EXPECT_TRUE(nic->buffer(Packet{.buffer = in_pool}).empty());
  EXPECT_TRUE(nic->buffer(Packet{.buffer = 1u << 20}).empty());

  // Both are still the caller's: sent once each, then released twice is an error.
  const Packet both[] = {a, b};
  ASSERT_EQ(nic->tx_batch(both).value_or(0), 2u);
  EXPECT_EQ(model.take_transmitted().size(), 2u);
  auto again = nic->tx_batch(both);
  ASSERT_FALSE(again) << "sent already";
  EXPECT_EQ(again.error().code, Errc::invalid_argument);
  const Packet c = packet_with(*nic, make_frame(kPeer, 60, 3));
  ASSERT_TRUE(nic->release(c));
  auto released = nic->release(c);
  ASSERT_FALSE(released);
  EXPECT_EQ(released.error().code, Errc::invalid_argument);
  EXPECT_FALSE(nic->release(Packet{.buffer = 1u << 20}));
  EXPECT_FALSE(nic->release(Packet{}));
  nic->reap_transmitted();
  EXPECT_EQ(nic->free_buffers(), free_now + 2);
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, AStaleCopyOfAPacketIsRefusedOnceItsBufferIsHandedOutAgain) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small(8, 8, 32));
  ASSERT_TRUE(nic) << nic.error().message();
  const Packet stale = packet_with(*nic, make_frame(kPeer, 60, 1));
  ASSERT_TRUE(nic->release(stale));
  const Packet fresh = packet_with(*nic, make_frame(kPeer, 60, 2));
  ASSERT_EQ(fresh.buffer, stale.buffer) << "the pool hands the last buffer back first";
  EXPECT_NE(fresh.generation, stale.generation);
  EXPECT_TRUE(nic->buffer(stale).empty()) << "the stale copy names no buffer";
  auto released = nic->release(stale);
  ASSERT_FALSE(released);
  EXPECT_EQ(released.error().code, Errc::invalid_argument);
  const Packet stale_batch[] = {stale};
  auto sent = nic->tx_batch(stale_batch);
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code, Errc::invalid_argument);
  EXPECT_EQ(nic->tx_in_flight(), 0u);
  // The fresh hand-out is untouched by the refusals.
  EXPECT_EQ(nic->frame(fresh)[12], std::byte{make_frame(kPeer, 60, 2)[12]});
  const Packet fresh_batch[] = {fresh};
  ASSERT_EQ(nic->tx_batch(fresh_batch).value_or(0), 1u);
  const auto wire = model.take_transmitted();
  ASSERT_EQ(wire.size(), 1u);
  EXPECT_EQ(wire[0], make_frame(kPeer, 60, 2));
  EXPECT_NO_VIOLATIONS(model);
}

// ---- reset ----

// A NIC whose master requests never drain (STATUS.GIO Master Enable stays set after GIO
// Master Disable) is reset anyway after the wait, as the kernel's driver does, instead of
// failing the reset and with it the driver for good.
TEST(E1000eDriverOnModel, AResetWhoseMasterRequestsNeverDrainStillResets) {
  E1000eModel model({.master_requests_drain = false});
  auto options = small();
  options.reset_timeout = std::chrono::milliseconds(20);
  auto nic = E1000eDriver::open(model.open(), options);
  ASSERT_TRUE(nic) << nic.error().message();
  EXPECT_EQ(model.resets(), 1u);
  EXPECT_EQ(nic->stats().resets_without_drain, 1u);
  ASSERT_TRUE(nic->reset());
  EXPECT_EQ(model.resets(), 2u);
  EXPECT_EQ(nic->stats().resets_without_drain, 2u);
  // Still a working NIC.
  const Packet out = packet_with(*nic, make_frame(kPeer, 60, 1));
  ASSERT_EQ(nic->tx_batch(std::span(&out, 1)).value_or(0), 1u);
  EXPECT_EQ(model.take_transmitted(), std::vector<Frame>{make_frame(kPeer, 60, 1)});
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, ResetRecoversFromADmaFault) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small(8, 8, 32));
  ASSERT_TRUE(nic) << nic.error().message();
  const std::uint32_t free_at_start = nic->free_buffers();
  // A caller's packet held across the reset stays the caller's.
  const Packet kept = packet_with(*nic, make_frame(kPeer, 100, 7));
  auto fault = nic->transmit_from(pcie::BusAddress{0xdead0000}, 60);  // no buffer there
  ASSERT_FALSE(fault);
  EXPECT_EQ(fault.error().code, Errc::io_error) << fault.error().message();
  EXPECT_GE(model.device().dma_faults(), 1u);
  const auto violations = model.violations();
  EXPECT_TRUE(has_rule(violations, rule::kDmaFault)) << listed(violations);
  model.clear_violations();
  // The stopped queue takes nothing more.
  const Packet queued = packet_with(*nic, make_frame(kPeer, 60, 8));
  ASSERT_EQ(nic->tx_batch(std::span(&queued, 1)).value_or(0), 1u);
  EXPECT_TRUE(model.transmitted().empty());

  const auto resets_before = model.resets();
  ASSERT_TRUE(nic->reset());
  EXPECT_EQ(nic->resets(), 1u);
  EXPECT_EQ(model.resets(), resets_before + 1);
  EXPECT_TRUE(nic->link_up());
  EXPECT_EQ(nic->tx_in_flight(), 0u);
  EXPECT_EQ(nic->free_buffers(), free_at_start - 1) << "the lost frame's buffer is back; `kept` is not";

  ASSERT_EQ(nic->tx_batch(std::span(&kept, 1)).value_or(0), 1u);
  ASSERT_EQ(model.take_transmitted(), std::vector<Frame>{make_frame(kPeer, 100, 7)});
  const Frame in = make_frame(nic->mac(), 200, 9);
  ASSERT_EQ(model.receive(in), E1000eRxOutcome::delivered);
  std::array<Packet, 4> batch;
  ASSERT_EQ(nic->rx_batch(batch).value_or(0), 1u);
  EXPECT_EQ(bytes_of(nic->frame(batch[0])), in);
  ASSERT_TRUE(nic->release(batch[0]));
  EXPECT_NO_VIOLATIONS(model);
}

// ---- shutdown ----

TEST(E1000eDriverOnModel, ShutdownStopsTheNicAndRefusesFurtherWork) {
  E1000eModel model({.completion = E1000eModel::Completion::on_process});
  auto nic = E1000eDriver::open(model.open(), small());
  ASSERT_TRUE(nic) << nic.error().message();
  const Packet posted = packet_with(*nic, make_frame(kPeer, 60, 1));
  ASSERT_EQ(nic->tx_batch(std::span(&posted, 1)).value_or(0), 1u);
  Packet held = packet_with(*nic, make_frame(kPeer, 60, 2));
  ASSERT_EQ(model.receive(make_frame(nic->mac(), 60, 3)), E1000eRxOutcome::queued);

  const auto resets_before = model.resets();
  ASSERT_TRUE(nic->shutdown());
  EXPECT_FALSE(model.device().bus_master());
  EXPECT_EQ(model.resets(), resets_before + 1) << "reset once idle, before the interrupts go (as e1000e_down)";
  EXPECT_EQ(model.register_value(e1000e::kRctl) & kRctlEnable, 0u);
  EXPECT_EQ(model.register_value(e1000e::kTctl) & kTctlEnable, 0u);
  std::array<Packet, 4> batch;
  auto rx = nic->rx_batch(batch);
  ASSERT_FALSE(rx);
  EXPECT_EQ(rx.error().code, Errc::invalid_argument);
  auto tx = nic->tx_batch(std::span(&held, 1));
  ASSERT_FALSE(tx);
  EXPECT_EQ(tx.error().code, Errc::invalid_argument);
  EXPECT_FALSE(nic->allocate_packet());
  EXPECT_FALSE(nic->reset());
  EXPECT_TRUE(nic->shutdown()) << "a second shutdown is harmless";
  // The held work finds the NIC stopped: nothing is sent or written.
  model.process();
  EXPECT_TRUE(model.transmitted().empty());
  EXPECT_EQ(model.device().dma_without_bus_master(), 0u);
  EXPECT_NO_VIOLATIONS(model);
}

// QEMU 7.2's e1000e aborts when an interrupt-throttling timer fires after MSI-X was disabled,
// and its CTRL.RST stops none: the shutdown waits out the longest interval programmed, with
// every cause masked, before the interrupts can go.
TEST(E1000eDriverOnModel, ShutdownWaitsOutTheLongestThrottlingIntervalWithCausesMasked) {
  {
    E1000eModel model;
    EXPECT_FALSE(model.set_stored_register(e1000e::kIms, 1)) << "IMS has effects: not a stored register";
    EXPECT_FALSE(model.set_stored_register(e1000e::kItr + 2, 1)) << "unaligned";
    EXPECT_EQ(model.register_value(e1000e::kIms), 0u);
  }
  for (const std::uint64_t offset : {e1000e::kItr, e1000e::kEitr0 + 4 * 2}) {
    SCOPED_TRACE(offset);
    E1000eModel throttled;
    auto driver = E1000eDriver::open(throttled.open(), small());
    ASSERT_TRUE(driver) << driver.error().message();
    ASSERT_TRUE(throttled.set_stored_register(offset, 0x10000 | 40000));  // bits 15:0: 40,000 x 256 ns = 10.24 ms
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(driver->shutdown());
    EXPECT_GE(std::chrono::steady_clock::now() - start, 2 * 10240us + E1000eDriver::kThrottleMargin);
    EXPECT_EQ(throttled.register_value(e1000e::kIms), 0u) << "a cause enabled while the timers ran out";
    EXPECT_NO_VIOLATIONS(throttled);
  }
}

TEST(E1000eDriverOnModel, DestroyingTheDriverWithFramesPostedStopsTheNicBeforeFreeingItsMemory) {
  E1000eModel model({.completion = E1000eModel::Completion::on_process});
  {
    auto nic = E1000eDriver::open(model.open(), small(8, 8, 32));
    ASSERT_TRUE(nic) << nic.error().message();
    std::vector<Packet> packets;
    for (std::uint32_t i = 0; i < 5; ++i) packets.push_back(packet_with(*nic, make_frame(kPeer, 60, i)));
    ASSERT_EQ(nic->tx_batch(packets).value_or(0), 5u);
    for (std::uint32_t i = 0; i < 3; ++i) {
      ASSERT_EQ(model.receive(make_frame(nic->mac(), 60, 10 + i)), E1000eRxOutcome::queued);
    }
    EXPECT_TRUE(model.device().bus_master());
  }  // destroyed with 5 frames posted, 7 receive buffers posted and 3 frames on the way in
  const auto violations = model.violations();
  EXPECT_FALSE(has_rule(violations, rule::kLiveMemoryUnmapped)) << listed(violations);
  EXPECT_FALSE(has_rule(violations, rule::kDmaWithoutBusMaster)) << listed(violations);
  EXPECT_FALSE(model.device().bus_master());
  EXPECT_EQ(model.device().dma_mapped_bytes(), 0u);
  model.process();
  EXPECT_TRUE(model.transmitted().empty());
  EXPECT_EQ(model.device().dma_without_bus_master(), 0u);
  EXPECT_EQ(model.device().dma_faults(), 0u);
  EXPECT_NO_VIOLATIONS(model);
}

// ---- removal ----

// A polling loop that finds nothing must not pay a register read (a PCIe round trip, a VM
// exit under emulation) per poll: STATUS is read at the first empty poll, then every 64th.
TEST(E1000eDriverOnModel, EmptyPollsReadTheNicsStatusOnlyNowAndThen) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small());
  ASSERT_TRUE(nic) << nic.error().message();
  std::atomic<int> status_reads{0};
  model.bar0().on_read(e1000e::kStatus, [&](const pcie::testing::RegisterAccess&) -> std::uint64_t {
    ++status_reads;
    return e1000e::kStatusLinkUp;
  });
  std::array<Packet, 4> batch;
  for (int poll = 0; poll < 128; ++poll) ASSERT_EQ(nic->rx_batch(batch).value_or(99), 0u);
  EXPECT_EQ(status_reads.load(), 2) << "polls 1 and 65";
  // A frame resets the count: the next empty poll looks again.
  ASSERT_EQ(model.receive(make_frame(nic->mac(), 60, 1)), E1000eRxOutcome::delivered);
  ASSERT_EQ(nic->rx_batch(batch).value_or(0), 1u);
  ASSERT_TRUE(nic->release(batch[0]));
  status_reads = 0;
  ASSERT_EQ(nic->rx_batch(batch).value_or(99), 0u);
  EXPECT_EQ(status_reads.load(), 1);
  EXPECT_NO_VIOLATIONS(model);
}

TEST(E1000eDriverOnModel, ARemovedNicIsReportedAsDeviceRemoved) {
  E1000eModel model;
  auto nic = E1000eDriver::open(model.open(), small());
  ASSERT_TRUE(nic) << nic.error().message();
  // Surprise removal as the host sees it: reads complete with all ones. (The hook replaces
  // the model's own STATUS hook, so only STATUS is affected; that is what the driver reads.)
  model.bar0().on_read(e1000e::kStatus, [](const pcie::testing::RegisterAccess&) -> std::uint64_t { return 0xffffffffu; });
  std::array<Packet, 4> batch;
  auto rx = nic->rx_batch(batch);
  ASSERT_FALSE(rx);
  EXPECT_EQ(rx.error().code, Errc::device_removed) << rx.error().message();
  EXPECT_FALSE(nic->link_up());
  auto echoed = examples::echo(*nic, {.count = 1, .idle = 100ms, .keep_going = {}});
  ASSERT_FALSE(echoed);
  EXPECT_EQ(echoed.error().code, Errc::device_removed);
  EXPECT_NO_VIOLATIONS(model);
}

}  // namespace
