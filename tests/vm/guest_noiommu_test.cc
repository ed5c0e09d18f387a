// Runs inside the test VM booted without an IOMMU (vm_noiommu_*_test): one backend per run,
// chosen by --backend=uio (edu 00:03.0 bound to uio_pci_generic, Debian's stock kernel),
// --backend=vfio-noiommu (bound to vfio-pci in no-IOMMU mode, the kernel of our own, through
// VFIO's group no-IOMMU model) or --backend=iommufd-noiommu (the same devices, through their
// noiommu-vfioN cdevs and /dev/iommu). The two VFIO ones set PCIE_VFIO_BACKEND (type1,
// iommufd) for every program the test runs, so neither falls back to the other unseen.
// The same checks run on each (the suites Uio.* and VfioNoiommu.* only on theirs: the host
// side filters out the other's): edu DMA round trips through physical-address buffers on
// 4 KiB, 2 MiB and 1 GiB pages (every byte compared, guard bytes untouched), the 28-bit DMA
// mask of the second edu (00:06.0, no driver), interrupts (INTx through UIO, MSI through
// VFIO), the reference driver unchanged, /dev/mem and /proc/iomem on real hardware
// models, the NVMe example on this backend, and the refusals (non-root, PFN 0).
//
// Devices: 00:03.0 edu with a 64-bit DMA mask (bound as above), 00:06.0 edu with QEMU's
// default 28-bit mask (no driver), 01:00.0 nvme with its driver. Huge pages: 2 MiB x 8 and
// 1 GiB x 1 reserved on the kernel command line.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "examples/edu/edu_driver.h"
#include "examples/nvme/nvme_driver.h"
#include "pcie/binding.h"
#include "pcie/config_space.h"
#include "pcie/device.h"
#include "pcie/dma.h"
#include "pcie/iomem.h"
#include "pcie/discovery.h"
#include "pcie/peer_dma.h"
#include "pcie/physical_window.h"
#include "pcie/sys/unique_fd.h"
#include "pcie/uio.h"
#include "pcie/vfio.h"
#include "tests/vm/flags.h"
#include "tests/vm/guest_shell.h"
#include "tests/vm/ivshmem_pattern.h"

