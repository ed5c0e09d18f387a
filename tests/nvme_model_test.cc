// The strict NVMe controller model (pcie/testing/nvme_model.h) driven by a tiny host written
// here on the public API: DMA buffers from the device's allocator, the rings of pcie/queue.h,
// doorbells through Region::write (a register model has no mapping). Correct use round-trips
// data and leaves no violation; each protocol error is provoked on purpose and seen.
#include "pcie/testing/nvme_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "pcie/dma.h"
#include "pcie/queue.h"

namespace {

using namespace std::chrono_literals;
using pcie::Width;
using pcie::testing::NvmeCompletionOrder;
using pcie::testing::NvmeModel;
using pcie::testing::NvmeModelOptions;
namespace rule = pcie::testing::nvme_rule;

// The register offsets, opcodes, Sqe and Cqe: the model's own layouts (pcie/testing/nvme_model.h).
using namespace pcie::testing::nvme;

constexpr std::uint32_t kCcEnabled = (4u << 20) | (6u << 16) | 1u;  // IOCQES 16 B, IOSQES 64 B, EN

unsigned code(const Cqe& entry) { return (entry.status >> 1) & 0xff; }
unsigned type(const Cqe& entry) { return (entry.status >> 9) & 0x7; }

bool seen(const NvmeModel& model, std::string_view name) {
  const auto all = model.violations();
  return std::any_of(all.begin(), all.end(), [&](const std::string& text) { return text.starts_with(name); });
}

std::string listed(const std::vector<std::string>& texts) {
  std::string out;
  for (const auto& text : texts) out += "\n  " + text;
  return out;
}

Sqe transfer(std::uint8_t opcode, std::uint16_t cid, std::uint64_t lba, std::uint32_t blocks, std::uint64_t prp1,
             std::uint64_t prp2 = 0, std::uint32_t nsid = 1) {
  return {.opcode = opcode, .cid = cid, .nsid = nsid, .prp1 = prp1, .prp2 = prp2,
          .cdw10 = static_cast<std::uint32_t>(lba), .cdw11 = static_cast<std::uint32_t>(lba >> 32),
          .cdw12 = blocks - 1};
}

std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>((i * 131 + seed * 17 + i / 4096) & 0xff);
  return bytes;
}

// A host as small as an NVMe driver gets: an admin queue, I/O queue pairs, commands pushed
// and completions reaped one at a time. CIDs are the caller's.
class Host {
 public:
  struct Queue {
    std::uint16_t id = 0;
    pcie::DmaBuffer sq_memory;
    pcie::DmaBuffer cq_memory;
    pcie::SubmissionRing<Sqe> sq{};
    pcie::CompletionRing<Cqe> cq{};
  };

  explicit Host(NvmeModel& model) : device_(model.open()) {
    bar_ = std::move(device_->open_bar(0).value());
    allocator_.emplace(device_->dma_allocator().value());
    EXPECT_TRUE(device_->enable_bus_master());
  }
  // Disables the controller before its queues go, as a driver must.
  ~Host() { (void)bar_->write(Width::bits32, kCc, 0); }

  pcie::Device& device() { return *device_; }
  pcie::Region& bar() { return *bar_; }
  Queue& admin() { return *admin_; }
  Queue& io(std::uint16_t id) { return io_.at(id - 1); }
  std::uint32_t read32(std::uint64_t offset) { return static_cast<std::uint32_t>(bar_->read(Width::bits32, offset).value()); }
  void write32(std::uint64_t offset, std::uint32_t value) { ASSERT_TRUE(bar_->write(Width::bits32, offset, value)); }

  pcie::DmaBuffer buffer(std::size_t bytes) {
    return allocator_->allocate(bytes, {.prefer = pcie::DmaBacking::pages}).value();
  }

  Queue make_queue(std::uint16_t id, std::uint32_t depth) {
    Queue queue{.id = id, .sq_memory = buffer(depth * sizeof(Sqe)), .cq_memory = buffer(depth * sizeof(Cqe))};
    queue.sq = pcie::SubmissionRing<Sqe>::create(queue.sq_memory.bytes(), depth, {}).value();
    queue.cq = pcie::CompletionRing<Cqe>::create(queue.cq_memory.bytes(), depth,
                                                 {.byte_offset = 14, .mask = 1}, {}).value();
    return queue;
  }

  void enable(std::uint32_t depth = 8) {
    admin_.emplace(make_queue(0, depth));
    write32(kAqa, ((depth - 1) << 16) | (depth - 1));
    ASSERT_TRUE(bar_->write(Width::bits64, kAsq, admin_->sq_memory.bus_address().value));
    ASSERT_TRUE(bar_->write(Width::bits64, kAcq, admin_->cq_memory.bus_address().value));
    write32(kCc, kCcEnabled);
    ASSERT_EQ(read32(kCsts) & 0x3, 0x1u) << "CSTS.RDY, no CSTS.CFS";
  }

  void push(Queue& queue, const Sqe& command) { ASSERT_TRUE(queue.sq.push(command)); }
  void ring(Queue& queue) { write32(kDoorbells + 8 * queue.id, queue.sq.tail()); }

