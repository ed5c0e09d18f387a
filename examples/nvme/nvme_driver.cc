#include "examples/nvme/nvme_driver.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>

namespace examples {

using pcie::Errc;
using pcie::make_error;
using pcie::Result;

namespace nvme {
namespace {
// Admin and I/O opcodes (5, 7).
constexpr std::uint8_t kCreateIoSq = 0x01, kCreateIoCq = 0x05, kIdentify = 0x06, kDeleteIoSq = 0x00,
                       kDeleteIoCq = 0x04;
constexpr std::uint64_t kPage = 4096;  // CC.MPS = 0: the memory page size is 4 KiB
constexpr std::uint16_t kAdminDepth = 32;
}  // namespace

std::string describe_status(std::uint16_t status) {
  const unsigned code = (status >> 1) & 0xff;
  const unsigned type = (status >> 9) & 0x7;
  const char* what = "unknown status";
  if (type == 0) {
    switch (code) {
      case 0x00: what = "Successful Completion"; break;
      case 0x01: what = "Invalid Command Opcode"; break;
      case 0x02: what = "Invalid Field in Command"; break;
      case 0x04: what = "Data Transfer Error"; break;
      case 0x06: what = "Internal Error"; break;
      case 0x0b: what = "Invalid Namespace or Format"; break;
      case 0x12: what = "Invalid Use of Controller Memory Buffer"; break;
      case 0x80: what = "LBA Out of Range"; break;
      case 0x81: what = "Capacity Exceeded"; break;
      case 0x82: what = "Namespace Not Ready"; break;
    }
  } else if (type == 1) {
    switch (code) {
      case 0x01: what = "Invalid Queue Identifier"; break;
      case 0x02: what = "Invalid Queue Size"; break;
      case 0x08: what = "Invalid Interrupt Vector"; break;
    }
  } else if (type == 2) {
    what = "Media and Data Integrity Error";
  }
  char text[96];
  std::snprintf(text, sizeof text, "%s (SCT 0x%x, SC 0x%02x%s)", what, type, code, status & 0x8000 ? ", DNR" : "");
  return text;
}
}  // namespace nvme

namespace {
std::string trimmed_ascii(const std::byte* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  for (char& c : text) c = (c >= 0x20 && c < 0x7f) ? c : '?';
  while (!text.empty() && (text.back() == ' ' || text.back() == '\0')) text.pop_back();
  return text;
}
template <class T>
T little_endian_at(const std::byte* data, std::size_t offset) {
  T value{};
  std::memcpy(&value, data + offset, sizeof value);
  return value;
}
}  // namespace

// Registers through the checked Region accessors: any backend's BAR, or a register model in
// unit tests (pcie/testing/nvme_model.h). A read that fails reads all ones, as a removed
// device's would, which controller_alive() reports as device_removed.
std::uint32_t NvmeDriver::read32(std::uint64_t offset) const {
  return static_cast<std::uint32_t>(bar0_->read(pcie::Width::bits32, offset).value_or(0xffffffffu));
}

void NvmeDriver::write32(std::uint64_t offset, std::uint32_t value) const {
  (void)bar0_->write(pcie::Width::bits32, offset, value);  // a refused write shows in the next CSTS read
}

void NvmeDriver::write64(std::uint64_t offset, std::uint64_t value) const {
  // Controllers take 64-bit registers as two 32-bit halves, low first (3.1.4: the kernel's lo_hi_writeq).
  (void)bar0_->write64_halves(offset, value, pcie::HalfOrder::low_first);
}

Result<pcie::DmaPages> NvmeDriver::allocate_pages(std::size_t pages) const {
  // NVMe needs no contiguity beyond a memory page for data and PRP lists (4.1.1).
  return pcie::DmaPages::allocate(*allocator_, pages, nvme::kPage);
}

pcie::Error NvmeDriver::controller_error(const std::string& operation, const std::string& reason) const {
  char status[32];
  std::snprintf(status, sizeof status, " (CSTS 0x%x)", read32(nvme::kStatus));
  return make_error(Errc::io_error, operation, device_->bdf().to_string(), reason + status);
}

Result<void> NvmeDriver::controller_alive(const std::string& operation) const {
  const std::uint32_t status = read32(nvme::kStatus);
  if (status == ~0u) {
    // A removed controller (or one in reset) answers every read with all ones.
    return std::unexpected(make_error(Errc::device_removed, operation, device_->bdf().to_string(),
                                      "CSTS reads all ones: the controller is gone or in reset"));
  }
  // CSTS.CFS (bit 1): the controller failed; no point waiting for the timeout (3.1.4.6).
  if ((status & 0x2) != 0) return std::unexpected(controller_error(operation, "controller fatal status (CSTS.CFS)"));
  return {};
}

Result<void> NvmeDriver::wait_ready(bool ready, std::chrono::milliseconds timeout) {
  pcie::WaitOptions options{.timeout = timeout};
  options.stop_if = [this] { return controller_alive("wait for the controller"); };
  auto waited = pcie::wait_until([this] { return read32(nvme::kStatus); },
                                 [ready](std::uint32_t status) { return status != ~0u && (status & 1u) == (ready ? 1u : 0u); },
                                 options);
  if (!waited) return std::unexpected(waited.error());
  if (!waited->matched) {
    return std::unexpected(controller_error("wait for the controller",
                                            std::string("CSTS.RDY did not become ") + (ready ? "1" : "0") +
                                                " within CAP.TO"));
  }
  return {};
}

Result<NvmeDriver::QueuePair> NvmeDriver::make_queue_pair(std::uint16_t id, std::uint16_t depth) {
  // Each queue page-aligned and physically contiguous (CAP.CQR; 4.1.1), in its own buffer;
  // then a PRP list page per command identifier.
  QueuePair queue;
  queue.id = id;
  auto sq = allocator_->allocate(std::size_t{depth} * sizeof(nvme::Command), {.prefer = pcie::DmaBacking::pages});
  if (!sq) return std::unexpected(sq.error());
  auto cq = allocator_->allocate(std::size_t{depth} * sizeof(nvme::Completion), {.prefer = pcie::DmaBacking::pages});
  if (!cq) return std::unexpected(cq.error());
  queue.sq_memory = std::move(*sq);
  queue.cq_memory = std::move(*cq);
  auto lists = allocate_pages(depth - 1u);
  if (!lists) return std::unexpected(lists.error());
  queue.prp_lists = std::move(*lists);
  auto requests = pcie::RequestTracker<std::size_t>::create(depth - 1u);
  if (!requests) return std::unexpected(requests.error());
  queue.requests = std::move(*requests);
  if (auto rings = reset_rings(queue); !rings) return std::unexpected(rings.error());
  return queue;
}

// Fresh rings over the queue's memory (zeroed: phase 1 expected again) and no command
// outstanding: at creation, and after a controller reset ended every command (3.7.2).
Result<void> NvmeDriver::reset_rings(QueuePair& queue) {
  const std::uint16_t depth = static_cast<std::uint16_t>(queue.prp_lists.count() + 1);
  const std::uint64_t stride = 4ull << ((bar0_->read64_halves(nvme::kCap, pcie::HalfOrder::low_first).value_or(0) >> 32) & 0xf);
  auto sq_bell = pcie::Doorbell::in_array(*bar0_, nvme::kDoorbells, 2ull * queue.id, stride);
  if (!sq_bell) return std::unexpected(sq_bell.error());
  auto cq_bell = pcie::Doorbell::in_array(*bar0_, nvme::kDoorbells, 2ull * queue.id + 1, stride);
  if (!cq_bell) return std::unexpected(cq_bell.error());
  auto sq = pcie::SubmissionRing<nvme::Command>::create(queue.sq_memory.bytes(), depth, *sq_bell);
  if (!sq) return std::unexpected(sq.error());
  auto cq = pcie::CompletionRing<nvme::Completion>::create(queue.cq_memory.bytes(), depth, nvme::kPhaseTag, *cq_bell);
  if (!cq) return std::unexpected(cq.error());
  queue.sq = std::move(*sq);
  queue.cq = std::move(*cq);
  queue.requests.clear();
  return {};
}

// Reset (CC.EN 0, wait for CSTS.RDY 0), set the admin queue, enable (3.5.1).
Result<void> NvmeDriver::enable_controller() {
  write32(nvme::kConfiguration, 0);
  if (auto idle = wait_ready(false, ready_timeout_); !idle) return idle;
  if (auto rings = reset_rings(*admin_); !rings) return rings;
  const std::uint32_t admin_entries = admin_->sq.depth() - 1;
  write32(nvme::kAdminQueueAttributes, (admin_entries << 16) | admin_entries);
  write64(nvme::kAdminSubmissionQueue, admin_->sq_memory.bus_address().value);
  write64(nvme::kAdminCompletionQueue, admin_->cq_memory.bus_address().value);
  // IOCQES 16 bytes (4), IOSQES 64 bytes (6), MPS 4 KiB (0), NVM command set, enable.
  write32(nvme::kConfiguration, (4u << 20) | (6u << 16) | 1u);
  if (auto ready = wait_ready(true, ready_timeout_); !ready) return ready;
  enabled_ = true;
  // After a recovery's reset: the controller memory buffer as it was (a controller may
  // clear CMBMSC with the rest of its state).
  if (cmb_) return write_cmb_control(cmb_->bus_address | 3);
  return {};
}

// The I/O queue pair: its CQ first, then the SQ that posts to it (5.4, 5.5).
Result<void> NvmeDriver::create_io_queues() {
  io_queues_ = 0;
  if (auto rings = reset_rings(*io_); !rings) return rings;
  const std::uint32_t size_and_id = (std::uint32_t{io_->sq.depth()} - 1) << 16 | 1u;
  const std::uint32_t interrupt_flags = interrupts_ ? 0x2 : 0;  // IEN, vector 0
  nvme::Command command{.opcode = nvme::kCreateIoCq, .prp1 = io_->cq_memory.bus_address().value,
                        .cdw10 = size_and_id, .cdw11 = 0x1 | interrupt_flags};
  if (auto done = execute(*admin_, command); !done) return std::unexpected(done.error());
  io_queues_ = 1;
  command = {.opcode = nvme::kCreateIoSq, .prp1 = io_->sq_memory.bus_address().value, .cdw10 = size_and_id,
             .cdw11 = (1u << 16) | 0x1};
  if (auto done = execute(*admin_, command); !done) return std::unexpected(done.error());
  io_queues_ = 2;
  return {};
}

Result<NvmeDriver> NvmeDriver::open(std::unique_ptr<pcie::Device> device, const NvmeOptions& options) {
  NvmeDriver driver;
  driver.options_ = options;
  const std::string name = device->bdf().to_string();
  auto bar0 = device->open_bar(0);
  if (!bar0) return std::unexpected(bar0.error());
  if ((*bar0)->size() < 0x2000) {
    return std::unexpected(make_error(Errc::not_supported, "open NVMe", name, "BAR0 is smaller than 8 KiB"));
  }
  driver.device_ = std::move(device);
  driver.bar0_ = std::move(*bar0);
  // From here on, however open() ends, the destructor disables the controller (which ends
  // its DMA) and turns bus mastering off before any queue memory is freed.
  pcie::Region* regs = driver.bar0_.get();
  driver.quiesce_ = pcie::Quiescer(*driver.device_, {
      .stop = [regs] { return regs->write(pcie::Width::bits32, nvme::kConfiguration, 0); },
      .idle = [regs]() -> Result<bool> {
        auto status = regs->read(pcie::Width::bits32, nvme::kStatus);
        if (!status) return std::unexpected(status.error());
        return (*status & 1u) == 0 || *status == 0xffffffffu;  // RDY 0, or gone (no DMA either)
      }});
  auto allocator = driver.device_->dma_allocator();
  if (!allocator) return std::unexpected(allocator.error());
  driver.allocator_.emplace(std::move(*allocator));
  const std::uint64_t cap = driver.bar0_->read64_halves(nvme::kCap, pcie::HalfOrder::low_first).value_or(~0ull);
  if (cap == ~0ull) return std::unexpected(make_error(Errc::device_removed, "open NVMe", name, "CAP reads all ones"));
  if (((cap >> 37) & 0x1) == 0) {
    return std::unexpected(make_error(Errc::not_supported, "open NVMe", name, "the NVM command set is not offered"));
  }
  // CAP.TO: the worst case for CSTS.RDY to change, in 500 ms units (3.1.4.1).
  driver.ready_timeout_ = std::chrono::milliseconds(500 * std::max<std::uint64_t>(1, (cap >> 24) & 0xff));
  driver.quiesce_.set_wait_timeout(driver.ready_timeout_);  // RDY may take up to CAP.TO to clear
  driver.max_depth_ = static_cast<std::uint16_t>(std::min<std::uint64_t>((cap & 0xffff) + 1, 4096));
  if (driver.max_depth_ < 2) return std::unexpected(make_error(Errc::malformed, "open NVMe", name, "CAP.MQES is 0"));
  if (auto started = driver.start(); !started) return std::unexpected(started.error());
  return driver;
}

// Everything after CAP: admin queue, enable, identify, interrupts, the I/O queue pair.
Result<void> NvmeDriver::start() {
  auto admin = make_queue_pair(0, std::min(nvme::kAdminDepth, max_depth_));
  if (!admin) return std::unexpected(admin.error());
  admin_.emplace(std::move(*admin));
  // Bus mastering only once the controller is disabled: the queues are new memory.
  write32(nvme::kConfiguration, 0);
  if (auto idle = wait_ready(false, ready_timeout_); !idle) return idle;
  if (auto enabled = device_->enable_bus_master(); !enabled) return enabled;
  if (auto enabled = enable_controller(); !enabled) return enabled;
  identity_.version = read32(nvme::kVersion);
  auto data = allocate_pages(256);  // 1 MiB: identify data, and read/write's bounce buffer
  if (!data) return std::unexpected(data.error());
  data_ = std::move(*data);
  if (auto identified = identify(); !identified) return identified;
  if (options_.interrupts) {
    for (pcie::IrqKind kind : {pcie::IrqKind::msix, pcie::IrqKind::msi}) {
      auto vectors = device_->vector_count(kind);
      if (!vectors || *vectors == 0) continue;
      auto enabled = device_->enable_interrupts(kind, 1);
      if (!enabled) return std::unexpected(enabled.error());
      interrupts_ = std::move(*enabled);
      break;
    }
    if (!interrupts_) {
      return std::unexpected(make_error(Errc::not_supported, "open NVMe", device_->bdf().to_string(),
                                        "no MSI-X or MSI through this backend"));
    }
  }
  return make_io_queues();
}

// The I/O queue pair at the depth asked for, or at 64 (one page per queue) where the
// backend cannot give more than a page of contiguous memory (no IOMMU, no huge pages).
Result<void> NvmeDriver::make_io_queues() {
  const std::uint16_t depth = std::clamp<std::uint16_t>(options_.io_queue_depth, 2, max_depth_);
  auto io = make_queue_pair(1, depth);
  if (!io && io.error().code == Errc::not_supported && depth > 64) io = make_queue_pair(1, 64);
  if (!io) return std::unexpected(io.error());
  io_.emplace(std::move(*io));
  return create_io_queues();
}

// Identify Controller (CNS 01h), the active namespace list (CNS 02h) and the first active
// namespace (CNS 00h) into the data area (5.17). No namespace is not an error.
Result<void> NvmeDriver::identify() {
  const std::byte* data = data_.page(0);
  const DataRange page{0, nvme::kPage, {}};
  if (auto done = execute(*admin_, {.opcode = nvme::kIdentify, .cdw10 = 1}, page); !done) {
    return std::unexpected(done.error());
  }
  data_.sync_page_for_cpu(0);
  identity_.serial = trimmed_ascii(data + 4, 20);
  identity_.model = trimmed_ascii(data + 24, 40);
  identity_.firmware = trimmed_ascii(data + 64, 8);
  const unsigned mdts = static_cast<unsigned>(data[77]);  // in units of the minimum page size
  const std::uint64_t cap = bar0_->read64_halves(nvme::kCap, pcie::HalfOrder::low_first).value_or(0);
  const std::uint64_t min_page = 1ull << (12 + ((cap >> 48) & 0xf));
  // One PRP list page (512 entries) and the data area bound every transfer as well.
  identity_.max_transfer_bytes = std::min<std::uint64_t>(
      {mdts == 0 || mdts > 20 ? ~0ull : min_page << mdts, 511 * nvme::kPage, data_.count() * nvme::kPage});
  if (auto done = execute(*admin_, {.opcode = nvme::kIdentify, .namespace_id = 0, .cdw10 = 2}, page); !done) {
    return std::unexpected(done.error());
  }
  data_.sync_page_for_cpu(0);
  identity_.active_namespaces.clear();
  for (std::size_t i = 0; i < nvme::kPage / 4; ++i) {
    const auto id = little_endian_at<std::uint32_t>(data, 4 * i);
    if (id == 0 || id >= 0xfffffff0u) break;  // the list ends at the first 0 (5.17.2.2)
    identity_.active_namespaces.push_back(id);
  }
  if (identity_.active_namespaces.empty()) return {};
  return identify_namespace(identity_.active_namespaces.front());
}

Result<NvmeDriver::NamespaceFormat> NvmeDriver::read_namespace_format(std::uint32_t namespace_id) {
  const std::byte* data = data_.page(0);
  nvme::Command command{.opcode = nvme::kIdentify, .namespace_id = namespace_id, .cdw10 = 0};
  if (auto done = execute(*admin_, command, DataRange{0, nvme::kPage, {}}); !done) return std::unexpected(done.error());
  data_.sync_page_for_cpu(0);
  const std::uint64_t blocks = little_endian_at<std::uint64_t>(data, 0);
  const unsigned format = static_cast<unsigned>(data[26]) & 0xf;                     // FLBAS
  const unsigned data_size_shift = static_cast<unsigned>(data[128 + 4 * format + 2]);  // LBAF.LBADS
  const std::string name = device_->bdf().to_string();
  if (blocks == 0 || data_size_shift < 9 || data_size_shift > 16) {
    return std::unexpected(make_error(Errc::malformed, "identify NVMe namespace " + std::to_string(namespace_id), name,
                                      "listed as active, but its size or LBA format is malformed"));
  }
  if (identity_.max_transfer_bytes < (1ull << data_size_shift)) {
    // A transfer must hold one block, or read/write would make no progress.
    return std::unexpected(make_error(Errc::not_supported, "identify NVMe namespace " + std::to_string(namespace_id), name,
                                      "its blocks (" + std::to_string(1u << data_size_shift) +
                                          " bytes) are larger than the largest transfer (" +
                                          std::to_string(identity_.max_transfer_bytes) + " bytes)"));
  }
  return NamespaceFormat{.id = namespace_id, .blocks = blocks, .block_size = 1u << data_size_shift};
}

Result<void> NvmeDriver::identify_namespace(std::uint32_t namespace_id) {
  auto format = read_namespace_format(namespace_id);
  if (!format) return std::unexpected(format.error());
  identity_.namespace_id = format->id;
  identity_.namespace_blocks = format->blocks;
  identity_.block_size = format->block_size;
  return {};
}

Result<void> NvmeDriver::fill_prps(QueuePair& queue, std::uint32_t command_id, nvme::Command& command,
                                   DataRange data) {
  const std::size_t area = data_.count() * nvme::kPage;
  if (data.length == 0 || (!data.bus && (data.offset > area || data.length > area - data.offset))) {
    return std::unexpected(make_error(Errc::out_of_range, "describe NVMe transfer", device_->bdf().to_string(),
                                      "outside the data area"));
  }
  // PRP1: the first byte (with its offset in its page); then every further page: in PRP2
  // when there is exactly one more, else in a PRP list that PRP2 points to (4.1.1). The
  // list page is the command identifier's own, so no other outstanding command shares it.
  // Pages are the data area's, or, for a bus range (whose bounds the caller checked), the
  // 4 KiB pages of bus space it covers.
  const bool in_area = !data.bus;
  const std::uint64_t start = in_area ? data.offset : *data.bus + data.offset;
  const std::uint64_t first = start / nvme::kPage;
  const std::uint64_t last = (start + data.length - 1) / nvme::kPage;
  const auto page_bus = [&](std::uint64_t page) { return in_area ? data_.bus(page).value : page * nvme::kPage; };
  command.prp1 = page_bus(first) + start % nvme::kPage;
  command.prp2 = 0;
  if (last == first + 1) command.prp2 = page_bus(last);
  if (last > first + 1) {
    auto* list = reinterpret_cast<std::uint64_t*>(queue.prp_lists.page(command_id));
    for (std::uint64_t page = first + 1; page <= last; ++page) list[page - first - 1] = page_bus(page);
    queue.prp_lists.sync_page_for_device(command_id);
    command.prp2 = queue.prp_lists.bus(command_id).value;
  }
  return {};
}

Result<std::uint32_t> NvmeDriver::submit(QueuePair& queue, nvme::Command command, std::optional<DataRange> data,
                                         std::size_t slot_stride) {
  if (queue.sq.free_slots() == 0) {
    return std::unexpected(make_error(Errc::busy, "submit NVMe command", device_->bdf().to_string(), "queue full"));
  }
  auto id = queue.requests.start(0);
  if (!id) return std::unexpected(id.error());
  command.command_id = static_cast<std::uint16_t>(*id);
  if (data) {
    data->offset += std::size_t{*id} * slot_stride;  // the identifier's own slot of the data area
    if (auto prps = fill_prps(queue, *id, command, *data); !prps) {
      (void)queue.requests.finish(*id);  // never submitted: the identifier is free again
      return std::unexpected(prps.error());
    }
  }
  (void)queue.sq.push(command);  // cannot fail: a free slot was checked above
  return *id;
}

Result<std::optional<nvme::Completion>> NvmeDriver::wait_completion(QueuePair& queue) {
  pcie::WaitOptions options{.timeout = options_.command_timeout, .spin = options_.poll_spin};
  // CSTS is read at most once a millisecond while polling: each read is an MMIO read (a
  // VM exit under virtualization) that would slow the device it waits for.
  auto last_check = std::chrono::steady_clock::now();
  options.stop_if = [this, &last_check]() -> Result<void> {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_check < std::chrono::milliseconds(1)) return {};
    last_check = now;
    return controller_alive("wait for a completion");
  };
  if (!interrupts_ || queue.id == 0) return queue.cq.wait(options);
  // Interrupt-driven: look first (it may be there already), then sleep on the vector.
  std::optional<nvme::Completion> completion;
  const auto deadline = std::chrono::steady_clock::now() + options_.command_timeout;
  while (!(completion = queue.cq.peek())) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto fired = interrupts_->wait(0, left);
    if (!fired) return std::unexpected(fired.error());
    interrupts_seen_ += *fired;
    if (auto alive = controller_alive("wait for a completion"); !alive) return std::unexpected(alive.error());
  }
  // The completion may have been in before the look: take its interrupt too, so that the
  // next wait does not return at once for it.
  auto pending = interrupts_->consume(0);
  if (!pending) return std::unexpected(pending.error());
  interrupts_seen_ += *pending;
  return completion;
}