namespace pcie {
namespace {

std::string g_backend = "uio";

const Bdf kEdu{0, 0, 3, 0};        // 64-bit DMA mask; bound to the backend's driver
const Bdf kMaskedEdu{0, 0, 6, 0};  // 28-bit DMA mask; no driver
const Bdf kNvme{0, 1, 0, 0};       // the nvme driver claims its BAR
const Bdf kIvshmem{0, 0, 4, 0};    // vfio-pci on the vfio-noiommu backend (peer-to-peer target)
constexpr auto kAccepted = DeviceMayReachAllMemory::acknowledged;

namespace edu = examples::edu;

Result<std::unique_ptr<Device>> open_backend(const Bdf& bdf) {
  if (g_backend == "uio") {
    auto device = UioDevice::open(bdf, {.dma = kAccepted});
    if (!device) return std::unexpected(device.error());
    return std::make_unique<UioDevice>(std::move(*device));
  }
  auto container = VfioContainer::open_without_iommu(kAccepted);
  if (!container) return std::unexpected(container.error());
  auto device = container->open_device(bdf);
  if (!device) return std::unexpected(device.error());
  return std::make_unique<VfioDevice>(std::move(*device));
}

std::string driver_for_backend() { return g_backend == "uio" ? "uio_pci_generic" : "vfio-pci"; }

// A device, its BAR0 and a physical DMA allocator, as a driver would hold them.
struct Opened {
  std::unique_ptr<Device> device;
  std::unique_ptr<Region> bar0;
  std::optional<DmaAllocator> allocator;
  MmioView regs() const { return MmioView(bar0->mapped_base(), bar0->size(), bar0->allowed_widths(), bar0->name()); }
};

void open_for_dma(const Bdf& bdf, Opened& opened) {
  auto device = open_backend(bdf);
  ASSERT_TRUE(device) << device.error().message();
  opened.device = std::move(*device);
  auto bar0 = opened.device->open_bar(0);
  ASSERT_TRUE(bar0) << bar0.error().message();
  opened.bar0 = std::move(*bar0);
  ASSERT_NE(opened.bar0->mapped_base(), nullptr);
  ASSERT_TRUE(opened.device->enable_bus_master());
  auto allocator = opened.device->dma_allocator();
  ASSERT_TRUE(allocator) << allocator.error().message();
  EXPECT_TRUE(allocator->backend().bus_addresses_are_physical());
  opened.allocator.emplace(std::move(*allocator));
}

// One edu DMA, waited for with a bounded poll (counts of 0 or 4096 crash QEMU 7.2).
::testing::AssertionResult edu_dma(const MmioView& regs, std::uint64_t source, std::uint64_t destination,
                                   std::uint64_t count, bool to_ram) {
  regs.write<std::uint64_t>(edu::kDmaSource, source);
  regs.write<std::uint64_t>(edu::kDmaDestination, destination);
  regs.write<std::uint64_t>(edu::kDmaCount, count);
  regs.write<std::uint64_t>(edu::kDmaCommand, edu::kDmaStart | (to_ram ? edu::kDmaToRam : 0));
  auto done = regs.poll<std::uint64_t>(edu::kDmaCommand, edu::kDmaStart, 0, std::chrono::seconds(10));
  if (!done) return ::testing::AssertionFailure() << done.error().message();
  if (!done->matched) return ::testing::AssertionFailure() << "edu DMA still running after 10 s";
  return ::testing::AssertionSuccess();
}

// Round trips of several sizes through edu's buffer, from one physical buffer to another
// at an offset inside it; every byte of both buffers outside the transfer is a guard that
// must keep its pattern.
void round_trip(Opened& opened, std::size_t size, DmaBacking prefer, DmaBacking expected, std::uint64_t dma_limit) {
  auto out = opened.allocator->allocate(size, {.dma_limit = dma_limit, .prefer = prefer});
  ASSERT_TRUE(out) << out.error().message();
  auto in = opened.allocator->allocate(size, {.dma_limit = dma_limit, .prefer = prefer});
  ASSERT_TRUE(in) << in.error().message();
  ASSERT_EQ(out->backing(), expected) << dma_backing_name(out->backing());
  for (const DmaBuffer* buffer : {&*out, &*in}) {
    ASSERT_TRUE(buffer->physical_address());
    EXPECT_EQ(*buffer->physical_address(), buffer->bus_address().value);
    EXPECT_NE(buffer->bus_address().value, 0u);
    EXPECT_LE(buffer->bus_address().value + buffer->size() - 1, dma_limit);
    std::printf("%s: %zu bytes on %s at physical 0x%llx\n", std::string(buffer->backend_name()).c_str(), buffer->size(),
                std::string(dma_backing_name(buffer->backing())).c_str(),
                static_cast<unsigned long long>(buffer->bus_address().value));
  }
  // Offsets near the end of the buffer too: the device must reach its last page.
  const std::size_t far = size > 8192 ? size - 8192 : 0;
  for (const std::size_t offset : {std::size_t{0}, std::size_t{100}, far}) {
    for (const std::size_t count : {std::size_t{1}, std::size_t{63}, std::size_t{4095}}) {
      SCOPED_TRACE(testing::Message() << "offset " << offset << ", " << count << " bytes");
      if (offset + count > size) continue;
      for (std::size_t i = 0; i < size; ++i) out->data()[i] = std::byte(static_cast<unsigned char>(i * 7 + count));
      std::memset(in->data(), 0xa5, size);
      out->sync_for_device();
      ASSERT_TRUE(edu_dma(opened.regs(), out->bus_address().value + offset, edu::kInternalBuffer, count, false));
      ASSERT_TRUE(edu_dma(opened.regs(), edu::kInternalBuffer, in->bus_address().value + offset, count, true));
      in->sync_for_cpu();
      ASSERT_EQ(std::memcmp(out->data() + offset, in->data() + offset, count), 0);
      for (std::size_t i = 0; i < size; ++i) {
        if (i >= offset && i < offset + count) continue;
        ASSERT_EQ(in->data()[i], std::byte{0xa5}) << "guard byte " << i << " was written";
      }
    }
  }
}

TEST(PhysicalDma, RoundTripsOn4KiBPages) {
  Opened opened;
  ASSERT_NO_FATAL_FAILURE(open_for_dma(kEdu, opened));
  round_trip(opened, 4096, DmaBacking::pages, DmaBacking::pages, ~std::uint64_t{0});
  EXPECT_EQ(opened.allocator->mapped_bytes(), 0u);
}

TEST(PhysicalDma, RoundTripsOn2MiBPages) {
  Opened opened;
  ASSERT_NO_FATAL_FAILURE(open_for_dma(kEdu, opened));
  round_trip(opened, 2 << 20, DmaBacking::huge_2m, DmaBacking::huge_2m, ~std::uint64_t{0});
}

TEST(PhysicalDma, RoundTripsOn1GiBPages) {
  Opened opened;
  ASSERT_NO_FATAL_FAILURE(open_for_dma(kEdu, opened));
  auto buffer = opened.allocator->allocate(1 << 30, {.prefer = DmaBacking::huge_1g});
  ASSERT_TRUE(buffer) << buffer.error().message();
  ASSERT_EQ(buffer->backing(), DmaBacking::huge_1g);
  EXPECT_EQ(buffer->bus_address().value % (1 << 30), 0u) << "a 1 GiB page is 1 GiB-aligned in physical memory";
  // Only one 1 GiB page is reserved: round trips inside it, far apart.
  for (const std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{512} << 20, (std::uint64_t{1} << 30) - 8192}) {
    SCOPED_TRACE(offset);
    std::byte* out = buffer->data() + offset;
    std::byte* in = out + 4096;
    for (std::size_t i = 0; i < 4095; ++i) out[i] = std::byte(static_cast<unsigned char>(i * 13 + 1));
    std::memset(in, 0xa5, 4096);
    ASSERT_TRUE(edu_dma(opened.regs(), buffer->bus_address().value + offset, edu::kInternalBuffer, 4095, false));
    ASSERT_TRUE(edu_dma(opened.regs(), edu::kInternalBuffer, buffer->bus_address().value + offset + 4096, 4095, true));
    ASSERT_EQ(std::memcmp(out, in, 4095), 0);
    EXPECT_EQ(in[4095], std::byte{0xa5}) << "the byte after the transfer is untouched";
  }
}

TEST(PhysicalDma, PoolCarvesSlicesWithPhysicalAddresses) {
  Opened opened;
  ASSERT_NO_FATAL_FAILURE(open_for_dma(kEdu, opened));
  auto pool = DmaPool::create(*opened.allocator, {.prefer = DmaBacking::pages}, 4096);
  ASSERT_TRUE(pool) << pool.error().message();
  auto a = pool->allocate(100);
  auto b = pool->allocate(200);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(pool->chunk_count(), 1u);
  std::memset(a->data(), 0x3c, 100);
  ASSERT_TRUE(edu_dma(opened.regs(), a->bus_address().value, edu::kInternalBuffer, 100, false));
  ASSERT_TRUE(edu_dma(opened.regs(), edu::kInternalBuffer, b->bus_address().value, 100, true));
  for (std::size_t i = 0; i < 100; ++i) ASSERT_EQ(b->data()[i], std::byte{0x3c});
  EXPECT_EQ(b->data()[100], std::byte{0}) << "the slice past the transfer is untouched";
}

// The physical address of every free 2 MiB huge page: all taken at once (so each is a
// different page), located through pagemap, given back.
std::vector<std::uint64_t> free_huge_page_addresses() {
  std::ifstream count_file("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
  std::size_t count = 0;
  count_file >> count;
  std::vector<std::uint64_t> addresses;
  if (count == 0) return addresses;
  constexpr std::size_t kHuge = std::size_t{2} << 20;
  void* pages = ::mmap(nullptr, count * kHuge, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT) | MAP_POPULATE, -1, 0);
  if (pages == MAP_FAILED) return addresses;
  const pcie::UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  for (std::size_t i = 0; i < count && pagemap.valid(); ++i) {
    const auto virtual_address = reinterpret_cast<std::uintptr_t>(pages) + i * kHuge;
    std::uint64_t entry = 0;
    if (::pread(pagemap.get(), &entry, sizeof entry, static_cast<off_t>(virtual_address / 4096 * 8)) == sizeof entry &&
        (entry >> 63) != 0) {
      addresses.push_back((entry & ((std::uint64_t{1} << 55) - 1)) * 4096);
    }
  }
  ::munmap(pages, count * kHuge);
  return addresses;
}

// edu 00:06.0 keeps QEMU's 28-bit mask and truncates addresses above it silently: buffers
// must lie below 256 MiB, with most of the guest's 3.5 GiB above.
TEST(PhysicalDma, TwentyEightBitMaskIsHonouredWithMemoryAboveIt) {
  ASSERT_TRUE(bind_driver({}, kMaskedEdu, driver_for_backend())) << "bind " << kMaskedEdu.to_string();
  {
    Opened opened;
    ASSERT_NO_FATAL_FAILURE(open_for_dma(kMaskedEdu, opened));
    const std::uint64_t limit = dma_mask_limit(edu::kDmaMaskBits);
    if (auto buffer = opened.allocator->allocate(4096, {.dma_limit = limit, .prefer = DmaBacking::pages}); !buffer) {
      // Every page tried lay above the mask: the refusal must say so, never hand one out.
      EXPECT_EQ(buffer.error().code, Errc::out_of_range) << buffer.error().message();
      EXPECT_NE(buffer.error().reason.find("DMA limit"), std::string::npos) << buffer.error().message();
      // And it must be true: the last resort is a 2 MiB huge page from the boot-time pool,
      // which the allocator tries in full (8 pages, as many as its attempts); had one lain
      // below the mask, the refusal would be the allocator's fault.
      const auto huge_pages = free_huge_page_addresses();
      EXPECT_FALSE(huge_pages.empty()) << "the guest boots with 8 huge pages of 2 MiB";
      for (const std::uint64_t address : huge_pages) {
        EXPECT_GT(address + (std::uint64_t{2} << 20) - 1, limit)
            << "a free huge page lies below the mask at 0x" << std::hex << address << ", yet the allocation was refused";
      }
      ::testing::Test::RecordProperty("below_mask", "refused: no free page below it");
    } else {
      EXPECT_LE(buffer->bus_address().value + 4095, limit);
      std::printf("below the 28-bit mask: %s at 0x%llx\n", std::string(dma_backing_name(buffer->backing())).c_str(),
                  static_cast<unsigned long long>(buffer->bus_address().value));
      round_trip(opened, 4096, DmaBacking::pages, buffer->backing(), limit);
    }
    // A limit no memory can meet: refused, with what to do, after trying other pages.
    auto impossible = opened.allocator->allocate(4096, {.dma_limit = dma_mask_limit(16), .prefer = DmaBacking::pages});
    ASSERT_FALSE(impossible);
    EXPECT_EQ(impossible.error().code, Errc::out_of_range);
    EXPECT_NE(impossible.error().message().find("above the device's DMA limit 0xffff"), std::string::npos)
        << impossible.error().message();
    EXPECT_EQ(opened.allocator->mapped_bytes(), 0u);
  }
  EXPECT_TRUE(unbind_driver({}, kMaskedEdu));
}

TEST(PhysicalDma, NonContiguousPagesAreRefusedNotHandedOut) {
  Opened opened;
  ASSERT_NO_FATAL_FAILURE(open_for_dma(kEdu, opened));
  // 64 ordinary pages: physically contiguous only by luck. Either they are (and the one
  // address covers them all), or the allocation says to use huge pages.
  auto buffer = opened.allocator->allocate(256 << 10, {.prefer = DmaBacking::pages});
  if (!buffer) {
    EXPECT_EQ(buffer.error().code, Errc::not_supported) << buffer.error().message();
    EXPECT_NE(buffer.error().message().find("huge pages"), std::string::npos) << buffer.error().message();
  } else {
    // Handed out: then it must be contiguous, page after page, at the address given
    // (checked here through pagemap, independently of the allocator's own check).
    std::printf("256 KiB of ordinary pages happened to be contiguous at 0x%llx\n",
                static_cast<unsigned long long>(buffer->bus_address().value));
    const pcie::UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));  // closed on any ASSERT
    ASSERT_TRUE(pagemap.valid());
    for (std::size_t page = 0; page < (256u << 10) / 4096; ++page) {
      const auto virtual_address = reinterpret_cast<std::uintptr_t>(buffer->data()) + page * 4096;
      std::uint64_t entry = 0;
      ASSERT_EQ(::pread(pagemap.get(), &entry, sizeof entry, static_cast<off_t>(virtual_address / 4096 * 8)),
                static_cast<ssize_t>(sizeof entry));
      ASSERT_NE(entry >> 63, 0u) << "page " << page << " not present";
      const std::uint64_t physical = (entry & ((std::uint64_t{1} << 55) - 1)) * 4096;
      EXPECT_EQ(physical, buffer->bus_address().value + page * 4096) << "page " << page << " is not where the address says";
    }
  }
}

