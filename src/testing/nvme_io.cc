// The NVMe model's I/O commands (the NVM command set: Flush, Write, Read) on the namespaces
// it keeps in memory.
#include <algorithm>

#include "src/testing/nvme_core.h"

namespace pcie::testing {

using namespace nvme;

NamespaceData* NvmeModel::Core::find_namespace(std::uint32_t id) {
  for (NamespaceData& space : namespaces) {
    if (space.shape.id == id) return &space;
  }
  return nullptr;
}

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

}  // namespace pcie::testing
