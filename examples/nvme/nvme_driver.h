// A user-space NVMe driver on pcie's public API alone (no raw ioctl or mmap): the example of
// a queue-based driver built from the kit in pcie/queue.h and pcie/wait.h. It resets and
// enables the controller with waits bounded by CAP.TO, runs an admin queue, identifies the
// controller and its first active namespace, creates one I/O queue pair (completions
// polled, or signalled by MSI-X/MSI), and reads, writes and flushes with PRP lists; device
// errors come back with their NVMe status decoded. It keeps the protocol where QEMU would
// forgive it: command identifiers unique while outstanding and checked on completion
// (pcie/request_tracker.h), every page of a transfer described (PRP1, PRP2 or a PRP list
// of the command's own), a timed-out command ended by a controller reset before anything
// it used is reused, and on shutdown the controller disabled and bus mastering off before
// its memory goes (pcie/quiesce.h). NVM Express Base Specification 2.0 sections are cited.
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
#include <utility>
#include <vector>

#include "pcie/device.h"
#include "pcie/dma.h"
#include "pcie/dma_pages.h"
#include "pcie/peer_dma.h"
#include "pcie/queue.h"
#include "pcie/quiesce.h"
#include "pcie/request_tracker.h"

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
// NVM command set I/O opcodes (NVM Command Set 1.0, 3).
inline constexpr std::uint8_t kFlush = 0x00, kWrite = 0x01, kRead = 0x02;
// The controller memory buffer's registers (3.1.4.12 to 3.1.4.15; NVMe 1.4's scheme).
inline constexpr std::uint64_t kCmbLocation = 0x38;        // CMBLOC
inline constexpr std::uint64_t kCmbSize = 0x3c;            // CMBSZ
inline constexpr std::uint64_t kCmbMemorySpaceControl = 0x50;  // CMBMSC (64 bits)
inline constexpr std::uint64_t kCmbStatus = 0x58;          // CMBSTS

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
  std::uint16_t io_queue_depth = 64;  // capped by CAP.MQES + 1 (and to 64 where queues must fit a page)
  bool interrupts = false;            // MSI-X (or MSI) for I/O completions instead of polling
  // How long a command may take. Past it the command is still the controller's: the
  // driver resets the controller (which ends every command and all its DMA: 3.7.2) and
  // re-creates its queues before anything reuses the command's identifier, queue slot or
  // buffer, and the call fails with io_error.
  std::chrono::milliseconds command_timeout{5000};
  // Polled completions: spin this long before sleeping between looks (pcie/wait.h). A
  // completion a polled driver waits for usually comes within it; sleeping first would add
  // a timer's wake-up (tens of microseconds) to every command.
  std::chrono::microseconds poll_spin{1000};
};

// A controller memory buffer (CMB): memory of the controller's own in one of its BARs, which
// it reads and writes itself when a command's PRPs point there (3.1.4.12 to 3.1.4.15,
// 8.2): no DMA across the fabric, no IOMMU.
struct NvmeCmb {
  unsigned bar = 0;               // CMBLOC.BIR
  std::uint64_t bar_offset = 0;   // where it starts in the BAR (CMBLOC.OFST)
  std::uint64_t size = 0;         // bytes (CMBSZ.SZ in CMBSZ.SZU units)
  std::uint64_t bus_address = 0;  // what PRPs name for its first byte (CMBMSC.CBA)
  // What the controller lets live there (CMBSZ): submission and completion queues, PRP
  // lists, and the data of reads and writes.
  bool submission_queues = false, completion_queues = false, prp_lists = false, read_data = false,
       write_data = false;
};

// Whether [a, a + a_size) and [b, b + b_size) share a byte, without computing a sum that
// could overflow.
inline bool ranges_overlap(std::uint64_t a, std::uint64_t a_size, std::uint64_t b, std::uint64_t b_size) {
  return a >= b ? a - b < b_size : b - a < a_size;
}

struct NvmeIdentity {
  std::string model, serial, firmware;
  std::uint32_t version = 0;              // VS: 0x00010400 is 1.4
  std::uint64_t max_transfer_bytes = 0;   // from MDTS; the driver splits larger transfers
  // The active namespaces (Identify CNS 02h), and the first of them, identified: the one
  // read/write/flush use when not told another. A controller without namespaces (QEMU's
  // nvme without a drive) has none: namespace_id, namespace_blocks and block_size are 0.
  std::vector<std::uint32_t> active_namespaces;
  std::uint32_t namespace_id = 0;
  std::uint64_t namespace_blocks = 0;     // its NSZE
  std::uint32_t block_size = 0;           // its LBA data size
};