// Forks, drops to an unprivileged user and runs `body`; its exit status.
template <class Body>
int as_nobody(Body body) {
  const pid_t child = fork();
  if (child == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(100);
    // Changing users makes a process undumpable, which makes /proc/self root's: a user
    // who started unprivileged is dumpable, and it is that user's view that is tested.
    if (prctl(PR_SET_DUMPABLE, 1) != 0) _exit(101);
    _exit(body());
  }
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST(PhysicalDmaRefusals, Pfn0WithoutCapSysAdminIsAnErrorNotAnAddress) {
  const int status = as_nobody([] {
    const DmaAllocator allocator = DmaAllocator::create_physical(kAccepted);
    auto buffer = allocator.allocate(4096, {.prefer = DmaBacking::pages});
    if (buffer) return 1;  // an address handed out from a PFN of 0
    std::printf("as nobody: %s\n", buffer.error().message().c_str());
    if (buffer.error().code != Errc::permission_denied) return 2;
    if (buffer.error().message().find("CAP_SYS_ADMIN") == std::string::npos) return 3;
    return 0;
  });
  EXPECT_EQ(status, 0);
}

TEST(PhysicalDmaRefusals, UnprivilegedOpenSaysWhatToDo) {
  const int status = as_nobody([] {
    auto device = open_backend(kEdu);
    if (device) return 1;
    std::printf("as nobody: %s\n", device.error().message().c_str());
    return device.error().code == Errc::permission_denied ? 0 : 2;
  });
  EXPECT_EQ(status, 0);
}

// (A no-IOMMU VFIO container cannot be opened without the acknowledgement at all.)
TEST(Uio, NoAcknowledgementNoPhysicalBuffers) {
  auto device = UioDevice::open(kEdu);
  ASSERT_TRUE(device) << device.error().message();
  auto allocator = device->dma_allocator();
  ASSERT_FALSE(allocator);
  EXPECT_EQ(allocator.error().code, Errc::not_supported);
  EXPECT_NE(allocator.error().message().find("acknowledged"), std::string::npos) << allocator.error().message();
}

TEST(Interrupts, ReferenceDriverRunsUnchanged) {
  auto device = open_backend(kEdu);
  ASSERT_TRUE(device) << device.error().message();
  const std::string backend = (*device)->backend_name();
  auto driver = examples::EduDriver::open(std::move(*device), {.dma_mask_bits = 64});  // this VM's 00:03.0
  ASSERT_TRUE(driver) << driver.error().message();
  EXPECT_EQ(driver->identification(), 0x010000edu);
  EXPECT_EQ(driver->liveness(0x12345678), ~0x12345678u);
  EXPECT_EQ(driver->interrupt_kind(), g_backend == "uio" ? IrqKind::intx : IrqKind::msi) << backend;
  // Factorial completions and raised interrupts, several in a row: INTx must be rearmed
  // each time (uio_pci_generic masks it through Interrupt Disable when it fires).
  const std::uint32_t factorials[] = {1, 2, 6, 24, 120, 720, 5040, 40320, 362880, 3628800};
  for (std::uint32_t n = 1; n <= 10; ++n) {
    auto result = driver->factorial(n);
    ASSERT_TRUE(result) << "n=" << n << ": " << result.error().message();
    EXPECT_EQ(*result, factorials[n - 1]);
  }
  for (std::uint32_t i = 0; i < 5; ++i) ASSERT_TRUE(driver->raise_interrupt(0x1000u << i)) << i;
  const char message[] = "physical-address DMA";
  ASSERT_TRUE(driver->dma_to_device(std::as_bytes(std::span(message))));
  auto back = driver->dma_from_device(sizeof message);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(std::memcmp(back->data(), message, sizeof message), 0);
  EXPECT_TRUE(driver->buffer().physical_address());
}

using pcie::vm::shell;

// The example program, as a user runs it: only its --backend differs from the IOMMU demo.
TEST(Interrupts, EduDriverProgramOnThisBackend) {
  const auto [out, status] =
      shell("edu-driver --backend " + std::string(g_backend == "uio" ? "uio" : "vfio-noiommu") + " --dma-mask 64 0000:00:03.0");
  EXPECT_EQ(status, 0) << out;
  const std::string interrupt = g_backend == "uio" ? "INTx" : "MSI";
  EXPECT_NE(out.find(std::string("backend: ") + (g_backend == "uio" ? "UIO (uio_pci_generic)" : "VFIO (no IOMMU)") +
                     "; DMA: physical addresses (" + (g_backend == "iommufd-noiommu" ? "iommufd, " : "") + "no IOMMU)"),
            std::string::npos) << out;
  EXPECT_NE(out.find("10! by the device, completion by " + interrupt + ": 3628800"), std::string::npos) << out;
  EXPECT_NE(out.find("\"hello from host memory, by DMA\""), std::string::npos) << out;
}

TEST(Interrupts, NoInterruptWithoutACause) {
  auto device = open_backend(kEdu);
  ASSERT_TRUE(device) << device.error().message();
  ASSERT_TRUE((*device)->enable_bus_master());
  const IrqKind kind = g_backend == "uio" ? IrqKind::intx : IrqKind::msi;
  auto irq = (*device)->enable_interrupts(kind, 1);
  ASSERT_TRUE(irq) << irq.error().message();
  auto quiet = (*irq)->wait(0, std::chrono::milliseconds(200));
  ASSERT_TRUE(quiet);
  EXPECT_EQ(*quiet, 0u);
  auto second = (*device)->enable_interrupts(kind, 1);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::busy);
  auto bar0 = (*device)->open_bar(0);
  ASSERT_TRUE(bar0);
  ASSERT_TRUE((*bar0)->write(Width::bits32, edu::kIrqRaise, 0x4));
  auto fired = (*irq)->wait(0, std::chrono::seconds(5));
  ASSERT_TRUE(fired) << fired.error().message();
  EXPECT_EQ(*fired, 1u);
  ASSERT_TRUE((*bar0)->write(Width::bits32, edu::kIrqAcknowledge, 0x4));
  ASSERT_TRUE((*irq)->rearm(0));
  if (g_backend == "uio") {
    EXPECT_FALSE((*device)->enable_interrupts(IrqKind::msi, 1)) << "uio_pci_generic has no MSI";
    auto msi = (*device)->vector_count(IrqKind::msi);
    ASSERT_TRUE(msi);
    EXPECT_EQ(*msi, 0u);
  }
}

