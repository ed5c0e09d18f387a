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
constexpr std::uint8_t kFlush = 0x00, kWrite = 0x01, kRead = 0x02;
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

pcie::MmioView NvmeDriver::registers() const {
  return pcie::MmioView(bar0_->mapped_base(), bar0_->size(), bar0_->allowed_widths(), bar0_->name());
}

pcie::Error NvmeDriver::controller_error(const std::string& operation, const std::string& reason) const {
  char status[32];
  std::snprintf(status, sizeof status, " (CSTS 0x%x)", registers().read<std::uint32_t>(nvme::kStatus));
  return make_error(Errc::io_error, operation, device_->bdf().to_string(), reason + status);
}

Result<void> NvmeDriver::controller_alive(const std::string& operation) const {
  const std::uint32_t status = registers().read<std::uint32_t>(nvme::kStatus);
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
  const pcie::MmioView regs = registers();
  pcie::WaitOptions options{.timeout = timeout, .all_ones_means_removed = true};
  options.stop_if = [this] { return controller_alive("wait for the controller"); };
  auto waited = regs.poll<std::uint32_t>(nvme::kStatus, 0x1, ready ? 0x1 : 0x0, options);
  if (!waited) return std::unexpected(waited.error());
  if (!waited->matched) {
    return std::unexpected(controller_error("wait for the controller",
                                            std::string("CSTS.RDY did not become ") + (ready ? "1" : "0") +
                                                " within CAP.TO"));
  }
  return {};
}

Result<NvmeDriver::QueuePair> NvmeDriver::make_queue_pair(std::uint16_t id, std::uint16_t depth) {
  // One buffer: the SQ (depth * 64 bytes), the CQ (depth * 16), then a PRP list page per
  // SQ slot, each part starting on a page (queues must be page-aligned: 4.1.1).
  const std::size_t sq_bytes = (std::size_t{depth} * sizeof(nvme::Command) + nvme::kPage - 1) / nvme::kPage * nvme::kPage;
  const std::size_t cq_bytes = (std::size_t{depth} * sizeof(nvme::Completion) + nvme::kPage - 1) / nvme::kPage * nvme::kPage;
  auto memory = allocator_->allocate(sq_bytes + cq_bytes + std::size_t{depth} * nvme::kPage,
                                     {.prefer = pcie::DmaBacking::pages});
  if (!memory) return std::unexpected(memory.error());
  const pcie::MmioView regs = registers();
  const std::uint64_t stride = 4ull << ((regs.read<std::uint64_t>(nvme::kCap) >> 32) & 0xf);  // CAP.DSTRD
  auto sq_bell = pcie::Doorbell::in_array(regs, nvme::kDoorbells, 2ull * id, stride);
  if (!sq_bell) return std::unexpected(sq_bell.error());
  auto cq_bell = pcie::Doorbell::in_array(regs, nvme::kDoorbells, 2ull * id + 1, stride);
  if (!cq_bell) return std::unexpected(cq_bell.error());
  auto sq = pcie::SubmissionRing<nvme::Command>::create(memory->bytes().first(sq_bytes), depth, *sq_bell);
  if (!sq) return std::unexpected(sq.error());
  auto cq = pcie::CompletionRing<nvme::Completion>::create(memory->bytes().subspan(sq_bytes, cq_bytes), depth,
                                                           nvme::kPhaseTag, *cq_bell);
  if (!cq) return std::unexpected(cq.error());
  return QueuePair{id, std::move(*memory), std::move(*sq), std::move(*cq), 0};
}

