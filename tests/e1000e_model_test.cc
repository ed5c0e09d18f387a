// The strict 82574L model (pcie/testing/e1000e_model.h) driven by a tiny host written here
// on the public API, as a driver would: BAR0 through Region::read/write, rings and buffers
// from the device's DMA allocator, interrupts through the Device. Correct use moves frames
// both ways byte for byte and leaves no violation; each protocol error is provoked on
// purpose and seen.
#include "pcie/testing/e1000e_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <vector>

#include "pcie/dma.h"

namespace {

using pcie::IrqKind;
using pcie::Width;
using pcie::testing::E1000eModel;
using pcie::testing::E1000eModelOptions;
using pcie::testing::E1000eRxOutcome;
namespace rule = pcie::testing::e1000e_rule;

// Registers and bits (82574 datasheet, 10.2).
constexpr std::uint64_t kCtrl = 0x0000, kStatus = 0x0008, kEerd = 0x0014, kCtrlExt = 0x0018, kIcr = 0x00c0,
                        kIms = 0x00d0, kImc = 0x00d8, kEiac = 0x00dc, kIam = 0x00e0, kIvar = 0x00e4,
                        kRctl = 0x0100, kTctl = 0x0400, kRdbal = 0x2800, kRdbah = 0x2804, kRdlen = 0x2808,
                        kRdh = 0x2810, kRdt = 0x2818, kTdbal = 0x3800, kTdbah = 0x3804, kTdlen = 0x3808,
                        kTdh = 0x3810, kTdt = 0x3818, kRfctl = 0x5008, kMta = 0x5200, kRal0 = 0x5400,
                        kRah0 = 0x5404;
constexpr std::uint64_t kMpc = 0x4010, kGprc = 0x4074, kGptc = 0x4080, kGorcl = 0x4088, kGotcl = 0x4090,
                        kGotch = 0x4094, kRnbc = 0x40a0, kTpr = 0x40d0, kTpt = 0x40d4;
constexpr std::uint32_t kCtrlGioMasterDisable = 1u << 2, kCtrlSlu = 1u << 6, kCtrlRst = 1u << 26;
constexpr std::uint32_t kStatusGioMasterEnable = 1u << 19;
constexpr std::uint32_t kStatusFd = 1u << 0, kStatusLu = 1u << 1, kStatusSpeedMask = 3u << 6,
                        kStatusSpeed1000 = 2u << 6;
constexpr std::uint32_t kCtrlExtEiame = 1u << 24;
constexpr std::uint32_t kTxdw = 1u << 0, kLsc = 1u << 2, kRxo = 1u << 6, kRxt0 = 1u << 7, kRxq0 = 1u << 20,
                        kTxq0 = 1u << 22, kOther = 1u << 24, kAsserted = 1u << 31;
constexpr std::uint32_t kRctlEn = 1u << 1, kRctlUpe = 1u << 3, kRctlLbmMac = 1u << 6, kRctlBam = 1u << 15,
                        kRctlBsize256 = 3u << 16, kRctlSecrc = 1u << 26;
constexpr std::uint32_t kTctlEn = 1u << 1, kTctlPsp = 1u << 3;
constexpr std::uint8_t kEop = 1u << 0, kIfcs = 1u << 1, kRs = 1u << 3, kDext = 1u << 5;
constexpr std::uint8_t kDd = 1u << 0, kRxEop = 1u << 1;

constexpr std::array<std::uint8_t, 6> kStation{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr std::array<std::uint8_t, 6> kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

struct RxDescriptor {
  std::uint64_t buffer = 0;
  std::uint16_t length = 0;
  std::uint16_t checksum = 0;
  std::uint8_t status = 0;
  std::uint8_t errors = 0;
  std::uint16_t special = 0;
};
struct TxDescriptor {
  std::uint64_t buffer = 0;
  std::uint16_t length = 0;
  std::uint8_t cso = 0;
  std::uint8_t command = 0;
  std::uint8_t status = 0;
  std::uint8_t css = 0;
  std::uint16_t special = 0;
};
static_assert(sizeof(RxDescriptor) == 16 && sizeof(TxDescriptor) == 16);

using Frame = std::vector<std::byte>;

// An Ethernet frame to `destination` of `size` bytes (no FCS), its payload a pattern.
Frame make_frame(const std::array<std::uint8_t, 6>& destination, std::size_t size, unsigned seed = 1) {
  Frame frame(size);
  for (std::size_t i = 0; i < size; ++i) frame[i] = static_cast<std::byte>((i * 29 + seed * 7) & 0xff);
  for (std::size_t i = 0; i < 6 && i < size; ++i) frame[i] = std::byte{destination[i]};
  const std::array<std::uint8_t, 8> source_and_type{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x08, 0x00};
  for (std::size_t i = 0; i < source_and_type.size() && 6 + i < size; ++i) frame[6 + i] = std::byte{source_and_type[i]};
  return frame;
}

bool seen(const E1000eModel& model, std::string_view name) {
  const auto all = model.violations();
  return std::any_of(all.begin(), all.end(), [&](const std::string& text) { return text.starts_with(name); });
}

std::string listed(const std::vector<std::string>& texts) {
  std::string out;
  for (const auto& text : texts) out += "\n  " + text;
  return out;
}

// The host side: what a small 82574 driver does, one step per function.
class Host {
 public:
  explicit Host(E1000eModel& model) : device_(model.open()) {
    bar_ = std::move(device_->open_bar(0).value());
    allocator_.emplace(device_->dma_allocator().value());
    EXPECT_TRUE(device_->enable_bus_master());
  }

  pcie::Device& device() { return *device_; }
  pcie::Region& bar() { return *bar_; }
  std::uint32_t read(std::uint64_t offset) {
    return static_cast<std::uint32_t>(bar_->read(Width::bits32, offset).value());
  }
  void write(std::uint64_t offset, std::uint32_t value) { ASSERT_TRUE(bar_->write(Width::bits32, offset, value)); }
  pcie::DmaBuffer buffer(std::size_t bytes) {
    return allocator_->allocate(bytes, {.prefer = pcie::DmaBacking::pages}).value();
  }

  void link_up() { write(kCtrl, kCtrlSlu); }

  // An RX ring of `count` descriptors over buffers of `buffer_bytes`, all handed to the NIC.
  void setup_rx(unsigned count = 8, std::uint32_t rctl = kRctlEn | kRctlBam | kRctlSecrc,
                unsigned buffer_bytes = 2048) {
    rx_count_ = count;
    rx_buffer_bytes_ = buffer_bytes;
    rx_ring_ = buffer(count * sizeof(RxDescriptor));
    rx_data_ = buffer(std::size_t{count} * buffer_bytes);
    for (unsigned i = 0; i < count; ++i) put_rx(i, {.buffer = rx_data_.bus_address().value + i * buffer_bytes});
    write(kRdbal, static_cast<std::uint32_t>(rx_ring_.bus_address().value));
    write(kRdbah, static_cast<std::uint32_t>(rx_ring_.bus_address().value >> 32));
    write(kRdlen, count * sizeof(RxDescriptor));
    write(kRdh, 0);
    write(kRdt, 0);
    write(kRctl, rctl);
    write(kRdt, count - 1);
  }
  RxDescriptor rx(unsigned index) const {
    RxDescriptor descriptor;
    std::memcpy(&descriptor, rx_ring_.data() + index * sizeof(descriptor), sizeof(descriptor));
    return descriptor;
  }
  void put_rx(unsigned index, const RxDescriptor& descriptor) {
    std::memcpy(rx_ring_.data() + index * sizeof(descriptor), &descriptor, sizeof(descriptor));
  }
  Frame rx_bytes(unsigned index, std::size_t length) const {
    const std::byte* first = rx_data_.data() + std::size_t{index} * rx_buffer_bytes_;
    return Frame(first, first + length);
  }
  pcie::DmaBuffer& rx_ring_memory() { return rx_ring_; }
  pcie::DmaBuffer& rx_data_memory() { return rx_data_; }

  void setup_tx(unsigned count = 8, std::uint32_t tctl = kTctlEn | kTctlPsp) {
    tx_count_ = count;
    tx_ring_ = buffer(count * sizeof(TxDescriptor));
    tx_data_ = buffer(std::size_t{count} * 2048);
    write(kTdbal, static_cast<std::uint32_t>(tx_ring_.bus_address().value));
    write(kTdbah, static_cast<std::uint32_t>(tx_ring_.bus_address().value >> 32));
    write(kTdlen, count * sizeof(TxDescriptor));
    write(kTdh, 0);
    write(kTdt, 0);
    write(kTctl, tctl);
  }
  // Writes `descriptors` from the tail on, then moves TDT past them.
  void post_tx(const std::vector<TxDescriptor>& descriptors) {
    for (const TxDescriptor& descriptor : descriptors) {
      std::memcpy(tx_ring_.data() + tx_tail_ * sizeof(descriptor), &descriptor, sizeof(descriptor));
      tx_tail_ = (tx_tail_ + 1) % tx_count_;
    }
    write(kTdt, tx_tail_);
  }
  // `frame` in `pieces` descriptors (RS and EOP on the last), its bytes in the data slots.
  void send(const Frame& frame, unsigned pieces = 1) {
    std::vector<TxDescriptor> descriptors;
    std::size_t offset = 0;
    for (unsigned piece = 0; piece < pieces; ++piece) {
      const std::size_t length = piece + 1 == pieces ? frame.size() - offset : frame.size() / pieces;
      const unsigned slot = (tx_tail_ + piece) % tx_count_;
      std::memcpy(tx_data_.data() + std::size_t{slot} * 2048, frame.data() + offset, length);
      const bool last = piece + 1 == pieces;
      descriptors.push_back({.buffer = tx_data_.bus_address().value + std::size_t{slot} * 2048,
                             .length = static_cast<std::uint16_t>(length),
                             .command = static_cast<std::uint8_t>(kIfcs | (last ? kEop | kRs : 0))});
      offset += length;
    }
    post_tx(descriptors);
  }
  TxDescriptor tx(unsigned index) const {
    TxDescriptor descriptor;
    std::memcpy(&descriptor, tx_ring_.data() + index * sizeof(descriptor), sizeof(descriptor));
    return descriptor;
  }
  std::uint64_t tx_data_bus() const { return tx_data_.bus_address().value; }
  std::byte* tx_data() { return tx_data_.data(); }

 private:
  std::unique_ptr<pcie::Device> device_;
  std::unique_ptr<pcie::Region> bar_;
  std::optional<pcie::DmaAllocator> allocator_;
  pcie::DmaBuffer rx_ring_, rx_data_, tx_ring_, tx_data_;
  unsigned rx_count_ = 0, rx_buffer_bytes_ = 0, tx_count_ = 0, tx_tail_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Reset, link, identity

TEST(E1000eModel, LinkComesUpWithSluAndResetRestoresDefaults) {
  E1000eModel nic;
  Host host(nic);
  EXPECT_EQ(host.read(kStatus) & kStatusLu, 0u) << "link down at power-on";
  EXPECT_EQ(host.read(kRal0), 0x12005452u) << "RAL0 from the EEPROM";
  EXPECT_EQ(host.read(kRah0), 0x80005634u) << "RAH0 with AV";
  host.link_up();
  const std::uint32_t status = host.read(kStatus);
  EXPECT_EQ(status & (kStatusLu | kStatusFd), kStatusLu | kStatusFd);
  EXPECT_EQ(status & kStatusSpeedMask, kStatusSpeed1000);
  EXPECT_TRUE(nic.link_up());
  EXPECT_EQ(host.read(kIcr), kLsc | kAsserted) << "link change raised LSC";
  EXPECT_EQ(host.read(kIcr), 0u) << "an ICR read clears it outside MSI-X mode";

  host.write(kEerd, (1u << 2) | 1u);  // EEPROM word 1 = MAC bytes 2 and 3
  EXPECT_EQ(host.read(kEerd) >> 16, 0x1200u);
  EXPECT_EQ(host.read(kEerd) & 2u, 2u) << "DONE";

  host.write(kIms, kRxt0);
  host.write(kRal0, 0x01020304);
  host.write(kCtrl, kCtrlSlu | kCtrlGioMasterDisable);
  host.write(kCtrl, kCtrlSlu | kCtrlRst);
  EXPECT_EQ(nic.resets(), 1u);
  EXPECT_EQ(host.read(kCtrl) & kCtrlRst, 0u) << "RST self-clears";
  EXPECT_EQ(host.read(kIms), 0u);
  EXPECT_EQ(host.read(kRal0), 0x12005452u) << "reloaded from the EEPROM";
  EXPECT_EQ(host.read(kStatus) & kStatusLu, 0u) << "link down until SLU again";
  host.link_up();
  EXPECT_TRUE(nic.link_up());
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

// ---------------------------------------------------------------------------------------------
// Transmit

TEST(E1000eModel, TransmitsOneDescriptorFrameByteForByteAndWritesBackDd) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_tx();
  const Frame frame = make_frame(kBroadcast, 200);
  host.send(frame);
  EXPECT_EQ(nic.take_transmitted(), std::vector<Frame>{frame});
  EXPECT_EQ(host.read(kTdh), 1u);
  EXPECT_EQ(host.tx(0).status & kDd, kDd);
  EXPECT_EQ(host.read(kIcr) & kTxdw, kTxdw);
  EXPECT_EQ(host.read(kTpt), 1u);
  EXPECT_EQ(host.read(kGotcl), 204u) << "octets with the FCS";
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, TransmitsAFrameAssembledFromThreeDescriptors) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_tx();
  const Frame frame = make_frame(kBroadcast, 1514, 3);
  host.send(frame, 3);
  const auto sent = nic.take_transmitted();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0], frame);
  EXPECT_EQ(host.read(kTdh), 3u);
  EXPECT_EQ(host.tx(0).status & kDd, 0) << "no RS, no write-back";
  EXPECT_EQ(host.tx(1).status & kDd, 0);
  EXPECT_EQ(host.tx(2).status & kDd, kDd);
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, PadsShortFramesOnTheWireOnlyWithPsp) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_tx(8, kTctlEn);
  host.send(make_frame(kBroadcast, 42));
  host.write(kTctl, kTctlEn | kTctlPsp);
  host.send(make_frame(kBroadcast, 42));
  const auto sent = nic.take_transmitted();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].size(), 42u);
  ASSERT_EQ(sent[1].size(), 60u);
  EXPECT_TRUE(std::all_of(sent[1].begin() + 42, sent[1].end(), [](std::byte b) { return b == std::byte{0}; }));
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