TEST(Uio, ClosingTheDeviceTurnsBusMasteringOff) {
  auto config = ConfigSpace::open({}, kEdu);
  ASSERT_TRUE(config);
  {
    auto device = UioDevice::open(kEdu);
    ASSERT_TRUE(device) << device.error().message();
    ASSERT_TRUE(device->enable_bus_master());
    EXPECT_TRUE(*config->read16(cfg::kCommand) & cfg::kCommandBusMaster);
  }
  // uio_pci_generic's release callback: DMA does not outlive the user.
  EXPECT_FALSE(*config->read16(cfg::kCommand) & cfg::kCommandBusMaster);
}

TEST(Uio, DeviceNotBoundToUioSaysHowToBindIt) {
  auto device = UioDevice::open(kMaskedEdu);
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code, Errc::not_supported);
  EXPECT_NE(device.error().message().find("uio_pci_generic"), std::string::npos) << device.error().message();
}

// A container with an IOMMU refuses a device that has none, through either interface: an
// IOAS would hand it IOVAs, which it would take for physical addresses.
TEST(VfioNoiommu, ContainerWithAnIommuSaysTheDeviceHasNone) {
  for (const VfioIommuBackend backend : {VfioIommuBackend::type1, VfioIommuBackend::iommufd}) {
    SCOPED_TRACE(to_string(backend));
    auto container = VfioContainer::open({}, {.backend = backend});
    ASSERT_TRUE(container) << container.error().message();
    auto device = container->open_device(kEdu);
    ASSERT_FALSE(device);
    EXPECT_NE(device.error().message().find("open_without_iommu"), std::string::npos) << device.error().message();
  }
}

