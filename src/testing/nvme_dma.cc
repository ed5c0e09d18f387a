// The NVMe model's view of host memory: PRP entries and lists walked (NVMe 2.0, 4.1.1) at
// fetch and again at execution, data moved through them, DMA faults turned into violations,
// and memory the driver unmapped while the controller still used it.
#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "src/testing/nvme_core.h"

namespace pcie::testing {

using namespace nvme;

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

}  // namespace pcie::testing
