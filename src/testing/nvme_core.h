// The strict NVMe controller model's state and its parts, shared by the files that implement
// it: nvme_registers.cc (CC, CSTS, the admin queue registers; enable, reset, shutdown,
// failure), nvme_doorbells.cc (SQ tail and CQ head doorbells), nvme_commands.cc (fetching,
// the per-command checks, holding and the completion policy), nvme_dma.cc (PRP walks, data
// transfer, DMA faults, memory unmapped under the controller), nvme_admin.cc, nvme_io.cc
// (the NVM command set on the namespaces kept in memory), nvme_completions.cc, and
// nvme_model.cc (construction, the hooks and the public side). Sections are the NVM Express
// Base Specification 2.0's; every Core member function expects `mutex` held.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pcie/testing/nvme_model.h"

// The register offsets, opcodes, Sqe and Cqe are the public header's (pcie::testing::nvme);
// what only the model uses follows.
namespace pcie::testing::nvme {

// ---- Controller registers (3.1.4) ----
inline constexpr std::uint64_t kBarSize = 0x4000;
inline constexpr std::uint32_t kCcEnable = 1u;
inline constexpr std::uint32_t kCcShutdown = 3u << 14;  // CC.SHN
// CC fields that must not change while the controller is enabled: CSS, MPS, AMS, IOSQES, IOCQES.
inline constexpr std::uint32_t kCcFixed = (0x7u << 4) | (0xfu << 7) | (0x7u << 11) | (0xfu << 16) | (0xfu << 20);
inline constexpr std::uint32_t kCstsReady = 1u, kCstsFatal = 2u, kCstsShutdownComplete = 2u << 2;

inline constexpr unsigned kAsyncEventLimit = 4;  // AERL + 1

// ---- Status (4.2.3): SC in bits 7:0, SCT in 10:8, DNR in 14 (the status field without the phase tag) ----
using Status = std::uint16_t;
inline constexpr Status kDnr = 1u << 14;
inline constexpr Status kSuccess = 0, kInvalidOpcode = 0x01 | kDnr, kInvalidField = 0x02 | kDnr,
                        kDataTransferError = 0x04, kAbortRequested = 0x07, kInvalidNamespace = 0x0b | kDnr,
                        kInvalidPrpOffset = 0x13 | kDnr, kLbaOutOfRange = 0x80 | kDnr;
inline constexpr Status kCqInvalid = 0x100 | kDnr, kInvalidQueueId = 0x101 | kDnr,
                        kInvalidQueueSize = 0x102 | kDnr, kAsyncEventLimitExceeded = 0x105 | kDnr,
                        kInvalidVector = 0x108 | kDnr, kInvalidQueueDeletion = 0x10c | kDnr;

// FUSE and PSDT: no fused commands, no SGLs (Identify Controller SGLS 0).
inline Status common_check(const Sqe& sqe) {
  return (sqe.flags & 0x3) != 0 || (sqe.flags >> 6) != 0 ? kInvalidField : kSuccess;
}

// "rule: detail (citation)", the text of a violation.
inline std::string rule_text(std::string_view rule, std::string_view detail, std::string_view citation) {
  return fmt::format("{}: {} ({})", rule, detail, citation);
}

// A range of bus addresses.
struct Segment {
  std::uint64_t bus = 0;
  std::uint64_t length = 0;
};

inline bool overlap(const Segment& a, const Segment& b) {
  if (a.length == 0 || b.length == 0) return false;
  return a.bus >= b.bus ? a.bus - b.bus < b.length : b.bus - a.bus < a.length;  // overflow-safe
}

inline bool any_overlap(const std::vector<Segment>& a, const std::vector<Segment>& b) {
  return std::any_of(a.begin(), a.end(), [&](const Segment& x) {
    return std::any_of(b.begin(), b.end(), [&](const Segment& y) { return overlap(x, y); });
  });
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

}  // namespace pcie::testing::nvme

namespace pcie::testing {

// The controller's state, guarded by `mutex`; every member function expects it held.
struct NvmeModel::Core {
  explicit Core(const NvmeModelOptions& given);  // nvme_model.cc

