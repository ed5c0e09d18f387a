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
inline constexpr std::string_view kCidReused = "CID reused while outstanding";
inline constexpr std::string_view kPrp2Missing = "PRP2 missing";
inline constexpr std::string_view kPrpMisaligned = "PRP entry misaligned";
inline constexpr std::string_view kPrpListChanged = "PRP list changed while outstanding";
inline constexpr std::string_view kPrpListShared = "PRP list shared by outstanding commands";
inline constexpr std::string_view kDataShared = "data buffer shared by outstanding commands";
inline constexpr std::string_view kDataOverlapsQueue = "data buffer overlaps a live queue";
inline constexpr std::string_view kDmaFault = "DMA fault";
inline constexpr std::string_view kDmaWithoutBusMaster = "DMA without bus mastering";
inline constexpr std::string_view kDoorbellWhileDisabled = "doorbell while disabled";
inline constexpr std::string_view kDoorbellAfterShutdown = "doorbell after shutdown";
inline constexpr std::string_view kInvalidDoorbell = "invalid doorbell register";
inline constexpr std::string_view kInvalidDoorbellValue = "invalid doorbell write value";
inline constexpr std::string_view kSqOverflow = "submission queue overflow";
inline constexpr std::string_view kCqHeadBeyondTail = "CQ head beyond tail";
inline constexpr std::string_view kLiveMemoryUnmapped = "live memory unmapped";
inline constexpr std::string_view kRegisterWidth = "register access width";
inline constexpr std::string_view kInvalidEnable = "invalid admin queue or configuration at enable";
inline constexpr std::string_view kConfigurationWhileEnabled = "CC changed while enabled";
}  // namespace nvme_rule

// The layouts the model implements, for tests that play the host by hand: the same
// definitions the model decodes with (NVMe 2.0 sections cited).
namespace nvme {
inline constexpr std::uint64_t kPage = 4096;  // CAP.MPSMIN = MPSMAX = 0: the memory page is 4 KiB

// Controller registers (3.1.4); the doorbells from kDoorbells, stride 4 (CAP.DSTRD 0): SQ y's
// tail at kDoorbells + 8y, CQ y's head 4 bytes after (3.1.4.21).
inline constexpr std::uint64_t kCap = 0x00, kVersion = 0x08, kCc = 0x14, kCsts = 0x1c, kNssr = 0x20, kAqa = 0x24,
                               kAsq = 0x28, kAcq = 0x30, kDoorbells = 0x1000;

// Admin opcodes (5), and the NVM command set's I/O opcodes.
inline constexpr std::uint8_t kDeleteSq = 0x00, kCreateSq = 0x01, kDeleteCq = 0x04, kCreateCq = 0x05,
                              kIdentify = 0x06, kAbort = 0x08, kSetFeatures = 0x09, kGetFeatures = 0x0a,
                              kAsyncEvent = 0x0c;
inline constexpr std::uint8_t kFlush = 0x00, kWrite = 0x01, kRead = 0x02;

// A submission queue entry (4.2) and a completion queue entry (4.2.4), as they lie in memory.
struct Sqe {
  std::uint8_t opcode = 0;
  std::uint8_t flags = 0;  // FUSE in bits 1:0, PSDT in 7:6
  std::uint16_t cid = 0;
  std::uint32_t nsid = 0;
  std::uint32_t cdw2 = 0, cdw3 = 0;
  std::uint64_t metadata = 0;
  std::uint64_t prp1 = 0, prp2 = 0;
  std::uint32_t cdw10 = 0, cdw11 = 0, cdw12 = 0, cdw13 = 0, cdw14 = 0, cdw15 = 0;
};
struct Cqe {
  std::uint32_t result = 0;
  std::uint32_t reserved = 0;
  std::uint16_t sq_head = 0;
  std::uint16_t sq_id = 0;
  std::uint16_t cid = 0;
  std::uint16_t status = 0;  // phase tag in bit 0, then SC in bits 8:1, SCT in 11:9, DNR in 15
};
static_assert(sizeof(Sqe) == 64 && sizeof(Cqe) == 16);
}  // namespace nvme