Result<nvme::Completion> NvmeDriver::reap(QueuePair& queue) {
  auto waited = wait_completion(queue);
  if (!waited) {
    if (waited.error().code == Errc::device_removed) {
      // Gone (or stuck in reset): nothing outstanding can complete; take no new work.
      failed_ = waited.error();
      (void)quiesce_.run();
      return std::unexpected(waited.error());
    }
    return std::unexpected(recover(waited.error()));
  }
  if (!*waited) return std::unexpected(recover(controller_error("wait for a completion", "no completion within the timeout")));
  const nvme::Completion completion = **waited;
  queue.cq.pop();
  // One head doorbell (an MMIO write: a VM exit under virtualization) for all the
  // completions that are in: ring it once none is left. The CQ cannot fill meanwhile, as
  // no more commands than its depth - 1 are ever in flight.
  if (!queue.cq.peek()) queue.cq.ring();
  // A completion for an identifier not outstanding, or an SQ head outside what was
  // submitted, means the device and the driver disagree: nothing it says can be trusted.
  if (auto finished = queue.requests.finish(completion.command_id); !finished) {
    return std::unexpected(recover(finished.error()));
  }
  // SQHD is the head when the entry was made (4.2.2): an older one than the driver has seen
  // is stale, not wrong; only a head outside what was ever submitted is.
  const std::uint32_t depth = queue.sq.depth();
  const std::uint32_t behind = (queue.sq.head() + depth - completion.sq_head % depth) % depth;
  const bool stale = completion.sq_head < depth && behind != 0 && behind <= depth - 1 - queue.sq.in_flight();
  if (!stale) {
    if (auto consumed = queue.sq.consumed_up_to(completion.sq_head); !consumed) {
      return std::unexpected(recover(consumed.error()));
    }
  }
  return completion;
}