// ---------------------------------------------------------------------------------------------
// Receive

TEST(E1000eModel, ReceivesAFrameIntoTheNextDescriptorWithSecrc) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_rx();
  const Frame frame = make_frame(kStation, 300);
  EXPECT_EQ(nic.receive(frame), E1000eRxOutcome::delivered);
  const RxDescriptor done = host.rx(0);
  EXPECT_EQ(done.status, kDd | kRxEop);
  EXPECT_EQ(done.length, 300) << "SECRC: no FCS bytes";
  EXPECT_EQ(done.errors, 0);
  EXPECT_EQ(host.rx_bytes(0, 300), frame);
  EXPECT_EQ(host.read(kRdh), 1u);
  EXPECT_EQ(host.read(kGprc), 1u);
  EXPECT_EQ(host.read(kTpr), 1u);
  EXPECT_EQ(host.read(kGorcl), 304u);
  EXPECT_EQ(host.read(kIcr) & kRxt0, kRxt0);
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, PadsShortFramesTo60AndAppendsFourFcsBytesWithoutSecrc) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_rx(8, kRctlEn | kRctlBam);
  const Frame frame = make_frame(kStation, 42);
  EXPECT_EQ(nic.receive(frame), E1000eRxOutcome::delivered);
  EXPECT_EQ(host.rx(0).length, 64) << "60 bytes of frame and 4 of FCS";
  const Frame written = host.rx_bytes(0, 64);
  EXPECT_TRUE(std::equal(frame.begin(), frame.end(), written.begin()));
  EXPECT_TRUE(std::all_of(written.begin() + 42, written.end(), [](std::byte b) { return b == std::byte{0}; }));
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, AFrameLargerThanTheBufferSpansDescriptors) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_rx(8, kRctlEn | kRctlSecrc | kRctlBsize256, 256);
  const Frame frame = make_frame(kStation, 600, 5);
  EXPECT_EQ(nic.receive(frame), E1000eRxOutcome::delivered);
  EXPECT_EQ(host.rx(0).length, 256);
  EXPECT_EQ(host.rx(0).status, kDd);
  EXPECT_EQ(host.rx(1).length, 256);
  EXPECT_EQ(host.rx(1).status, kDd);
  EXPECT_EQ(host.rx(2).length, 88);
  EXPECT_EQ(host.rx(2).status, kDd | kRxEop);
  Frame joined = host.rx_bytes(0, 256);
  for (unsigned i = 1; i < 3; ++i) {
    const Frame part = host.rx_bytes(i, host.rx(i).length);
    joined.insert(joined.end(), part.begin(), part.end());
  }
  EXPECT_EQ(joined, frame);
  EXPECT_EQ(host.read(kRdh), 3u);
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, DropsFramesWithoutDescriptorsOrWithTheReceiverOff) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_rx(8);
  host.write(kRctl, 0);
  EXPECT_EQ(nic.receive(make_frame(kStation, 100)), E1000eRxOutcome::rx_disabled);
  EXPECT_EQ(host.read(kMpc), 1u);
  host.write(kRdt, 0);  // RDH == RDT: the device owns nothing
  host.write(kRctl, kRctlEn | kRctlSecrc);
  (void)host.read(kIcr);
  EXPECT_EQ(nic.receive(make_frame(kStation, 100)), E1000eRxOutcome::no_descriptors);
  EXPECT_EQ(host.read(kRnbc), 1u);
  EXPECT_EQ(host.read(kMpc), 1u);
  EXPECT_EQ(host.read(kIcr) & kRxo, kRxo);
  EXPECT_EQ(host.rx(0).status, 0) << "nothing written";
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, FiltersByStationAddressUnlessPromiscuous) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_rx(16, kRctlEn | kRctlSecrc);
  const std::array<std::uint8_t, 6> other{0x52, 0x54, 0x00, 0x99, 0x99, 0x99};
  const std::array<std::uint8_t, 6> multicast{0x01, 0x00, 0x5e, 0x00, 0x00, 0x42};
  EXPECT_EQ(nic.receive(make_frame(other, 64)), E1000eRxOutcome::filtered);
  EXPECT_EQ(nic.receive(make_frame(kBroadcast, 64)), E1000eRxOutcome::filtered) << "no BAM";
  EXPECT_EQ(nic.receive(make_frame(multicast, 64)), E1000eRxOutcome::filtered) << "MTA empty";
  EXPECT_EQ(nic.receive(make_frame(kStation, 64)), E1000eRxOutcome::delivered);
  // MO 00b: the hash is bits 47:36 of the address, (byte5 << 4 | byte4 >> 4).
  const unsigned hash = (0x42u << 4) | (0x00u >> 4);
  host.write(kMta + 4 * (hash >> 5), 1u << (hash & 31));
  EXPECT_EQ(nic.receive(make_frame(multicast, 64)), E1000eRxOutcome::delivered);
  host.write(kRctl, kRctlEn | kRctlSecrc | kRctlUpe | kRctlBam);
  EXPECT_EQ(nic.receive(make_frame(other, 64)), E1000eRxOutcome::delivered);
  EXPECT_EQ(nic.receive(make_frame(kBroadcast, 64)), E1000eRxOutcome::delivered);
  EXPECT_EQ(host.read(kRdh), 4u);
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, MacLoopbackReceivesWhatItSends) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_rx(8, kRctlEn | kRctlSecrc | kRctlLbmMac);
  host.setup_tx();
  const Frame frame = make_frame(kStation, 128, 9);
  host.send(frame);
  EXPECT_TRUE(nic.transmitted().empty()) << "looped back, not on the wire";
  EXPECT_EQ(host.rx(0).status, kDd | kRxEop);
  EXPECT_EQ(host.rx_bytes(0, host.rx(0).length), frame);
  EXPECT_EQ(host.read(kGptc), 1u);
  EXPECT_EQ(host.read(kGprc), 1u);
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, StatisticsClearOnRead) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_tx();
  host.send(make_frame(kBroadcast, 100));
  host.send(make_frame(kBroadcast, 100));
  EXPECT_EQ(nic.register_value(kGptc), 2u) << "a look without the read's side effect";
  EXPECT_EQ(host.read(kGptc), 2u);
  EXPECT_EQ(host.read(kGptc), 0u);
  EXPECT_EQ(nic.register_value(kGotcl), 208u);
  EXPECT_EQ(host.read(kGotch), 0u);
  EXPECT_EQ(nic.register_value(kGotcl), 0u) << "reading the high half clears both";
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

