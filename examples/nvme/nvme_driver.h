// A user-space NVMe driver on pcie's public API alone (no raw ioctl or mmap): the example of
// a queue-based driver built from the kit in pcie/queue.h and pcie/wait.h. It resets and
// enables the controller with waits bounded by CAP.TO, runs an admin queue, identifies the
// controller and namespace 1, creates one I/O queue pair (completions polled, or signalled
// by MSI-X/MSI), and reads, writes and flushes with PRP lists; device errors come back with
// their NVMe status decoded. NVM Express Base Specification 2.0 section numbers are cited.
//
//   auto container = pcie::VfioContainer::open();
//   auto device = container->open_device(bdf);                // bound to vfio-pci
//   auto nvme = examples::NvmeDriver::open(std::make_unique<pcie::VfioDevice>(std::move(*device)));
//   nvme->write(lba, data);  nvme->read(lba, blocks);  nvme->flush();  nvme->shutdown();
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pcie/device.h"
#include "pcie/dma.h"
#include "pcie/queue.h"

namespace examples {

namespace nvme {
// Controller registers (3.1.4).
inline constexpr std::uint64_t kCap = 0x00;
inline constexpr std::uint64_t kVersion = 0x08;
inline constexpr std::uint64_t kConfiguration = 0x14;  // CC
inline constexpr std::uint64_t kStatus = 0x1c;         // CSTS
inline constexpr std::uint64_t kAdminQueueAttributes = 0x24;
inline constexpr std::uint64_t kAdminSubmissionQueue = 0x28;
inline constexpr std::uint64_t kAdminCompletionQueue = 0x30;
inline constexpr std::uint64_t kDoorbells = 0x1000;

// A submission queue entry (4.2) and a completion queue entry (4.2.4).
struct Command {
  std::uint8_t opcode = 0;
  std::uint8_t flags = 0;
  std::uint16_t command_id = 0;
  std::uint32_t namespace_id = 0;
  std::uint32_t cdw2 = 0;
  std::uint32_t cdw3 = 0;
  std::uint64_t metadata = 0;
  std::uint64_t prp1 = 0;
  std::uint64_t prp2 = 0;
  std::uint32_t cdw10 = 0;
  std::uint32_t cdw11 = 0;
  std::uint32_t cdw12 = 0;
  std::uint32_t cdw13 = 0;
  std::uint32_t cdw14 = 0;
  std::uint32_t cdw15 = 0;
};
struct Completion {
  std::uint32_t result = 0;
  std::uint32_t reserved = 0;
  std::uint16_t sq_head = 0;
  std::uint16_t sq_id = 0;
  std::uint16_t command_id = 0;
  std::uint16_t status = 0;  // bit 0 phase, 1-8 status code, 9-11 status code type, 15 DNR
};
static_assert(sizeof(Command) == 64 && sizeof(Completion) == 16);
inline constexpr pcie::CompletionTag kPhaseTag{.byte_offset = 14, .mask = 1, .kind = pcie::CompletionTag::Kind::phase};

// "Generic Command Status: LBA Out of Range (SCT 0x0, SC 0x80)": the status field of a
// completion (without the phase bit) in words (4.2.3).
std::string describe_status(std::uint16_t status);
}  // namespace nvme

struct NvmeOptions {
  std::uint16_t io_queue_depth = 64;  // capped by CAP.MQES + 1
  bool interrupts = false;            // MSI-X (or MSI) for I/O completions instead of polling
  std::chrono::milliseconds command_timeout{5000};
  // Polled completions: spin this long before sleeping between looks (pcie/wait.h). A
  // completion a polled driver waits for usually comes within it; sleeping first would add
  // a timer's wake-up (tens of microseconds) to every command.
  std::chrono::microseconds poll_spin{1000};
};

struct NvmeIdentity {
  std::string model, serial, firmware;
  std::uint32_t version = 0;              // VS: 0x00010400 is 1.4
  std::uint64_t max_transfer_bytes = 0;   // from MDTS; the driver splits larger transfers
  std::uint64_t namespace_blocks = 0;     // NSZE of namespace 1
  std::uint32_t block_size = 0;           // its LBA data size
};

class NvmeDriver {
 public:
  // Takes `device` (any backend), maps BAR0, resets and enables the controller, identifies
  // it and namespace 1, and creates the I/O queue pair. Errors: the backend's, io_error
  // with the controller's status on a timeout or fatal status, and the decoded NVMe
  // status of a failed admin command.
  static pcie::Result<NvmeDriver> open(std::unique_ptr<pcie::Device> device, const NvmeOptions& options = {});