Result<NvmeDriver> NvmeDriver::open(std::unique_ptr<pcie::Device> device, const NvmeOptions& options) {
  NvmeDriver driver;
  driver.options_ = options;
  const std::string name = device->bdf().to_string();
  auto bar0 = device->open_bar(0);
  if (!bar0) return std::unexpected(bar0.error());
  if ((*bar0)->mapped_base() == nullptr || (*bar0)->size() < 0x2000) {
    return std::unexpected(make_error(Errc::not_supported, "open NVMe", name, "BAR0 is not mapped whole"));
  }
  driver.device_ = std::move(device);
  driver.bar0_ = std::move(*bar0);
  auto allocator = driver.device_->dma_allocator();
  if (!allocator) return std::unexpected(allocator.error());
  driver.allocator_.emplace(std::move(*allocator));
  const pcie::MmioView regs = driver.registers();
  const std::uint64_t cap = regs.read64_halves(nvme::kCap, pcie::HalfOrder::low_first);
  if (cap == ~0ull) return std::unexpected(make_error(Errc::device_removed, "open NVMe", name, "CAP reads all ones"));
  if (((cap >> 37) & 0x1) == 0) {
    return std::unexpected(make_error(Errc::not_supported, "open NVMe", name, "the NVM command set is not offered"));
  }
  // CAP.TO: the worst case for CSTS.RDY to change, in 500 ms units (3.1.4.1).
  driver.ready_timeout_ = std::chrono::milliseconds(500 * std::max<std::uint64_t>(1, (cap >> 24) & 0xff));
  const std::uint16_t max_depth = static_cast<std::uint16_t>(std::min<std::uint64_t>((cap & 0xffff) + 1, 4096));

  // Reset: CC.EN to 0 and wait for CSTS.RDY 0 before the admin queue is set (3.5.1).
  regs.write<std::uint32_t>(nvme::kConfiguration, 0);
  if (auto idle = driver.wait_ready(false, driver.ready_timeout_); !idle) return std::unexpected(idle.error());
  if (auto enabled = driver.device_->enable_bus_master(); !enabled) return std::unexpected(enabled.error());
  auto admin = driver.make_queue_pair(0, std::min(nvme::kAdminDepth, max_depth));
  if (!admin) return std::unexpected(admin.error());
  driver.admin_.emplace(std::move(*admin));
  const std::uint32_t admin_entries = driver.admin_->sq.depth() - 1;
  regs.write<std::uint32_t>(nvme::kAdminQueueAttributes, (admin_entries << 16) | admin_entries);
  const std::uint64_t admin_base = driver.admin_->memory.bus_address().value;
  const std::size_t sq_bytes = nvme::kPage * ((driver.admin_->sq.depth() * sizeof(nvme::Command) + nvme::kPage - 1) / nvme::kPage);
  regs.write64_halves(nvme::kAdminSubmissionQueue, admin_base, pcie::HalfOrder::low_first);
  regs.write64_halves(nvme::kAdminCompletionQueue, admin_base + sq_bytes, pcie::HalfOrder::low_first);
  // IOCQES 16 bytes (4), IOSQES 64 bytes (6), MPS 4 KiB (0), NVM command set, enable.
  regs.write<std::uint32_t>(nvme::kConfiguration, (4u << 20) | (6u << 16) | 1u);
  if (auto ready = driver.wait_ready(true, driver.ready_timeout_); !ready) return std::unexpected(ready.error());
  driver.enabled_ = true;
  driver.identity_.version = regs.read<std::uint32_t>(nvme::kVersion);

  // Identify controller (CNS 1) and namespace 1 (CNS 0) into the bounce buffer (5.17).
  auto data = driver.allocator_->allocate(1024 * 1024, {.prefer = pcie::DmaBacking::pages});
  if (!data) return std::unexpected(data.error());
  driver.data_.emplace(std::move(*data));
  const std::byte* identify = driver.data_->data();
  nvme::Command command{.opcode = nvme::kIdentify, .prp1 = driver.data_->bus_address().value, .cdw10 = 1};
  if (auto done = driver.execute(*driver.admin_, command); !done) return std::unexpected(done.error());
  driver.data_->sync_for_cpu();
  driver.identity_.serial = trimmed_ascii(identify + 4, 20);
  driver.identity_.model = trimmed_ascii(identify + 24, 40);
  driver.identity_.firmware = trimmed_ascii(identify + 64, 8);
  const unsigned mdts = static_cast<unsigned>(identify[77]);  // in units of the minimum page size
  const std::uint64_t min_page = 1ull << (12 + ((cap >> 48) & 0xf));
  // One PRP list page (512 entries) and the bounce buffer bound every transfer as well.
  driver.identity_.max_transfer_bytes = std::min<std::uint64_t>(
      {mdts == 0 || mdts > 20 ? ~0ull : min_page << mdts, 511 * nvme::kPage, driver.data_->size()});
  command = {.opcode = nvme::kIdentify, .namespace_id = 1, .prp1 = driver.data_->bus_address().value, .cdw10 = 0};
  if (auto done = driver.execute(*driver.admin_, command); !done) return std::unexpected(done.error());
  driver.data_->sync_for_cpu();
  driver.identity_.namespace_blocks = little_endian_at<std::uint64_t>(identify, 0);
  const unsigned format = static_cast<unsigned>(identify[26]) & 0xf;          // FLBAS
  const unsigned data_size_shift = static_cast<unsigned>(identify[128 + 4 * format + 2]);  // LBAF.LBADS
  if (driver.identity_.namespace_blocks == 0 || data_size_shift < 9 || data_size_shift > 16) {
    return std::unexpected(make_error(Errc::not_supported, "open NVMe", name, "namespace 1 is inactive or malformed"));
  }
  driver.identity_.block_size = 1u << data_size_shift;
  if (driver.identity_.max_transfer_bytes < driver.identity_.block_size) {
    // A transfer must hold one block, or read/write would make no progress.
    return std::unexpected(make_error(Errc::not_supported, "open NVMe", name,
                                      "namespace 1's blocks (" + std::to_string(driver.identity_.block_size) +
                                          " bytes) are larger than the largest transfer (" +
                                          std::to_string(driver.identity_.max_transfer_bytes) + " bytes)"));
  }

  // The I/O queue pair: its CQ first, then the SQ that posts to it (5.4, 5.5).
  const std::uint16_t depth = std::clamp<std::uint16_t>(options.io_queue_depth, 2, max_depth);
  auto io = driver.make_queue_pair(1, depth);
  if (!io) return std::unexpected(io.error());
  driver.io_.emplace(std::move(*io));
  std::uint32_t interrupt_flags = 0;
  if (options.interrupts) {
    for (pcie::IrqKind kind : {pcie::IrqKind::msix, pcie::IrqKind::msi}) {
      auto vectors = driver.device_->vector_count(kind);
      if (!vectors || *vectors == 0) continue;
      auto enabled = driver.device_->enable_interrupts(kind, 1);
      if (!enabled) return std::unexpected(enabled.error());
      driver.interrupts_ = std::move(*enabled);
      interrupt_flags = 0x2;  // IEN, vector 0
      break;
    }
    if (!driver.interrupts_) {
      return std::unexpected(make_error(Errc::not_supported, "open NVMe", name, "no MSI-X or MSI through this backend"));
    }
  }
  const std::uint64_t io_base = driver.io_->memory.bus_address().value;
  const std::size_t io_sq_bytes = nvme::kPage * ((depth * sizeof(nvme::Command) + nvme::kPage - 1) / nvme::kPage);
  const std::uint32_t size_and_id = (std::uint32_t{depth} - 1) << 16 | 1u;
  command = {.opcode = nvme::kCreateIoCq, .prp1 = io_base + io_sq_bytes, .cdw10 = size_and_id, .cdw11 = 0x1 | interrupt_flags};
  if (auto done = driver.execute(*driver.admin_, command); !done) return std::unexpected(done.error());
  driver.io_queues_ = 1;
  command = {.opcode = nvme::kCreateIoSq, .prp1 = io_base, .cdw10 = size_and_id, .cdw11 = (1u << 16) | 0x1};
  if (auto done = driver.execute(*driver.admin_, command); !done) return std::unexpected(done.error());
  driver.io_queues_ = 2;
  return driver;
}