// ---------------------------------------------------------------------------------------------
// Interrupts

TEST(E1000eModel, MsixRoutesCausesThroughIvarAndEiacClearsThem) {
  E1000eModel nic;
  Host host(nic);
  auto vectors = host.device().enable_interrupts(IrqKind::msix, 5);
  ASSERT_TRUE(vectors) << vectors.error().message();
  host.write(kIvar, (0x8u | 1) | (0x8u | 2) << 8 | (0x8u | 0) << 16);  // RXQ0 -> 1, TXQ0 -> 2, OTHER -> 0
  host.write(kEiac, kRxq0 | kTxq0);
  host.write(kIms, kRxq0 | kTxq0 | kOther);
  host.link_up();
  EXPECT_EQ((*vectors)->consume(0).value(), 1u) << "LSC -> OTHER -> vector 0";
  host.setup_rx();
  host.setup_tx();
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::delivered);
  EXPECT_EQ((*vectors)->consume(1).value(), 1u);
  EXPECT_EQ(nic.register_value(kIcr) & kRxq0, 0u) << "EIAC cleared RXQ0";
  host.send(make_frame(kBroadcast, 80));
  EXPECT_EQ((*vectors)->consume(2).value(), 1u);
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::delivered);
  EXPECT_EQ((*vectors)->consume(1).value(), 1u) << "auto-cleared: the next frame signals again";
  const auto log = nic.interrupts();
  ASSERT_EQ(log.size(), 4u);
  EXPECT_EQ(log[1].kind, IrqKind::msix);
  EXPECT_EQ(log[1].vector, 1u);
  EXPECT_EQ(log[1].causes, kRxq0);
  EXPECT_TRUE(log[1].delivered);
  EXPECT_EQ(host.read(kIcr) & kOther, kOther) << "OTHER is not in EIAC: it stays until cleared";
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, EiameMasksTheCauseUntilTheDriverSetsImsAgain) {
  E1000eModel nic;
  Host host(nic);
  auto vectors = host.device().enable_interrupts(IrqKind::msix, 5);
  ASSERT_TRUE(vectors);
  host.write(kIvar, 0x8u | 3);  // RXQ0 -> 3
  host.write(kEiac, kRxq0);
  host.write(kIam, kRxq0);
  host.write(kCtrlExt, kCtrlExtEiame);
  host.link_up();
  host.setup_rx();
  host.write(kIms, kRxq0);
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::delivered);
  EXPECT_EQ((*vectors)->consume(3).value(), 1u);
  EXPECT_EQ(host.read(kIms) & kRxq0, 0u) << "auto-masked";
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::delivered);
  EXPECT_EQ((*vectors)->consume(3).value(), 0u) << "masked: no message";
  host.write(kIms, kRxq0);
  EXPECT_EQ((*vectors)->consume(3).value(), 1u) << "the pending cause signals at re-enable";
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, MsiSignalsEachNewCauseOnceAndAnIcrReadRearmsIt) {
  E1000eModel nic;
  Host host(nic);
  auto msi = host.device().enable_interrupts(IrqKind::msi, 1);
  ASSERT_TRUE(msi);
  host.link_up();
  host.setup_rx();
  host.setup_tx();
  (void)host.read(kIcr);
  host.write(kIms, kRxt0 | kTxdw);
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::delivered);
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::delivered);
  EXPECT_EQ((*msi)->consume(0).value(), 1u) << "RXT0 still set: one message";
  host.send(make_frame(kBroadcast, 80));
  EXPECT_EQ((*msi)->consume(0).value(), 1u) << "TXDW is a new cause";
  EXPECT_EQ(host.read(kIcr), kRxt0 | kTxdw | (1u << 1) | kAsserted) << "RXT0, TXDW, TXQE";
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::delivered);
  EXPECT_EQ((*msi)->consume(0).value(), 1u) << "cleared by the read: signals again";
  host.write(kImc, ~0u);
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::delivered);
  EXPECT_EQ((*msi)->consume(0).value(), 0u) << "masked by IMC";
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, IntxSignalsWhenNeitherMsiNorMsixIsEnabled) {
  E1000eModel nic;
  Host host(nic);
  auto intx = host.device().enable_interrupts(IrqKind::intx, 1);
  ASSERT_TRUE(intx);
  host.write(kIms, kLsc);
  host.link_up();
  EXPECT_EQ((*intx)->consume(0).value(), 1u);
  ASSERT_FALSE(nic.interrupts().empty());
  EXPECT_EQ(nic.interrupts().back().kind, IrqKind::intx);
  EXPECT_EQ(nic.interrupts().back().causes, kLsc);
  nic.set_link(false);
  EXPECT_FALSE(nic.link_up());
  EXPECT_EQ(host.read(kStatus) & kStatusLu, 0u);
  EXPECT_EQ((*intx)->consume(0).value(), 0u) << "LSC still set, not read: no new edge";
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

// ---------------------------------------------------------------------------------------------
// Held completions

TEST(E1000eModel, HeldWorkWaitsForProcess) {
  E1000eModelOptions options;
  options.completion = E1000eModelOptions::Completion::on_process;
  E1000eModel nic(options);
  Host host(nic);
  host.link_up();
  host.setup_rx();
  host.setup_tx();
  const Frame out = make_frame(kBroadcast, 90);
  host.send(out);
  EXPECT_EQ(host.read(kTdh), 0u) << "not yet";
  EXPECT_TRUE(nic.transmitted().empty());
  EXPECT_EQ(host.tx(0).status & kDd, 0);
  EXPECT_EQ(nic.receive(make_frame(kStation, 90)), E1000eRxOutcome::queued);
  EXPECT_EQ(nic.queued_frames(), 1u);
  EXPECT_EQ(nic.process(), 2u);
  EXPECT_EQ(nic.take_transmitted(), std::vector<Frame>{out});
  EXPECT_EQ(host.tx(0).status & kDd, kDd);
  EXPECT_EQ(host.rx(0).status, kDd | kRxEop);
  EXPECT_EQ(nic.queued_frames(), 0u);
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

// ---------------------------------------------------------------------------------------------
// Violations, one class at a time

TEST(E1000eModel, RecordsAccessesThatAreNotThirtyTwoBitsOrHitNoRegister) {
  E1000eModel nic;
  Host host(nic);
  ASSERT_TRUE(host.bar().write(Width::bits64, kRdbal, 0x1000));
  EXPECT_TRUE(seen(nic, rule::kRegisterWidth));
  EXPECT_EQ(nic.register_value(kRdbal), 0u) << "dropped";
  nic.clear_violations();
  ASSERT_TRUE(host.bar().read(Width::bits16, kRdlen));  // at a register: seen at once
  EXPECT_TRUE(seen(nic, rule::kRegisterWidth));
  nic.clear_violations();
  ASSERT_TRUE(host.bar().read(Width::bits8, kRal0 + 1));  // inside a register: seen in the log
  ASSERT_TRUE(host.bar().write(Width::bits16, kRah0 + 2, 0x8000));
  EXPECT_EQ(nic.violations().size(), 2u) << listed(nic.violations());
  EXPECT_EQ(host.read(kRah0), 0x80005634u) << "the model never saw the write";
  nic.clear_violations();
  EXPECT_EQ(host.read(0x9000), 0u);
  host.write(0x2900, 1);  // the second RX queue, which the model has not
  EXPECT_EQ(nic.violations().size(), 2u) << listed(nic.violations());
  EXPECT_TRUE(seen(nic, rule::kUnknownRegister));
}

TEST(E1000eModel, RecordsBadRingGeometryAndEnablingBeforeTheRingIsSet) {
  E1000eModel nic;
  Host host(nic);
  host.write(kRctl, kRctlEn);
  EXPECT_TRUE(seen(nic, rule::kRingNotSet)) << listed(nic.violations());
  host.write(kRctl, 0);
  nic.clear_violations();
  host.write(kRdlen, 100);
  EXPECT_TRUE(seen(nic, rule::kRingLength));
  host.write(kRdbal, 0x100008);
  EXPECT_TRUE(seen(nic, rule::kRingAlignment));
  nic.clear_violations();
  host.setup_rx();
  host.write(kRdbah, 0);
  EXPECT_TRUE(seen(nic, rule::kRingChangedWhileEnabled)) << listed(nic.violations());
  host.write(kRfctl, 1u << 15);
  EXPECT_TRUE(seen(nic, rule::kUnsupportedRxFormat));
}

TEST(E1000eModel, RecordsTailsBeyondTheRingOrPastTheHead) {
  E1000eModelOptions options;
  options.completion = E1000eModelOptions::Completion::on_process;
  E1000eModel nic(options);
  Host host(nic);
  host.link_up();
  host.setup_tx();
  host.write(kTdt, 8);
  EXPECT_TRUE(seen(nic, rule::kIndexBeyondRing));
  EXPECT_EQ(host.read(kTdt), 0u) << "ignored";
  nic.clear_violations();
  host.send(make_frame(kBroadcast, 64));
  host.send(make_frame(kBroadcast, 64));
  host.send(make_frame(kBroadcast, 64));
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
  host.write(kTdt, 1);  // back inside what the device owns: TDH 0, TDT 3
  EXPECT_TRUE(seen(nic, rule::kTailPastHead)) << listed(nic.violations());
  EXPECT_EQ(host.read(kTdt), 3u);
  EXPECT_EQ(nic.process(), 3u);
}

TEST(E1000eModel, RecordsDmaFaultsAndStopsTheQueue) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_tx();
  host.post_tx({{.buffer = 0xdead0000, .length = 64, .command = kEop | kIfcs | kRs}});
  EXPECT_TRUE(seen(nic, rule::kDmaFault)) << listed(nic.violations());
  EXPECT_EQ(nic.device().dma_faults(), 1u);
  EXPECT_EQ(host.read(kTdh), 0u) << "the queue stopped on the descriptor";
  EXPECT_TRUE(nic.transmitted().empty());
  host.send(make_frame(kBroadcast, 64));
  EXPECT_TRUE(nic.transmitted().empty()) << "stopped until reset";
}

TEST(E1000eModel, RecordsInvalidTransmitDescriptorsAndFrames) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_tx(80);
  const std::uint64_t data = host.tx_data_bus();
  host.post_tx({{.buffer = data, .length = 64, .command = kEop | kRs | kDext}});
  EXPECT_TRUE(seen(nic, rule::kTxDescriptor));
  nic.clear_violations();
  host.post_tx({{.buffer = data, .length = 0, .command = kEop | kRs}});
  EXPECT_TRUE(seen(nic, rule::kTxDescriptor));
  nic.clear_violations();
  host.post_tx({{.buffer = data, .length = 1600, .command = kEop | kIfcs | kRs}});
  EXPECT_TRUE(seen(nic, rule::kTxFrameTooLong)) << listed(nic.violations());
  nic.clear_violations();
  std::vector<TxDescriptor> chain(66, TxDescriptor{.buffer = data, .length = 16, .command = kIfcs});
  chain.back().command |= kEop | kRs;
  host.post_tx(chain);
  EXPECT_TRUE(seen(nic, rule::kTxNoEop)) << listed(nic.violations());
  EXPECT_TRUE(nic.transmitted().empty()) << "none of them was sent";
  EXPECT_EQ(host.read(kTdh), 69u) << "but every descriptor was consumed";
}