  // ---- Registers (nvme_registers.cc) ----
  std::uint64_t register_write(const RegisterAccess& access);
  void register_read(const RegisterAccess& access);
  std::uint64_t write_configuration(std::uint32_t value);
  std::string enable_problem(std::uint32_t configuration) const;
  void enable(std::uint32_t configuration);
  void reset();
  void shutdown();
  void fail();
  // ---- Doorbells (nvme_doorbells.cc) ----
  std::uint64_t doorbell_write(const RegisterAccess& access);
  bool doorbell_allowed(std::uint64_t offset);
  void submission_doorbell(std::uint16_t id, std::uint32_t tail);
  void completion_doorbell(std::uint16_t id, std::uint32_t head);
  // ---- Commands (nvme_commands.cc) ----
  std::vector<nvme::Outstanding> fetch(nvme::SubmissionQueue& queue);
  nvme::Outstanding make_outstanding(std::uint16_t sq_id, const nvme::Sqe& sqe);
  void plan(nvme::Outstanding& command);
  void admit(nvme::Outstanding& command);
  void check_identifier(const nvme::Outstanding& command);
  void check_sharing(const nvme::Outstanding& command);
  nvme::Stage classify(const NvmeCommandInfo& info);
  void run_batch(std::vector<nvme::Outstanding> fetched);
  bool execute(std::uint64_t sequence, bool waited);
  void tick();
  std::size_t drop_where(const std::function<bool(const nvme::Outstanding&)>& which);
  // ---- PRPs, data and unmapped memory (nvme_dma.cc) ----
  nvme::PrpWalk walk(const NvmeCommandInfo& info, const nvme::Sqe& sqe, std::uint64_t length);
  void walk_list(nvme::PrpWalk& walk, const std::string& who, std::uint64_t list, std::uint64_t rest);
  void rewalk(nvme::Outstanding& command);
  nvme::Status to_host(const nvme::Outstanding& command, std::span<const std::byte> data);
  nvme::Status from_host(const nvme::Outstanding& command, std::span<std::byte> data);
  std::string dma_violation(const Error& error, std::string_view what);
  void unmapped(std::uint64_t bus, std::uint64_t size);  // the unmap hook
  // ---- Admin commands (nvme_admin.cc) ----
  std::pair<nvme::Status, std::uint32_t> run_admin(nvme::Outstanding& command);
  nvme::Status identify(const nvme::Outstanding& command);
  void identify_controller(std::span<std::byte> page) const;
  nvme::Status identify_namespace(std::uint32_t id, std::span<std::byte> page) const;
  nvme::Status active_namespaces(std::uint32_t after, std::span<std::byte> page) const;
  nvme::Status create_completion_queue(const nvme::Sqe& sqe);
  nvme::Status create_submission_queue(const nvme::Sqe& sqe);
  nvme::Status delete_submission_queue(const nvme::Sqe& sqe);
  nvme::Status delete_completion_queue(const nvme::Sqe& sqe);
  std::pair<nvme::Status, std::uint32_t> features(const nvme::Sqe& sqe) const;
  std::pair<nvme::Status, std::uint32_t> abort(const nvme::Sqe& sqe);
  // ---- I/O commands and namespaces (nvme_io.cc) ----
  std::pair<nvme::Status, std::uint32_t> run_io(nvme::Outstanding& command);
  nvme::NamespaceData* find_namespace(std::uint32_t id);
  nvme::Status namespace_status(std::uint32_t id) const;
  nvme::Status transfer_check(const nvme::Sqe& sqe, nvme::NamespaceData** found);
  nvme::Status read_write(const nvme::Outstanding& command);
  // ---- Completions (nvme_completions.cc) ----
  void post(const NvmeCommandInfo& info, nvme::Status status, std::uint32_t result);
  void drain(nvme::CompletionQueue& queue);
  bool write_completion(nvme::CompletionQueue& queue, nvme::Cqe entry);
  void interrupt(const nvme::CompletionQueue& queue);

  void violation(std::string_view rule, std::string_view detail, std::string_view citation) {
    violations.push_back(nvme::rule_text(rule, detail, citation));
  }

  const NvmeModelOptions options;
  DeviceModel device;
  RegisterModel& bar;
  mutable std::mutex mutex;
  bool enabled = false;    // CSTS.RDY
  bool shut_down = false;  // CSTS.SHST complete: the controller touches no queue until reset
  bool failed = false;     // CSTS.CFS
  std::map<std::uint16_t, nvme::SubmissionQueue> submission_queues;
  std::map<std::uint16_t, nvme::CompletionQueue> completion_queues;
  std::vector<nvme::Outstanding> outstanding;  // fetched, not completed; in fetch order
  std::vector<nvme::NamespaceData> namespaces;
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

}  // namespace pcie::testing
