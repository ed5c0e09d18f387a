// The NVMe model's doorbells (NVMe 2.0, 3.1.4.21; stride 4: SQ y's tail at 0x1000 + 8y, CQ
// y's head 4 bytes after): when they may be written, the values they may take, and the
// fetch or the posting of waiting completions each one starts.
#include <fmt/format.h>

#include "src/testing/nvme_core.h"

namespace pcie::testing {

using namespace nvme;

namespace {
// (from, to] steps around a ring of `size` entries.
std::uint32_t distance(std::uint32_t from, std::uint32_t to, std::uint32_t size) { return (to + size - from) % size; }
}  // namespace

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

}  // namespace pcie::testing