TEST(VfioNoiommu, RegionsAndGroupNode) {
  auto container = VfioContainer::open_without_iommu(kAccepted);
  ASSERT_TRUE(container) << container.error().message();
  EXPECT_TRUE(container->without_iommu());
  auto device = container->open_device(kEdu);
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_EQ(device->backend_name(), "VFIO (no IOMMU)");
  auto bar0 = device->open_region(kVfioBar0Region);
  ASSERT_TRUE(bar0) << bar0.error().message();
  ASSERT_TRUE(bar0->mmio());
  EXPECT_EQ(bar0->mmio()->read<std::uint32_t>(edu::kIdentification), 0x010000edu);
  if (g_backend == "iommufd-noiommu") {
    // The IOAS's software page table: IOVAs only name pinned pages, the device sees none.
    EXPECT_EQ(container->backend(), VfioIommuBackend::iommufd) << container->backend_choice().reason;
    EXPECT_TRUE(container->ioas_id());
  } else {
    EXPECT_EQ(container->backend(), VfioIommuBackend::type1) << container->backend_choice().reason;
    EXPECT_TRUE(container->iova_ranges().empty()) << "no IOMMU, no IOVA ranges";
  }
}

// The physical address a buffer gets is where its bytes are: the kernel's pagemap agrees
// for every page (iommufd asks the IOAS that pins them; the group model reads pagemap), on
// an ordinary page and on huge ones (a 16 KiB buffer that allows them lies in one 2 MiB
// page: ordinary pages are contiguous only by luck), each page where its one bus address
// says.
// The physical address of the page holding `address`, from /proc/self/pagemap (root);
// nullopt when it cannot be read or the page is not present.
std::optional<std::uint64_t> physical_address_of(const void* address) {
  const int pagemap = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (pagemap < 0) return std::nullopt;
  std::uint64_t entry = 0;
  const auto page = reinterpret_cast<std::uintptr_t>(address) / 4096;
  const bool read = ::pread(pagemap, &entry, sizeof entry, static_cast<off_t>(page * sizeof entry)) ==
                    static_cast<ssize_t>(sizeof entry);
  ::close(pagemap);
  if (!read || (entry & (1ull << 63)) == 0) return std::nullopt;
  return (entry & ((1ull << 55) - 1)) * 4096;
}