// A command timed out (or the controller said something impossible): it may still DMA
// into its buffer, and its identifier and queue slot are still the controller's. A
// controller reset (CC.EN 0 until CSTS.RDY 0) ends every command and all of its DMA
// (3.7.2); then the queues are set up again. Returns `cause`, noting what was done.
pcie::Error NvmeDriver::recover(pcie::Error cause) {
  if (recovering_) return cause;  // a command of the recovery itself failed: recover() reports it
  recovering_ = true;
  ++controller_resets_;
  other_namespaces_.clear();  // identified again at their next use: a reset may follow a format
  Result<void> back = enable_controller();
  if (back && io_queues_ > 0) back = create_io_queues();
  recovering_ = false;
  if (!back) {
    failed_ = back.error();
    (void)quiesce_.run();  // the timed-out command may still be live: no DMA from here on
    cause.reason += "; resetting the controller failed too: " + back.error().reason;
    cause.hint = "reopen the driver (or reset the device)";
    return cause;
  }
  cause.reason += "; the controller was reset and its queues re-created";
  return cause;
}

Result<void> NvmeDriver::usable(const char* operation) const {
  if (failed_) {
    return std::unexpected(make_error(failed_->code, operation, device_->bdf().to_string(),
                                      "the controller could not be recovered: " + failed_->reason,
                                      "reopen the driver (or reset the device)"));
  }
  if (shut_down_ || quiesce_.done()) {
    return std::unexpected(make_error(Errc::invalid_argument, operation, device_->bdf().to_string(),
                                      "the controller was shut down"));
  }
  return {};
}