Result<void> NvmeDriver::fill_prps(QueuePair& queue, nvme::Command& command, const pcie::DmaBuffer& data,
                                   std::size_t offset, std::size_t length) {
  std::uint64_t pages[512];
  auto count = pcie::device_pages(data, offset, length, nvme::kPage, pages);
  if (!count) return std::unexpected(count.error());
  command.prp1 = pages[0];
  if (*count == 2) command.prp2 = pages[1];
  if (*count > 2) {
    // PRP2 points at a list of the remaining entries: this slot's list page (4.1.1).
    const std::size_t sq_bytes = nvme::kPage * ((queue.sq.depth() * sizeof(nvme::Command) + nvme::kPage - 1) / nvme::kPage);
    const std::size_t cq_bytes = nvme::kPage * ((queue.sq.depth() * sizeof(nvme::Completion) + nvme::kPage - 1) / nvme::kPage);
    const std::size_t list_offset = sq_bytes + cq_bytes + std::size_t{queue.sq.tail()} * nvme::kPage;
    std::memcpy(queue.memory.data() + list_offset, pages + 1, (*count - 1) * sizeof(std::uint64_t));
    command.prp2 = queue.memory.bus_address().value + list_offset;
  }
  return {};
}

Result<nvme::Completion> NvmeDriver::reap(QueuePair& queue) {
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
  std::optional<nvme::Completion> completion;
  if (interrupts_ && queue.id != 0) {
    // Interrupt-driven: look first (it may be there already), then sleep on the vector.
    const auto deadline = std::chrono::steady_clock::now() + options_.command_timeout;
    while (!(completion = queue.cq.peek())) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      auto fired = interrupts_->wait(0, left);
      if (!fired) return std::unexpected(fired.error());
      interrupts_seen_ += *fired;
    }
    // The completion may have been in before the look: take its interrupt too, so that the
    // next wait does not return at once for it.
    auto pending = interrupts_->consume(0);
    if (!pending) return std::unexpected(pending.error());
    interrupts_seen_ += *pending;
  } else {
    auto waited = queue.cq.wait(options);
    if (!waited) return std::unexpected(waited.error());
    completion = *waited;
  }
  if (!completion) return std::unexpected(controller_error("wait for a completion", "no completion within the timeout"));
  queue.cq.pop();
  // One head doorbell (an MMIO write: a VM exit under virtualization) for all the
  // completions that are in: ring it once none is left. The CQ cannot fill meanwhile, as
  // no more commands than its depth - 1 are ever in flight.
  if (!queue.cq.peek()) queue.cq.ring();
  if (auto consumed = queue.sq.consumed_up_to(completion->sq_head); !consumed) return std::unexpected(consumed.error());
  return *completion;
}