TEST(VfioNoiommu, BufferBusAddressesAreTheirPagesPhysicalAddresses) {
  Opened opened;
  ASSERT_NO_FATAL_FAILURE(open_for_dma(kEdu, opened));
  auto& allocator = opened.allocator;
  for (const auto& [size, backing] : {std::pair<std::size_t, DmaBacking>{4096, DmaBacking::pages},
                                      {16384, DmaBacking::huge_2m}, {1 << 20, DmaBacking::huge_2m}}) {
    SCOPED_TRACE(size);
    auto buffer = allocator->allocate(size, {.prefer = backing});
    ASSERT_TRUE(buffer) << buffer.error().message();
    for (std::size_t offset = 0; offset < size; offset += 4096) {
      EXPECT_EQ(physical_address_of(buffer->data() + offset), buffer->bus_address().value + offset) << offset;
    }
  }
}

// `pciectl peer` without an IOMMU: the BAR's bus address is the path (both devices below
// the VM's one host bridge, no translation); the IOMMU paths are not.
TEST(VfioNoiommu, PciectlPeerTellsTheBusAddressPath) {
  const auto [out, status] = shell("pciectl peer 0000:00:03.0 0000:00:04.0 2");
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("  yes  no IOMMU (the BAR's bus address): no IOMMU translates for 0000:00:03.0; both devices "
                     "sit below pci0000:00; the BAR's bus address is 0x"),
            std::string::npos) << out;
  EXPECT_NE(out.find("  no   type1 (the BAR's mapping): no IOMMU translates for 0000:00:03.0"), std::string::npos) << out;
  EXPECT_NE(out.find("  no   iommufd (dma-buf): "), std::string::npos) << out;
}

// Left to choose (no PCIE_VFIO_BACKEND, no option), a container without an IOMMU takes
// iommufd on this kernel (7.3 tells physical addresses through it, and gives noiommu
// cdevs), says why, and opens the device through its noiommu cdev.
TEST(VfioNoiommu, AutomaticChoiceTakesIommufdWhereTheKernelTellsAddresses) {
  // PCIE_VFIO_BACKEND unset for this test only, put back however it ends.
  struct Unset {
    std::optional<std::string> old;
    Unset() {
      if (const char* value = std::getenv("PCIE_VFIO_BACKEND")) old = value;
      ::unsetenv("PCIE_VFIO_BACKEND");
    }
    ~Unset() {
      if (old) ::setenv("PCIE_VFIO_BACKEND", old->c_str(), 1);
    }
  } const unset;
  auto container = VfioContainer::open_without_iommu(kAccepted);
  ASSERT_TRUE(container) << container.error().message();
  EXPECT_EQ(container->backend(), VfioIommuBackend::iommufd) << container->backend_choice().reason;
  EXPECT_NE(container->backend_choice().reason.find("IOMMU_IOAS_NOIOMMU_GET_PA"), std::string::npos)
      << container->backend_choice().reason;
  auto device = container->open_device(kEdu);
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_TRUE(container->without_iommu());
}

// Buffers outlive the devices that used them: with the container's last device closed, a
// buffer stays pinned where its bus address says (iommufd: the container owns the page
// table that pins it; the IOAS's automatic one would go with the device, unpinning it),
// another buffer can be mapped, and a device opened again DMAs between the two.
TEST(VfioNoiommu, BuffersOutliveTheDevicesThatUsedThem) {
  auto container = VfioContainer::open_without_iommu(kAccepted);
  ASSERT_TRUE(container) << container.error().message();
  auto first = container->open_device(kEdu);
  ASSERT_TRUE(first) << first.error().message();
  auto allocator = DmaAllocator::create(*container);
  ASSERT_TRUE(allocator) << allocator.error().message();
  auto out = allocator->allocate(4096, {.prefer = DmaBacking::pages});
  ASSERT_TRUE(out) << out.error().message();
  *first = VfioDevice();  // the container's last device closes
  EXPECT_EQ(physical_address_of(out->data()), out->bus_address().value);
  auto in = allocator->allocate(4096, {.prefer = DmaBacking::pages});
  ASSERT_TRUE(in) << "with no device open: " << in.error().message();
  auto again = container->open_device(kEdu);
  ASSERT_TRUE(again) << again.error().message();
  ASSERT_TRUE(again->enable_bus_master());
  auto bar0 = again->open_region(kVfioBar0Region);
  ASSERT_TRUE(bar0) << bar0.error().message();
  const MmioView regs = *bar0->mmio();
  for (std::size_t i = 0; i < 64; ++i) out->data()[i] = std::byte(static_cast<unsigned char>(0xa0 + i));
  std::memset(in->data(), 0, in->size());
  out->sync_for_device();
  ASSERT_TRUE(edu_dma(regs, out->bus_address().value, edu::kInternalBuffer, 64, false));
  ASSERT_TRUE(edu_dma(regs, edu::kInternalBuffer, in->bus_address().value, 64, true));
  in->sync_for_cpu();
  EXPECT_EQ(std::memcmp(in->data(), out->data(), 64), 0);
}

