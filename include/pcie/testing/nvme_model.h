// A strict NVMe controller behind the testing kit's fake device (target //:pcie_testing), for
// unit tests of NVMe drivers without a VM: where QEMU's nvme forgives a protocol error that
// a real controller punishes (with corrupted data, a fatal status or a hung command), this
// model does what a real controller would and records the error as a violation naming the
// rule and the NVM Express Base Specification 2.0 section, so that a driver defect fails a
// unit test instead of a customer's disk.
//
// What it models (memory page size 4 KiB, one controller, PRPs only, no SGLs):
//  - BAR0, 16 KiB, 32- and 64-bit accesses (3.1.4): CAP (MQES, CQR, TO, DSTRD 0, the NVM
//    command set, MPSMIN = MPSMAX = 4 KiB), VS 1.4, CC, CSTS, AQA, ASQ, ACQ, and the
//    doorbells from 0x1000, stride 4;
//  - CC.EN 0 -> 1 checks the admin queue (3.5.1) and sets CSTS.RDY; CC.EN 1 -> 0 is a
//    controller reset (3.7.2): every queue deleted, every outstanding command dropped (never
//    completed, never a DMA again); CC.SHN completes a shutdown at once (3.6.1);
//  - commands fetched by DMA through the driver's mapped buffers when a tail doorbell is
//    written; admin: Identify CNS 00h/01h/02h, Create/Delete I/O CQ/SQ, Get/Set Features
//    (Number of Queues), Abort, Asynchronous Event Request (never completed); I/O: Read,
//    Write, Flush on namespaces kept in memory; completions by DMA with the phase tag,
//    interrupts through DeviceModel::fire for CQs with IEN.
//
//   pcie::testing::NvmeModel model({.namespaces = {{.id = 1, .blocks = 4096, .block_shift = 12}}});
//   auto driver = MyNvmeDriver::open(model.open());           // a std::unique_ptr<pcie::Device>
//   model.hold_next_io(1);                                    // the next I/O command hangs ...
//   EXPECT_FALSE(driver->read(0, 1));                         // ... and the driver times out
//   EXPECT_EQ(model.release(), 0u);                           // the driver's reset dropped it
//   EXPECT_TRUE(model.violations().empty());
//
// Completion policies let a test reorder completions (reverse or seeded random order within
// a window of outstanding commands) or hold commands (the next N I/O commands, or those a
// predicate picks) until it releases them: a timeout, and what the driver does after it.
//
// Thread-safe: a driver may poll or ring doorbells in one thread while the test releases
// held commands or reads violations in another; the model's lock is held while it works a
// command (its DMA included), never while the DeviceModel calls back into it. Devices it
// opened may outlive the model: its registers then only store what is written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/device.h"
#include "pcie/error.h"
#include "pcie/testing/device_model.h"
#include "pcie/testing/register_model.h"