TEST(E1000eModel, RecordsNullRxBuffersAndDescriptorsChangedAfterHandover) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_rx();
  host.put_rx(7, {});
  host.write(kRctl, 0);
  host.write(kRdt, 0);
  host.write(kRdh, 0);
  host.write(kRctl, kRctlEn | kRctlSecrc);
  host.put_rx(0, {.buffer = 0});
  host.write(kRdt, 1);
  EXPECT_TRUE(seen(nic, rule::kRxBufferNull)) << listed(nic.violations());
  nic.clear_violations();
  host.put_rx(0, {.buffer = host.rx_data_memory().bus_address().value});  // too late: handed over
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::delivered);
  EXPECT_TRUE(seen(nic, rule::kDescriptorChanged)) << listed(nic.violations());
}

TEST(E1000eModel, RecordsDmaAfterBusMasteringWasTurnedOff) {
  E1000eModel nic;
  Host host(nic);
  host.link_up();
  host.setup_rx();
  ASSERT_TRUE(host.device().enable_bus_master(false));  // RX still enabled: the device was not stopped
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::dma_error);
  EXPECT_TRUE(seen(nic, rule::kDmaWithoutBusMaster)) << listed(nic.violations());
  EXPECT_GE(nic.device().dma_without_bus_master(), 1u);
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::stopped);
}