// Peer-to-peer without an IOMMU: edu DMAs pattern bytes from a physical buffer into a window
// of ivshmem's BAR2 at the BAR's own bus address (both devices below the one host bridge)
// and back into another; the CPU sees them through its mapping of the BAR, and the host
// checks the BAR's backing file afterwards (vm_noiommu_test).
TEST(VfioNoiommu, EduWritesIntoIvshmemsBarAtItsBusAddress) {
  auto container = VfioContainer::open_without_iommu(kAccepted);
  ASSERT_TRUE(container) << container.error().message();
  auto edu_device = container->open_device(kEdu);
  ASSERT_TRUE(edu_device) << edu_device.error().message();
  ASSERT_TRUE(edu_device->enable_bus_master());
  auto ivshmem = container->open_device(kIvshmem);
  ASSERT_TRUE(ivshmem) << ivshmem.error().message();
  auto described = describe(kIvshmem);
  ASSERT_TRUE(described) << described.error().message();
  std::uint64_t bar2_address = 0;
  for (const BarInfo& bar : described->bars) {
    if (bar.index == 2) bar2_address = bar.bus_address;
  }
  ASSERT_NE(bar2_address, 0u);
  // Out of reach of a device whose limit falls one byte short of the window's end.
  const std::uint64_t window_last = bar2_address + vm::kPeerDmaWindowOffset + 4095;
  auto too_high = map_peer_bar(*edu_device, *ivshmem, 2, vm::kPeerDmaWindowOffset, 4096, {.dma_limit = window_last - 1});
  ASSERT_FALSE(too_high);
  EXPECT_EQ(too_high.error().code, Errc::out_of_range) << too_high.error().message();
  EXPECT_TRUE(map_peer_bar(*edu_device, *ivshmem, 2, vm::kPeerDmaWindowOffset, 4096, {.dma_limit = window_last}));
  {
    // A BAR that is not decoded (Memory Space Enable off) answers nothing at its address:
    // no window until it is decoded again.
    auto config = ivshmem->open_region(kVfioConfigRegion);
    ASSERT_TRUE(config) << config.error().message();
    const std::uint64_t command = config->read(Width::bits16, 0x04).value_or(0);
    ASSERT_NE(command & 0x2u, 0u);
    ASSERT_TRUE(config->write(Width::bits16, 0x04, command & ~std::uint64_t{0x2}));
    auto undecoded = map_peer_bar(*edu_device, *ivshmem, 2, vm::kPeerDmaWindowOffset, 4096);
    ASSERT_TRUE(config->write(Width::bits16, 0x04, command));
    ASSERT_FALSE(undecoded);
    EXPECT_EQ(undecoded.error().code, Errc::device_disabled) << undecoded.error().message();
    EXPECT_NE(undecoded.error().hint.find("memory decoding"), std::string::npos) << undecoded.error().message();
  }
  auto window = map_peer_bar(*edu_device, *ivshmem, 2, vm::kPeerDmaWindowOffset, 4096);
  ASSERT_TRUE(window) << window.error().message();
  EXPECT_EQ(window->path(), PeerDmaPath::bus_address);
  EXPECT_EQ(window->bus_address().value, bar2_address + vm::kPeerDmaWindowOffset);

  auto allocator = DmaAllocator::create(*container);
  ASSERT_TRUE(allocator) << allocator.error().message();
  auto out = allocator->allocate(4096, {.prefer = DmaBacking::pages});
  auto in = allocator->allocate(4096, {.prefer = DmaBacking::pages});
  ASSERT_TRUE(out && in);
  const vm::PatternSpan span = vm::kPeerDmaSpan;
  for (std::uint64_t i = 0; i < span.length; ++i) out->data()[i] = std::byte{vm::pattern_byte(span.offset + i)};
  auto bar0 = edu_device->open_region(kVfioBar0Region);
  ASSERT_TRUE(bar0) << bar0.error().message();
  const MmioView regs = *bar0->mmio();
  auto bus = window->bus_address_of(span.offset - vm::kPeerDmaWindowOffset, span.length);
  ASSERT_TRUE(bus) << bus.error().message();
  out->sync_for_device();
  ASSERT_TRUE(edu_dma(regs, out->bus_address().value, edu::kInternalBuffer, span.length, false));
  ASSERT_TRUE(edu_dma(regs, edu::kInternalBuffer, bus->value, span.length, true));
  auto bar2 = ivshmem->open_region(kVfioBar0Region + 2);
  ASSERT_TRUE(bar2) << bar2.error().message();
  for (std::uint64_t i = 0; i < span.length; ++i) {
    ASSERT_EQ(bar2->mmio()->read<std::uint8_t>(span.offset + i), vm::pattern_byte(span.offset + i)) << i;
  }
  ASSERT_TRUE(edu_dma(regs, bus->value, edu::kInternalBuffer, span.length, false));
  ASSERT_TRUE(edu_dma(regs, edu::kInternalBuffer, in->bus_address().value, span.length, true));
  in->sync_for_cpu();
  EXPECT_EQ(std::memcmp(in->data(), out->data(), span.length), 0);
}

// NVMe on this backend (UIO or VFIO no-IOMMU). This VM's nvme has no drive, so no
// namespace (as QEMU's default nvme): identifying the controller must not need one.
// Without an IOMMU the driver's memory is physical, and ordinary pages are rarely
// adjacent: it takes its data area and PRP lists a page at a time (issue 22: the example
// failed to open here).
TEST(NoIommu, NvmeDriverIdentifiesAControllerWithoutNamespaces) {
  // The kernel's nvme driver has it: borrow it, and give it back for the DevMem tests.
  const std::optional<std::string> owner = bound_driver({}, kNvme).value_or(std::nullopt);
  ASSERT_TRUE(bind_driver({}, kNvme, driver_for_backend())) << "bind " << kNvme.to_string();
  {
    auto device = open_backend(kNvme);
    ASSERT_TRUE(device) << device.error().message();
    auto nvme = examples::NvmeDriver::open(std::move(*device));
    ASSERT_TRUE(nvme) << nvme.error().message();
    EXPECT_TRUE(nvme->identity().active_namespaces.empty());
    EXPECT_EQ(nvme->identity().namespace_id, 0u);
    EXPECT_EQ(nvme->identity().model, "QEMU NVMe Ctrl");
    EXPECT_GT(nvme->identity().max_transfer_bytes, 4096u);
    auto read = nvme->read(0, 1);
    ASSERT_FALSE(read);
    EXPECT_EQ(read.error().code, Errc::not_found) << read.error().message();
    EXPECT_TRUE(nvme->shutdown());
  }
  EXPECT_TRUE(unbind_driver({}, kNvme));
  if (owner) {
    EXPECT_TRUE(bind_driver({}, kNvme, *owner)) << "give " << kNvme.to_string() << " back to " << *owner;
  }
}

