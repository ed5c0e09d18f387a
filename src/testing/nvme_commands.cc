// The NVMe model's commands between fetch and completion: fetching from an SQ, what each
// command moves, the checks made while it is outstanding (CID reuse, shared or live memory),
// where it waits (held, kept back by the completion policy, an Asynchronous Event Request
// parked), and its execution.
#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "src/testing/nvme_core.h"

namespace pcie::testing {

using namespace nvme;

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

}  // namespace pcie::testing
