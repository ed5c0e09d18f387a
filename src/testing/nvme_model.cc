#include "pcie/testing/nvme_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <utility>

namespace pcie::testing {
namespace {

// ---- Controller registers (NVMe 2.0, 3.1.4) ----
constexpr std::uint64_t kBarSize = 0x4000;
constexpr std::uint64_t kCap = 0x00, kVersion = 0x08, kCc = 0x14, kCsts = 0x1c, kNssr = 0x20, kAqa = 0x24,
                        kAsq = 0x28, kAcq = 0x30, kDoorbells = 0x1000;
constexpr std::uint32_t kCcEnable = 1u;
constexpr std::uint32_t kCcShutdown = 3u << 14;  // CC.SHN
// CC fields that must not change while the controller is enabled: CSS, MPS, AMS, IOSQES, IOCQES.
constexpr std::uint32_t kCcFixed = (0x7u << 4) | (0xfu << 7) | (0x7u << 11) | (0xfu << 16) | (0xfu << 20);
constexpr std::uint32_t kCstsReady = 1u, kCstsFatal = 2u, kCstsShutdownComplete = 2u << 2;
constexpr std::uint64_t kPage = 4096;  // CAP.MPSMIN = MPSMAX = 0: the memory page is 4 KiB

// ---- Opcodes (5, and the NVM command set's I/O commands) ----
constexpr std::uint8_t kDeleteSq = 0x00, kCreateSq = 0x01, kDeleteCq = 0x04, kCreateCq = 0x05, kIdentify = 0x06,
                       kAbort = 0x08, kSetFeatures = 0x09, kGetFeatures = 0x0a, kAsyncEvent = 0x0c;
constexpr std::uint8_t kFlush = 0x00, kWrite = 0x01, kRead = 0x02;
constexpr unsigned kAsyncEventLimit = 4;  // AERL + 1

// ---- Status (4.2.3): SC in bits 7:0, SCT in 10:8, DNR in 14 (the status field without the phase tag) ----
using Status = std::uint16_t;
constexpr Status kDnr = 1u << 14;
constexpr Status kSuccess = 0, kInvalidOpcode = 0x01 | kDnr, kInvalidField = 0x02 | kDnr,
                 kDataTransferError = 0x04, kAbortRequested = 0x07, kInvalidNamespace = 0x0b | kDnr,
                 kInvalidPrpOffset = 0x13 | kDnr, kLbaOutOfRange = 0x80 | kDnr;
constexpr Status kCqInvalid = 0x100 | kDnr, kInvalidQueueId = 0x101 | kDnr, kInvalidQueueSize = 0x102 | kDnr,
                 kAsyncEventLimitExceeded = 0x105 | kDnr, kInvalidVector = 0x108 | kDnr,
                 kInvalidQueueDeletion = 0x10c | kDnr;

// A submission queue entry (4.2) and a completion queue entry (4.2.4), as they lie in memory.
struct Sqe {
  std::uint8_t opcode = 0;
  std::uint8_t flags = 0;  // FUSE in bits 1:0, PSDT in 7:6
  std::uint16_t cid = 0;
  std::uint32_t nsid = 0;
  std::uint32_t cdw2 = 0, cdw3 = 0;
  std::uint64_t metadata = 0;
  std::uint64_t prp1 = 0, prp2 = 0;
  std::uint32_t cdw10 = 0, cdw11 = 0, cdw12 = 0, cdw13 = 0, cdw14 = 0, cdw15 = 0;
};
struct Cqe {
  std::uint32_t result = 0;
  std::uint32_t reserved = 0;
  std::uint16_t sq_head = 0;
  std::uint16_t sq_id = 0;
  std::uint16_t cid = 0;
  std::uint16_t status = 0;  // phase tag in bit 0
};
static_assert(sizeof(Sqe) == 64 && sizeof(Cqe) == 16);

// A range of bus addresses.
struct Segment {
  std::uint64_t bus = 0;
  std::uint64_t length = 0;
};

bool overlap(const Segment& a, const Segment& b) {
  if (a.length == 0 || b.length == 0) return false;
  return a.bus >= b.bus ? a.bus - b.bus < b.length : b.bus - a.bus < a.length;  // overflow-safe
}

bool any_overlap(const std::vector<Segment>& a, const std::vector<Segment>& b) {
  return std::any_of(a.begin(), a.end(), [&](const Segment& x) {
    return std::any_of(b.begin(), b.end(), [&](const Segment& y) { return overlap(x, y); });
  });
}

// (from, to] steps around a ring of `size` entries.
std::uint32_t distance(std::uint32_t from, std::uint32_t to, std::uint32_t size) { return (to + size - from) % size; }

std::string rule_text(std::string_view rule, std::string_view detail, std::string_view citation) {
  return fmt::format("{}: {} ({})", rule, detail, citation);
}

// What a command's PRP1/PRP2 describe (4.1.1): the data's bus ranges in order, the PRP list
// bytes read and their entries (a snapshot to compare at execution), and the status the
// command fails with when they cannot be used.
struct PrpWalk {
  std::vector<Segment> data;
  std::vector<Segment> lists;
  std::vector<std::uint64_t> entries;
  Status status = kSuccess;
  std::vector<std::string> problems;  // violation texts
};

struct SubmissionQueue {
  std::uint16_t id = 0;
  std::uint16_t cq_id = 0;
  std::uint64_t base = 0;
  std::uint32_t size = 0;
  std::uint32_t head = 0;           // the next entry the controller fetches
  std::uint32_t tail = 0;           // the driver's last tail doorbell
  std::uint32_t reported_head = 0;  // the SQ Head Pointer of the last completion posted
  Segment memory() const { return {base, std::uint64_t{size} * sizeof(Sqe)}; }
};

struct CompletionQueue {
  std::uint16_t id = 0;
  std::uint64_t base = 0;
  std::uint32_t size = 0;
  std::uint32_t head = 0;  // the driver's last head doorbell
  std::uint32_t tail = 0;  // where the next completion goes
  bool phase = true;
  bool interrupts = false;  // IEN
  std::uint16_t vector = 0;
  unsigned submission_queues = 0;
  std::deque<std::pair<Cqe, NvmeCommandInfo>> backlog{};  // completions waiting for room
  Segment memory() const { return {base, std::uint64_t{size} * sizeof(Cqe)}; }
};

// Where a fetched command waits.
enum class Stage { running, pooled, held, parked };

struct Outstanding {
  std::uint64_t sequence = 0;
  Sqe sqe{};
  NvmeCommandInfo info{};
  std::uint64_t length = 0;    // bytes its PRPs describe (0: no data, or it fails before any)
  bool device_writes = false;  // the controller writes host memory (Read, Identify)
  PrpWalk prps{};              // as read at fetch; again at execution for a command that waited
  Stage stage = Stage::running;
};

struct NamespaceData {
  NvmeNamespace shape;
  std::vector<std::byte> bytes;
};

void put(std::span<std::byte> page, std::size_t offset, std::uint64_t value, std::size_t bytes) {
  for (std::size_t i = 0; i < bytes; ++i) page[offset + i] = static_cast<std::byte>(value >> (8 * i));
}

void put_text(std::span<std::byte> page, std::size_t offset, std::size_t length, const std::string& text) {
  for (std::size_t i = 0; i < length; ++i) page[offset + i] = static_cast<std::byte>(i < text.size() ? text[i] : ' ');
}

NvmeModelOptions normalized(NvmeModelOptions options) {
  options.max_queue_entries = std::clamp<std::uint32_t>(options.max_queue_entries, 2, 65536);
  options.max_io_queues = std::clamp<std::uint16_t>(options.max_io_queues, 1, (kBarSize - kDoorbells) / 8 - 1);
  std::vector<NvmeNamespace> kept;
  for (NvmeNamespace space : options.namespaces) {
    const bool repeated = std::any_of(kept.begin(), kept.end(), [&](const auto& k) { return k.id == space.id; });
    if (space.id == 0 || repeated) continue;
    space.block_shift = std::clamp(space.block_shift, 9u, 16u);
    kept.push_back(space);
  }
  std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  options.namespaces = kept;
  if (options.namespace_count == 0 && !kept.empty()) options.namespace_count = kept.back().id;
  return options;
}

}  // namespace

// The controller's state, guarded by `mutex`; every member function below expects it held.
struct NvmeModel::Core {
  explicit Core(const NvmeModelOptions& given);