  // The next completion, consumed and handed back to the controller; nullopt on timeout.
  std::optional<Cqe> reap(Queue& queue, std::chrono::milliseconds timeout = 1000ms) {
    auto waited = queue.cq.wait({.timeout = timeout});
    if (!waited || !*waited) return std::nullopt;
    const Cqe entry = **waited;
    queue.cq.pop();
    write32(kDoorbells + 8 * queue.id + 4, queue.cq.head());
    EXPECT_TRUE(queue.sq.consumed_up_to(entry.sq_head)) << "SQ head " << entry.sq_head;
    EXPECT_EQ(entry.sq_id, queue.id);
    return entry;
  }

  Cqe run(Queue& queue, Sqe command) {
    push(queue, command);
    ring(queue);
    auto entry = reap(queue);
    EXPECT_TRUE(entry) << "no completion for opcode " << int{command.opcode};
    if (entry) {
      EXPECT_EQ(entry->cid, command.cid);
    }
    return entry.value_or(Cqe{.status = 0xfffe});
  }

  Cqe admin_command(Sqe command) {
    command.cid = admin_cid_++;
    return run(*admin_, command);
  }

  // I/O queue pair `id` (CQ `id` with `cq_flags`, then SQ `id` on it).
  void create_io(std::uint16_t id, std::uint32_t depth, std::uint32_t cq_flags = 0x1) {
    io_.push_back(make_queue(id, depth));
    const std::uint32_t size_and_id = ((depth - 1) << 16) | id;
    const Cqe cq = admin_command({.opcode = kCreateCq, .prp1 = io(id).cq_memory.bus_address().value,
                                  .cdw10 = size_and_id, .cdw11 = cq_flags});
    ASSERT_EQ(cq.status >> 1, 0) << "create CQ";
    const Cqe sq = admin_command({.opcode = kCreateSq, .prp1 = io(id).sq_memory.bus_address().value,
                                  .cdw10 = size_and_id, .cdw11 = (std::uint32_t{id} << 16) | 0x1});
    ASSERT_EQ(sq.status >> 1, 0) << "create SQ";
  }

 private:
  std::unique_ptr<pcie::Device> device_;
  std::unique_ptr<pcie::Region> bar_;
  std::optional<pcie::DmaAllocator> allocator_;
  std::optional<Queue> admin_;
  std::deque<Queue> io_;
  std::uint16_t admin_cid_ = 0;
};

// PRP1 and PRP2 for `length` bytes at `offset` of `data`; a list (chained at the end of each
// list page to the next page of `list`) from `list_offset` of `list` when needed.
std::pair<std::uint64_t, std::uint64_t> describe(const pcie::DmaBuffer& data, std::size_t offset, std::size_t length,
                                                 const pcie::DmaBuffer* list = nullptr, std::size_t list_offset = 0) {
  const std::uint64_t start = data.bus_address().value + offset;
  const std::uint64_t pages = (start % kPage + length + kPage - 1) / kPage;
  const std::uint64_t first_page = start / kPage * kPage;
  if (pages == 1) return {start, 0};
  if (pages == 2) return {start, first_page + kPage};
  std::size_t at = list_offset;
  for (std::uint64_t page = 1; page < pages; ++page) {
    if (at % kPage == kPage - 8 && page + 1 < pages) {  // the last slot: point at the next list page
      const std::uint64_t next = list->bus_address().value + at + 8;
      std::memcpy(list->data() + at, &next, 8);
      at += 8;
    }
    const std::uint64_t entry = first_page + page * kPage;
    std::memcpy(list->data() + at, &entry, 8);
    at += 8;
  }
  return {start, list->bus_address().value + list_offset};
}

// ---------------------------------------------------------------------------------------------
// Registers