namespace pcie::testing {

// The rule names that begin each violation's text ("CID reused while outstanding: SQ 1 CID
// 7 ... (NVMe 2.0, 4.2.1)"), for tests that provoke one on purpose.
namespace nvme_rule {
// A command submitted with the CID of a command still outstanding on the same SQ (4.2.1).
inline constexpr std::string_view kCidReused = "CID reused while outstanding";
// Data that runs past PRP1's memory page with PRP2 0: the rest would go to bus address 0
// (4.1.1).
inline constexpr std::string_view kPrp2Missing = "PRP2 missing";
// PRP1 not dword-aligned, PRP2 (as the second page) or a PRP list entry not page-aligned,
// or a PRP list pointer not qword-aligned (4.1.1): the command fails with Invalid PRP
// Offset.
inline constexpr std::string_view kPrpMisaligned = "PRP entry misaligned";
// A command that waited (held, or kept back by the completion policy) whose PRP list was
// rewritten between fetch and execution: its list memory reused while it was outstanding
// (4.1.1).
inline constexpr std::string_view kPrpListChanged = "PRP list changed while outstanding";
// Two outstanding commands whose PRP lists overlap in memory (4.1.1).
inline constexpr std::string_view kPrpListShared = "PRP list shared by outstanding commands";
// Two outstanding commands whose data buffers overlap while the controller writes one of
// them (a Read or an Identify) (4.1.1).
inline constexpr std::string_view kDataShared = "data buffer shared by outstanding commands";
// A command's data or PRP list lying in the memory of an existing SQ or CQ (4.1.1).
inline constexpr std::string_view kDataOverlapsQueue = "data buffer overlaps a live queue";
// A controller DMA to or from memory not mapped for it in that direction (an IOMMU fault,
// DeviceModel::dma_read or dma_write's not_found): the command fails with Data Transfer
// Error, or, for an SQ fetch or a completion post, the controller with CSTS.CFS.
inline constexpr std::string_view kDmaFault = "DMA fault";
// A controller DMA while Bus Master Enable is off: the driver cleared it (or never set it)
// with work outstanding (PCI Local Bus 3.0, 6.2.2). It fails as a DMA fault does.
inline constexpr std::string_view kDmaWithoutBusMaster = "DMA without bus mastering";
// A doorbell written while the controller is disabled (CSTS.RDY 0); ignored.
inline constexpr std::string_view kDoorbellWhileDisabled = "doorbell while disabled";
// A doorbell written after a shutdown completed (CSTS.SHST), before a reset (3.6.1);
// ignored.
inline constexpr std::string_view kDoorbellAfterShutdown = "doorbell after shutdown";
// A doorbell of a queue that does not exist (the Invalid Doorbell Register error, 5.2);
// ignored.
inline constexpr std::string_view kInvalidDoorbell = "invalid doorbell register";
// A tail or head doorbell value not below the queue's size (the Invalid Doorbell Write
// Value error, 5.2); ignored.
inline constexpr std::string_view kInvalidDoorbellValue = "invalid doorbell write value";
// A tail doorbell that puts more than size - 1 entries in an SQ, counted from the SQ Head
// Pointer of the last completion posted: it overwrote entries the controller may not have
// fetched (4.1.1). The model still fetches them.
inline constexpr std::string_view kSqOverflow = "submission queue overflow";
// A CQ head doorbell past the last completion the controller posted (4.1.1); ignored.
inline constexpr std::string_view kCqHeadBeyondTail = "CQ head beyond tail";
// A DMA buffer unmapped while it holds a live SQ or CQ, or the data or PRP list of an
// outstanding command (3.7.2): disable the controller (CC.EN 0) or delete the queue first.
inline constexpr std::string_view kLiveMemoryUnmapped = "live memory unmapped";
// A 64-bit write to a register other than CAP, ASQ and ACQ, a doorbell write other than 32
// bits, or a 64-bit read at VS, INTMC, 18h, CSTS or NSSR, which spans two 32-bit registers
// (3.1.4). A write of the wrong width is ignored. 8- and 16-bit accesses never reach the
// model: the Region refuses them (width_not_allowed).
inline constexpr std::string_view kRegisterWidth = "register access width";
// CC.EN set with an admin queue of fewer than 2 entries (AQA), ASQ or ACQ not page-aligned,
// or CC.MPS, CSS or AMS other than 4 KiB, the NVM command set and round robin (3.5.1): the
// controller sets CSTS.CFS instead of CSTS.RDY.
inline constexpr std::string_view kInvalidEnable = "invalid admin queue or configuration at enable";
// CC.CSS, MPS, AMS, IOSQES or IOCQES changed while CC.EN is 1 (3.1.4.5): the change is
// not applied.
inline constexpr std::string_view kConfigurationWhileEnabled = "CC changed while enabled";
}  // namespace nvme_rule

// The layouts the model implements, for tests that play the host by hand: the same
// definitions the model decodes with (NVMe 2.0 sections cited).
namespace nvme {
inline constexpr std::uint64_t kPage = 4096;  // CAP.MPSMIN = MPSMAX = 0: the memory page is 4 KiB

// Controller registers (3.1.4); the doorbells from kDoorbells, stride 4 (CAP.DSTRD 0): SQ y's
// tail at kDoorbells + 8y, CQ y's head 4 bytes after (3.1.4.21).

inline constexpr std::uint64_t kCap = 0x00,          // CAP: 64-bit, read-only (MQES, CQR, TO, CSS)
                               kVersion = 0x08,      // VS, Version: 1.4.0 (0x00010400), read-only
                               kCc = 0x14,           // CC, Controller Configuration (3.1.4.5)
                               kCsts = 0x1c,         // CSTS, Controller Status (3.1.4.6): read-only
                               kNssr = 0x20,         // NSSR, NVM Subsystem Reset: not supported
                               kAqa = 0x24,          // AQA, Admin Queue Attributes: ASQS, ACQS
                               kAsq = 0x28,          // ASQ, Admin SQ Base Address: 64-bit
                               kAcq = 0x30,          // ACQ, Admin CQ Base Address: 64-bit
                               kDoorbells = 0x1000;  // SQ 0 tail doorbell, the first of them

// Admin opcodes (5), and the NVM command set's I/O opcodes.

inline constexpr std::uint8_t kDeleteSq = 0x00,     // Delete I/O Submission Queue (5.7)
                              kCreateSq = 0x01,     // Create I/O Submission Queue (5.5)
                              kDeleteCq = 0x04,     // Delete I/O Completion Queue (5.6)
                              kCreateCq = 0x05,     // Create I/O Completion Queue (5.4)
                              kIdentify = 0x06,     // Identify (5.17): CNS 00h, 01h and 02h
                              kAbort = 0x08,        // Abort (5.1)
                              kSetFeatures = 0x09,  // Set Features: Number of Queues (07h) only
                              kGetFeatures = 0x0a,  // Get Features: Number of Queues (07h) only
                              kAsyncEvent = 0x0c;   // Asynchronous Event Request (5.2)
inline constexpr std::uint8_t kFlush = 0x00,  // Flush: nothing is cached, it checks the NSID only
                              kWrite = 0x01,  // Write: host memory to the namespace
                              kRead = 0x02;   // Read: the namespace to host memory

// A submission queue entry (4.2) and a completion queue entry (4.2.4), as they lie in memory.
struct Sqe {
  std::uint8_t opcode = 0;  // an admin or I/O opcode (kIdentify, kRead, ...): CDW0 bits 7:0
  std::uint8_t flags = 0;  // FUSE in bits 1:0, PSDT in 7:6
  std::uint16_t cid = 0;  // Command Identifier: unique among the SQ's outstanding commands
  std::uint32_t nsid = 0;  // Namespace Identifier (CDW1); Identify CNS 02h lists the ids above it
  // Command dwords 2 and 3, command-specific: no command the model implements uses them.
  std::uint32_t cdw2 = 0, cdw3 = 0;  // CDW3: unused, as CDW2
  std::uint64_t metadata = 0;  // MPTR, the metadata pointer: unused (no namespace has metadata)
  // The data pointer as PRP entries (4.1.1): PRP1 the data's first memory page (at any
  // dword-aligned offset); PRP2 its second page, or the address of a PRP list when the data
  // spans more than two pages. Queue creation: PRP1 is the queue's page-aligned base.
  std::uint64_t prp1 = 0, prp2 = 0;  // PRP2: the second page or a PRP list (see prp1)
  // Command dwords 10 to 15, command-specific. As the model reads them: Read and Write,
  // SLBA in cdw10 (low) and cdw11 (high), NLB (blocks - 1) in cdw12 bits 15:0. Identify,
  // CNS in cdw10 bits 7:0. Create I/O CQ or SQ, QID in cdw10 bits 15:0 and QSIZE
  // (entries - 1) in 31:16, PC in cdw11 bit 0, and for a CQ IEN in bit 1 and IV in 31:16,
  // for an SQ CQID in 31:16. Delete I/O CQ or SQ, QID in cdw10 bits 15:0. Get/Set
  // Features, FID in cdw10 bits 7:0 (07h, Number of Queues, the only one). Abort, SQID in
  // cdw10 bits 15:0 and CID in 31:16.
  std::uint32_t cdw10 = 0,  // SLBA bits 31:0, CNS, QID and QSIZE, FID, or SQID and CID
                cdw11 = 0,  // SLBA bits 63:32, or PC, IEN, IV or CQID
                cdw12 = 0,  // NLB (blocks - 1) in bits 15:0
                cdw13 = 0,  // not used by the model
                cdw14 = 0,  // not used by the model
                cdw15 = 0;  // not used by the model
};
// A completion queue entry, 16 bytes: the controller writes its status word (with the phase
// tag) last.
struct Cqe {
  // DW0, command-specific: Get/Set Features Number of Queues, the queues allocated (NCQA in
  // 31:16, NSQA in 15:0, both 0-based); Abort, bit 0 set when no command was aborted.
  std::uint32_t result = 0;
  std::uint32_t reserved = 0;  // DW1: 0 in every entry the model posts
  std::uint16_t sq_head = 0;   // SQ Head Pointer: the SQ's entries before it are free again
  std::uint16_t sq_id = 0;     // SQ Identifier: the queue the command came from
  std::uint16_t cid = 0;       // Command Identifier of the completed command
  std::uint16_t status = 0;  // phase tag in bit 0, then SC in bits 8:1, SCT in 11:9, DNR in 15
};
static_assert(sizeof(Sqe) == 64 && sizeof(Cqe) == 16);
}  // namespace nvme

// A namespace kept in memory: `blocks` blocks of 1 << block_shift bytes (LBADS 9..16), all
// zero at first. Its id must be 1 or more, and unique.
struct NvmeNamespace {
  std::uint32_t id = 1;         // NSID: 1 or more, unique among the namespaces
  std::uint64_t blocks = 2048;  // size in logical blocks (Identify Namespace NSZE, NCAP, NUSE)
  unsigned block_shift = 9;     // log2 of the block size (LBADS): 9..16, 512 B to 64 KiB
};

// The controller an NvmeModel models: its fake device, its limits (CAP, Identify
// Controller), its namespaces and what Identify Controller says about it. Values out of
// range are clamped (NvmeModel's constructor).
struct NvmeModelOptions {
  // The fake device under the controller (MSI-X offered, as QEMU's nvme does).
  DeviceModelOptions device{.msix_vectors = 8};
  std::uint32_t max_queue_entries = 256;  // CAP.MQES + 1, 2..65536
  std::uint16_t max_io_queues = 16;       // I/O queue identifiers 1..max_io_queues
  std::uint8_t mdts = 5;                  // MDTS: transfers up to 4 KiB << mdts; 0: no limit
  std::uint8_t timeout_500ms = 1;         // CAP.TO
  // The active namespaces; none is a controller without namespaces (QEMU's nvme without a
  // drive), which still answers Identify Controller and CNS 02h (an empty list).
  std::vector<NvmeNamespace> namespaces{NvmeNamespace{}};
  // Identify Controller NN: namespace ids 1..NN are valid (inactive ones answer Identify
  // with zeros and I/O with Invalid Field), others invalid. 0: the largest id configured.
  std::uint32_t namespace_count = 0;
  std::uint16_t vendor_id = 0x1b36;  // Identify Controller VID and SSVID (default: Red Hat's)
  // Identify Controller SN, MN and FR: ASCII, padded with spaces to 20, 40 and 8 bytes and
  // cut to them.
  std::string serial = "STRICT0001";
  std::string model = "pcie strict NVMe model";  // MN (40 bytes), as serial
  std::string firmware = "1.0";                  // FR (8 bytes), as serial
};

// How the model completes the I/O commands it does not hold. Admin commands always complete
// at once, in order.
enum class NvmeCompletionOrder {
  in_order,  // each command completes when its tail doorbell is written, in order
  reverse,   // newest first, keeping up to `window` commands back
  random,    // in a seeded random order, keeping up to `window` commands back
};
// How the model completes the I/O commands it does not hold
// (NvmeModel::set_completion_policy).
struct NvmeCompletionPolicy {
  NvmeCompletionOrder order = NvmeCompletionOrder::in_order;  // in_order unless a test asks
  // reverse/random: at each doorbell write (SQ tail or CQ head) and each CSTS read, the
  // model completes outstanding commands until at most min(window, outstanding - 1) are
  // left, so every look of the driver's makes progress and none waits for ever.
  unsigned window = 4;
  std::uint64_t seed = 1;  // random: the seed of the order (one seed, one order)
};

// A command as fetched, for hold predicates and the completion log.
struct NvmeCommandInfo {
  std::uint16_t sq_id = 0;         // the SQ it was fetched from (0: the admin queue)
  std::uint16_t command_id = 0;    // its CID
  std::uint8_t opcode = 0;         // an admin or an I/O opcode, as sq_id says
  std::uint32_t namespace_id = 0;  // its NSID
  std::uint64_t lba = 0;     // Read/Write: SLBA
  std::uint32_t blocks = 0;  // Read/Write: NLB + 1
  bool admin() const { return sq_id == 0; }  // whether it came from the admin SQ (SQ 0)
};

// A completion the controller posted (or queued for a full CQ).
struct NvmeCompletionRecord {
  NvmeCommandInfo command;  // the command completed
  std::uint8_t status_code = 0;  // SC
  std::uint8_t status_type = 0;  // SCT
  bool do_not_retry = false;     // DNR
  std::uint32_t result = 0;      // DW0
  // Whether it completed successfully (SCT 0, SC 0: Successful Completion).
  bool ok() const { return status_code == 0 && status_type == 0; }
};

// A strict NVMe controller on a fake device, as the file comment describes it: the test
// opens a Device for its driver, chooses how commands complete, and reads back violations,
// completions and the namespaces' data.
class NvmeModel {
 public:
  // A controller with `options`' namespaces and limits, disabled (CSTS.RDY 0). Options out
  // of range are clamped (MQES + 1 to 2..65536, LBADS to 9..16); namespaces with id 0 or a
  // repeated id are left out.
  explicit NvmeModel(const NvmeModelOptions& options = {});
  // Devices it opened may outlive the model: BAR0 then only stores what is written, and
  // unmaps are no longer checked.
  ~NvmeModel();
  // Not copyable (nor movable): BAR0's hooks belong to this model.
  NvmeModel(const NvmeModel&) = delete;
  // Not assignable, as above.
  NvmeModel& operator=(const NvmeModel&) = delete;