  const NvmeIdentity& identity() const { return identity_; }
  // Interrupts received for I/O completions (NvmeOptions::interrupts), for tests and stats.
  std::uint64_t interrupts_seen() const { return interrupts_seen_; }
  // The I/O completion vectors (vector 0 is the I/O queue's), nullptr when polling: for
  // masking the vector or adding vectors (pcie/interrupts.h).
  pcie::Interrupts* interrupts() { return interrupts_.get(); }

  // `blocks` blocks from `lba` of namespace `namespace_id` (1: the one identified).
  // invalid_argument for data that is not whole blocks; io_error with the NVMe status
  // decoded when the device refuses (an LBA out of range, an invalid namespace).
  pcie::Result<std::vector<std::byte>> read(std::uint64_t lba, std::uint32_t blocks, std::uint32_t namespace_id = 1);
  pcie::Result<void> write(std::uint64_t lba, std::span<const std::byte> data, std::uint32_t namespace_id = 1);
  pcie::Result<void> flush(std::uint32_t namespace_id = 1);

  // `count` random reads of 4 KiB (or one block, where blocks are larger) at 4 KiB-aligned
  // offsets with `queue_depth` in flight, for nvme_bench. Returns the elapsed time.
  pcie::Result<std::chrono::nanoseconds> random_reads(unsigned queue_depth, unsigned count, std::uint64_t seed);

  // Normal shutdown (CC.SHN, waits for CSTS.SHST complete; 3.6.1). Also done by the
  // destructor when not called, which then also turns bus mastering off before the
  // queues' memory is freed.
  pcie::Result<void> shutdown();

  NvmeDriver(NvmeDriver&&) noexcept = default;
  NvmeDriver& operator=(NvmeDriver&&) noexcept = default;
  ~NvmeDriver();

 private:
  // A submission/completion queue pair and the PRP list page of each slot.
  struct QueuePair {
    std::uint16_t id = 0;
    pcie::DmaBuffer memory;  // SQ, then CQ, then one PRP list page per SQ slot
    pcie::SubmissionRing<nvme::Command> sq;
    pcie::CompletionRing<nvme::Completion> cq;
    std::uint16_t next_command_id = 0;
  };

  NvmeDriver() = default;
  pcie::MmioView registers() const;
  pcie::Result<QueuePair> make_queue_pair(std::uint16_t id, std::uint16_t depth);
  pcie::Result<void> fill_prps(QueuePair& queue, nvme::Command& command, const pcie::DmaBuffer& data,
                               std::size_t offset, std::size_t length);
  // Pushes, rings, and waits for that command's completion. io_error with the decoded
  // status when it failed.
  pcie::Result<nvme::Completion> execute(QueuePair& queue, nvme::Command command);
  pcie::Result<nvme::Completion> reap(QueuePair& queue);
  pcie::Result<void> transfer(std::uint8_t opcode, std::uint64_t lba, std::size_t bytes, std::uint32_t namespace_id);
  pcie::Result<void> wait_ready(bool ready, std::chrono::milliseconds timeout);
  // device_removed when CSTS reads all ones, io_error on CSTS.CFS (the controller failed).
  pcie::Result<void> controller_alive(const std::string& operation) const;
  pcie::Error controller_error(const std::string& operation, const std::string& reason) const;

  std::unique_ptr<pcie::Device> device_;
  std::unique_ptr<pcie::Region> bar0_;
  std::optional<pcie::DmaAllocator> allocator_;
  std::unique_ptr<pcie::Interrupts> interrupts_;
  std::optional<QueuePair> admin_;
  std::optional<QueuePair> io_;
  std::optional<pcie::DmaBuffer> data_;  // the bounce buffer of read/write
  NvmeIdentity identity_;
  NvmeOptions options_;
  std::chrono::milliseconds ready_timeout_{500};
  std::uint64_t interrupts_seen_ = 0;
  bool enabled_ = false;     // CSTS.RDY was seen 1: shutdown() has work to do
  unsigned io_queues_ = 0;   // 1: the I/O CQ exists, 2: and its SQ
  bool shut_down_ = false;
};

}  // namespace examples