TEST(NvmeModelRegisters, CapabilitiesVersionEnableAndReset) {
  NvmeModel model({.max_queue_entries = 128, .timeout_500ms = 3});
  Host host(model);
  const std::uint64_t cap = host.bar().read(Width::bits64, kCap).value();
  EXPECT_EQ(cap & 0xffff, 127u) << "MQES";
  EXPECT_EQ((cap >> 16) & 1, 1u) << "CQR";
  EXPECT_EQ((cap >> 24) & 0xff, 3u) << "TO";
  EXPECT_EQ((cap >> 32) & 0xf, 0u) << "DSTRD";
  EXPECT_EQ((cap >> 37) & 1, 1u) << "CSS: NVM";
  EXPECT_EQ((cap >> 48) & 0xff, 0u) << "MPSMIN, MPSMAX: 4 KiB";
  EXPECT_EQ(host.read32(kVersion), 0x00010400u);
  EXPECT_EQ(host.read32(kCsts), 0u);
  host.enable();
  EXPECT_TRUE(model.ready());
  host.write32(kCc, 0);
  EXPECT_EQ(host.read32(kCsts), 0u);
  EXPECT_FALSE(model.ready());
  EXPECT_EQ(model.resets(), 1u);
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

TEST(NvmeModelRegisters, EnableWithAMisalignedAdminQueueFails) {
  NvmeModel model;
  Host host(model);
  auto queue = host.buffer(2 * kPage);
  host.write32(kAqa, (7u << 16) | 7u);
  ASSERT_TRUE(host.bar().write(Width::bits64, kAsq, queue.bus_address().value + 0x200));
  ASSERT_TRUE(host.bar().write(Width::bits64, kAcq, queue.bus_address().value + kPage));
  host.write32(kCc, kCcEnabled);
  EXPECT_EQ(host.read32(kCsts) & 0x3, 0x2u) << "CSTS.CFS, not RDY";
  EXPECT_TRUE(seen(model, rule::kInvalidEnable)) << listed(model.violations());
  host.write32(kCc, 0);
  EXPECT_EQ(host.read32(kCsts), 0u) << "a reset clears CSTS.CFS";
}

TEST(NvmeModelRegisters, ShutdownCompletesAtOnce) {
  NvmeModel model;
  Host host(model);
  host.enable();
  host.write32(kCc, kCcEnabled | (1u << 14));
  EXPECT_EQ((host.read32(kCsts) >> 2) & 0x3, 0x2u) << "CSTS.SHST complete";
  host.write32(kCc, 0);
  host.enable();  // a reset brings it back
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

TEST(NvmeModelRegisters, OnlyThirtyTwoAndSixtyFourBitAccesses) {
  NvmeModel model;
  Host host(model);
  EXPECT_EQ(host.bar().read(Width::bits8, kCsts).error().code, pcie::Errc::width_not_allowed);
  EXPECT_EQ(host.bar().read(Width::bits16, kCc).error().code, pcie::Errc::width_not_allowed);
  EXPECT_TRUE(model.violations().empty());
  ASSERT_TRUE(host.bar().write(Width::bits64, 0x10, 0));  // INTMC and CC in one access
  EXPECT_TRUE(seen(model, rule::kRegisterWidth)) << listed(model.violations());
}

// ---------------------------------------------------------------------------------------------
// Admin commands

std::uint64_t le(const pcie::DmaBuffer& buffer, std::size_t offset, std::size_t bytes) {
  std::uint64_t value = 0;
  std::memcpy(&value, buffer.data() + offset, bytes);
  return value;
}

TEST(NvmeModelAdmin, IdentifyControllerNamespacesAndTheActiveList) {
  NvmeModel model({.mdts = 3,
                   .namespaces = {{.id = 3, .blocks = 64, .block_shift = 9}, {.id = 1, .blocks = 1000, .block_shift = 12}},
                   .serial = "SN42",
                   .model = "strict",
                   .firmware = "FW7"});
  Host host(model);
  host.enable();
  auto data = host.buffer(kPage);
  const std::uint64_t bus = data.bus_address().value;
  ASSERT_EQ(host.admin_command({.opcode = kIdentify, .prp1 = bus, .cdw10 = 1}).status >> 1, 0);
  EXPECT_EQ(le(data, 0, 2), 0x1b36u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(data.data()) + 4, 4), "SN42");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(data.data()) + 24, 6), "strict");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(data.data()) + 64, 3), "FW7");
  EXPECT_EQ(le(data, 77, 1), 3u) << "MDTS";
  EXPECT_EQ(le(data, 512, 2), 0x4466u) << "SQES, CQES";
  EXPECT_EQ(le(data, 516, 4), 3u) << "NN: the largest id";

  ASSERT_EQ(host.admin_command({.opcode = kIdentify, .nsid = 1, .prp1 = bus, .cdw10 = 0}).status >> 1, 0);
  EXPECT_EQ(le(data, 0, 8), 1000u) << "NSZE";
  EXPECT_EQ(le(data, 26, 1) & 0xf, 0u) << "FLBAS";
  EXPECT_EQ(le(data, 128 + 2, 1), 12u) << "LBAF0.LBADS";
  std::memset(data.data(), 0xff, kPage);
  ASSERT_EQ(host.admin_command({.opcode = kIdentify, .nsid = 2, .prp1 = bus, .cdw10 = 0}).status >> 1, 0)
      << "an inactive id in 1..NN";
  EXPECT_EQ(le(data, 0, 8), 0u) << "zeros";
  const Cqe invalid = host.admin_command({.opcode = kIdentify, .nsid = 4, .prp1 = bus, .cdw10 = 0});
  EXPECT_EQ(code(invalid), 0x0bu) << "Invalid Namespace or Format";

  ASSERT_EQ(host.admin_command({.opcode = kIdentify, .nsid = 0, .prp1 = bus, .cdw10 = 2}).status >> 1, 0);
  EXPECT_EQ(le(data, 0, 4), 1u);
  EXPECT_EQ(le(data, 4, 4), 3u);
  EXPECT_EQ(le(data, 8, 4), 0u);
  ASSERT_EQ(host.admin_command({.opcode = kIdentify, .nsid = 1, .prp1 = bus, .cdw10 = 2}).status >> 1, 0);
  EXPECT_EQ(le(data, 0, 4), 3u) << "ids above CDW1.NSID only";
  EXPECT_EQ(code(host.admin_command({.opcode = kIdentify, .prp1 = bus, .cdw10 = 0x10})), 0x02u) << "CNS 10h";
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