// A namespace kept in memory: `blocks` blocks of 1 << block_shift bytes (LBADS 9..16), all
// zero at first. Its id must be 1 or more, and unique.
struct NvmeNamespace {
  std::uint32_t id = 1;
  std::uint64_t blocks = 2048;
  unsigned block_shift = 9;
};

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
  std::uint16_t vendor_id = 0x1b36;
  std::string serial = "STRICT0001";
  std::string model = "pcie strict NVMe model";
  std::string firmware = "1.0";
};

// How the model completes the I/O commands it does not hold. Admin commands always complete
// at once, in order.
enum class NvmeCompletionOrder {
  in_order,  // each command completes when its tail doorbell is written, in order
  reverse,   // newest first, keeping up to `window` commands back
  random,    // in a seeded random order, keeping up to `window` commands back
};
struct NvmeCompletionPolicy {
  NvmeCompletionOrder order = NvmeCompletionOrder::in_order;
  // reverse/random: at each doorbell write (SQ tail or CQ head) and each CSTS read, the
  // model completes outstanding commands until at most min(window, outstanding - 1) are
  // left, so every look of the driver's makes progress and none waits for ever.
  unsigned window = 4;
  std::uint64_t seed = 1;
};

// A command as fetched, for hold predicates and the completion log.
struct NvmeCommandInfo {
  std::uint16_t sq_id = 0;
  std::uint16_t command_id = 0;
  std::uint8_t opcode = 0;
  std::uint32_t namespace_id = 0;
  std::uint64_t lba = 0;     // Read/Write: SLBA
  std::uint32_t blocks = 0;  // Read/Write: NLB + 1
  bool admin() const { return sq_id == 0; }
};

// A completion the controller posted (or queued for a full CQ).
struct NvmeCompletionRecord {
  NvmeCommandInfo command;
  std::uint8_t status_code = 0;  // SC
  std::uint8_t status_type = 0;  // SCT
  bool do_not_retry = false;     // DNR
  std::uint32_t result = 0;      // DW0
  bool ok() const { return status_code == 0 && status_type == 0; }
};

class NvmeModel {
 public:
  // A controller with `options`' namespaces and limits, disabled (CSTS.RDY 0). Options out
  // of range are clamped (MQES + 1 to 2..65536, LBADS to 9..16); namespaces with id 0 or a
  // repeated id are left out.
  explicit NvmeModel(const NvmeModelOptions& options = {});
  ~NvmeModel();
  NvmeModel(const NvmeModel&) = delete;
  NvmeModel& operator=(const NvmeModel&) = delete;

  // The fake device and its BAR0 register model, for the test's own checks.
  DeviceModel& device();
  RegisterModel& bar0();
  // A Device over the model for the driver to own (DeviceModel::open()).
  std::unique_ptr<Device> open() const;

  // ---- Completion policy ----
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
  void clear_violations();
  // Every completion the controller posted, in order.
  std::vector<NvmeCompletionRecord> completions() const;
  // Controller resets (CC.EN 1 -> 0), commands dropped by resets, shutdowns and SQ
  // deletions, and whether CSTS.RDY is 1.
  std::uint64_t resets() const;
  std::uint64_t dropped() const;
  bool ready() const;
  // I/O submission queues that exist now.
  std::size_t io_submission_queues() const;

  // The namespace's data, for the test's side: `count` blocks from `lba`, or `data` (whole
  // blocks) written there. not_found for a namespace not configured, out_of_range for
  // blocks past its end, invalid_argument for data that is not whole blocks.
  Result<std::vector<std::byte>> read_blocks(std::uint32_t namespace_id, std::uint64_t lba,
                                             std::uint64_t count) const;
  Result<void> write_blocks(std::uint32_t namespace_id, std::uint64_t lba, std::span<const std::byte> data);

  struct Core;  // shared with the register and unmap hooks (weakly: they outlive the model)

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace pcie::testing