Result<nvme::Completion> NvmeDriver::execute(QueuePair& queue, nvme::Command command, std::optional<DataRange> data) {
  if (auto ok = usable("NVMe command"); !ok && !recovering_) return std::unexpected(ok.error());
  auto id = submit(queue, command, data);
  if (!id) return std::unexpected(id.error());
  queue.sq.ring();
  auto completion = reap(queue);
  if (!completion) return completion;
  if (completion->command_id != *id) {
    // One command at a time here: another identifier means one left over from a failed
    // batch or the device confused; its buffer may still be in use. Reset.
    return std::unexpected(recover(make_error(Errc::malformed, "NVMe command", device_->bdf().to_string(),
                                              "completion for command " + std::to_string(completion->command_id) +
                                                  ", not " + std::to_string(*id))));
  }
  if ((completion->status >> 1) != 0) {
    char opcode[48];
    std::snprintf(opcode, sizeof opcode, "NVMe %s opcode 0x%02x", queue.id == 0 ? "admin" : "I/O", command.opcode);
    return std::unexpected(make_error(Errc::io_error, opcode, device_->bdf().to_string(),
                                      nvme::describe_status(completion->status)));
  }
  return completion;
}

Result<NvmeDriver::NamespaceFormat> NvmeDriver::namespace_for(std::uint32_t namespace_id, const char* operation) {
  if (auto ok = usable(operation); !ok) return std::unexpected(ok.error());
  if (identity_.block_size == 0) {
    return std::unexpected(make_error(Errc::not_found, operation, device_->bdf().to_string(),
                                      "the controller has no active namespace",
                                      "create and attach one (nvme create-ns / attach-ns, or QEMU's nvme-ns)"));
  }
  if (namespace_id == 0 || namespace_id == identity_.namespace_id) {
    return NamespaceFormat{identity_.namespace_id, identity_.namespace_blocks, identity_.block_size};
  }
  // Another active namespace has a format of its own: identified once, then remembered.
  if (std::find(identity_.active_namespaces.begin(), identity_.active_namespaces.end(), namespace_id) !=
      identity_.active_namespaces.end()) {
    for (const NamespaceFormat& known : other_namespaces_) {
      if (known.id == namespace_id) return known;
    }
    auto format = read_namespace_format(namespace_id);
    if (!format) return std::unexpected(format.error());
    other_namespaces_.push_back(*format);
    return *format;
  }
  // Not active: the command goes out in the identified namespace's block size, for the
  // controller to refuse with its own status (Invalid Namespace or Format, Invalid Field).
  return NamespaceFormat{namespace_id, 0, identity_.block_size};
}