Result<nvme::Completion> NvmeDriver::execute(QueuePair& queue, nvme::Command command) {
  command.command_id = queue.next_command_id++;
  if (auto pushed = queue.sq.push(command); !pushed) return std::unexpected(pushed.error());
  queue.sq.ring();
  auto completion = reap(queue);
  if (!completion) return completion;
  if (completion->command_id != command.command_id) {
    return std::unexpected(controller_error("NVMe command", "completion for command " +
                                                                std::to_string(completion->command_id) + ", not " +
                                                                std::to_string(command.command_id)));
  }
  if ((completion->status >> 1) != 0) {
    char opcode[48];
    std::snprintf(opcode, sizeof opcode, "NVMe %s opcode 0x%02x", queue.id == 0 ? "admin" : "I/O", command.opcode);
    return std::unexpected(make_error(Errc::io_error, opcode, device_->bdf().to_string(),
                                      nvme::describe_status(completion->status)));
  }
  return completion;
}

Result<void> NvmeDriver::transfer(std::uint8_t opcode, std::uint64_t lba, std::size_t bytes, std::uint32_t namespace_id) {
  const std::uint32_t block = identity_.block_size;
  const std::size_t chunk_blocks = identity_.max_transfer_bytes / block;
  for (std::size_t done = 0; done < bytes;) {
    const std::size_t blocks = std::min<std::size_t>(chunk_blocks, (bytes - done) / block);
    nvme::Command command{.opcode = opcode, .namespace_id = namespace_id};
    const std::uint64_t slba = lba + done / block;
    command.cdw10 = static_cast<std::uint32_t>(slba);
    command.cdw11 = static_cast<std::uint32_t>(slba >> 32);
    command.cdw12 = static_cast<std::uint32_t>(blocks - 1);  // NLB is 0-based
    if (auto prps = fill_prps(*io_, command, *data_, done, blocks * block); !prps) return prps;
    if (auto completed = execute(*io_, command); !completed) return std::unexpected(completed.error());
    done += blocks * block;
  }
  return {};
}

Result<std::vector<std::byte>> NvmeDriver::read(std::uint64_t lba, std::uint32_t blocks, std::uint32_t namespace_id) {
  const std::size_t bytes = std::size_t{blocks} * identity_.block_size;
  if (blocks == 0 || bytes > data_->size()) {
    return std::unexpected(make_error(Errc::invalid_argument, "NVMe read", device_->bdf().to_string(),
                                      std::to_string(blocks) + " blocks: 1 to " +
                                          std::to_string(data_->size() / identity_.block_size) + " per call"));
  }
  if (auto done = transfer(nvme::kRead, lba, bytes, namespace_id); !done) return std::unexpected(done.error());
  data_->sync_for_cpu();
  return std::vector<std::byte>(data_->data(), data_->data() + bytes);
}