class NvmeDriver {
 public:
  // Takes `device` (any backend: VFIO with or without an IOMMU, UIO; memory is taken a page
  // at a time where the backend cannot give contiguous bus addresses), maps BAR0, resets and
  // enables the controller, identifies it and its first active namespace (if any), and
  // creates the I/O queue pair. Errors: the backend's, io_error with the controller's status
  // on a timeout or fatal status, and the decoded NVMe status of a failed admin command.
  static pcie::Result<NvmeDriver> open(std::unique_ptr<pcie::Device> device, const NvmeOptions& options = {});

  const NvmeIdentity& identity() const { return identity_; }
  // Interrupts received for I/O completions (NvmeOptions::interrupts), for tests and stats.
  std::uint64_t interrupts_seen() const { return interrupts_seen_; }
  // Controller resets the driver made to recover from a timed-out or stray completion.
  std::uint64_t controller_resets() const { return controller_resets_; }
  // The I/O completion vectors (vector 0 is the I/O queue's), nullptr when polling: for
  // masking the vector or adding vectors (pcie/interrupts.h).
  pcie::Interrupts* interrupts() { return interrupts_.get(); }

  // `blocks` blocks from `lba` of namespace `namespace_id` (0: the one identified, which
  // must exist: not_found otherwise), in that namespace's own block size. invalid_argument for data that is not whole blocks;
  // io_error with the NVMe status decoded when the device refuses (an LBA out of range, an
  // invalid namespace); io_error after a timeout (the controller was reset: the next call
  // works if it came back), malformed for a completion the driver never asked for (also
  // followed by a reset).
  pcie::Result<std::vector<std::byte>> read(std::uint64_t lba, std::uint32_t blocks, std::uint32_t namespace_id = 0);
  pcie::Result<void> write(std::uint64_t lba, std::span<const std::byte> data, std::uint32_t namespace_id = 0);
  pcie::Result<void> flush(std::uint32_t namespace_id = 0);

  // Peer-to-peer: `blocks` blocks from `lba` straight into another device's BAR (read_to),
  // or from it to the namespace (write_from), at byte `offset` of `window` (pcie/peer_dma.h:
  // map_peer_bar with this driver's device as the initiator; device_writes for read_to,
  // device_reads for write_from). No host memory holds the data: every PRP entry, PRP list
  // entries included, is a bus address inside the window (the lists themselves stay in
  // host memory). Transfers past the largest one are split as read()/write() split them,
  // with no limit of the data area. Errors: invalid_argument for no blocks or an offset
  // that is not a multiple of 4 (PRP entries address dwords: NVMe 2.0, 4.1.1) or an empty
  // window; out_of_range when the blocks do not fit the window from `offset`
  // (overflow-safe); invalid_argument too for a device that is not a VFIO device, a
  // window mapped for another container (PeerDmaWindow::usable_by), of this controller's
  // own BAR (use the CMB calls), without the direction the transfer needs, or whose bus
  // addresses overlap an enabled CMB's; PeerDmaWindow::check()'s error when the window no
  // longer reaches the BAR (device_disabled: revoked, or the peer's decoding off;
  // device_removed; io_error when it cannot tell), before any command goes out; then as
  // read()/write().
  pcie::Result<void> read_to(std::uint64_t lba, std::uint32_t blocks, const pcie::PeerDmaWindow& window,
                             std::uint64_t offset, std::uint32_t namespace_id = 0);
  pcie::Result<void> write_from(std::uint64_t lba, std::uint32_t blocks, const pcie::PeerDmaWindow& window,
                                std::uint64_t offset, std::uint32_t namespace_id = 0);
  // Enables the controller memory buffer (CMBMSC: capability registers, then the memory
  // space at the BAR's bus address, read from the device's config space in sysfs), once;
  // later calls return the same; shutdown() turns it off. Errors: not_supported when
  // CAP.CMBS is 0 (no CMB), the CMB takes no read and write data, sits in an I/O BAR or
  // at an address not 4 KiB-aligned, or one of the driver's own buffers has a bus address
  // inside the CMB's range (the controller would take it for its memory); malformed for a
  // CMB that does not fit its BAR or a reserved size unit or BAR indicator;
  // io_error when the controller refuses the address (CMBSTS.CBAI); device_removed when
  // the BAR reads all ones; the errors of opening the BAR and reading its config space;
  // the driver's own (a shut-down or failed driver). On an error the CMB stays off.
  pcie::Result<NvmeCmb> enable_cmb();
  // The CMB as the CPU reaches it: BAR `cmb.bar` from `cmb.bar_offset` (nullptr before
  // enable_cmb()). Valid while the driver lives.
  pcie::Region* cmb_region() const { return cmb_bar_.get(); }
  // `blocks` blocks from `lba` into the CMB at byte `offset` of it, or from it to the
  // namespace: the data never leaves the controller. Errors as read_to/write_from, with
  // invalid_argument before enable_cmb() and out_of_range past the CMB's end.
  pcie::Result<void> read_to_cmb(std::uint64_t lba, std::uint32_t blocks, std::uint64_t offset,
                                 std::uint32_t namespace_id = 0);
  pcie::Result<void> write_from_cmb(std::uint64_t lba, std::uint32_t blocks, std::uint64_t offset,
                                    std::uint32_t namespace_id = 0);
  // The block size of namespace `namespace_id` (0: the identified one): what read_to and
  // write_from move per block, for sizing a window. Fails as read().
  pcie::Result<std::uint32_t> block_size(std::uint32_t namespace_id = 0);
  // The device the driver runs (for map_peer_bar, or the device's own queries).
  const pcie::Device& device() const { return *device_; }