Result<void> NvmeDriver::transfer(std::uint8_t opcode, std::uint64_t lba, std::size_t bytes,
                                  const NamespaceFormat& space, std::optional<std::uint64_t> bus) {
  const std::uint32_t block = space.block_size;
  const std::uint32_t namespace_id = space.id;
  const std::size_t chunk_blocks = identity_.max_transfer_bytes / block;
  for (std::size_t done = 0; done < bytes;) {
    const std::size_t blocks = std::min<std::size_t>(chunk_blocks, (bytes - done) / block);
    nvme::Command command{.opcode = opcode, .namespace_id = namespace_id};
    const std::uint64_t slba = lba + done / block;
    command.cdw10 = static_cast<std::uint32_t>(slba);
    command.cdw11 = static_cast<std::uint32_t>(slba >> 32);
    command.cdw12 = static_cast<std::uint32_t>(blocks - 1);  // NLB is 0-based
    if (auto completed = execute(*io_, command, DataRange{done, blocks * block, bus}); !completed) {
      return std::unexpected(completed.error());
    }
    done += blocks * block;
  }
  return {};
}

void NvmeDriver::copy_out(std::size_t offset, std::span<std::byte> into) const {
  for (std::size_t done = 0; done < into.size();) {
    const std::size_t at = offset + done;
    const std::size_t chunk = std::min(into.size() - done, nvme::kPage - at % nvme::kPage);
    std::memcpy(into.data() + done, data_.page(at / nvme::kPage) + at % nvme::kPage, chunk);
    done += chunk;
  }
}