  // Registers.
  std::uint64_t register_write(const RegisterAccess& access);
  void register_read(const RegisterAccess& access);
  std::uint64_t write_configuration(std::uint32_t value);
  std::string enable_problem(std::uint32_t configuration) const;
  void enable(std::uint32_t configuration);
  void reset();
  void shutdown();
  void fail();
  // Doorbells.
  std::uint64_t doorbell_write(const RegisterAccess& access);
  bool doorbell_allowed(std::uint64_t offset);
  void submission_doorbell(std::uint16_t id, std::uint32_t tail);
  void completion_doorbell(std::uint16_t id, std::uint32_t head);
  // Commands.
  std::vector<Outstanding> fetch(SubmissionQueue& queue);
  Outstanding make_outstanding(std::uint16_t sq_id, const Sqe& sqe);
  void plan(Outstanding& command);
  void admit(Outstanding& command);
  void check_identifier(const Outstanding& command);
  void check_sharing(const Outstanding& command);
  Stage classify(const NvmeCommandInfo& info);
  void run_batch(std::vector<Outstanding> fetched);
  bool execute(std::uint64_t sequence, bool waited);
  void tick();
  std::size_t drop_where(const std::function<bool(const Outstanding&)>& which);
  // PRPs and data.
  PrpWalk walk(const NvmeCommandInfo& info, const Sqe& sqe, std::uint64_t length);
  void walk_list(PrpWalk& walk, const std::string& who, std::uint64_t list, std::uint64_t rest);
  void rewalk(Outstanding& command);
  Status to_host(const Outstanding& command, std::span<const std::byte> data);
  Status from_host(const Outstanding& command, std::span<std::byte> data);
  std::string dma_violation(const Error& error, std::string_view what);
  // Admin commands.
  std::pair<Status, std::uint32_t> run_admin(Outstanding& command);
  Status identify(const Outstanding& command);
  void identify_controller(std::span<std::byte> page) const;
  Status identify_namespace(std::uint32_t id, std::span<std::byte> page) const;
  Status active_namespaces(std::uint32_t after, std::span<std::byte> page) const;
  Status create_completion_queue(const Sqe& sqe);
  Status create_submission_queue(const Sqe& sqe);
  Status delete_submission_queue(const Sqe& sqe);
  Status delete_completion_queue(const Sqe& sqe);
  std::pair<Status, std::uint32_t> features(const Sqe& sqe) const;
  std::pair<Status, std::uint32_t> abort(const Sqe& sqe);
  // I/O commands.
  std::pair<Status, std::uint32_t> run_io(Outstanding& command);
  Status namespace_status(std::uint32_t id) const;
  Status transfer_check(const Sqe& sqe, NamespaceData** found);
  Status read_write(const Outstanding& command);
  // Completions.
  void post(const NvmeCommandInfo& info, Status status, std::uint32_t result);
  void drain(CompletionQueue& queue);
  bool write_completion(CompletionQueue& queue, Cqe entry);
  void interrupt(const CompletionQueue& queue);
  // The unmap hook.
  void unmapped(std::uint64_t bus, std::uint64_t size);

  NamespaceData* find_namespace(std::uint32_t id);
  void violation(std::string_view rule, std::string_view detail, std::string_view citation) {
    violations.push_back(rule_text(rule, detail, citation));
  }