// The BAR's physical address from the kernel's resource tree.
std::optional<std::uint64_t> bar0_address(const Bdf& bdf) {
  auto tree = read_iomem();
  if (!tree) return std::nullopt;
  std::optional<std::uint64_t> found;
  const std::function<void(const std::vector<IomemRange>&)> walk = [&](const std::vector<IomemRange>& ranges) {
    for (const IomemRange& range : ranges) {
      if (range.device() == bdf && !found) found = range.start;
      walk(range.children);
    }
  };
  walk(tree->ranges);
  return found;
}

TEST(DevMem, ReadsEduIdAtItsBarWithNoDriverBound) {
  auto address = bar0_address(kMaskedEdu);
  ASSERT_TRUE(address) << "edu 00:06.0 is not in /proc/iomem";
  auto window = PhysicalWindow::map(*address, 4096);
  ASSERT_TRUE(window) << window.error().message();
  EXPECT_EQ(window->mmio().read<std::uint32_t>(edu::kIdentification), 0x010000edu);
  auto id = window->read(Width::bits32, edu::kIdentification);
  ASSERT_TRUE(id);
  EXPECT_EQ(*id, 0x010000edu);
  EXPECT_FALSE(window->read(Width::bits32, 2)) << "misaligned: refused before any access";
  // An unaligned start: the window begins mid-page.
  auto shifted = PhysicalWindow::map(*address + 4, 8);
  ASSERT_TRUE(shifted) << shifted.error().message();
  ASSERT_TRUE(shifted->write(Width::bits32, 0, 0x0f0f0f0f));
  EXPECT_EQ(*shifted->read(Width::bits32, 0), 0xf0f0f0f0u) << "edu's liveness register answers the inverse";
  const IomemOwner owner = iomem_owner(*read_iomem(), *address);
  EXPECT_EQ(owner.device, kMaskedEdu);
  EXPECT_FALSE(owner.claimed);
}

TEST(DevMem, ClaimedBarIsRefusedNamingItsDriver) {
  auto address = bar0_address(kNvme);
  ASSERT_TRUE(address);
  const IomemOwner owner = iomem_owner(*read_iomem(), *address);
  EXPECT_EQ(owner.claimed, "nvme") << owner.description;
  auto window = PhysicalWindow::map(*address, 4096);
  ASSERT_FALSE(window);
  EXPECT_EQ(window.error().code, Errc::driver_owns_region) << window.error().message();
  EXPECT_NE(window.error().message().find("nvme"), std::string::npos) << window.error().message();
  EXPECT_NE(window.error().message().find("0000:01:00.0"), std::string::npos) << window.error().message();
}

TEST(DevMem, PciectlMemAndIomemOnTheRealKernel) {
  auto edu = bar0_address(kMaskedEdu);
  auto nvme = bar0_address(kNvme);
  ASSERT_TRUE(edu && nvme);
  char address[32];
  std::snprintf(address, sizeof address, "0x%llx", static_cast<unsigned long long>(*edu));
  auto [id, id_status] = shell(std::string("pciectl mem read ") + address);
  EXPECT_EQ(id_status, 0);
  EXPECT_EQ(id, "0x010000ed\n");
  std::snprintf(address, sizeof address, "0x%llx", static_cast<unsigned long long>(*nvme));
  auto [refused, refused_status] = shell(std::string("pciectl mem read ") + address);
  EXPECT_EQ(refused_status, 5) << "busy: a driver claimed it";
  EXPECT_NE(refused.find("claimed by nvme"), std::string::npos) << refused;
  auto [owner, owner_status] = shell(std::string("pciectl iomem ") + address);
  EXPECT_EQ(owner_status, 0);
  EXPECT_NE(owner.find("owner: 0000:01:00.0 (claimed by nvme)"), std::string::npos) << owner;
  auto [ram, ram_status] = shell("pciectl mem read 0x100000");
  EXPECT_EQ(ram_status, 2) << "RAM: not supported through /dev/mem";
  EXPECT_NE(ram.find("System RAM"), std::string::npos) << ram;
}

TEST(DevMem, RamIsRefusedWithTheAlternative) {
  auto window = PhysicalWindow::map(0x100000, 4096);  // 1 MiB: System RAM on q35
  ASSERT_FALSE(window);
  EXPECT_EQ(window.error().code, Errc::not_supported) << window.error().message();
  EXPECT_NE(window.error().message().find("System RAM"), std::string::npos) << window.error().message();
}

TEST(DevMem, NonRootIsRefusedAndIomemHidesAddresses) {
  const int status = as_nobody([] {
    auto window = PhysicalWindow::map(0xfe800000, 4096);
    if (window) return 1;
    if (window.error().code != Errc::permission_denied) return 2;
    auto tree = read_iomem();
    if (!tree) return 3;
    return tree->addresses_hidden ? 0 : 4;
  });
  EXPECT_EQ(status, 0);
}

}  // namespace
}  // namespace pcie

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const pcie::vm::Flags flags = pcie::vm::parse_flags(argc, argv);
  if (flags.contains("backend")) pcie::g_backend = flags.at("backend");
  if (pcie::g_backend == "vfio-noiommu") ::setenv("PCIE_VFIO_BACKEND", "type1", 1);
  if (pcie::g_backend == "iommufd-noiommu") ::setenv("PCIE_VFIO_BACKEND", "iommufd", 1);
  return RUN_ALL_TESTS();
}