void NvmeDriver::copy_in(std::size_t offset, std::span<const std::byte> from) {
  for (std::size_t done = 0; done < from.size();) {
    const std::size_t at = offset + done;
    const std::size_t chunk = std::min(from.size() - done, nvme::kPage - at % nvme::kPage);
    std::memcpy(data_.page(at / nvme::kPage) + at % nvme::kPage, from.data() + done, chunk);
    done += chunk;
  }
}

Result<std::vector<std::byte>> NvmeDriver::read(std::uint64_t lba, std::uint32_t blocks, std::uint32_t namespace_id) {
  auto space = namespace_for(namespace_id, "NVMe read");
  if (!space) return std::unexpected(space.error());
  const std::size_t bytes = std::size_t{blocks} * space->block_size;
  const std::size_t area = data_.count() * nvme::kPage;
  if (blocks == 0 || bytes > area) {
    return std::unexpected(make_error(Errc::invalid_argument, "NVMe read", device_->bdf().to_string(),
                                      std::to_string(blocks) + " blocks: 1 to " +
                                          std::to_string(area / space->block_size) + " per call"));
  }
  if (auto done = transfer(nvme::kRead, lba, bytes, *space); !done) return std::unexpected(done.error());
  data_.sync_for_cpu();
  std::vector<std::byte> data(bytes);
  copy_out(0, data);
  return data;
}