  // The fake device and its BAR0 register model, for the test's own checks.
  DeviceModel& device();
  // BAR0's register model (16 KiB, 32- and 64-bit accesses): its get() reads a register
  // without the side effects a driver's read has, its log() shows the driver's accesses.
  RegisterModel& bar0();
  // A Device over the model for the driver to own (DeviceModel::open()).
  std::unique_ptr<Device> open() const;

  // ---- Completion policy ----

  // Replaces the completion policy (in_order at first) and seeds its random order with
  // policy.seed. Commands kept back already stay outstanding until the new policy's next
  // step (a doorbell write or a CSTS read) or complete_pending() completes them.
  void set_completion_policy(const NvmeCompletionPolicy& policy);
  // Completes every command the policy kept back; returns how many.
  std::size_t complete_pending();
  // Holds the next `count` I/O commands fetched (replacing an earlier count; 0 stops).
  void hold_next_io(unsigned count);
  // Holds every command (admin ones too) for which `predicate` is true; an empty function
  // stops. The predicate runs under the model's lock: it must not call the model.
  void hold_if(std::function<bool(const NvmeCommandInfo&)> predicate);
  // The commands held now, oldest first (a reset or SQ deletion drops them from this list).
  std::vector<NvmeCommandInfo> held() const;
  // Executes and completes up to `count` held commands, oldest first; returns how many ran.
  // A command the controller dropped meanwhile (reset, shutdown, its SQ deleted) is not
  // held any more: it is neither executed nor completed.
  std::size_t release(std::size_t count = std::numeric_limits<std::size_t>::max());