TEST(E1000eModel, RecordsLiveRingsAndBuffersUnmapped) {
  E1000eModel nic;
  {
    Host host(nic);
    host.link_up();
    host.setup_rx();
    ASSERT_TRUE(host.rx_data_memory().release());  // the device owns descriptors pointing there
    EXPECT_TRUE(seen(nic, rule::kLiveMemoryUnmapped)) << listed(nic.violations());
    nic.clear_violations();
    ASSERT_TRUE(host.rx_ring_memory().release());
    EXPECT_TRUE(seen(nic, rule::kLiveMemoryUnmapped));
  }
  nic.clear_violations();
  {
    Host host(nic);
    host.write(kCtrl, kCtrlGioMasterDisable);
    host.write(kCtrl, kCtrlRst);
    host.link_up();
    host.setup_rx();
    host.write(kRctl, 0);  // the right order: stop the queue, then free its memory
  }
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, AResetWithBusMasteringOnNeedsGioMasterDisableFirst) {
  E1000eModel nic;
  Host host(nic);  // bus mastering on
  host.write(kCtrl, kCtrlRst);
  EXPECT_TRUE(seen(nic, rule::kResetWithoutMasterDisable)) << listed(nic.violations());
  nic.clear_violations();
  host.write(kCtrl, kCtrlGioMasterDisable);
  EXPECT_EQ(host.read(kStatus) & kStatusGioMasterEnable, 0u) << "no master request pending";
  host.write(kCtrl, kCtrlRst);
  EXPECT_EQ(nic.resets(), 2u);
  EXPECT_NE(host.read(kStatus) & kStatusGioMasterEnable, 0u) << "the reset cleared GIO Master Disable";
  ASSERT_TRUE(host.device().enable_bus_master(false));
  host.write(kCtrl, kCtrlRst);  // no DMA possible: nothing to cut off
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

TEST(E1000eModel, RecordsCausesWithoutAValidIvarEntryInMsixMode) {
  E1000eModel nic;
  Host host(nic);
  auto vectors = host.device().enable_interrupts(IrqKind::msix, 5);
  ASSERT_TRUE(vectors);
  host.write(kIvar, 0x8u | 1);  // RXQ0 routed; OTHER not
  host.write(kIms, kRxq0 | kOther);
  host.link_up();
  EXPECT_TRUE(seen(nic, rule::kMsixUnrouted)) << listed(nic.violations());
  nic.clear_violations();
  host.setup_rx();
  EXPECT_EQ(nic.receive(make_frame(kStation, 80)), E1000eRxOutcome::delivered);
  EXPECT_EQ((*vectors)->consume(1).value(), 1u);
  EXPECT_TRUE(nic.violations().empty()) << listed(nic.violations());
}

}  // namespace