Result<void> NvmeDriver::write(std::uint64_t lba, std::span<const std::byte> data, std::uint32_t namespace_id) {
  auto space = namespace_for(namespace_id, "NVMe write");
  if (!space) return std::unexpected(space.error());
  const std::size_t area = data_.count() * nvme::kPage;
  if (data.empty() || data.size() % space->block_size != 0 || data.size() > area) {
    return std::unexpected(make_error(Errc::invalid_argument, "NVMe write", device_->bdf().to_string(),
                                      std::to_string(data.size()) + " bytes: whole blocks of " +
                                          std::to_string(space->block_size) + ", at most " + std::to_string(area)));
  }
  copy_in(0, data);
  data_.sync_for_device();
  return transfer(nvme::kWrite, lba, data.size(), *space);
}

Result<std::pair<NvmeDriver::NamespaceFormat, std::uint64_t>> NvmeDriver::bus_range_blocks(
    const char* operation, std::uint32_t blocks, std::uint64_t offset, std::uint32_t namespace_id) {
  auto space = namespace_for(namespace_id, operation);
  if (!space) return std::unexpected(space.error());
  if (blocks == 0 || offset % 4 != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, operation, device_->bdf().to_string(),
                                      blocks == 0 ? std::string("no blocks")
                                                  : "offset " + std::to_string(offset) +
                                                        " is not a multiple of 4 (PRP entries address dwords: "
                                                        "NVMe 2.0, 4.1.1)"));
  }
  return std::pair{*space, std::uint64_t{blocks} * space->block_size};
}

Result<void> NvmeDriver::peer_transfer(std::uint8_t opcode, const char* operation, std::uint64_t lba,
                                       std::uint32_t blocks, const pcie::PeerDmaWindow& window, std::uint64_t offset,
                                       std::uint32_t namespace_id) {
  const auto* vfio = dynamic_cast<const pcie::VfioDevice*>(device_.get());
  const bool into_peer = opcode == nvme::kRead;
  const bool foreign = vfio != nullptr && window.valid() && !window.usable_by(*vfio);
  const char* refused = !window.valid()                   ? "the peer window is empty"
                        : vfio == nullptr                  ? "peer windows serve VFIO devices; this one is not"
                        : foreign                          ? "the window was mapped for another VFIO container: its "
                                                             "bus address means nothing to this controller"
                        : window.peer() == device_->bdf()  ? "the window is of this controller's own BAR"
                        : into_peer && !window.device_writes() ? "the window was mapped without device_writes"
                        : !into_peer && !window.device_reads() ? "the window was mapped without device_reads"
                                                               : nullptr;
  if (refused != nullptr) {
    const std::string hint = foreign ? "map it with pcie::map_peer_bar(this driver's device, peer, ...)"
                             : window.valid() && window.peer() == device_->bdf()
                                 ? "use its controller memory buffer instead: enable_cmb, read_to_cmb, write_from_cmb"
                                 : "";
    return std::unexpected(make_error(Errc::invalid_argument, operation, device_->bdf().to_string(), refused, hint));
  }
  auto range = bus_range_blocks(operation, blocks, offset, namespace_id);
  if (!range) return std::unexpected(range.error());
  const auto& [space, bytes] = *range;
  auto bus = window.bus_address_of(offset, bytes);  // bounds, overflow-safe
  if (!bus) return std::unexpected(bus.error());
  if (cmb_ && ranges_overlap(bus->value, bytes, cmb_->bus_address, cmb_->size)) {
    // The controller would take those addresses for its own memory buffer.
    return std::unexpected(make_error(Errc::invalid_argument, operation, window.name(),
                                      "its bus addresses overlap the controller memory buffer's"));
  }
  // A window the kernel revoked (the peer reset or its decoding off) would make the
  // controller's DMA fault in the IOMMU, or go nowhere: refuse before it starts.
  if (auto reachable = window.check(); !reachable) return std::unexpected(reachable.error());
  return transfer(opcode, lba, bytes, space, bus->value);
}

Result<void> NvmeDriver::read_to(std::uint64_t lba, std::uint32_t blocks, const pcie::PeerDmaWindow& window,
                                 std::uint64_t offset, std::uint32_t namespace_id) {
  return peer_transfer(nvme::kRead, "NVMe read into a peer BAR", lba, blocks, window, offset, namespace_id);
}

Result<void> NvmeDriver::write_from(std::uint64_t lba, std::uint32_t blocks, const pcie::PeerDmaWindow& window,
                                    std::uint64_t offset, std::uint32_t namespace_id) {
  return peer_transfer(nvme::kWrite, "NVMe write from a peer BAR", lba, blocks, window, offset, namespace_id);
}

Result<std::uint32_t> NvmeDriver::block_size(std::uint32_t namespace_id) {
  auto space = namespace_for(namespace_id, "NVMe block size");
  if (!space) return std::unexpected(space.error());
  return space->block_size;
}