  // `count` random reads of 4 KiB (or one block, where blocks are larger) at 4 KiB-aligned
  // offsets of the identified namespace with `queue_depth` in flight, for nvme_bench; every
  // command has its own identifier, buffer and PRP list while outstanding, and completions
  // are matched to commands in whatever order they come. Returns the elapsed time; fails as
  // read().
  pcie::Result<std::chrono::nanoseconds> random_reads(unsigned queue_depth, unsigned count, std::uint64_t seed);

  // Normal shutdown (CC.SHN, waits for CSTS.SHST complete; 3.6.1). Also done by the
  // destructor when not called, which then quiesces: the controller disabled (CC.EN 0
  // ends all its DMA), bus mastering off, and only then the queues and buffers freed.
  pcie::Result<void> shutdown();

  NvmeDriver(NvmeDriver&&) noexcept = default;
  // No move assignment: the driver being replaced would have to be shut down first, and
  // that can fail; destroy it, then construct (std::optional::emplace).
  NvmeDriver& operator=(NvmeDriver&&) = delete;
  ~NvmeDriver();

 private:
  struct QueuePair {
    std::uint16_t id = 0;
    pcie::DmaBuffer sq_memory;  // page-aligned and contiguous (CAP.CQR)
    pcie::DmaBuffer cq_memory;
    pcie::DmaPages prp_lists;          // one PRP list page per command identifier
    pcie::SubmissionRing<nvme::Command> sq;
    pcie::CompletionRing<nvme::Completion> cq;
    // Command identifiers, unique while outstanding (4.2.1); the context is the first page
    // of the data area the command transfers.
    pcie::RequestTracker<std::size_t> requests;
  };
  // A command's data: `length` bytes from byte `offset` of the data area, or, where `bus`
  // is set, from byte `offset` of a range of bus addresses that starts at `bus` and has no
  // gaps (a peer device's BAR window).
  struct DataRange {
    std::size_t offset = 0;
    std::size_t length = 0;
    std::optional<std::uint64_t> bus;
  };