  const NvmeModelOptions options;
  DeviceModel device;
  RegisterModel& bar;
  mutable std::mutex mutex;
  bool enabled = false;    // CSTS.RDY
  bool shut_down = false;  // CSTS.SHST complete: the controller touches no queue until reset
  bool failed = false;     // CSTS.CFS
  std::map<std::uint16_t, SubmissionQueue> submission_queues;
  std::map<std::uint16_t, CompletionQueue> completion_queues;
  std::vector<Outstanding> outstanding;  // fetched, not completed; in fetch order
  std::vector<NamespaceData> namespaces;
  NvmeCompletionPolicy policy;
  std::mt19937_64 rng{1};
  unsigned hold_next = 0;
  std::function<bool(const NvmeCommandInfo&)> hold_predicate;
  std::uint64_t sequence = 0;
  std::uint64_t resets = 0;
  std::uint64_t dropped = 0;
  std::vector<std::string> violations;
  std::vector<NvmeCompletionRecord> completions;
};

NvmeModel::Core::Core(const NvmeModelOptions& given)
    : options(normalized(given)), device(options.device),
      bar(device.add_bar(0, kBarSize, WidthSet::only(Width::bits32) | WidthSet::only(Width::bits64))) {
  const std::uint64_t cap = (options.max_queue_entries - 1)              // MQES
                            | (std::uint64_t{1} << 16)                     // CQR: queues contiguous
                            | (std::uint64_t{options.timeout_500ms} << 24)  // TO
                            | (std::uint64_t{1} << 37);                    // CSS: the NVM command set
  bar.set64(kCap, cap);  // DSTRD, MPSMIN and MPSMAX 0: doorbells 4 bytes apart, 4 KiB pages
  bar.set32(kVersion, 0x00010400);
  for (const NvmeNamespace& shape : options.namespaces) {
    namespaces.push_back({shape, std::vector<std::byte>(shape.blocks << shape.block_shift)});
  }
}

NamespaceData* NvmeModel::Core::find_namespace(std::uint32_t id) {
  for (NamespaceData& space : namespaces) {
    if (space.shape.id == id) return &space;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Registers

namespace {
bool is_64bit_register(std::uint64_t offset) { return offset == kCap || offset == kAsq || offset == kAcq; }
}  // namespace

std::uint64_t NvmeModel::Core::register_write(const RegisterAccess& access) {
  if (access.offset >= kDoorbells) return doorbell_write(access);
  if (access.width != Width::bits32 && !(access.width == Width::bits64 && is_64bit_register(access.offset))) {
    violation(nvme_rule::kRegisterWidth,
              fmt::format("a {}-bit write at 0x{:x}; registers take 32-bit accesses, CAP/ASQ/ACQ also 64-bit",
                          bit_count(access.width), access.offset),
              "NVMe 2.0, 3.1.4");
    return bar.get(access.width, access.offset);  // ignored
  }
  switch (access.offset) {
    case kCc: return write_configuration(static_cast<std::uint32_t>(access.value));
    case kCap:
    case kCap + 4:
    case kVersion:
    case kCsts:
    case kNssr:  // CAP.NSSRS 0: no NVM subsystem reset
      return bar.get(access.width, access.offset);
    default: return access.value;  // AQA, ASQ, ACQ, INTMS, INTMC: stored
  }
}

void NvmeModel::Core::register_read(const RegisterAccess& access) {
  if (access.width == Width::bits64 && !is_64bit_register(access.offset)) {
    violation(nvme_rule::kRegisterWidth,
              fmt::format("a 64-bit read at 0x{:x} spans two 32-bit registers", access.offset), "NVMe 2.0, 3.1.4");
  }
  // A driver polling CSTS for a fatal status is looking for progress: commands the
  // completion policy kept back come out now.
  if (access.offset == kCsts) tick();
}

std::uint64_t NvmeModel::Core::write_configuration(std::uint32_t value) {
  const std::uint32_t old = bar.get32(kCc);
  const bool was_enabled = (old & kCcEnable) != 0;
  const bool enabling = (value & kCcEnable) != 0;
  if (!enabling) {
    if (was_enabled) reset();
    return value;
  }
  if (!was_enabled) {
    enable(value);
    return value;
  }
  if (((old ^ value) & kCcFixed) != 0) {
    violation(nvme_rule::kConfigurationWhileEnabled,
              fmt::format("CC 0x{:x} -> 0x{:x} changes CSS/MPS/AMS/IOSQES/IOCQES while CC.EN is 1; kept", old, value),
              "NVMe 2.0, 3.1.4.5");
    value = (value & ~kCcFixed) | (old & kCcFixed);
  }
  if ((value & kCcShutdown) != 0 && (old & kCcShutdown) == 0 && enabled && !shut_down) shutdown();
  return value;
}

std::string NvmeModel::Core::enable_problem(std::uint32_t configuration) const {
  const std::uint32_t aqa = bar.get32(kAqa);
  const std::uint64_t asq = bar.get64(kAsq);
  const std::uint64_t acq = bar.get64(kAcq);
  if ((aqa & 0xfff) == 0 || ((aqa >> 16) & 0xfff) == 0) {
    return fmt::format("AQA 0x{:x}: each admin queue needs at least 2 entries (ASQS, ACQS are 0-based)", aqa);
  }
  if (asq % kPage != 0 || acq % kPage != 0) {
    return fmt::format("ASQ 0x{:x} / ACQ 0x{:x}: the admin queues must be page-aligned", asq, acq);
  }
  if (((configuration >> 7) & 0xf) != 0) return "CC.MPS is outside CAP.MPSMIN..MPSMAX (4 KiB only)";
  if (((configuration >> 4) & 0x7) != 0) return "CC.CSS is not the NVM command set";
  if (((configuration >> 11) & 0x7) != 0) return "CC.AMS is not round robin";
  return "";
}

// CC.EN 0 -> 1 (3.5.1): with a bad admin queue or configuration a real controller does not
// become ready; this one says so at once with CSTS.CFS, so that the driver fails fast.
void NvmeModel::Core::enable(std::uint32_t configuration) {
  if (const std::string problem = enable_problem(configuration); !problem.empty()) {
    violation(nvme_rule::kInvalidEnable, problem, "NVMe 2.0, 3.5.1");
    failed = true;
    bar.set32(kCsts, kCstsFatal);
    return;
  }
  const std::uint32_t aqa = bar.get32(kAqa);
  submission_queues[0] = {.id = 0, .cq_id = 0, .base = bar.get64(kAsq), .size = (aqa & 0xfff) + 1};
  completion_queues[0] = {.id = 0, .base = bar.get64(kAcq), .size = ((aqa >> 16) & 0xfff) + 1, .interrupts = true,
                          .submission_queues = 1};
  enabled = true;
  bar.set32(kCsts, kCstsReady);
}

// CC.EN 1 -> 0 (3.7.2): queues deleted, outstanding commands dropped, CSTS cleared.
void NvmeModel::Core::reset() {
  dropped += outstanding.size();
  outstanding.clear();
  submission_queues.clear();
  completion_queues.clear();
  enabled = shut_down = failed = false;
  bar.set32(kCsts, 0);
  ++resets;
}

// CC.SHN (3.6.1): done at once. Commands still outstanding are dropped, as after an abrupt
// shutdown (the driver should have waited for them), and no queue is touched again until a
// reset.
void NvmeModel::Core::shutdown() {
  dropped += outstanding.size();
  outstanding.clear();
  submission_queues.clear();
  completion_queues.clear();
  shut_down = true;
  bar.set32(kCsts, (bar.get32(kCsts) & ~(3u << 2)) | kCstsShutdownComplete);
}

// A controller that cannot fetch a command or post a completion stops: CSTS.CFS (3.1.4.6).
void NvmeModel::Core::fail() {
  dropped += outstanding.size();
  outstanding.clear();
  failed = true;
  bar.set32(kCsts, bar.get32(kCsts) | kCstsFatal);
}

// ---------------------------------------------------------------------------------------------
// Doorbells (3.1.4.21; stride 4: SQ y's tail at 0x1000 + 8y, CQ y's head 4 bytes after)

std::uint64_t NvmeModel::Core::doorbell_write(const RegisterAccess& access) {
  if (access.width != Width::bits32) {
    violation(nvme_rule::kRegisterWidth,
              fmt::format("a {}-bit write at doorbell 0x{:x}; doorbells are 32-bit registers",
                          bit_count(access.width), access.offset),
              "NVMe 2.0, 3.1.4");
    return access.value;
  }
  if (!doorbell_allowed(access.offset)) return access.value;
  const std::uint64_t index = (access.offset - kDoorbells) / 4;
  const auto id = static_cast<std::uint16_t>(index / 2);
  const auto value = static_cast<std::uint32_t>(access.value);
  if (index % 2 == 0) submission_doorbell(id, value);
  else completion_doorbell(id, value);
  return access.value;
}

bool NvmeModel::Core::doorbell_allowed(std::uint64_t offset) {
  if (failed) return false;  // CSTS.CFS: the driver will learn it from CSTS
  if (shut_down) {
    violation(nvme_rule::kDoorbellAfterShutdown,
              fmt::format("doorbell 0x{:x} written after the shutdown completed (CSTS.SHST), before a reset", offset),
              "NVMe 2.0, 3.6.1");
    return false;
  }
  if (!enabled) {
    violation(nvme_rule::kDoorbellWhileDisabled,
              fmt::format("doorbell 0x{:x} written while the controller is disabled (CSTS.RDY 0)", offset),
              "NVMe 2.0, 3.1.4.21");
    return false;
  }
  return true;
}

void NvmeModel::Core::submission_doorbell(std::uint16_t id, std::uint32_t tail) {
  auto found = submission_queues.find(id);
  if (found == submission_queues.end()) {
    violation(nvme_rule::kInvalidDoorbell, fmt::format("SQ {} tail doorbell: no such submission queue", id),
              "NVMe 2.0, 5.2: Invalid Doorbell Register");
    return;
  }
  SubmissionQueue& queue = found->second;
  if (tail >= queue.size) {
    violation(nvme_rule::kInvalidDoorbellValue,
              fmt::format("SQ {} tail {} written; the queue has {} entries", id, tail, queue.size),
              "NVMe 2.0, 5.2: Invalid Doorbell Write Value");
    return;
  }
  // The driver knows a slot is free only from a completion's SQ Head Pointer (4.2.4).
  const std::uint32_t unreported = distance(queue.reported_head, queue.tail, queue.size);
  const std::uint32_t added = distance(queue.tail, tail, queue.size);
  if (unreported + added > queue.size - 1) {
    violation(nvme_rule::kSqOverflow,
              fmt::format("SQ {} tail {}: {} entries past the head {} last reported, of {} that fit", id, tail,
                          unreported + added, queue.reported_head, queue.size - 1),
              "NVMe 2.0, 4.1.1");
  }
  queue.tail = tail;
  run_batch(fetch(queue));
  tick();
}

void NvmeModel::Core::completion_doorbell(std::uint16_t id, std::uint32_t head) {
  auto found = completion_queues.find(id);
  if (found == completion_queues.end()) {
    violation(nvme_rule::kInvalidDoorbell, fmt::format("CQ {} head doorbell: no such completion queue", id),
              "NVMe 2.0, 5.2: Invalid Doorbell Register");
    return;
  }
  CompletionQueue& queue = found->second;
  if (head >= queue.size) {
    violation(nvme_rule::kInvalidDoorbellValue,
              fmt::format("CQ {} head {} written; the queue has {} entries", id, head, queue.size),
              "NVMe 2.0, 5.2: Invalid Doorbell Write Value");
    return;
  }
  if (distance(queue.head, head, queue.size) > distance(queue.head, queue.tail, queue.size)) {
    violation(nvme_rule::kCqHeadBeyondTail,
              fmt::format("CQ {} head {} written; it was {} and the controller has posted up to {}", id, head,
                          queue.head, queue.tail),
              "NVMe 2.0, 4.1.1");
    return;
  }
  queue.head = head;
  drain(queue);
  tick();
}

// ---------------------------------------------------------------------------------------------
// Fetching and scheduling commands

std::vector<Outstanding> NvmeModel::Core::fetch(SubmissionQueue& queue) {
  std::vector<Outstanding> fetched;
  while (queue.head != queue.tail) {
    Sqe sqe;
    auto read = device.dma_read(queue.base + std::uint64_t{queue.head} * sizeof(Sqe),
                                std::as_writable_bytes(std::span(&sqe, 1)));
    if (!read) {
      violations.push_back(dma_violation(read.error(), fmt::format("fetching SQ {} entry {}", queue.id, queue.head)));
      fail();
      return {};
    }
    queue.head = (queue.head + 1) % queue.size;
    fetched.push_back(make_outstanding(queue.id, sqe));
  }
  return fetched;
}

Outstanding NvmeModel::Core::make_outstanding(std::uint16_t sq_id, const Sqe& sqe) {
  Outstanding command{.sequence = ++sequence, .sqe = sqe};
  command.info = {.sq_id = sq_id, .command_id = sqe.cid, .opcode = sqe.opcode, .namespace_id = sqe.nsid};
  if (sq_id != 0 && (sqe.opcode == kRead || sqe.opcode == kWrite)) {
    command.info.lba = sqe.cdw10 | (std::uint64_t{sqe.cdw11} << 32);
    command.info.blocks = (sqe.cdw12 & 0xffff) + 1;
  }
  plan(command);
  return command;
}

namespace {
// FUSE and PSDT: no fused commands, no SGLs (Identify Controller SGLS 0).
Status common_check(const Sqe& sqe) { return (sqe.flags & 0x3) != 0 || (sqe.flags >> 6) != 0 ? kInvalidField : kSuccess; }
}  // namespace

// How much data the command moves and which way, when it gets that far.
void NvmeModel::Core::plan(Outstanding& command) {
  const Sqe& sqe = command.sqe;
  if (common_check(sqe) != kSuccess) return;
  if (command.info.admin()) {
    if (sqe.opcode == kIdentify && (sqe.cdw10 & 0xff) <= 2) {
      command.length = kPage;
      command.device_writes = true;
    }
    return;
  }
  NamespaceData* space = nullptr;
  if ((sqe.opcode != kRead && sqe.opcode != kWrite) || transfer_check(sqe, &space) != kSuccess) return;
  command.length = std::uint64_t{command.info.blocks} << space->shape.block_shift;
  command.device_writes = sqe.opcode == kRead;
}

void NvmeModel::Core::admit(Outstanding& command) {
  check_identifier(command);
  if (command.length > 0) {
    command.prps = walk(command.info, command.sqe, command.length);
    violations.insert(violations.end(), command.prps.problems.begin(), command.prps.problems.end());
    check_sharing(command);
  }
  command.stage = classify(command.info);
}

void NvmeModel::Core::check_identifier(const Outstanding& command) {
  for (const Outstanding& other : outstanding) {
    if (other.info.sq_id == command.info.sq_id && other.info.command_id == command.info.command_id) {
      violation(nvme_rule::kCidReused,
                fmt::format("SQ {} CID {} (opcode 0x{:02x}) submitted while the earlier command with that CID "
                            "(opcode 0x{:02x}) is outstanding",
                            command.info.sq_id, command.info.command_id, command.info.opcode, other.info.opcode),
                "NVMe 2.0, 4.2.1");
      return;
    }
  }
}

void NvmeModel::Core::check_sharing(const Outstanding& command) {
  const std::uint16_t sq = command.info.sq_id;
  const std::uint16_t cid = command.info.command_id;
  for (const Outstanding& other : outstanding) {
    const std::string pair = fmt::format("SQ {} CID {} and SQ {} CID {}", sq, cid, other.info.sq_id, other.info.command_id);
    if (any_overlap(command.prps.lists, other.prps.lists)) {
      violation(nvme_rule::kPrpListShared, pair + " use the same PRP list memory", "NVMe 2.0, 4.1.1");
    }
    if ((command.device_writes || other.device_writes) && any_overlap(command.prps.data, other.prps.data)) {
      violation(nvme_rule::kDataShared, pair + " transfer to/from the same memory, and the controller writes it",
                "NVMe 2.0, 4.1.1");
    }
  }
  std::vector<Segment> queues;
  for (const auto& [id, queue] : submission_queues) queues.push_back(queue.memory());
  for (const auto& [id, queue] : completion_queues) queues.push_back(queue.memory());
  if (any_overlap(command.prps.data, queues) || any_overlap(command.prps.lists, queues)) {
    violation(nvme_rule::kDataOverlapsQueue, fmt::format("SQ {} CID {}: its data or PRP list lies in a live queue", sq, cid),
              "NVMe 2.0, 4.1.1");
  }
}

Stage NvmeModel::Core::classify(const NvmeCommandInfo& info) {
  if (info.admin() && info.opcode == kAsyncEvent) {
    const auto parked = std::count_if(outstanding.begin(), outstanding.end(),
                                      [](const Outstanding& c) { return c.stage == Stage::parked; });
    if (parked < static_cast<long>(kAsyncEventLimit)) return Stage::parked;  // no event ever comes
    return Stage::running;                                                     // over AERL: refused
  }
  if (hold_predicate && hold_predicate(info)) return Stage::held;
  if (!info.admin() && hold_next > 0) {
    --hold_next;
    return Stage::held;
  }
  if (!info.admin() && policy.order != NvmeCompletionOrder::in_order) return Stage::pooled;
  return Stage::running;
}

// Every command of one doorbell write is outstanding before the first runs: the driver
// submitted them together, and shares nothing among them.
void NvmeModel::Core::run_batch(std::vector<Outstanding> fetched) {
  std::vector<std::uint64_t> running;
  for (Outstanding& command : fetched) {
    admit(command);
    if (command.stage == Stage::running) running.push_back(command.sequence);
    outstanding.push_back(std::move(command));
  }
  for (const std::uint64_t sequence : running) (void)execute(sequence, false);  // gone: dropped meanwhile
}

// Runs and completes the outstanding command `sequence`; false when it is no longer there.
bool NvmeModel::Core::execute(std::uint64_t sequence, bool waited) {
  auto found = std::find_if(outstanding.begin(), outstanding.end(),
                            [&](const Outstanding& c) { return c.sequence == sequence; });
  if (found == outstanding.end() || failed || shut_down) return false;
  Outstanding command = std::move(*found);
  outstanding.erase(found);
  if (waited && command.length > 0) rewalk(command);
  const auto [status, result] = command.info.admin() ? run_admin(command) : run_io(command);
  post(command.info, status, result);
  return true;
}

// The completion policy's step: complete pooled commands until at most min(window,
// pooled - 1) are left.
void NvmeModel::Core::tick() {
  for (;;) {
    std::vector<std::uint64_t> pooled;
    for (const Outstanding& command : outstanding) {
      if (command.stage == Stage::pooled) pooled.push_back(command.sequence);
    }
    if (pooled.empty()) return;
    const bool ordered = policy.order == NvmeCompletionOrder::in_order;
    const std::size_t keep = ordered ? 0 : std::min<std::size_t>(policy.window, pooled.size() - 1);
    if (pooled.size() <= keep) return;
    std::size_t pick = 0;
    if (policy.order == NvmeCompletionOrder::reverse) pick = pooled.size() - 1;
    if (policy.order == NvmeCompletionOrder::random) pick = rng() % pooled.size();
    if (!execute(pooled[pick], true)) return;
  }
}

std::size_t NvmeModel::Core::drop_where(const std::function<bool(const Outstanding&)>& which) {
  const auto removed = std::erase_if(outstanding, which);
  dropped += removed;
  return removed;
}

// ---------------------------------------------------------------------------------------------
// PRPs (4.1.1) and data transfer

namespace {
PrpWalk misaligned(PrpWalk walk, const std::string& who, std::string_view which, std::uint64_t value,
                   std::string_view rule) {
  walk.problems.push_back(rule_text(nvme_rule::kPrpMisaligned,
                                    fmt::format("{}: {} 0x{:x} {}", who, which, value, rule), "NVMe 2.0, 4.1.1"));
  walk.status = kInvalidPrpOffset;
  return walk;
}
}  // namespace

PrpWalk NvmeModel::Core::walk(const NvmeCommandInfo& info, const Sqe& sqe, std::uint64_t length) {
  const std::string who = fmt::format("SQ {} CID {}", info.sq_id, info.command_id);
  PrpWalk result;
  if (sqe.prp1 % 4 != 0) return misaligned(std::move(result), who, "PRP1", sqe.prp1, "is not dword-aligned");
  const std::uint64_t first = std::min(length, kPage - sqe.prp1 % kPage);
  result.data.push_back({sqe.prp1, first});
  const std::uint64_t rest = length - first;
  if (rest == 0) return result;  // PRP2 is not used
  if (sqe.prp2 == 0) {
    result.problems.push_back(rule_text(
        nvme_rule::kPrp2Missing,
        fmt::format("{}: {} bytes from PRP1 0x{:x} span more than one page and PRP2 is 0 (the rest would go to bus "
                    "address 0)",
                    who, length, sqe.prp1),
        "NVMe 2.0, 4.1.1"));
  }
  if (rest <= kPage) {  // PRP2 is the second page
    if (sqe.prp2 % kPage != 0) return misaligned(std::move(result), who, "PRP2", sqe.prp2, "is not page-aligned");
    result.data.push_back({sqe.prp2, rest});
    return result;
  }
  if (sqe.prp2 % 8 != 0) {  // PRP2 points at a PRP list
    return misaligned(std::move(result), who, "PRP2 (a PRP list pointer)", sqe.prp2, "is not qword-aligned");
  }
  walk_list(result, who, sqe.prp2, rest);
  return result;
}

// The entries of a PRP list from `list` for `rest` more bytes: the last entry of a list page
// points at the next page of the list when more entries follow.
void NvmeModel::Core::walk_list(PrpWalk& result, const std::string& who, std::uint64_t list, std::uint64_t rest) {
  while (rest > 0) {
    const std::uint64_t pages = (rest + kPage - 1) / kPage;
    const std::uint64_t slots = (kPage - list % kPage) / 8;
    const bool chained = pages > slots;
    std::vector<std::uint64_t> entries(chained ? slots : pages);
    auto read = device.dma_read(list, std::as_writable_bytes(std::span(entries)));
    if (!read) {
      result.problems.push_back(dma_violation(read.error(), who + " reading its PRP list"));
      result.status = kDataTransferError;
      return;
    }
    result.lists.push_back({list, entries.size() * 8});
    result.entries.insert(result.entries.end(), entries.begin(), entries.end());
    for (std::size_t i = 0; i + (chained ? 1 : 0) < entries.size(); ++i) {
      if (entries[i] % kPage != 0) {
        result = misaligned(std::move(result), who, "PRP list entry", entries[i], "is not page-aligned");
        return;
      }
      result.data.push_back({entries[i], std::min(rest, kPage)});
      rest -= std::min(rest, kPage);
    }
    if (!chained) return;
    list = entries.back();
    if (list % kPage != 0) {
      result = misaligned(std::move(result), who, "the pointer to the next PRP list page", list, "is not page-aligned");
      return;
    }
  }
}

// A command that waited (held or kept back) reads its PRP list again when it runs, as a
// controller that fetches lists lazily would: a list the driver rewrote meanwhile is a
// list page it reused while the command was outstanding.
void NvmeModel::Core::rewalk(Outstanding& command) {
  PrpWalk now = walk(command.info, command.sqe, command.length);
  if (now.entries != command.prps.entries || now.status != command.prps.status) {
    violation(nvme_rule::kPrpListChanged,
              fmt::format("SQ {} CID {}: its PRP list was rewritten between fetch and execution",
                          command.info.sq_id, command.info.command_id),
              "NVMe 2.0, 4.1.1");
    violations.insert(violations.end(), now.problems.begin(), now.problems.end());
  }
  command.prps = std::move(now);
}

std::string NvmeModel::Core::dma_violation(const Error& error, std::string_view what) {
  if (error.code == Errc::permission_denied) {
    return rule_text(nvme_rule::kDmaWithoutBusMaster, fmt::format("{}: {}", what, error.message()),
                     "PCI Local Bus 3.0, 6.2.2: the driver let the controller work after clearing Bus Master Enable");
  }
  return rule_text(nvme_rule::kDmaFault, fmt::format("{}: {}", what, error.message()), "NVMe 2.0, 4.1.1");
}

Status NvmeModel::Core::to_host(const Outstanding& command, std::span<const std::byte> data) {
  if (command.prps.status != kSuccess) return command.prps.status;
  std::uint64_t done = 0;
  for (const Segment& segment : command.prps.data) {
    auto written = device.dma_write(segment.bus, data.subspan(done, segment.length));
    if (!written) {
      violations.push_back(dma_violation(written.error(), fmt::format("SQ {} CID {} writing its data",
                                                                      command.info.sq_id, command.info.command_id)));
      return kDataTransferError;
    }
    done += segment.length;
  }
  return kSuccess;
}

Status NvmeModel::Core::from_host(const Outstanding& command, std::span<std::byte> data) {
  if (command.prps.status != kSuccess) return command.prps.status;
  std::uint64_t done = 0;
  for (const Segment& segment : command.prps.data) {
    auto read = device.dma_read(segment.bus, data.subspan(done, segment.length));
    if (!read) {
      violations.push_back(dma_violation(read.error(), fmt::format("SQ {} CID {} reading its data",
                                                                   command.info.sq_id, command.info.command_id)));
      return kDataTransferError;
    }
    done += segment.length;
  }
  return kSuccess;
}

// ---------------------------------------------------------------------------------------------
// Admin commands (5)

std::pair<Status, std::uint32_t> NvmeModel::Core::run_admin(Outstanding& command) {
  const Sqe& sqe = command.sqe;
  if (const Status status = common_check(sqe); status != kSuccess) return {status, 0};
  switch (sqe.opcode) {
    case kIdentify: return {identify(command), 0};
    case kCreateCq: return {create_completion_queue(sqe), 0};
    case kCreateSq: return {create_submission_queue(sqe), 0};
    case kDeleteSq: return {delete_submission_queue(sqe), 0};
    case kDeleteCq: return {delete_completion_queue(sqe), 0};
    case kSetFeatures:
    case kGetFeatures: return features(sqe);
    case kAbort: return abort(sqe);
    case kAsyncEvent: return {kAsyncEventLimitExceeded, 0};  // reached only past AERL
    default: return {kInvalidOpcode, 0};
  }
}

// Identify (5.17): CNS 00h a namespace, 01h the controller, 02h the active namespace list.
Status NvmeModel::Core::identify(const Outstanding& command) {
  std::vector<std::byte> page(kPage);
  Status status = kSuccess;
  switch (command.sqe.cdw10 & 0xff) {
    case 0x00: status = identify_namespace(command.sqe.nsid, page); break;
    case 0x01: identify_controller(page); break;
    case 0x02: status = active_namespaces(command.sqe.nsid, page); break;
    default: return kInvalidField;
  }
  return status != kSuccess ? status : to_host(command, page);
}

void NvmeModel::Core::identify_controller(std::span<std::byte> page) const {
  put(page, 0, options.vendor_id, 2);  // VID
  put(page, 2, options.vendor_id, 2);  // SSVID
  put_text(page, 4, 20, options.serial);
  put_text(page, 24, 40, options.model);
  put_text(page, 64, 8, options.firmware);
  put(page, 77, options.mdts, 1);        // MDTS, in units of CAP.MPSMIN
  put(page, 80, 0x00010400, 4);           // VER
  put(page, 258, 3, 1);                   // ACL: 4 Abort commands
  put(page, 259, kAsyncEventLimit - 1, 1);  // AERL
  put(page, 512, 0x66, 1);                // SQES: 64-byte entries
  put(page, 513, 0x44, 1);                // CQES: 16-byte entries
  put(page, 514, options.max_queue_entries - 1, 2);  // MAXCMD
  put(page, 516, options.namespace_count, 4);         // NN
  put(page, 525, 0x07, 1);  // VWC: a volatile write cache, Flush of all namespaces (FFFFFFFFh)
}

Status NvmeModel::Core::identify_namespace(std::uint32_t id, std::span<std::byte> page) const {
  const NamespaceData* space = nullptr;
  for (const NamespaceData& candidate : namespaces) {
    if (candidate.shape.id == id) space = &candidate;
  }
  if (space == nullptr) {
    // An inactive id answers zeros; an id outside 1..NN is invalid.
    return id != 0 && id <= options.namespace_count ? kSuccess : kInvalidNamespace;
  }
  put(page, 0, space->shape.blocks, 8);   // NSZE
  put(page, 8, space->shape.blocks, 8);   // NCAP
  put(page, 16, space->shape.blocks, 8);  // NUSE
  put(page, 25, 0, 1);                    // NLBAF: one format
  put(page, 26, 0, 1);                    // FLBAS: format 0
  put(page, 128, std::uint64_t{space->shape.block_shift} << 16, 4);  // LBAF0: LBADS, no metadata
  return kSuccess;
}

Status NvmeModel::Core::active_namespaces(std::uint32_t after, std::span<std::byte> page) const {
  if (after >= 0xfffffffe) return kInvalidNamespace;
  std::size_t count = 0;
  for (const NamespaceData& space : namespaces) {  // in increasing order
    if (space.shape.id > after && count < kPage / 4) put(page, 4 * count++, space.shape.id, 4);
  }
  return kSuccess;
}

namespace {
unsigned vectors_offered(const DeviceModelOptions& device) {
  return std::max({1u, device.msix_vectors, device.msi_vectors});
}
}  // namespace

// Create I/O Completion Queue (5.4).
Status NvmeModel::Core::create_completion_queue(const Sqe& sqe) {
  const auto id = static_cast<std::uint16_t>(sqe.cdw10);
  const std::uint32_t entries = (sqe.cdw10 >> 16) + 1;
  const bool interrupts = (sqe.cdw11 & 0x2) != 0;
  const auto vector = static_cast<std::uint16_t>(sqe.cdw11 >> 16);
  if (id == 0 || id > options.max_io_queues || completion_queues.contains(id)) return kInvalidQueueId;
  if (entries < 2 || entries > options.max_queue_entries) return kInvalidQueueSize;
  if ((sqe.cdw11 & 0x1) == 0 || ((bar.get32(kCc) >> 20) & 0xf) != 4) return kInvalidField;  // PC (CAP.CQR), IOCQES
  if (sqe.prp1 % kPage != 0) return kInvalidPrpOffset;
  if (interrupts && vector >= vectors_offered(options.device)) return kInvalidVector;
  completion_queues[id] = {.id = id, .base = sqe.prp1, .size = entries, .interrupts = interrupts, .vector = vector};
  return kSuccess;
}

// Create I/O Submission Queue (5.5): its CQ must exist first.
Status NvmeModel::Core::create_submission_queue(const Sqe& sqe) {
  const auto id = static_cast<std::uint16_t>(sqe.cdw10);
  const std::uint32_t entries = (sqe.cdw10 >> 16) + 1;
  const auto cq_id = static_cast<std::uint16_t>(sqe.cdw11 >> 16);
  if (id == 0 || id > options.max_io_queues || submission_queues.contains(id)) return kInvalidQueueId;
  if (cq_id == 0 || !completion_queues.contains(cq_id)) return kCqInvalid;
  if (entries < 2 || entries > options.max_queue_entries) return kInvalidQueueSize;
  if ((sqe.cdw11 & 0x1) == 0 || ((bar.get32(kCc) >> 16) & 0xf) != 6) return kInvalidField;  // PC, IOSQES
  if (sqe.prp1 % kPage != 0) return kInvalidPrpOffset;
  submission_queues[id] = {.id = id, .cq_id = cq_id, .base = sqe.prp1, .size = entries};
  ++completion_queues[cq_id].submission_queues;
  return kSuccess;
}

// Delete I/O Submission Queue (5.7): its outstanding commands are completed implicitly
// (no completion entry is posted for them), which the spec allows.
Status NvmeModel::Core::delete_submission_queue(const Sqe& sqe) {
  const auto id = static_cast<std::uint16_t>(sqe.cdw10);
  auto found = submission_queues.find(id);
  if (id == 0 || found == submission_queues.end()) return kInvalidQueueId;
  drop_where([id](const Outstanding& command) { return command.info.sq_id == id; });
  --completion_queues[found->second.cq_id].submission_queues;
  submission_queues.erase(found);
  return kSuccess;
}

// Delete I/O Completion Queue (5.6): only once no SQ posts to it.
Status NvmeModel::Core::delete_completion_queue(const Sqe& sqe) {
  const auto id = static_cast<std::uint16_t>(sqe.cdw10);
  auto found = completion_queues.find(id);
  if (id == 0 || found == completion_queues.end()) return kInvalidQueueId;
  if (found->second.submission_queues > 0) return kInvalidQueueDeletion;
  completion_queues.erase(found);
  return kSuccess;
}

// Get/Set Features: Number of Queues (07h) only; the controller allocates them all.
std::pair<Status, std::uint32_t> NvmeModel::Core::features(const Sqe& sqe) const {
  if ((sqe.cdw10 & 0xff) != 0x07) return {kInvalidField, 0};
  const std::uint32_t queues = options.max_io_queues - 1u;  // 0-based
  return {kSuccess, queues | (queues << 16)};
}

// Abort (5.1): a command still waiting in the controller completes with Command Abort
// Requested; DW0 bit 0 says whether one was found.
std::pair<Status, std::uint32_t> NvmeModel::Core::abort(const Sqe& sqe) {
  const auto sq_id = static_cast<std::uint16_t>(sqe.cdw10);
  const auto cid = static_cast<std::uint16_t>(sqe.cdw10 >> 16);
  auto found = std::find_if(outstanding.begin(), outstanding.end(), [&](const Outstanding& command) {
    return command.info.sq_id == sq_id && command.info.command_id == cid;
  });
  if (found == outstanding.end()) return {kSuccess, 1};
  const NvmeCommandInfo victim = found->info;
  outstanding.erase(found);
  post(victim, kAbortRequested, 0);
  return {kSuccess, 0};
}

// ---------------------------------------------------------------------------------------------
// I/O commands (the NVM command set: Flush, Write, Read)

std::pair<Status, std::uint32_t> NvmeModel::Core::run_io(Outstanding& command) {
  const Sqe& sqe = command.sqe;
  if (const Status status = common_check(sqe); status != kSuccess) return {status, 0};
  switch (sqe.opcode) {
    case kFlush:  // data is never cached: nothing to write back
      return {sqe.nsid == 0xffffffff ? kSuccess : namespace_status(sqe.nsid), 0};
    case kRead:
    case kWrite: return {read_write(command), 0};
    default: return {kInvalidOpcode, 0};
  }
}

// An active namespace: success; an inactive id in 1..NN: Invalid Field; any other id
// (0, past NN, the broadcast FFFFFFFFh): Invalid Namespace or Format.
Status NvmeModel::Core::namespace_status(std::uint32_t id) const {
  for (const NamespaceData& space : namespaces) {
    if (space.shape.id == id) return kSuccess;
  }
  return id != 0 && id <= options.namespace_count ? kInvalidField : kInvalidNamespace;
}

Status NvmeModel::Core::transfer_check(const Sqe& sqe, NamespaceData** found) {
  if (const Status status = namespace_status(sqe.nsid); status != kSuccess) return status;
  NamespaceData* space = find_namespace(sqe.nsid);
  const std::uint64_t lba = sqe.cdw10 | (std::uint64_t{sqe.cdw11} << 32);
  const std::uint64_t blocks = (sqe.cdw12 & 0xffff) + 1;
  if (lba >= space->shape.blocks || blocks > space->shape.blocks - lba) return kLbaOutOfRange;
  if (options.mdts != 0 && (blocks << space->shape.block_shift) > (kPage << options.mdts)) return kInvalidField;
  *found = space;
  return kSuccess;
}

Status NvmeModel::Core::read_write(const Outstanding& command) {
  NamespaceData* space = nullptr;
  if (const Status status = transfer_check(command.sqe, &space); status != kSuccess) return status;
  const std::span<std::byte> blocks = std::span(space->bytes).subspan(command.info.lba << space->shape.block_shift,
                                                                    command.length);
  if (command.sqe.opcode == kRead) return to_host(command, blocks);
  std::vector<std::byte> incoming(command.length);  // nothing is written unless all of it came
  if (const Status status = from_host(command, incoming); status != kSuccess) return status;
  std::copy(incoming.begin(), incoming.end(), blocks.begin());
  return kSuccess;
}

// ---------------------------------------------------------------------------------------------
// Completions (4.2.4)

void NvmeModel::Core::post(const NvmeCommandInfo& info, Status status, std::uint32_t result) {
  auto sq = submission_queues.find(info.sq_id);
  if (sq == submission_queues.end()) return;
  auto cq = completion_queues.find(sq->second.cq_id);
  if (cq == completion_queues.end()) return;
  completions.push_back({.command = info,
                         .status_code = static_cast<std::uint8_t>(status & 0xff),
                         .status_type = static_cast<std::uint8_t>((status >> 8) & 0x7),
                         .do_not_retry = (status & kDnr) != 0,
                         .result = result});
  const Cqe entry{.result = result, .sq_id = info.sq_id, .cid = info.command_id,
                  .status = static_cast<std::uint16_t>(status << 1)};
  cq->second.backlog.emplace_back(entry, info);
  drain(cq->second);
}

// Posts waiting completions while the CQ has room (one slot always stays empty).
void NvmeModel::Core::drain(CompletionQueue& queue) {
  while (!queue.backlog.empty() && !failed && (queue.tail + 1) % queue.size != queue.head) {
    Cqe entry = queue.backlog.front().first;
    queue.backlog.pop_front();
    if (auto sq = submission_queues.find(entry.sq_id); sq != submission_queues.end()) {
      entry.sq_head = static_cast<std::uint16_t>(sq->second.head);
      sq->second.reported_head = sq->second.head;
    }
    if (!write_completion(queue, entry)) return;
  }
}

bool NvmeModel::Core::write_completion(CompletionQueue& queue, Cqe entry) {
  entry.status = static_cast<std::uint16_t>(entry.status | (queue.phase ? 1 : 0));
  const std::uint64_t at = queue.base + std::uint64_t{queue.tail} * sizeof(Cqe);
  const auto bytes = std::as_bytes(std::span(&entry, 1));
  // The status word (with the phase tag) last: the driver may look at the tag at any time.
  auto written = device.dma_write(at, bytes.first(14));
  if (written) written = device.dma_write(at + 14, bytes.subspan(14));
  if (!written) {
    violations.push_back(dma_violation(written.error(), fmt::format("posting a completion to CQ {}", queue.id)));
    fail();
    return false;
  }
  queue.tail = (queue.tail + 1) % queue.size;
  if (queue.tail == 0) queue.phase = !queue.phase;
  interrupt(queue);
  return true;
}

// MSI-X: the CQ's vector; MSI: vector 0; else INTx.
void NvmeModel::Core::interrupt(const CompletionQueue& queue) {
  if (!queue.interrupts) return;
  // fire() says whether the message went out; a masked or disabled vector is the driver's choice.
  if (device.interrupts_enabled(IrqKind::msix)) (void)device.fire(IrqKind::msix, queue.vector);
  else if (device.interrupts_enabled(IrqKind::msi)) (void)device.fire(IrqKind::msi, 0);
  else (void)device.fire(IrqKind::intx, 0);
}

// ---------------------------------------------------------------------------------------------
// Memory the driver unmapped

void NvmeModel::Core::unmapped(std::uint64_t bus, std::uint64_t size) {
  const std::vector<Segment> range{{bus, size}};
  const auto report = [&](const std::string& what) {
    violation(nvme_rule::kLiveMemoryUnmapped,
              fmt::format("the buffer at bus address 0x{:x} (0x{:x} bytes) was unmapped while {}; stop the "
                          "controller (CC.EN 0) or delete the queue first",
                          bus, size, what),
              "NVMe 2.0, 3.7.2");
  };
  for (const auto& [id, queue] : submission_queues) {
    if (overlap(range[0], queue.memory())) report(fmt::format("it holds SQ {}, which the controller reads", id));
  }
  for (const auto& [id, queue] : completion_queues) {
    if (overlap(range[0], queue.memory())) report(fmt::format("it holds CQ {}, which the controller writes", id));
  }
  for (const Outstanding& command : outstanding) {
    if (any_overlap(range, command.prps.data) || any_overlap(range, command.prps.lists)) {
      report(fmt::format("SQ {} CID {}, outstanding, transfers through it", command.info.sq_id,
                         command.info.command_id));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The public side

namespace {
using Core = NvmeModel::Core;

// Runs `body` on the model under its lock, or does what plain storage would once the
// model is gone (the driver may hold the Device longer).
template <class Body>
RegisterModel::WriteHook locked_write(std::weak_ptr<Core> weak, Body body) {
  return [weak = std::move(weak), body](const RegisterAccess& access) -> std::uint64_t {
    const std::shared_ptr<Core> core = weak.lock();
    if (!core) return access.value;
    const std::lock_guard lock(core->mutex);
    return body(*core, access);
  };
}

void install_hooks(const std::shared_ptr<Core>& core) {
  const std::weak_ptr<Core> weak = core;
  const auto write = locked_write(weak, [](Core& c, const RegisterAccess& a) { return c.register_write(a); });
  for (std::uint64_t offset = 0; offset < 0x40; offset += 4) core->bar.on_write(offset, write);
  for (std::uint64_t offset = kDoorbells; offset < kBarSize; offset += 4) core->bar.on_write(offset, write);
  for (const std::uint64_t offset : {kVersion, std::uint64_t{0x10}, std::uint64_t{0x18}, kNssr, kCsts}) {
    core->bar.on_read(offset, [weak](const RegisterAccess& access) {
      if (const std::shared_ptr<Core> c = weak.lock()) {
        const std::lock_guard lock(c->mutex);
        c->register_read(access);
      }
      return access.value;
    });
  }
  core->device.on_unmap([weak](std::uint64_t bus, std::uint64_t size) {
    if (const std::shared_ptr<Core> c = weak.lock()) {
      const std::lock_guard lock(c->mutex);
      c->unmapped(bus, size);
    }
  });
}
}  // namespace

NvmeModel::NvmeModel(const NvmeModelOptions& options) : core_(std::make_shared<Core>(options)) {
  install_hooks(core_);
}

NvmeModel::~NvmeModel() { core_->device.on_unmap({}); }

DeviceModel& NvmeModel::device() { return core_->device; }
RegisterModel& NvmeModel::bar0() { return core_->bar; }
std::unique_ptr<Device> NvmeModel::open() const { return core_->device.open(); }

void NvmeModel::set_completion_policy(const NvmeCompletionPolicy& policy) {
  const std::lock_guard lock(core_->mutex);
  core_->policy = policy;
  core_->rng.seed(policy.seed);
}

std::size_t NvmeModel::complete_pending() {
  const std::lock_guard lock(core_->mutex);
  std::vector<std::uint64_t> pooled;
  for (const Outstanding& command : core_->outstanding) {
    if (command.stage == Stage::pooled) pooled.push_back(command.sequence);
  }
  std::size_t completed = 0;
  for (const std::uint64_t sequence : pooled) completed += core_->execute(sequence, true) ? 1 : 0;
  return completed;
}

void NvmeModel::hold_next_io(unsigned count) {
  const std::lock_guard lock(core_->mutex);
  core_->hold_next = count;
}

void NvmeModel::hold_if(std::function<bool(const NvmeCommandInfo&)> predicate) {
  const std::lock_guard lock(core_->mutex);
  core_->hold_predicate = std::move(predicate);
}

std::vector<NvmeCommandInfo> NvmeModel::held() const {
  const std::lock_guard lock(core_->mutex);
  std::vector<NvmeCommandInfo> infos;
  for (const Outstanding& command : core_->outstanding) {
    if (command.stage == Stage::held) infos.push_back(command.info);
  }
  return infos;
}

std::size_t NvmeModel::release(std::size_t count) {
  const std::lock_guard lock(core_->mutex);
  std::vector<std::uint64_t> held;
  for (const Outstanding& command : core_->outstanding) {
    if (command.stage == Stage::held && held.size() < count) held.push_back(command.sequence);
  }
  std::size_t ran = 0;
  for (const std::uint64_t sequence : held) ran += core_->execute(sequence, true) ? 1 : 0;
  return ran;
}

std::vector<std::string> NvmeModel::violations() const {
  const std::lock_guard lock(core_->mutex);
  return core_->violations;
}

void NvmeModel::clear_violations() {
  const std::lock_guard lock(core_->mutex);
  core_->violations.clear();
}

std::vector<NvmeCompletionRecord> NvmeModel::completions() const {
  const std::lock_guard lock(core_->mutex);
  return core_->completions;
}

std::uint64_t NvmeModel::resets() const {
  const std::lock_guard lock(core_->mutex);
  return core_->resets;
}

std::uint64_t NvmeModel::dropped() const {
  const std::lock_guard lock(core_->mutex);
  return core_->dropped;
}

bool NvmeModel::ready() const {
  const std::lock_guard lock(core_->mutex);
  return core_->enabled;
}

std::size_t NvmeModel::io_submission_queues() const {
  const std::lock_guard lock(core_->mutex);
  return core_->submission_queues.size() - (core_->submission_queues.contains(0) ? 1 : 0);
}

Result<std::vector<std::byte>> NvmeModel::read_blocks(std::uint32_t namespace_id, std::uint64_t lba,
                                                      std::uint64_t count) const {
  const std::lock_guard lock(core_->mutex);
  const NamespaceData* space = core_->find_namespace(namespace_id);
  const std::string object = fmt::format("NVMe model namespace {}", namespace_id);
  if (space == nullptr) return std::unexpected(make_error(Errc::not_found, "read blocks", object, "not configured"));
  if (lba > space->shape.blocks || count > space->shape.blocks - lba) {
    return std::unexpected(make_error(Errc::out_of_range, "read blocks", object,
                                      fmt::format("blocks {}+{} past its {}", lba, count, space->shape.blocks)));
  }
  const auto begin = space->bytes.begin() + static_cast<std::ptrdiff_t>(lba << space->shape.block_shift);
  return std::vector<std::byte>(begin, begin + static_cast<std::ptrdiff_t>(count << space->shape.block_shift));
}

Result<void> NvmeModel::write_blocks(std::uint32_t namespace_id, std::uint64_t lba, std::span<const std::byte> data) {
  const std::lock_guard lock(core_->mutex);
  NamespaceData* space = core_->find_namespace(namespace_id);
  const std::string object = fmt::format("NVMe model namespace {}", namespace_id);
  if (space == nullptr) return std::unexpected(make_error(Errc::not_found, "write blocks", object, "not configured"));
  const std::uint64_t block = std::uint64_t{1} << space->shape.block_shift;
  if (data.size() % block != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "write blocks", object,
                                      fmt::format("{} bytes are not whole {}-byte blocks", data.size(), block)));
  }
  const std::uint64_t count = data.size() / block;
  if (lba > space->shape.blocks || count > space->shape.blocks - lba) {
    return std::unexpected(make_error(Errc::out_of_range, "write blocks", object,
                                      fmt::format("blocks {}+{} past its {}", lba, count, space->shape.blocks)));
  }
  std::copy(data.begin(), data.end(), space->bytes.begin() + static_cast<std::ptrdiff_t>(lba * block));
  return {};
}

}  // namespace pcie::testing