  // ---- What happened ----

  // Every protocol violation so far, in order: "rule: what (NVMe 2.0, section)", the rule
  // one of nvme_rule's names. A correct driver leaves it empty.
  std::vector<std::string> violations() const;
  // Empties violations(), after a violation provoked on purpose, say.
  void clear_violations();
  // Every completion the controller posted, in order.
  std::vector<NvmeCompletionRecord> completions() const;
  // Controller resets (CC.EN 1 -> 0), commands dropped by resets, shutdowns and SQ
  // deletions, and whether CSTS.RDY is 1.
  std::uint64_t resets() const;
  // Commands fetched and then dropped without a completion: by a reset, a shutdown, the
  // deletion of their SQ, or the controller's fatal status (CSTS.CFS).
  std::uint64_t dropped() const;
  // Whether CSTS.RDY is 1: enabled with a valid admin queue and not reset since (a
  // completed shutdown leaves it 1).
  bool ready() const;
  // I/O submission queues that exist now.
  std::size_t io_submission_queues() const;

  // The namespace's data, for the test's side: `count` blocks from `lba`, or `data` (whole
  // blocks) written there. not_found for a namespace not configured, out_of_range for
  // blocks past its end, invalid_argument for data that is not whole blocks.
  Result<std::vector<std::byte>> read_blocks(std::uint32_t namespace_id, std::uint64_t lba,
                                             std::uint64_t count) const;
  // Writes `data`, whole blocks, to the namespace from block `lba`; on an error (as above)
  // nothing is written.
  Result<void> write_blocks(std::uint32_t namespace_id, std::uint64_t lba, std::span<const std::byte> data);

  struct Core;  // shared with the register and unmap hooks (weakly: they outlive the model)

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace pcie::testing