  NvmeDriver() = default;
  std::uint32_t read32(std::uint64_t offset) const;
  void write32(std::uint64_t offset, std::uint32_t value) const;
  void write64(std::uint64_t offset, std::uint64_t value) const;
  pcie::Result<pcie::DmaPages> allocate_pages(std::size_t pages) const;
  pcie::Result<QueuePair> make_queue_pair(std::uint16_t id, std::uint16_t depth);
  pcie::Result<void> reset_rings(QueuePair& queue);
  pcie::Result<void> enable_controller();
  pcie::Result<void> start();
  pcie::Result<void> make_io_queues();
  pcie::Result<void> create_io_queues();
  pcie::Result<void> identify();
  pcie::Result<void> identify_namespace(std::uint32_t namespace_id);
  pcie::Result<void> fill_prps(QueuePair& queue, std::uint32_t command_id, nvme::Command& command, DataRange data);
  // Takes an identifier for `command`, describes its data (if any: moved `slot_stride`
  // bytes per identifier, for commands that each need their own buffer), and pushes it
  // (not rung).
  pcie::Result<std::uint32_t> submit(QueuePair& queue, nvme::Command command, std::optional<DataRange> data,
                                     std::size_t slot_stride = 0);
  // Pushes, rings, and waits for that command's completion. io_error with the decoded
  // status when it failed.
  pcie::Result<nvme::Completion> execute(QueuePair& queue, nvme::Command command,
                                         std::optional<DataRange> data = std::nullopt);
  // Waits for the next completion and matches it to its command (whose identifier is free
  // again after). A timeout or a stray identifier resets the controller first.
  pcie::Result<nvme::Completion> reap(QueuePair& queue);
  pcie::Result<std::optional<nvme::Completion>> wait_completion(QueuePair& queue);
  pcie::Error recover(pcie::Error cause);
  pcie::Result<void> usable(const char* operation) const;
  // A namespace's id, size and block size.
  struct NamespaceFormat {
    std::uint32_t id = 0;
    std::uint64_t blocks = 0;
    std::uint32_t block_size = 0;
  };
  // Identify Namespace (CNS 00h) of `namespace_id`: malformed for a size or format out of
  // range, not_supported for blocks larger than a transfer.
  pcie::Result<NamespaceFormat> read_namespace_format(std::uint32_t namespace_id);
  // The namespace a call names (0: the identified one), in its own block size: another
  // active one is identified at first use; an inactive one takes the identified one's, for
  // the controller to refuse.
  pcie::Result<NamespaceFormat> namespace_for(std::uint32_t namespace_id, const char* operation);
  // `bytes` between the namespace from `lba` and the data area, or the bus range from
  // `bus` (DataRange::bus), split into transfers of at most max_transfer_bytes.
  pcie::Result<void> transfer(std::uint8_t opcode, std::uint64_t lba, std::size_t bytes, const NamespaceFormat& space,
                              std::optional<std::uint64_t> bus = std::nullopt);
  pcie::Result<void> peer_transfer(std::uint8_t opcode, const char* operation, std::uint64_t lba, std::uint32_t blocks,
                                   const pcie::PeerDmaWindow& window, std::uint64_t offset, std::uint32_t namespace_id);
  pcie::Result<void> cmb_transfer(std::uint8_t opcode, const char* operation, std::uint64_t lba, std::uint32_t blocks,
                                  std::uint64_t offset, std::uint32_t namespace_id);
  // The namespace and byte count of `blocks` blocks moved at `offset` of a bus range:
  // invalid_argument for no blocks or an offset that is not a multiple of 4.
  pcie::Result<std::pair<NamespaceFormat, std::uint64_t>> bus_range_blocks(const char* operation, std::uint32_t blocks,
                                                                           std::uint64_t offset,
                                                                           std::uint32_t namespace_id);
  pcie::Result<NvmeCmb> read_cmb_registers(const char* operation);
  pcie::Result<NvmeCmb> place_cmb(NvmeCmb cmb, const char* operation);
  // Which of the driver's DMA buffers has a bus address in [start, start + size), if any.
  std::optional<std::string> buffer_in(std::uint64_t start, std::uint64_t size) const;
  // CMBMSC written as two halves, the upper first: the lower one enables (3.1.4.14).
  pcie::Result<void> write_cmb_control(std::uint64_t value);
  // Queues (without ringing) one read of `blocks` at `lba` into its identifier's slot of the
  // data area; a failure with reads outstanding resets the controller (recover()).
  pcie::Result<void> submit_read(const NamespaceFormat& space, std::uint64_t lba, std::uint32_t blocks);
  pcie::Result<void> wait_ready(bool ready, std::chrono::milliseconds timeout);
  // device_removed when CSTS reads all ones, io_error on CSTS.CFS (the controller failed).
  pcie::Result<void> controller_alive(const std::string& operation) const;
  pcie::Error controller_error(const std::string& operation, const std::string& reason) const;
  // Between the data area and the caller's bytes, page by page (the area may be in pieces).
  void copy_out(std::size_t offset, std::span<std::byte> into) const;
  void copy_in(std::size_t offset, std::span<const std::byte> from);

  // Declared in order of acquisition; destroyed in reverse, the Quiescer first.
  std::unique_ptr<pcie::Device> device_;
  std::unique_ptr<pcie::Region> bar0_;
  std::optional<pcie::DmaAllocator> allocator_;
  std::unique_ptr<pcie::Interrupts> interrupts_;
  std::optional<QueuePair> admin_;
  std::optional<QueuePair> io_;
  pcie::DmaPages data_;  // the data area of read/write/random_reads
  std::optional<NvmeCmb> cmb_;           // once enable_cmb() succeeded
  std::unique_ptr<pcie::Region> cmb_bar_;  // the BAR that holds it
  NvmeIdentity identity_;
  std::vector<NamespaceFormat> other_namespaces_;  // active namespaces other than identity_'s, once used
  NvmeOptions options_;
  std::chrono::milliseconds ready_timeout_{500};
  std::uint16_t max_depth_ = 2;
  std::uint64_t interrupts_seen_ = 0;
  std::uint64_t controller_resets_ = 0;
  bool enabled_ = false;     // CSTS.RDY was seen 1: shutdown() has work to do
  unsigned io_queues_ = 0;   // 1: the I/O CQ exists, 2: and its SQ
  bool shut_down_ = false;
  bool recovering_ = false;
  std::optional<pcie::Error> failed_;  // recovery failed: every call returns this
  // Last member, so destroyed first: disables the controller and turns bus mastering off
  // before the queues, buffers and interrupts above are released (pcie/quiesce.h).
  pcie::Quiescer quiesce_;
};

}  // namespace examples
