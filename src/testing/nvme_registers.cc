// The NVMe model's controller registers (NVMe 2.0, 3.1.4): access widths, CC and the
// transitions it drives (enable with its admin queue checks, reset, shutdown), and the
// controller fatal status a failed fetch or completion leaves.
#include <fmt/format.h>

#include "src/testing/nvme_core.h"

namespace pcie::testing {

using namespace nvme;

namespace {
bool is_64bit_register(std::uint64_t offset) { return offset == kCap || offset == kAsq || offset == kAcq; }
}  // namespace

std::uint64_t NvmeModel::Core::register_write(const RegisterAccess& access) {
  if (access.offset >= kDoorbells) return doorbell_write(access);
  if (access.width != Width::bits32 && !(access.width == Width::bits64 && is_64bit_register(access.offset))) {
    violation(nvme_rule::kRegisterWidth,
              fmt::format("a {}-bit write at 0x{:x}; registers take 32-bit accesses, CAP/ASQ/ACQ also 64-bit",
                          bit_count(access.width), access.offset),
              "NVMe 2.0, 3.1.4");
    return bar.get(access.width, access.offset);  // ignored
  }
  switch (access.offset) {
    case kCc: return write_configuration(static_cast<std::uint32_t>(access.value));
    case kCap:
    case kCap + 4:
    case kVersion:
    case kCsts:
    case kNssr:  // CAP.NSSRS 0: no NVM subsystem reset
      return bar.get(access.width, access.offset);
    default: return access.value;  // AQA, ASQ, ACQ, INTMS, INTMC: stored
  }
}

void NvmeModel::Core::register_read(const RegisterAccess& access) {
  if (access.width == Width::bits64 && !is_64bit_register(access.offset)) {
    violation(nvme_rule::kRegisterWidth,
              fmt::format("a 64-bit read at 0x{:x} spans two 32-bit registers", access.offset), "NVMe 2.0, 3.1.4");
  }
  // A driver polling CSTS for a fatal status is looking for progress: commands the
  // completion policy kept back come out now.
  if (access.offset == kCsts) tick();
}

std::uint64_t NvmeModel::Core::write_configuration(std::uint32_t value) {
  const std::uint32_t old = bar.get32(kCc);
  const bool was_enabled = (old & kCcEnable) != 0;
  const bool enabling = (value & kCcEnable) != 0;
  if (!enabling) {
    if (was_enabled) reset();
    return value;
  }
  if (!was_enabled) {
    enable(value);
    return value;
  }
  if (((old ^ value) & kCcFixed) != 0) {
    violation(nvme_rule::kConfigurationWhileEnabled,
              fmt::format("CC 0x{:x} -> 0x{:x} changes CSS/MPS/AMS/IOSQES/IOCQES while CC.EN is 1; kept", old, value),
              "NVMe 2.0, 3.1.4.5");
    value = (value & ~kCcFixed) | (old & kCcFixed);
  }
  if ((value & kCcShutdown) != 0 && (old & kCcShutdown) == 0 && enabled && !shut_down) shutdown();
  return value;
}

std::string NvmeModel::Core::enable_problem(std::uint32_t configuration) const {
  const std::uint32_t aqa = bar.get32(kAqa);
  const std::uint64_t asq = bar.get64(kAsq);
  const std::uint64_t acq = bar.get64(kAcq);
  if ((aqa & 0xfff) == 0 || ((aqa >> 16) & 0xfff) == 0) {
    return fmt::format("AQA 0x{:x}: each admin queue needs at least 2 entries (ASQS, ACQS are 0-based)", aqa);
  }
  if (asq % kPage != 0 || acq % kPage != 0) {
    return fmt::format("ASQ 0x{:x} / ACQ 0x{:x}: the admin queues must be page-aligned", asq, acq);
  }
  if (((configuration >> 7) & 0xf) != 0) return "CC.MPS is outside CAP.MPSMIN..MPSMAX (4 KiB only)";
  if (((configuration >> 4) & 0x7) != 0) return "CC.CSS is not the NVM command set";
  if (((configuration >> 11) & 0x7) != 0) return "CC.AMS is not round robin";
  return "";
}

// CC.EN 0 -> 1 (3.5.1): with a bad admin queue or configuration a real controller does not
// become ready; this one says so at once with CSTS.CFS, so that the driver fails fast.
void NvmeModel::Core::enable(std::uint32_t configuration) {
  if (const std::string problem = enable_problem(configuration); !problem.empty()) {
    violation(nvme_rule::kInvalidEnable, problem, "NVMe 2.0, 3.5.1");
    failed = true;
    bar.set32(kCsts, kCstsFatal);
    return;
  }
  const std::uint32_t aqa = bar.get32(kAqa);
  submission_queues[0] = {.id = 0, .cq_id = 0, .base = bar.get64(kAsq), .size = (aqa & 0xfff) + 1};
  completion_queues[0] = {.id = 0, .base = bar.get64(kAcq), .size = ((aqa >> 16) & 0xfff) + 1, .interrupts = true,
                          .submission_queues = 1};
  enabled = true;
  bar.set32(kCsts, kCstsReady);
}

// CC.EN 1 -> 0 (3.7.2): queues deleted, outstanding commands dropped, CSTS cleared.
void NvmeModel::Core::reset() {
  dropped += outstanding.size();
  outstanding.clear();
  submission_queues.clear();
  completion_queues.clear();
  enabled = shut_down = failed = false;
  bar.set32(kCsts, 0);
  ++resets;
}

// CC.SHN (3.6.1): done at once. Commands still outstanding are dropped, as after an abrupt
// shutdown (the driver should have waited for them), and no queue is touched again until a
// reset.
void NvmeModel::Core::shutdown() {
  dropped += outstanding.size();
  outstanding.clear();
  submission_queues.clear();
  completion_queues.clear();
  shut_down = true;
  bar.set32(kCsts, (bar.get32(kCsts) & ~(3u << 2)) | kCstsShutdownComplete);
}

// A controller that cannot fetch a command or post a completion stops: CSTS.CFS (3.1.4.6).
void NvmeModel::Core::fail() {
  dropped += outstanding.size();
  outstanding.clear();
  failed = true;
  bar.set32(kCsts, bar.get32(kCsts) | kCstsFatal);
}

}  // namespace pcie::testing