TEST(NvmeModelAdmin, AControllerWithoutNamespacesStillIdentifies) {
  NvmeModel model({.namespaces = {}});
  Host host(model);
  host.enable();
  auto data = host.buffer(kPage);
  std::memset(data.data(), 0xff, kPage);
  const std::uint64_t bus = data.bus_address().value;
  ASSERT_EQ(host.admin_command({.opcode = kIdentify, .prp1 = bus, .cdw10 = 1}).status >> 1, 0);
  EXPECT_EQ(le(data, 516, 4), 0u) << "NN";
  ASSERT_EQ(host.admin_command({.opcode = kIdentify, .prp1 = bus, .cdw10 = 2}).status >> 1, 0);
  EXPECT_TRUE(std::all_of(data.data(), data.data() + kPage, [](std::byte b) { return b == std::byte{0}; }))
      << "an empty active namespace list";
  EXPECT_EQ(code(host.admin_command({.opcode = kIdentify, .nsid = 1, .prp1 = bus, .cdw10 = 0})), 0x0bu);
  host.create_io(1, 8);
  EXPECT_EQ(code(host.run(host.io(1), transfer(kRead, 1, 0, 1, bus))), 0x0bu);
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

TEST(NvmeModelAdmin, QueueCreationAndDeletionChecks) {
  NvmeModel model;
  Host host(model);
  host.enable();
  auto memory = host.buffer(64 * kPage);
  const std::uint64_t bus = memory.bus_address().value;
  struct Case {
    const char* what;
    Sqe command;
    unsigned type, code;
  };
  const Case cases[] = {
      {"SQ before its CQ", {.opcode = kCreateSq, .prp1 = bus, .cdw10 = (7u << 16) | 1, .cdw11 = (1u << 16) | 1}, 1, 0x00},
      {"CQ id 0", {.opcode = kCreateCq, .prp1 = bus, .cdw10 = (7u << 16) | 0, .cdw11 = 1}, 1, 0x01},
      {"CQ id past the limit", {.opcode = kCreateCq, .prp1 = bus, .cdw10 = (7u << 16) | 17, .cdw11 = 1}, 1, 0x01},
      {"CQ larger than MQES + 1", {.opcode = kCreateCq, .prp1 = bus, .cdw10 = (256u << 16) | 1, .cdw11 = 1}, 1, 0x02},
      {"CQ of one entry", {.opcode = kCreateCq, .prp1 = bus, .cdw10 = 1, .cdw11 = 1}, 1, 0x02},
      {"CQ not contiguous", {.opcode = kCreateCq, .prp1 = bus, .cdw10 = (7u << 16) | 1, .cdw11 = 0}, 0, 0x02},
      {"CQ vector past MSI-X", {.opcode = kCreateCq, .prp1 = bus, .cdw10 = (7u << 16) | 1, .cdw11 = (8u << 16) | 3}, 1, 0x08},
      {"CQ memory misaligned", {.opcode = kCreateCq, .prp1 = bus + 64, .cdw10 = (7u << 16) | 1, .cdw11 = 1}, 0, 0x13},
      {"CQ 1", {.opcode = kCreateCq, .prp1 = bus, .cdw10 = (7u << 16) | 1, .cdw11 = 1}, 0, 0x00},
      {"CQ 1 again", {.opcode = kCreateCq, .prp1 = bus + kPage, .cdw10 = (7u << 16) | 1, .cdw11 = 1}, 1, 0x01},
      {"SQ 1 on CQ 1", {.opcode = kCreateSq, .prp1 = bus + 2 * kPage, .cdw10 = (7u << 16) | 1, .cdw11 = (1u << 16) | 1}, 0, 0x00},
      {"SQ 2 on the admin CQ", {.opcode = kCreateSq, .prp1 = bus + 3 * kPage, .cdw10 = (7u << 16) | 2, .cdw11 = 1}, 1, 0x00},
      {"CQ 1 while SQ 1 posts to it", {.opcode = kDeleteCq, .cdw10 = 1}, 1, 0x0c},
      {"delete SQ 1", {.opcode = kDeleteSq, .cdw10 = 1}, 0, 0x00},
      {"delete CQ 1", {.opcode = kDeleteCq, .cdw10 = 1}, 0, 0x00},
      {"delete SQ 5", {.opcode = kDeleteSq, .cdw10 = 5}, 1, 0x01},
      {"delete the admin SQ", {.opcode = kDeleteSq, .cdw10 = 0}, 1, 0x01},
      {"unknown admin opcode", {.opcode = 0x7f}, 0, 0x01},
  };
  for (const Case& c : cases) {
    const Cqe entry = host.admin_command(c.command);
    EXPECT_EQ(type(entry), c.type) << c.what;
    EXPECT_EQ(code(entry), c.code) << c.what;
  }
  EXPECT_EQ(model.io_submission_queues(), 0u);
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

// ---------------------------------------------------------------------------------------------
// I/O

TEST(NvmeModelIo, WriteReadRoundTripsOverEveryPrpShape) {
  NvmeModel model({.mdts = 0, .namespaces = {{.id = 1, .blocks = 4096, .block_shift = 9}}});
  Host host(model);
  host.enable();
  host.create_io(1, 16);
  auto source = host.buffer(16 * kPage);
  auto sink = host.buffer(16 * kPage);
  auto list = host.buffer(2 * kPage);
  struct Case {
    const char* what;
    std::size_t offset, bytes, list_offset;
  };
  const Case cases[] = {
      {"one block, PRP1 only", 0, 512, 0},
      {"a page from an offset: PRP1 and PRP2", 0x200, 4096, 0},
      {"two whole pages: PRP2 the second", 0, 8192, 0},
      {"five pages: a PRP list", 0, 5 * 4096, 0},
      {"ten pages from an offset, the list from a page's last two slots: chained", 0x600, 10 * 4096 - 0x600, kPage - 16},
  };
  std::uint16_t cid = 0;
  unsigned seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const auto bytes = pattern(c.bytes, seed++);
    std::memcpy(source.data() + c.offset, bytes.data(), bytes.size());
    const std::uint64_t lba = 8 * seed;
    const auto blocks = static_cast<std::uint32_t>(c.bytes / 512);
    const auto [w1, w2] = describe(source, c.offset, c.bytes, &list, c.list_offset);
    EXPECT_EQ(host.run(host.io(1), transfer(kWrite, cid++, lba, blocks, w1, w2)).status >> 1, 0);
    EXPECT_EQ(model.read_blocks(1, lba, blocks).value(), bytes);
    std::memset(sink.data(), 0, sink.size());
    const auto [r1, r2] = describe(sink, c.offset, c.bytes, &list, c.list_offset);
    EXPECT_EQ(host.run(host.io(1), transfer(kRead, cid++, lba, blocks, r1, r2)).status >> 1, 0);
    EXPECT_EQ(std::memcmp(sink.data() + c.offset, bytes.data(), bytes.size()), 0);
  }
  EXPECT_EQ(host.run(host.io(1), {.opcode = kFlush, .cid = cid++, .nsid = 1}).status >> 1, 0);
  EXPECT_EQ(host.run(host.io(1), {.opcode = kFlush, .cid = cid++, .nsid = 0xffffffff}).status >> 1, 0);
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

TEST(NvmeModelIo, RefusedCommandsGetTheRightStatus) {
  NvmeModel model({.mdts = 1, .namespaces = {{.id = 1, .blocks = 100}, {.id = 3, .blocks = 100}}});
  Host host(model);
  host.enable();
  host.create_io(1, 8);
  auto data = host.buffer(4 * kPage);
  const std::uint64_t bus = data.bus_address().value;
  struct Case {
    const char* what;
    Sqe command;
    unsigned code;
  };
  Sqe sgl = transfer(kRead, 0, 0, 1, bus);
  sgl.flags = 1u << 6;
  const Case cases[] = {
      {"namespace 0", transfer(kRead, 0, 0, 1, bus, 0, 0), 0x0b},
      {"namespace past NN", transfer(kRead, 0, 0, 1, bus, 0, 4), 0x0b},
      {"the broadcast namespace", transfer(kRead, 0, 0, 1, bus, 0, 0xffffffff), 0x0b},
      {"an inactive namespace", transfer(kWrite, 0, 0, 1, bus, 0, 2), 0x02},
      {"LBA past the end", transfer(kRead, 0, 100, 1, bus), 0x80},
      {"blocks past the end", transfer(kRead, 0, 98, 3, bus, bus + kPage), 0x80},
      {"past MDTS (8 KiB)", transfer(kRead, 0, 0, 17, bus, bus + kPage), 0x02},
      {"an SGL", sgl, 0x02},
      {"unknown I/O opcode", {.opcode = 0x7e, .nsid = 1}, 0x01},
      {"flush of an inactive namespace", {.opcode = kFlush, .nsid = 2}, 0x02},
  };
  std::uint16_t cid = 0;
  for (const Case& c : cases) {
    Sqe command = c.command;
    command.cid = cid++;
    const Cqe entry = host.run(host.io(1), command);
    EXPECT_EQ(type(entry), 0u) << c.what;
    EXPECT_EQ(code(entry), c.code) << c.what;
  }
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

// ---------------------------------------------------------------------------------------------
// Violations, each provoked on purpose

struct Provocation {
  const char* what;
  std::string_view rule;
  std::function<void(NvmeModel&, Host&)> provoke;
};

// Two 4-page reads, held, with PRP lists in one page when `shared` (else one page each);
// returns their buffers, which must outlive the commands.
std::vector<pcie::DmaBuffer> two_listed_reads(NvmeModel& model, Host& host, bool shared) {
  model.hold_next_io(2);
  std::vector<pcie::DmaBuffer> buffers;
  buffers.push_back(host.buffer(4 * kPage));
  buffers.push_back(host.buffer(4 * kPage));
  buffers.push_back(host.buffer(2 * kPage));
  const auto [a1, a2] = describe(buffers[0], 0, 4 * kPage, &buffers[2], 0);
  host.push(host.io(1), transfer(kRead, 1, 0, 32, a1, a2));
  const auto [b1, b2] = describe(buffers[1], 0, 4 * kPage, &buffers[2], shared ? 0 : kPage);
  host.push(host.io(1), transfer(kRead, 2, 0, 32, b1, b2));
  host.ring(host.io(1));
  return buffers;
}

const Provocation kProvocations[] = {
    {"a CID reused while its command is held", rule::kCidReused,
     [](NvmeModel& model, Host& host) {
       model.hold_next_io(1);
       auto data = host.buffer(2 * kPage);
       host.push(host.io(1), transfer(kRead, 5, 0, 1, data.bus_address().value));
       host.ring(host.io(1));
       host.push(host.io(1), transfer(kRead, 5, 1, 1, data.bus_address().value + kPage));
       host.ring(host.io(1));
     }},
    {"two pages with PRP2 0", rule::kPrp2Missing,
     [](NvmeModel& model, Host& host) {
       auto data = host.buffer(2 * kPage);
       const Cqe entry = host.run(host.io(1), transfer(kRead, 1, 0, 16, data.bus_address().value, 0));
       EXPECT_EQ(code(entry), 0x04u) << "Data Transfer Error";
       EXPECT_TRUE(seen(model, rule::kDmaFault));
     }},
    {"PRP2 not page-aligned", rule::kPrpMisaligned,
     [](NvmeModel&, Host& host) {
       auto data = host.buffer(2 * kPage);
       const std::uint64_t bus = data.bus_address().value;
       EXPECT_EQ(code(host.run(host.io(1), transfer(kRead, 1, 0, 16, bus, bus + kPage + 0x100))), 0x13u);
     }},
    {"a held command's PRP list rewritten", rule::kPrpListChanged,
     [](NvmeModel& model, Host& host) {
       model.hold_next_io(1);
       auto data = host.buffer(8 * kPage), list = host.buffer(kPage);
       const auto [prp1, prp2] = describe(data, 0, 4 * kPage, &list, 0);
       host.push(host.io(1), transfer(kRead, 1, 0, 32, prp1, prp2));
       host.ring(host.io(1));
       const std::uint64_t other = data.bus_address().value + 6 * kPage;
       std::memcpy(list.data(), &other, 8);  // the list page reused for another command
       EXPECT_EQ(model.release(), 1u);
       EXPECT_TRUE(host.reap(host.io(1)));
     }},
    {"one PRP list page for two outstanding commands", rule::kPrpListShared,
     [](NvmeModel& model, Host& host) { (void)two_listed_reads(model, host, true); }},  // freed after: also seen
    {"two outstanding reads into one buffer", rule::kDataShared,
     [](NvmeModel& model, Host& host) {
       model.hold_next_io(2);
       auto data = host.buffer(kPage);
       host.push(host.io(1), transfer(kRead, 1, 0, 1, data.bus_address().value));
       host.push(host.io(1), transfer(kRead, 2, 1, 1, data.bus_address().value));
       host.ring(host.io(1));
     }},
    {"a read into the CQ", rule::kDataOverlapsQueue,
     [](NvmeModel& model, Host& host) {
       model.hold_next_io(1);
       host.push(host.io(1), transfer(kRead, 1, 0, 1, host.io(1).cq_memory.bus_address().value));
       host.ring(host.io(1));
     }},
    {"PRP1 at an unmapped address", rule::kDmaFault,
     [](NvmeModel&, Host& host) {
       EXPECT_EQ(code(host.run(host.io(1), transfer(kRead, 1, 0, 1, 0x7000'0000))), 0x04u);
     }},
    {"a doorbell rung after bus mastering was turned off", rule::kDmaWithoutBusMaster,
     [](NvmeModel& model, Host& host) {
       ASSERT_TRUE(host.device().enable_bus_master(false));
       auto data = host.buffer(kPage);
       host.push(host.io(1), transfer(kRead, 1, 0, 1, data.bus_address().value));
       host.ring(host.io(1));
       EXPECT_EQ(host.read32(kCsts) & 0x2, 0x2u) << "CSTS.CFS: the controller could not fetch";
       EXPECT_GE(model.device().dma_without_bus_master(), 1u);
     }},
    {"a doorbell while disabled", rule::kDoorbellWhileDisabled,
     [](NvmeModel&, Host& host) {
       host.write32(kCc, 0);
       host.write32(kDoorbells, 1);
     }},
    {"a doorbell after shutdown", rule::kDoorbellAfterShutdown,
     [](NvmeModel&, Host& host) {
       host.write32(kCc, kCcEnabled | (1u << 14));
       host.write32(kDoorbells + 8, 1);
     }},
    {"a tail past the queue", rule::kInvalidDoorbellValue,
     [](NvmeModel&, Host& host) { host.write32(kDoorbells + 8, 8); }},
    {"a doorbell of a queue that does not exist", rule::kInvalidDoorbell,
     [](NvmeModel&, Host& host) { host.write32(kDoorbells + 8 * 5, 1); }},
    {"a CQ head past what was posted", rule::kCqHeadBeyondTail,
     [](NvmeModel&, Host& host) { host.write32(kDoorbells + 8 + 4, 3); }},
    {"an SQ slot overwritten before its consumption was reported", rule::kSqOverflow,
     [](NvmeModel& model, Host& host) {
       model.hold_next_io(7);
       auto data = host.buffer(8 * kPage);
       for (std::uint16_t i = 0; i < 7; ++i) {
         host.push(host.io(1), transfer(kRead, i, i, 1, data.bus_address().value + i * kPage));
       }
       host.ring(host.io(1));  // 7 of 8 slots: full, no completion has reported a head yet
       *host.io(1).sq.slot(7) = transfer(kRead, 7, 7, 1, data.bus_address().value + 7 * kPage);
       host.write32(kDoorbells + 8, 0);
     }},
    {"an I/O SQ's memory freed while the controller is enabled", rule::kLiveMemoryUnmapped,
     [](NvmeModel&, Host& host) { host.io(1).sq_memory = pcie::DmaBuffer(); }},
    {"a held read's buffer freed", rule::kLiveMemoryUnmapped,
     [](NvmeModel& model, Host& host) {
       model.hold_next_io(1);
       auto data = host.buffer(kPage);
       host.push(host.io(1), transfer(kRead, 1, 0, 1, data.bus_address().value));
       host.ring(host.io(1));
     }},  // `data` goes here, the read still held
    {"CC.MPS changed while enabled", rule::kConfigurationWhileEnabled,
     [](NvmeModel&, Host& host) { host.write32(kCc, kCcEnabled | (1u << 7)); }},
};

TEST(NvmeModelViolations, EachRuleIsSeenWhenBroken) {
  for (const Provocation& p : kProvocations) {
    SCOPED_TRACE(p.what);
    NvmeModel model;
    Host host(model);
    host.enable();
    host.create_io(1, 8);
    ASSERT_TRUE(model.violations().empty()) << listed(model.violations());
    p.provoke(model, host);
    EXPECT_TRUE(seen(model, p.rule)) << "expected \"" << p.rule << "\", got:" << listed(model.violations());
  }
}

TEST(NvmeModelViolations, SeparatePrpListsForOutstandingCommandsAreFine) {
  NvmeModel model;
  Host host(model);
  host.enable();
  host.create_io(1, 8);
  const auto buffers = two_listed_reads(model, host, false);
  EXPECT_EQ(model.release(), 2u);
  EXPECT_TRUE(host.reap(host.io(1)));
  EXPECT_TRUE(host.reap(host.io(1)));
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

// ---------------------------------------------------------------------------------------------
// Holding and releasing commands

TEST(NvmeModelHold, AResetDropsHeldCommands) {
  NvmeModel model;
  Host host(model);
  host.enable();
  host.create_io(1, 8);
  auto data = host.buffer(2 * kPage);
  std::memset(data.data(), 0xaa, data.size());
  ASSERT_TRUE(model.write_blocks(1, 0, pattern(1024, 3)));
  model.hold_next_io(2);
  host.push(host.io(1), transfer(kRead, 1, 0, 1, data.bus_address().value));
  host.push(host.io(1), transfer(kRead, 2, 1, 1, data.bus_address().value + kPage));
  host.ring(host.io(1));
  EXPECT_FALSE(host.reap(host.io(1), 50ms));
  ASSERT_EQ(model.held().size(), 2u);
  EXPECT_EQ(model.held()[0].command_id, 1u);
  EXPECT_EQ(model.held()[1].lba, 1u);
  const auto completions_before = model.completions().size();

  host.write32(kCc, 0);  // controller reset: the held reads are dropped
  EXPECT_TRUE(model.held().empty());
  EXPECT_EQ(model.release(), 0u);
  EXPECT_EQ(model.dropped(), 2u);
  EXPECT_EQ(model.completions().size(), completions_before);
  EXPECT_TRUE(std::all_of(data.data(), data.data() + data.size(), [](std::byte b) { return b == std::byte{0xaa}; }))
      << "no DMA after the reset";
  const auto* cq = host.io(1).cq_memory.data();
  EXPECT_TRUE(std::all_of(cq, cq + 8 * sizeof(Cqe), [](std::byte b) { return b == std::byte{0}; }))
      << "no completion written";
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

TEST(NvmeModelHold, ReleasedFromAnotherThreadWhileTheHostPolls) {
  NvmeModel model;
  Host host(model);
  host.enable();
  host.create_io(1, 8);
  ASSERT_TRUE(model.write_blocks(1, 0, pattern(3 * 512, 9)));
  auto data = host.buffer(3 * kPage);
  model.hold_if([](const pcie::testing::NvmeCommandInfo& info) { return info.opcode == kRead; });
  for (std::uint16_t i = 0; i < 3; ++i) host.push(host.io(1), transfer(kRead, i, i, 1, data.bus_address().value + i * kPage));
  host.ring(host.io(1));
  std::thread releaser([&] {
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(model.release(1), 1u);
    EXPECT_EQ(model.release(), 2u);
  });
  std::set<std::uint16_t> cids;
  for (int i = 0; i < 3; ++i) {
    auto entry = host.reap(host.io(1), 2000ms);
    ASSERT_TRUE(entry);
    EXPECT_EQ(entry->status >> 1, 0);
    cids.insert(entry->cid);
  }
  releaser.join();
  EXPECT_EQ(cids, (std::set<std::uint16_t>{0, 1, 2}));
  const auto expected = pattern(3 * 512, 9);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(std::memcmp(data.data() + i * kPage, expected.data() + i * 512, 512), 0);
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

TEST(NvmeModelHold, DeletingTheSqDropsAndAbortEnds) {
  NvmeModel model;
  Host host(model);
  host.enable();
  host.create_io(1, 8);
  auto data = host.buffer(2 * kPage);
  model.hold_next_io(2);
  host.push(host.io(1), transfer(kRead, 3, 0, 1, data.bus_address().value));
  host.push(host.io(1), transfer(kRead, 4, 1, 1, data.bus_address().value + kPage));
  host.ring(host.io(1));
  const Cqe aborted = host.admin_command({.opcode = kAbort, .cdw10 = (3u << 16) | 1});
  EXPECT_EQ(aborted.status >> 1, 0);
  EXPECT_EQ(aborted.result & 1, 0u) << "found and aborted";
  auto entry = host.reap(host.io(1));
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->cid, 3u);
  EXPECT_EQ(code(*entry), 0x07u) << "Command Abort Requested";
  EXPECT_EQ(host.admin_command({.opcode = kDeleteSq, .cdw10 = 1}).status >> 1, 0);
  EXPECT_TRUE(model.held().empty()) << "CID 4 went with its SQ";
  EXPECT_EQ(model.dropped(), 1u);
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

// ---------------------------------------------------------------------------------------------
// Completion order, a full CQ, interrupts

TEST(NvmeModelPolicy, OutOfOrderCompletionsDeliverEveryCidOnce) {
  for (const NvmeCompletionOrder order : {NvmeCompletionOrder::reverse, NvmeCompletionOrder::random}) {
    for (const unsigned window : {1u, 4u, 12u}) {
      SCOPED_TRACE(testing::Message() << "order " << static_cast<int>(order) << " window " << window);
      NvmeModel model;
      Host host(model);
      host.enable();
      host.create_io(1, 32);
      model.set_completion_policy({.order = order, .window = window, .seed = 7});
      auto data = host.buffer(16 * kPage);
      std::deque<std::uint16_t> free_cids;
      for (std::uint16_t cid = 0; cid < 16; ++cid) free_cids.push_back(cid);
      std::vector<std::uint16_t> submitted, completed;
      std::vector<int> times_completed(16, 0);
      while (completed.size() < 200) {
        while (submitted.size() < 200 && !free_cids.empty()) {
          const std::uint16_t cid = free_cids.front();
          free_cids.pop_front();
          host.push(host.io(1), transfer(kRead, cid, cid, 1, data.bus_address().value + cid * kPage));
          submitted.push_back(cid);
        }
        host.ring(host.io(1));
        auto entry = host.reap(host.io(1));
        ASSERT_TRUE(entry) << completed.size() << " of 200 completed";
        ++times_completed[entry->cid];
        completed.push_back(entry->cid);
        free_cids.push_back(entry->cid);
      }
      EXPECT_NE(completed, submitted) << "not in submission order";
      for (int cid = 0; cid < 16; ++cid) EXPECT_GE(times_completed[cid], 1) << cid;
      EXPECT_EQ(model.completions().size(), 2u + 200u);
      EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
    }
  }
}

TEST(NvmeModelPolicy, AFullCqWaitsForTheHeadDoorbell) {
  NvmeModel model;
  Host host(model);
  host.enable();
  host.create_io(1, 4);  // 3 completions fit
  auto data = host.buffer(3 * kPage);
  for (std::uint16_t i = 0; i < 3; ++i) host.push(host.io(1), transfer(kRead, i, i, 1, data.bus_address().value + i * kPage));
  host.ring(host.io(1));
  Host::Queue& queue = host.io(1);
  for (std::uint16_t i = 0; i < 3; ++i) {
    auto entry = queue.cq.peek();
    ASSERT_TRUE(entry) << i;
    queue.cq.pop();
    ASSERT_TRUE(queue.sq.consumed_up_to(entry->sq_head));
  }
  host.push(queue, transfer(kRead, 3, 3, 1, data.bus_address().value));
  host.push(queue, transfer(kRead, 4, 4, 1, data.bus_address().value + kPage));
  host.ring(queue);
  // The three completions were consumed but not handed back (no head doorbell): the CQ is
  // still full, and the next two wait for room.
  EXPECT_FALSE(queue.cq.peek());
  host.write32(kDoorbells + 8 + 4, queue.cq.head());
  for (const std::uint16_t cid : {3, 4}) {
    auto entry = queue.cq.peek();
    ASSERT_TRUE(entry) << cid;
    EXPECT_EQ(entry->cid, cid);
    queue.cq.pop();
  }
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

TEST(NvmeModelInterrupts, EachCqSignalsItsOwnMsixVector) {
  NvmeModel model;
  Host host(model);
  auto vectors = host.device().enable_interrupts(pcie::IrqKind::msix, 4);
  ASSERT_TRUE(vectors) << vectors.error().message();
  host.enable();
  host.create_io(1, 8, (2u << 16) | 0x3);  // IEN, vector 2
  host.create_io(2, 8, 0x1);               // polled
  EXPECT_GE((*vectors)->consume(0).value_or(0), 2u) << "admin completions on vector 0";
  auto data = host.buffer(kPage);
  EXPECT_EQ(host.run(host.io(1), transfer(kRead, 1, 0, 1, data.bus_address().value)).status >> 1, 0);
  EXPECT_EQ((*vectors)->wait(2, 1000ms).value_or(0), 1u);
  EXPECT_EQ(host.run(host.io(2), transfer(kRead, 1, 0, 1, data.bus_address().value)).status >> 1, 0);
  EXPECT_EQ((*vectors)->wait(2, 20ms).value_or(0), 0u) << "a CQ without IEN signals nothing";
  EXPECT_EQ((*vectors)->consume(0).value_or(0), 0u);
  EXPECT_TRUE(model.violations().empty()) << listed(model.violations());
}

}  // namespace
