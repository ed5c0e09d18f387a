// Runs in the test VM on QEMU's nvme (01:00.0, bound to vfio-pci), its namespace backed by a
// host file: the example NVMe driver (examples/nvme) identifies the controller and
// namespace, writes the ranges of nvme_pattern.h and reads them back, is refused by the
// device for what it must refuse (the NVMe status decoded), runs on MSI-X completions as
// well as polled ones, and keeps 32 reads in flight; then `nvme-driver` moves blocks
// straight between the namespace and ivshmem's BAR2 (00:04.0, bound to vfio-pci). The host
// then checks both files.
//
// Flags: --block-size=512|4096 (the format QEMU was given), --backend=type1|iommufd|noiommu.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "examples/nvme/nvme_driver.h"
#include "pcie/copy.h"
#include "pcie/peer_dma.h"
#include "pcie/vfio.h"
#include "tests/vm/flags.h"
#include "tests/vm/guest_shell.h"
#include "tests/vm/nvme_pattern.h"

namespace {

const pcie::Bdf kNvme{0, 1, 0, 0};
const pcie::Bdf kIvshmem{0, 0, 4, 0};
const pcie::Bdf kEdu{0, 0, 6, 0};  // on vfio-pci too: an initiator of another container
std::uint32_t g_block_size = 512;
std::string g_backend = "type1";

// A container of the backend under test: an IOMMU's (type1, iommufd), or none (VFIO's
// no-IOMMU mode: DMA to physical addresses, peer windows at the BAR's bus address).
pcie::Result<pcie::VfioContainer> open_container() {
  if (g_backend == "noiommu") return pcie::VfioContainer::open_without_iommu(pcie::DeviceMayReachAllMemory::acknowledged);
  return pcie::VfioContainer::open();
}

pcie::Result<examples::NvmeDriver> open_nvme(const examples::NvmeOptions& options = {}) {
  auto container = open_container();
  if (!container) return std::unexpected(container.error());
  auto device = container->open_device(kNvme);
  if (!device) return std::unexpected(device.error());
  return examples::NvmeDriver::open(std::make_unique<pcie::VfioDevice>(std::move(*device)), options);
}

std::vector<std::byte> pattern(std::uint64_t offset, std::uint64_t bytes) {
  std::vector<std::byte> data(bytes);
  for (std::uint64_t i = 0; i < bytes; ++i) data[i] = pcie::vm::nvme_pattern_byte(offset + i);
  return data;
}

TEST(GuestNvme, IdentifiesTheControllerAndNamespace) {
  auto nvme = open_nvme();
  ASSERT_TRUE(nvme) << nvme.error().message();
  const examples::NvmeIdentity& id = nvme->identity();
  EXPECT_EQ(id.model, "QEMU NVMe Ctrl");
  EXPECT_EQ(id.serial, "pcie-vm");
  EXPECT_EQ(id.block_size, g_block_size);
  EXPECT_EQ(id.namespace_blocks, pcie::vm::kNvmeImageBytes / g_block_size);
  EXPECT_GE(id.version, 0x00010400u);
  EXPECT_GE(id.max_transfer_bytes, 64u * 1024);
  std::printf("%s %s fw %s, %llu blocks of %u bytes, max transfer %llu bytes\n", id.model.c_str(), id.serial.c_str(),
              id.firmware.c_str(), static_cast<unsigned long long>(id.namespace_blocks), id.block_size,
              static_cast<unsigned long long>(id.max_transfer_bytes));
  EXPECT_TRUE(nvme->shutdown());
}

TEST(GuestNvme, WritesLandWhereAskedAndReadBack) {
  auto nvme = open_nvme();
  ASSERT_TRUE(nvme) << nvme.error().message();
  for (const pcie::vm::NvmeWrite& write : pcie::vm::nvme_writes(g_block_size)) {
    SCOPED_TRACE(write.offset);
    const std::vector<std::byte> data = pattern(write.offset, write.bytes);
    ASSERT_TRUE(nvme->write(write.offset / g_block_size, data));
  }
  ASSERT_TRUE(nvme->flush());
  // Read back in other shapes than written: each range whole, and a window across the
  // edge of one (pattern on one side, zeros on the other).
  for (const pcie::vm::NvmeWrite& write : pcie::vm::nvme_writes(g_block_size)) {
    auto back = nvme->read(write.offset / g_block_size, static_cast<std::uint32_t>(write.bytes / g_block_size));
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_TRUE(*back == pattern(write.offset, write.bytes)) << "at " << write.offset;
  }
  auto edge = nvme->read((65536 + 33 * 4096) / g_block_size - 1, 2);
  ASSERT_TRUE(edge) << edge.error().message();
  const std::vector<std::byte> written_end = pattern(65536 + 33 * 4096 - g_block_size, g_block_size);
  EXPECT_TRUE(std::equal(written_end.begin(), written_end.end(), edge->begin()));
  EXPECT_TRUE(std::all_of(edge->begin() + g_block_size, edge->end(), [](std::byte b) { return b == std::byte{0}; }));
}

TEST(GuestNvme, DeviceRefusalsComeBackWithTheStatusDecoded) {
  auto nvme = open_nvme();
  ASSERT_TRUE(nvme) << nvme.error().message();
  const std::uint64_t blocks = nvme->identity().namespace_blocks;
  auto past_end = nvme->read(blocks, 1);
  ASSERT_FALSE(past_end);
  EXPECT_EQ(past_end.error().code, pcie::Errc::io_error);
  EXPECT_NE(past_end.error().reason.find("LBA Out of Range (SCT 0x0, SC 0x80"), std::string::npos)
      << past_end.error().message();
  auto straddling = nvme->read(blocks - 1, 2);
  ASSERT_FALSE(straddling);
  EXPECT_NE(straddling.error().reason.find("LBA Out of Range"), std::string::npos) << straddling.error().message();
  // A namespace ID beyond the controller's (QEMU: 256) is invalid; one within it that has
  // no namespace is inactive, which I/O commands answer with Invalid Field (NVMe 2.0, 4.2.3).
  auto no_namespace = nvme->read(0, 1, 100000);
  ASSERT_FALSE(no_namespace);
  EXPECT_NE(no_namespace.error().reason.find("Invalid Namespace or Format (SCT 0x0, SC 0x0b"), std::string::npos)
      << no_namespace.error().message();
  auto inactive = nvme->read(0, 1, 7);
  ASSERT_FALSE(inactive);
  EXPECT_NE(inactive.error().reason.find("Invalid Field in Command (SCT 0x0, SC 0x02"), std::string::npos)
      << inactive.error().message();
  std::printf("refused: %s\nrefused: %s\n", past_end.error().message().c_str(), no_namespace.error().message().c_str());
  // Refused by the driver before the device sees it.
  EXPECT_EQ(nvme->read(0, 0).error().code, pcie::Errc::invalid_argument);
  const std::vector<std::byte> partial(g_block_size + 1);
  EXPECT_EQ(nvme->write(0, partial).error().code, pcie::Errc::invalid_argument);
  // The queue still works after the refusals.
  auto first = nvme->read(0, 1);
  ASSERT_TRUE(first) << first.error().message();
}

TEST(GuestNvme, InterruptDrivenCompletionsWork) {
  auto nvme = open_nvme({.interrupts = true});
  ASSERT_TRUE(nvme) << nvme.error().message();
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t lba : {0ull, 7ull, 100ull, 9ull, 50ull}) {
    auto data = nvme->read(lba, 4);
    ASSERT_TRUE(data) << data.error().message();
    EXPECT_EQ(data->size(), 4u * g_block_size);
  }
  // Each completion was announced by its interrupt (the last one's may still be on its way),
  // none found only after a wait timed out.
  EXPECT_GE(nvme->interrupts_seen(), 4u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

// Per-vector control on a real MSI-X function: vectors added to an enabled set keep the
// first one's eventfd working; a masked vector delivers nothing (a read completes when the
// driver finds the completion itself, at the latest when its wait times out), and the
// interrupt the device raised meanwhile arrives at unmask (MSI-X pending bit).
TEST(GuestNvme, MsixVectorsCanBeAddedAndMaskedOneByOne) {
  auto nvme = open_nvme({.interrupts = true, .command_timeout = std::chrono::milliseconds(300)});
  ASSERT_TRUE(nvme) << nvme.error().message();
  pcie::Interrupts* irq = nvme->interrupts();
  ASSERT_NE(irq, nullptr);
  ASSERT_EQ(irq->kind(), pcie::IrqKind::msix);
  ASSERT_EQ(irq->count(), 1u);
  const int first_fd = *irq->fd(0);

  auto grown = irq->add_vectors(2);
  ASSERT_TRUE(grown) << grown.error().message();
  EXPECT_EQ(*grown, 3u);
  EXPECT_EQ(irq->count(), 3u);
  EXPECT_EQ(*irq->fd(0), first_fd) << "the enabled vectors keep their eventfds";
  EXPECT_NE(*irq->fd(2), first_fd);
  EXPECT_EQ(irq->add_vectors(100000).error().code, pcie::Errc::out_of_range);
  std::uint64_t seen = nvme->interrupts_seen();
  ASSERT_TRUE(nvme->read(3, 1));
  EXPECT_GT(nvme->interrupts_seen(), seen) << "vector 0 still delivers after the set grew";

  ASSERT_TRUE(irq->mask(0));
  ASSERT_TRUE(irq->mask(0)) << "twice is harmless";
  // Five reads: unmasked, at least four of their interrupts are counted
  // (InterruptDrivenCompletionsWork); masked, none may be.
  seen = nvme->interrupts_seen();
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t lba = 4; lba < 9; ++lba) ASSERT_TRUE(nvme->read(lba, 1));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(nvme->interrupts_seen(), seen) << "an interrupt came through a masked vector";

  ASSERT_TRUE(irq->unmask(0));
  auto pending = irq->wait(0, std::chrono::milliseconds(1000));
  ASSERT_TRUE(pending);
  EXPECT_GE(*pending, 1u) << "the interrupt raised while masked was not delivered at unmask";
  seen = nvme->interrupts_seen();
  ASSERT_TRUE(nvme->read(5, 1));
  EXPECT_GT(nvme->interrupts_seen(), seen);
  EXPECT_EQ(irq->mask(3).error().code, pcie::Errc::out_of_range);
  std::printf("MSI-X: %u vectors enabled, 5 masked reads took %lld ms\n", irq->count(),
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
}

TEST(GuestNvme, KeepsManyReadsInFlight) {
  for (unsigned depth : {1u, 32u}) {
    auto nvme = open_nvme();
    ASSERT_TRUE(nvme) << nvme.error().message();
    auto elapsed = nvme->random_reads(depth, 2000, depth);
    ASSERT_TRUE(elapsed) << elapsed.error().message();
    std::printf("queue depth %u: 2000 random reads in %.1f ms\n", depth,
                std::chrono::duration<double, std::milli>(*elapsed).count());
  }
}

// The controller memory buffer (QEMU's cmb_size_mb=1, NVMe 1.4's scheme): blocks read into
// it are what the CPU then reads through BAR2, and blocks the CPU put there are what a
// write from it stores (the namespace's range zeroed first, so a write that moved nothing
// shows; the host checks the file too).
TEST(GuestNvmeCmb, BlocksGoIntoTheControllersOwnMemoryAndBack) {
  auto nvme = open_nvme();
  ASSERT_TRUE(nvme) << nvme.error().message();
  auto cmb = nvme->enable_cmb();
  ASSERT_TRUE(cmb) << cmb.error().message();
  EXPECT_EQ(cmb->bar, 2u);
  EXPECT_EQ(cmb->size, 1u << 20);
  EXPECT_TRUE(cmb->read_data && cmb->write_data && cmb->submission_queues);
  EXPECT_EQ(nvme->enable_cmb()->bus_address, cmb->bus_address) << "a second call changes nothing";
  std::printf("CMB: %llu bytes in BAR%u at +%#llx, bus address %#llx\n", static_cast<unsigned long long>(cmb->size),
              cmb->bar, static_cast<unsigned long long>(cmb->bar_offset),
              static_cast<unsigned long long>(cmb->bus_address));
  pcie::Region* bar = nvme->cmb_region();
  ASSERT_NE(bar, nullptr);

  // Namespace -> CMB: 600 KiB from mid-page, split past the largest transfer.
  const std::uint64_t from = 1 << 20, bytes = 600 * 1024, into = 0x10040;
  ASSERT_TRUE(nvme->write(from / g_block_size, pattern(from, bytes)));
  ASSERT_TRUE(nvme->read_to_cmb(from / g_block_size, static_cast<std::uint32_t>(bytes / g_block_size), into));
  std::vector<std::byte> seen(bytes);
  ASSERT_TRUE(pcie::copy_from_device(seen.data(), *bar, cmb->bar_offset + into, bytes));
  EXPECT_TRUE(seen == pattern(from, bytes)) << "the CMB does not hold the blocks read into it";

  // CMB -> namespace, over a range zeroed first.
  const std::uint64_t to = 65536, length = 33 * 4096, at = 0xa0000;
  const std::vector<std::byte> expected = pattern(to, length);
  ASSERT_TRUE(nvme->write(to / g_block_size, std::vector<std::byte>(length)));
  ASSERT_TRUE(pcie::copy_to_device(*bar, cmb->bar_offset + at, expected.data(), length));
  ASSERT_TRUE(nvme->write_from_cmb(to / g_block_size, static_cast<std::uint32_t>(length / g_block_size), at));
  ASSERT_TRUE(nvme->flush());
  auto back = nvme->read(to / g_block_size, static_cast<std::uint32_t>(length / g_block_size));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_TRUE(*back == expected) << "the namespace does not hold what was written from the CMB";

  // Refused before the controller sees them.
  EXPECT_EQ(nvme->read_to_cmb(0, 1, cmb->size - g_block_size + 4).error().code, pcie::Errc::out_of_range);
  EXPECT_EQ(nvme->read_to_cmb(0, 1, 2).error().code, pcie::Errc::invalid_argument);
  EXPECT_EQ(nvme->write_from_cmb(0, 0, 0).error().code, pcie::Errc::invalid_argument);
  EXPECT_TRUE(nvme->shutdown());
}

// A window is only good for the devices of the container it was mapped for, and only in
// the directions it was mapped with: the driver refuses anything else before the
// controller sees a command (its bus address would mean something else, or fault).
TEST(GuestNvmePeer, AWindowOfAnotherContainerOrDirectionIsRefused) {
  {
    auto other = open_container();  // edu and ivshmem: a DMA space of their own
    ASSERT_TRUE(other) << other.error().message();
    auto edu = other->open_device(kEdu);
    ASSERT_TRUE(edu) << edu.error().message();
    auto ivshmem = other->open_device(kIvshmem, {.reset_on_open = false});
    ASSERT_TRUE(ivshmem) << ivshmem.error().message();
    auto foreign = pcie::map_peer_bar(*edu, *ivshmem, 2, 0xfe000, 4096);
    ASSERT_TRUE(foreign) << foreign.error().message();
    auto nvme = open_nvme();
    ASSERT_TRUE(nvme) << nvme.error().message();
    auto refused = nvme->read_to(0, 1, *foreign, 0);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, pcie::Errc::invalid_argument);
    EXPECT_NE(refused.error().reason.find("another VFIO container"), std::string::npos) << refused.error().message();
    EXPECT_TRUE(nvme->read(0, 1)) << "the controller still works";
  }
  // One container, but a window the controller may only write into.
  auto container = open_container();
  ASSERT_TRUE(container) << container.error().message();
  auto device = container->open_device(kNvme);
  ASSERT_TRUE(device) << device.error().message();
  auto peer = container->open_device(kIvshmem, {.reset_on_open = false});
  ASSERT_TRUE(peer) << peer.error().message();
  auto nvme = examples::NvmeDriver::open(std::make_unique<pcie::VfioDevice>(std::move(*device)));
  ASSERT_TRUE(nvme) << nvme.error().message();
  const auto* initiator = dynamic_cast<const pcie::VfioDevice*>(&nvme->device());
  ASSERT_NE(initiator, nullptr);
  auto write_only = pcie::map_peer_bar(*initiator, *peer, 2, 0xfe000, 4096, {.device_reads = false});
  ASSERT_TRUE(write_only) << write_only.error().message();
  EXPECT_TRUE(write_only->usable_by(*initiator));
  EXPECT_FALSE(write_only->device_reads());
  EXPECT_TRUE(write_only->device_writes());
  auto wrong_way = nvme->write_from(0, 1, *write_only, 0);
  ASSERT_FALSE(wrong_way);
  EXPECT_EQ(wrong_way.error().code, pcie::Errc::invalid_argument);
  EXPECT_NE(wrong_way.error().reason.find("without device_reads"), std::string::npos) << wrong_way.error().message();
  auto read_only = pcie::map_peer_bar(*initiator, *peer, 2, 0xfd000, 4096, {.device_writes = false});
  ASSERT_TRUE(read_only) << read_only.error().message();
  auto other_way = nvme->read_to(0, 1, *read_only, 0);
  ASSERT_FALSE(other_way);
  EXPECT_NE(other_way.error().reason.find("without device_writes"), std::string::npos) << other_way.error().message();
  // A window of the controller's own BAR (mapped for edu, in the same container): its bus
  // address would send the controller's DMA through the IOMMU back to itself.
  auto edu = container->open_device(kEdu);
  ASSERT_TRUE(edu) << edu.error().message();
  auto own_bar = pcie::map_peer_bar(*edu, *initiator, 2, 0, 4096);
  ASSERT_TRUE(own_bar) << own_bar.error().message();
  auto itself = nvme->read_to(0, 1, *own_bar, 0);
  ASSERT_FALSE(itself);
  EXPECT_NE(itself.error().reason.find("this controller's own BAR"), std::string::npos) << itself.error().message();
  EXPECT_NE(itself.error().hint.find("read_to_cmb"), std::string::npos) << itself.error().message();
  EXPECT_TRUE(nvme->read(0, 1)) << "the controller still works";
}

// A reset of the peer through the library marks an iommufd window revoked, for good (the
// kernel's import stays unmapped: peer_dma.h), and the window maps again once released;
// type1 and no-IOMMU windows survive it (the kernel restores the BAR's address). The peer
// here is nvme's BAR2 (its CMB), which vfio-pci can reset; edu is the window's initiator
// (it does no DMA here: this is the library's bookkeeping, not the kernel's revocation,
// which GuestPeerDma.ARevokedWindowSaysSoUntilMappedAgain meets through map errors).
TEST(GuestNvmePeer, AResetOfThePeerMarksAnIommufdWindowRevoked) {
  auto container = open_container();
  ASSERT_TRUE(container) << container.error().message();
  auto edu = container->open_device(kEdu);
  ASSERT_TRUE(edu) << edu.error().message();
  auto nvme = container->open_device(kNvme, {.reset_on_open = false});
  ASSERT_TRUE(nvme) << nvme.error().message();
  auto window = pcie::map_peer_bar(*edu, *nvme, 2, 0, 4096);
  ASSERT_TRUE(window) << window.error().message();
  EXPECT_TRUE(window->check()) << window->check().error().message();
  ASSERT_TRUE(nvme->reset_supported()) << "QEMU's nvme has FLR";
  ASSERT_TRUE(nvme->reset());
  auto after = window->check();
  if (g_backend == "iommufd") {
    ASSERT_FALSE(after) << "an iommufd window looks usable after its peer's reset";
    EXPECT_EQ(after.error().code, pcie::Errc::device_disabled);
    EXPECT_NE(after.error().reason.find("reset after the window was mapped"), std::string::npos)
        << after.error().message();
    std::printf("after the peer's reset: %s\n", after.error().message().c_str());
    ASSERT_TRUE(window->release());
    EXPECT_EQ(window->check().error().code, pcie::Errc::invalid_argument) << "released: empty";
    auto again = pcie::map_peer_bar(*edu, *nvme, 2, 0, 4096);
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_TRUE(again->check()) << "mapped again after the reset";
  } else {
    EXPECT_TRUE(after) << after.error().message();
  }
}

// Storage to accelerator and back, as a user runs it: every transfer of nvme_pattern.h's
// table through the example program, whose PRPs (lists included) are ivshmem BAR2's bus
// addresses. The host checks both files afterwards.
TEST(GuestNvmePeer, BlocksMoveStraightBetweenTheNamespaceAndIvshmemsBar) {
  {
    // The ranges the reads into the BAR come from hold nvme_writes()' pattern, whatever
    // ran before.
    auto nvme = open_nvme();
    ASSERT_TRUE(nvme) << nvme.error().message();
    for (const pcie::vm::NvmePeerTransfer& transfer : pcie::vm::nvme_peer_transfers(g_block_size)) {
      if (!transfer.into_peer) continue;
      ASSERT_TRUE(nvme->write(transfer.namespace_offset / g_block_size, pattern(transfer.namespace_offset, transfer.bytes)));
    }
    ASSERT_TRUE(nvme->flush());
    ASSERT_TRUE(nvme->shutdown());
  }
  const std::string path = g_backend == "iommufd"   ? "through iommufd (dma-buf)"
                           : g_backend == "noiommu" ? "through no IOMMU (the BAR's bus address)"
                                                    : "through type1 (the BAR's mapping)";
  const std::string backend = g_backend == "noiommu" ? "--backend vfio-noiommu " : "";
  for (const pcie::vm::NvmePeerTransfer& transfer : pcie::vm::nvme_peer_transfers(g_block_size)) {
    char command[192];
    std::snprintf(command, sizeof command, "nvme-driver %s0000:01:00.0 %s %llu %llu --%s 0000:00:04.0:bar2:0x%llx",
                  backend.c_str(), transfer.into_peer ? "read" : "write",
                  static_cast<unsigned long long>(transfer.namespace_offset / g_block_size),
                  static_cast<unsigned long long>(transfer.bytes / g_block_size), transfer.into_peer ? "into" : "from",
                  static_cast<unsigned long long>(transfer.peer_offset));
    const auto [out, status] = pcie::vm::shell(command);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find(path), std::string::npos) << out;
    EXPECT_NE(out.find(std::to_string(transfer.bytes) + " bytes"), std::string::npos) << out;
  }
}