Result<void> NvmeDriver::write(std::uint64_t lba, std::span<const std::byte> data, std::uint32_t namespace_id) {
  if (data.empty() || data.size() % identity_.block_size != 0 || data.size() > data_->size()) {
    return std::unexpected(make_error(Errc::invalid_argument, "NVMe write", device_->bdf().to_string(),
                                      std::to_string(data.size()) + " bytes: whole blocks of " +
                                          std::to_string(identity_.block_size) + ", at most " +
                                          std::to_string(data_->size())));
  }
  std::memcpy(data_->data(), data.data(), data.size());
  data_->sync_for_device();
  return transfer(nvme::kWrite, lba, data.size(), namespace_id);
}

Result<void> NvmeDriver::flush(std::uint32_t namespace_id) {
  auto done = execute(*io_, {.opcode = nvme::kFlush, .namespace_id = namespace_id});
  if (!done) return std::unexpected(done.error());
  return {};
}

Result<std::chrono::nanoseconds> NvmeDriver::random_reads(unsigned queue_depth, unsigned count, std::uint64_t seed) {
  // 4 KiB per read (or one block, where blocks are larger), at 4 KiB-aligned offsets: what
  // fio's bs=4k reads through the kernel.
  const std::uint32_t block = std::max<std::uint32_t>(identity_.block_size, 4096);
  const std::uint32_t blocks_per_read = block / identity_.block_size;
  const unsigned depth = std::clamp<unsigned>(queue_depth, 1, io_->sq.depth() - 1);
  if (std::size_t{depth} * block > data_->size()) {
    return std::unexpected(make_error(Errc::invalid_argument, "NVMe bench", device_->bdf().to_string(), "queue too deep"));
  }
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<std::uint64_t> reads(0, identity_.namespace_blocks / blocks_per_read - 1);
  unsigned submitted = 0;
  unsigned completed = 0;
  const auto start = std::chrono::steady_clock::now();
  while (completed < count) {
    // Keep `depth` commands in flight, each reading into its own block of the buffer.
    unsigned batch = 0;
    while (submitted < count && submitted - completed < depth) {
      const std::uint64_t lba = reads(random) * blocks_per_read;
      nvme::Command command{.opcode = nvme::kRead, .namespace_id = 1};
      command.command_id = static_cast<std::uint16_t>(submitted % depth);
      command.cdw10 = static_cast<std::uint32_t>(lba);
      command.cdw11 = static_cast<std::uint32_t>(lba >> 32);
      command.cdw12 = blocks_per_read - 1;
      command.prp1 = data_->bus_address().value + std::uint64_t{command.command_id} * block;
      if (auto pushed = io_->sq.push(command); !pushed) return std::unexpected(pushed.error());
      ++submitted;
      ++batch;
    }
    if (batch > 0) io_->sq.ring();
    auto completion = reap(*io_);
    if (!completion) return std::unexpected(completion.error());
    if ((completion->status >> 1) != 0) {
      return std::unexpected(make_error(Errc::io_error, "NVMe bench read", device_->bdf().to_string(),
                                        nvme::describe_status(completion->status)));
    }
    ++completed;
  }
  return std::chrono::steady_clock::now() - start;
}

Result<void> NvmeDriver::shutdown() {
  if (shut_down_ || !device_ || !enabled_) return {};
  shut_down_ = true;
  // Delete the I/O queues that were made, then a normal shutdown: CC.SHN = 01b, wait for
  // CSTS.SHST = 10b.
  if (io_queues_ == 2) (void)execute(*admin_, {.opcode = nvme::kDeleteIoSq, .cdw10 = 1});
  if (io_queues_ >= 1) (void)execute(*admin_, {.opcode = nvme::kDeleteIoCq, .cdw10 = 1});
  const pcie::MmioView regs = registers();
  const std::uint32_t configuration = regs.read<std::uint32_t>(nvme::kConfiguration);
  regs.write<std::uint32_t>(nvme::kConfiguration, (configuration & ~(3u << 14)) | (1u << 14));
  auto done = regs.poll<std::uint32_t>(nvme::kStatus, 3u << 2, 2u << 2,
                                       pcie::WaitOptions{.timeout = ready_timeout_, .all_ones_means_removed = true});
  if (!done) return std::unexpected(done.error());
  if (!done->matched) return std::unexpected(controller_error("shut down NVMe", "CSTS.SHST did not report complete"));
  return {};
}

NvmeDriver::~NvmeDriver() {
  if (!device_) return;  // moved from
  (void)shutdown();
  // Whatever the controller did with the shutdown (or an open() that failed half way),
  // it must not reach the queues and buffers freed next: no DMA without bus mastering.
  (void)device_->enable_bus_master(false);
}

}  // namespace examples
