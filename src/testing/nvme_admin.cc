// The NVMe model's admin commands (NVMe 2.0, 5): Identify (CNS 00h, 01h, 02h), Create and
// Delete I/O Completion and Submission Queues, Get/Set Features (Number of Queues), Abort,
// and Asynchronous Event Requests past the limit.
#include <algorithm>

#include "src/testing/nvme_core.h"

namespace pcie::testing {

using namespace nvme;

namespace {

void put(std::span<std::byte> page, std::size_t offset, std::uint64_t value, std::size_t bytes) {
  for (std::size_t i = 0; i < bytes; ++i) page[offset + i] = static_cast<std::byte>(value >> (8 * i));
}

void put_text(std::span<std::byte> page, std::size_t offset, std::size_t length, const std::string& text) {
  for (std::size_t i = 0; i < length; ++i) page[offset + i] = static_cast<std::byte>(i < text.size() ? text[i] : ' ');
}

}  // namespace

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

}  // namespace pcie::testing