// The library form with a window of one page: what does not fit it, is not dword-aligned,
// or goes to a peer that stopped decoding memory (a revoked window) is refused before the
// controller sees a command.
TEST(GuestNvmePeer, TransfersThatLeaveTheWindowAreRefused) {
  auto container = open_container();
  ASSERT_TRUE(container) << container.error().message();
  auto device = container->open_device(kNvme);
  ASSERT_TRUE(device) << device.error().message();
  auto ivshmem = container->open_device(kIvshmem);
  ASSERT_TRUE(ivshmem) << ivshmem.error().message();
  auto nvme = examples::NvmeDriver::open(std::make_unique<pcie::VfioDevice>(std::move(*device)));
  ASSERT_TRUE(nvme) << nvme.error().message();
  const auto* initiator = dynamic_cast<const pcie::VfioDevice*>(&nvme->device());
  ASSERT_NE(initiator, nullptr);
  auto window = pcie::map_peer_bar(*initiator, *ivshmem, 2, 0xff000, 4096);
  ASSERT_TRUE(window) << window.error().message();
  const std::uint32_t per_page = 4096 / g_block_size;
  EXPECT_EQ(nvme->read_to(0, per_page + 1, *window, 0).error().code, pcie::Errc::out_of_range);
  EXPECT_EQ(nvme->write_from(0, 1, *window, 4096 - g_block_size + 4).error().code, pcie::Errc::out_of_range);
  EXPECT_EQ(nvme->read_to(0, 1, *window, 2).error().code, pcie::Errc::invalid_argument);
  EXPECT_EQ(nvme->read_to(0, 0, *window, 0).error().code, pcie::Errc::invalid_argument);
  EXPECT_EQ(nvme->write_from(0, 1, *window, ~std::uint64_t{0} - 3).error().code, pcie::Errc::out_of_range);
  // With ivshmem's decoding off the window is refused before any command goes out; on
  // iommufd the kernel revoked it for good, so it stays refused once decoding is back.
  auto config = ivshmem->open_region(pcie::kVfioConfigRegion);
  ASSERT_TRUE(config) << config.error().message();
  const std::uint64_t command = config->read(pcie::Width::bits16, 0x04).value_or(0);
  ASSERT_TRUE(config->write(pcie::Width::bits16, 0x04, command & ~std::uint64_t{2}));
  auto while_off = nvme->read_to(0, 1, *window, 0);
  ASSERT_TRUE(config->write(pcie::Width::bits16, 0x04, command));
  ASSERT_FALSE(while_off);
  EXPECT_EQ(while_off.error().code, pcie::Errc::device_disabled) << while_off.error().message();
  if (g_backend == "iommufd") {
    auto revoked = nvme->write_from(0, 1, *window, 0);
    ASSERT_FALSE(revoked);
    EXPECT_EQ(revoked.error().code, pcie::Errc::device_disabled) << revoked.error().message();
    std::printf("revoked: %s\n", revoked.error().message().c_str());
  } else {
    EXPECT_TRUE(window->check()) << window->check().error().message();
  }
  // Nothing reached the controller: the next command is served as usual.
  auto first = nvme->read(0, 1);
  ASSERT_TRUE(first) << first.error().message();
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const pcie::vm::Flags flags = pcie::vm::parse_flags(argc, argv);
  if (flags.contains("block-size")) g_block_size = static_cast<std::uint32_t>(std::stoul(flags.at("block-size")));
  if (flags.contains("backend")) g_backend = flags.at("backend");
  return RUN_ALL_TESTS();
}