Result<void> NvmeDriver::flush(std::uint32_t namespace_id) {
  auto space = namespace_for(namespace_id, "NVMe flush");
  if (!space) return std::unexpected(space.error());
  auto done = execute(*io_, {.opcode = nvme::kFlush, .namespace_id = space->id});
  if (!done) return std::unexpected(done.error());
  return {};
}

Result<void> NvmeDriver::submit_read(const NamespaceFormat& space, std::uint64_t lba, std::uint32_t blocks) {
  nvme::Command command{.opcode = nvme::kRead, .namespace_id = space.id};
  command.cdw10 = static_cast<std::uint32_t>(lba);
  command.cdw11 = static_cast<std::uint32_t>(lba >> 32);
  command.cdw12 = blocks - 1;
  const std::size_t bytes = std::size_t{blocks} * space.block_size;
  auto id = submit(*io_, command, DataRange{0, bytes, {}}, bytes);
  if (!id) return std::unexpected(io_->requests.outstanding() > 0 ? recover(id.error()) : id.error());
  return {};
}

Result<std::chrono::nanoseconds> NvmeDriver::random_reads(unsigned queue_depth, unsigned count, std::uint64_t seed) {
  auto space = namespace_for(0, "NVMe bench");
  if (!space) return std::unexpected(space.error());
  // 4 KiB per read (or one block, where blocks are larger), at 4 KiB-aligned offsets: what
  // fio's bs=4k reads through the kernel. Each command reads into the data area's slot of
  // its own identifier, so no two outstanding commands share a buffer.
  const std::uint32_t block = std::max<std::uint32_t>(space->block_size, 4096);
  const std::uint32_t blocks_per_read = block / space->block_size;
  const unsigned depth = std::clamp<unsigned>(queue_depth, 1, io_->requests.capacity());
  if (std::size_t{io_->requests.capacity()} * block > data_.count() * nvme::kPage || space->blocks < blocks_per_read) {
    return std::unexpected(make_error(Errc::invalid_argument, "NVMe bench", device_->bdf().to_string(),
                                      "queue too deep for the data area, or namespace too small"));
  }
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<std::uint64_t> reads(0, space->blocks / blocks_per_read - 1);
  unsigned submitted = 0;
  const auto start = std::chrono::steady_clock::now();
  for (unsigned completed = 0; completed < count; ++completed) {
    const unsigned before = submitted;
    for (; submitted < count && submitted - completed < depth; ++submitted) {
      if (auto sent = submit_read(*space, reads(random) * blocks_per_read, blocks_per_read); !sent) return std::unexpected(sent.error());
    }
    if (submitted != before) io_->sq.ring();
    auto completion = reap(*io_);
    if (!completion) return std::unexpected(completion.error());  // reap reset the controller
    if ((completion->status >> 1) != 0) {
      // The other reads are still the controller's, into the data area: end them first.
      return std::unexpected(recover(make_error(Errc::io_error, "NVMe bench read", device_->bdf().to_string(),
                                                nvme::describe_status(completion->status))));
    }
  }
  return std::chrono::steady_clock::now() - start;
}

Result<void> NvmeDriver::shutdown() {
  if (failed_) return std::unexpected(*failed_);
  if (shut_down_ || !device_ || !enabled_) return {};
  shut_down_ = true;
  // Delete the I/O queues that were made, then a normal shutdown: CC.SHN = 01b, wait for
  // CSTS.SHST = 10b.
  recovering_ = true;  // no recovery from here: a failure ends in the quiesce below
  if (io_queues_ == 2) (void)execute(*admin_, {.opcode = nvme::kDeleteIoSq, .cdw10 = 1});
  if (io_queues_ >= 1) (void)execute(*admin_, {.opcode = nvme::kDeleteIoCq, .cdw10 = 1});
  recovering_ = false;
  if (cmb_) (void)write_cmb_control(0);  // the controller's memory space off again (3.1.4.14)
  const std::uint32_t configuration = read32(nvme::kConfiguration);
  write32(nvme::kConfiguration, (configuration & ~(3u << 14)) | (1u << 14));
  pcie::WaitOptions options{.timeout = ready_timeout_};
  auto done = pcie::wait_until([this] { return read32(nvme::kStatus); },
                               [](std::uint32_t status) { return status == ~0u || (status & (3u << 2)) == (2u << 2); },
                               options);
  if (!done) return std::unexpected(done.error());
  if (done->value == ~0u) {
    return std::unexpected(make_error(Errc::device_removed, "shut down NVMe", device_->bdf().to_string(),
                                      "CSTS reads all ones"));
  }
  if (!done->matched) return std::unexpected(controller_error("shut down NVMe", "CSTS.SHST did not report complete"));
  return {};
}

NvmeDriver::~NvmeDriver() {
  if (!device_) return;  // moved from
  (void)shutdown();
  // A controller reset need not clear CMBMSC (3.7.2): off here too, where shutdown() did
  // nothing (a failed driver). Ignored: the device may be gone.
  if (cmb_) (void)write_cmb_control(0);
  // Whatever the controller did with the shutdown (or an open() that failed half way), it
  // must not reach the queues and buffers freed next: disabled, then no bus mastering.
  (void)quiesce_.run();
}

}  // namespace examples
