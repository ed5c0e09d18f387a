// The NVMe model's completions (NVMe 2.0, 4.2.4): posted with the phase tag when the CQ has
// room, kept waiting when it has none, and signalled by the CQ's interrupt.
#include <fmt/format.h>

#include "src/testing/nvme_core.h"

namespace pcie::testing {

using namespace nvme;

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

}  // namespace pcie::testing
