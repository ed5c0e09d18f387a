// The iommufd wrappers (src/sys/iommufd_ioctls.h) where the kernel answers with
// variable-length data: IOMMU_IOAS_IOVA_RANGES grows its array on EMSGSIZE, retries a bounded
// number of times when the count keeps changing, and refuses answers that make no sense;
// every wrapper's error names the ioctl and the object; the peer-window pair (VFIO's dma-buf
// export and IOMMU_IOAS_MAP_FILE) builds the arguments the kernel reads.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/iommufd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <vector>

#include "src/sys/iommufd_ioctls.h"
#include "src/sys/vfio_ioctls.h"

namespace pcie::sys::iommufd {
namespace {

// A kernel that holds `ranges` and answers as iommufd does (iommufd_ioas_iova_ranges):
// fills what fits, sets num_iovas to the total, EMSGSIZE when they did not all fit.
struct FakeKernel {
  std::vector<iommu_iova_range> ranges;
  std::uint64_t alignment = 4096;
  int calls = 0;
  std::uint32_t seen_ioas = 0;

  IoctlCall call() {
    return [this](unsigned long request, void* argument) {
      ++calls;
      if (request != IOMMU_IOAS_IOVA_RANGES) return -ENOTTY;
      auto* query = static_cast<iommu_ioas_iova_ranges*>(argument);
      if (query->size != sizeof *query || query->__reserved != 0) return -EINVAL;
      seen_ioas = query->ioas_id;
      auto* out = reinterpret_cast<iommu_iova_range*>(query->allowed_iovas);
      const std::uint32_t room = query->num_iovas;
      for (std::uint32_t i = 0; i < ranges.size() && i < room; ++i) out[i] = ranges[i];
      query->num_iovas = static_cast<std::uint32_t>(ranges.size());
      query->out_iova_alignment = alignment;
      return ranges.size() > room ? -EMSGSIZE : 0;
    };
  }
};

TEST(IommufdIovaRanges, GrowsTheArrayWhenTheKernelHasMore) {
  FakeKernel kernel;
  for (std::uint64_t i = 0; i < 9; ++i) kernel.ranges.push_back({i << 32, (i << 32) + 0xfffff});
  auto answer = ioas_iova_ranges_with(kernel.call(), 7);
  ASSERT_TRUE(answer) << answer.error().message();
  EXPECT_EQ(kernel.seen_ioas, 7u);
  EXPECT_EQ(kernel.calls, 2) << "4 fit the first array; the second has room for all 9";
  ASSERT_EQ(answer->ranges.size(), 9u);
  EXPECT_EQ(answer->ranges[8], (IovaRange{8ull << 32, (8ull << 32) + 0xfffff}));
  EXPECT_EQ(answer->alignment, 4096u);
}

TEST(IommufdIovaRanges, TheWholeSpaceOfAFreshIoasIsOneRange) {
  FakeKernel kernel;
  kernel.ranges = {{0, ~0ull}};
  kernel.alignment = 1;
  auto answer = ioas_iova_ranges_with(kernel.call(), 1);
  ASSERT_TRUE(answer) << answer.error().message();
  EXPECT_EQ(kernel.calls, 1);
  EXPECT_EQ(answer->ranges, (std::vector<IovaRange>{{0, ~0ull}}));
}

// What a kernel (or a broken one) might answer, and what the wrapper must make of it.
struct HostileAnswer {
  const char* name;
  std::function<int(iommu_ioas_iova_ranges*)> answer;
  Errc code;
  const char* fragment;
};

TEST(IommufdIovaRanges, AnswersThatMakeNoSenseAreRefused) {
  auto fill = [](iommu_ioas_iova_ranges* q, std::vector<iommu_iova_range> ranges, std::uint64_t alignment) {
    auto* out = reinterpret_cast<iommu_iova_range*>(q->allowed_iovas);
    for (std::size_t i = 0; i < ranges.size() && i < q->num_iovas; ++i) out[i] = ranges[i];
    q->num_iovas = static_cast<std::uint32_t>(ranges.size());
    q->out_iova_alignment = alignment;
    return 0;
  };
  const std::vector<HostileAnswer> cases = {
      {"EMSGSIZE without asking for more", [](auto* q) { return -EMSGSIZE + 0 * static_cast<int>(q->num_iovas); },
       Errc::malformed, "do not fit in"},
      {"EMSGSIZE asking for four billion", [](auto* q) { q->num_iovas = 0xffffffffu; return -EMSGSIZE; },
       Errc::malformed, "4294967295 ranges"},
      {"success reporting more than there was room for", [](auto* q) { q->num_iovas += 1; return 0; },
       Errc::malformed, "in room for"},
      {"a range that ends before it starts", [&](auto* q) { return fill(q, {{0x2000, 0x1000}}, 4096); },
       Errc::malformed, "ends (0x1000) before it starts (0x2000)"},
      {"ranges out of order", [&](auto* q) { return fill(q, {{0x100000, 0x1fffff}, {0, 0xfffff}}, 4096); },
       Errc::malformed, "out of order"},
      {"ranges that overlap", [&](auto* q) { return fill(q, {{0, 0x1fffff}, {0x100000, 0x2fffff}}, 4096); },
       Errc::malformed, "overlaps"},
      {"an alignment of 0", [&](auto* q) { return fill(q, {{0, 0xfffff}}, 0); }, Errc::malformed, "alignment of 0"},
      {"an alignment that is no power of two", [&](auto* q) { return fill(q, {{0, 0xfffff}}, 3 * 4096); },
       Errc::malformed, "alignment of 12288"},
      {"a count that grows on every call", [](auto* q) { q->num_iovas = q->num_iovas + 1; return -EMSGSIZE; },
       Errc::busy, "changed on each of 4 reads"},
      {"an IOAS that does not exist", [](auto*) { return -ENOENT; }, Errc::not_found, "IOAS 5"},
      {"a file that is not an iommufd", [](auto*) { return -ENOTTY; }, Errc::io_error, "IOMMU_IOAS_IOVA_RANGES"},
  };
  for (const HostileAnswer& hostile : cases) {
    SCOPED_TRACE(hostile.name);
    int calls = 0;
    auto answer = ioas_iova_ranges_with(
        [&](unsigned long, void* argument) {
          ++calls;
          return hostile.answer(static_cast<iommu_ioas_iova_ranges*>(argument));
        },
        5);
    ASSERT_FALSE(answer);
    EXPECT_EQ(answer.error().code, hostile.code) << answer.error().message();
    EXPECT_NE(answer.error().message().find(hostile.fragment), std::string::npos) << answer.error().message();
    EXPECT_NE(answer.error().message().find("IOAS 5"), std::string::npos) << answer.error().message();
    EXPECT_LE(calls, 4) << "bounded";
  }
}

// On a file that is not /dev/iommu (or a device that is not a VFIO cdev) every wrapper fails
// with the kernel's errno, naming the ioctl and the object: nothing is assumed of the fd.
TEST(IommufdWrappers, EachFailsCleanlyOnAFileThatIsNotAnIommufd) {
  const int fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto expect = [](const Error& error, const char* ioctl_name, const char* object) {
    EXPECT_EQ(error.sys_errno, ENOTTY) << error.message();
    EXPECT_NE(error.message().find(ioctl_name), std::string::npos) << error.message();
    EXPECT_NE(error.message().find(object), std::string::npos) << error.message();
  };
  expect(ioas_alloc(fd).error(), "IOMMU_IOAS_ALLOC", "/dev/iommu");
  expect(destroy(fd, 3).error(), "IOMMU_DESTROY", "object 3");
  expect(ioas_iova_ranges(fd, 2).error(), "IOMMU_IOAS_IOVA_RANGES", "IOAS 2");
  expect(ioas_map_fixed(fd, 2, 0x7f0000000000, 0x100000, 4096, true, true).error(), "IOMMU_IOAS_MAP",
         "IOAS 2 IOVA 0x100000+0x1000");
  expect(ioas_unmap(fd, 2, 0x100000, 4096).error(), "IOMMU_IOAS_UNMAP", "IOVA 0x100000+0x1000");
  expect(rlimit_mode(fd).error(), "RLIMIT_MODE", "/dev/iommu");
  expect(device_bind(fd, fd, "0000:00:06.0").error(), "VFIO_DEVICE_BIND_IOMMUFD", "0000:00:06.0");
  expect(device_attach(fd, 2, "0000:00:06.0").error(), "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "0000:00:06.0");
  expect(device_detach(fd, "0000:00:06.0").error(), "VFIO_DEVICE_DETACH_IOMMUFD_PT", "0000:00:06.0");
  ::close(fd);
}

// The peer-window pair: VFIO_DEVICE_FEATURE_DMA_BUF's argument laid out as the kernel reads
// it (vfio_pci_core_feature_dma_buf: the feature header, the request, then nr_ranges
// ranges), the fd it returns taken as ours, each refusal told apart; IOMMU_IOAS_MAP_FILE's
// flags and fields.
TEST(PeerWindowIoctls, DmaBufExportLaysOutOneRangeAndTakesTheFd) {
  std::vector<std::byte> seen;
  unsigned long seen_request = 0;
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto exported = vfio::export_dma_buf_with(
      [&](unsigned long request, void* argument) {
        seen_request = request;
        vfio_device_feature header;
        std::memcpy(&header, argument, sizeof header);
        seen.assign(static_cast<std::byte*>(argument), static_cast<std::byte*>(argument) + header.argsz);
        return fd;
      },
      2, 0x80000, 0x3000, "peer");
  ASSERT_TRUE(exported) << exported.error().message();
  EXPECT_EQ(exported->get(), fd) << "the dma-buf is ours to close";
  EXPECT_EQ(seen_request, static_cast<unsigned long>(VFIO_DEVICE_FEATURE));
  ASSERT_EQ(seen.size(), sizeof(vfio_device_feature) + sizeof(vfio_device_feature_dma_buf) + sizeof(vfio_region_dma_range));
  vfio_device_feature header;
  vfio_device_feature_dma_buf request;
  vfio_region_dma_range range;
  std::memcpy(&header, seen.data(), sizeof header);
  std::memcpy(&request, seen.data() + sizeof header, sizeof request);
  std::memcpy(&range, seen.data() + sizeof header + sizeof request, sizeof range);
  EXPECT_EQ(header.flags, static_cast<std::uint32_t>(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF));
  EXPECT_EQ(request.region_index, 2u);
  EXPECT_EQ(request.open_flags, static_cast<std::uint32_t>(O_RDWR | O_CLOEXEC));
  EXPECT_EQ(request.flags, 0u);
  EXPECT_EQ(request.nr_ranges, 1u);
  EXPECT_EQ(range.offset, 0x80000u);
  EXPECT_EQ(range.length, 0x3000u);

  const std::pair<int, Errc> refusals[] = {
      {ENOTTY, Errc::not_supported}, {EOPNOTSUPP, Errc::not_supported}, {ENODEV, Errc::device_disabled}};
  for (const auto& [errno_value, code] : refusals) {
    auto refused = vfio::export_dma_buf_with([errno_value](unsigned long, void*) { return -errno_value; }, 2, 0,
                                             0x1000, "peer");
    ASSERT_FALSE(refused) << errno_value;
    EXPECT_EQ(refused.error().code, code) << refused.error().message();
    EXPECT_FALSE(refused.error().hint.empty()) << errno_value;
    EXPECT_NE(refused.error().message().find("VFIO_DEVICE_FEATURE_DMA_BUF"), std::string::npos);
  }
  EXPECT_NE(vfio::export_dma_buf_with([](unsigned long, void*) { return -ENOTTY; }, 2, 0, 0x1000, "peer")
                .error()
                .hint.find("6.19"),
            std::string::npos);
}

TEST(PeerWindowIoctls, MapFileTakesTheFdAtAFixedIovaWithTheDirectionsAsked) {
  iommu_ioas_map_file seen{};
  const auto call = [&](unsigned long request, void* argument) {
    if (request != IOMMU_IOAS_MAP_FILE) return -ENOTTY;
    std::memcpy(&seen, argument, sizeof seen);
    return 0;
  };
  ASSERT_TRUE(ioas_map_file_fixed_with(call, 3, 42, 0, 0x8000000, 0x1000, true, false));
  EXPECT_EQ(seen.size, sizeof seen);
  EXPECT_EQ(seen.flags, static_cast<std::uint32_t>(IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE));
  EXPECT_EQ(seen.ioas_id, 3u);
  EXPECT_EQ(seen.fd, 42);
  EXPECT_EQ(seen.start, 0u);
  EXPECT_EQ(seen.iova, 0x8000000u);
  EXPECT_EQ(seen.length, 0x1000u);
  ASSERT_TRUE(ioas_map_file_fixed_with(call, 3, 42, 0, 0x8000000, 0x1000, false, true));
  EXPECT_EQ(seen.flags, static_cast<std::uint32_t>(IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE));
  auto refused = ioas_map_file_fixed_with([](unsigned long, void*) { return -EINVAL; }, 3, 42, 0, 0x8000000, 0x1000,
                                          true, true);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("IOMMU_IOAS_MAP_FILE"), std::string::npos) << refused.error().message();
}

// IOMMU_IOAS_NOIOMMU_GET_PA: the request as laid out, the kernel's answer taken as far as
// it makes sense (a contiguous run of at least one byte, never more than asked), and its
// refusals told apart: a kernel without it, a caller without CAP_SYS_RAWIO.
TEST(NoiommuPhysical, AsksForOneRunAndChecksTheAnswer) {
  iommu_ioas_noiommu_get_pa seen{};
  std::uint64_t answer_length = 0x3000;
  const auto call = [&](unsigned long request, void* argument) {
    if (request != IOMMU_IOAS_NOIOMMU_GET_PA) return -ENOTTY;
    std::memcpy(&seen, argument, sizeof seen);
    auto* reply = static_cast<iommu_ioas_noiommu_get_pa*>(argument);
    reply->out_phys = 0x123456000;
    reply->length = answer_length;
    return 0;
  };
  auto extent = ioas_noiommu_physical_with(call, 7, 0x200000, 0x4000);
  ASSERT_TRUE(extent) << extent.error().message();
  EXPECT_EQ(seen.size, sizeof seen);
  EXPECT_EQ(seen.flags, 0u);
  EXPECT_EQ(seen.ioas_id, 7u);
  EXPECT_EQ(seen.__reserved, 0u);
  EXPECT_EQ(seen.iova, 0x200000u);
  EXPECT_EQ(seen.length, 0x4000u);
  EXPECT_EQ(extent->physical, 0x123456000u);
  EXPECT_EQ(extent->contiguous_bytes, 0x3000u);
  for (const std::uint64_t nonsense : {std::uint64_t{0}, std::uint64_t{0x4001}, ~std::uint64_t{0}}) {
    answer_length = nonsense;
    auto refused = ioas_noiommu_physical_with(call, 7, 0x200000, 0x4000);
    ASSERT_FALSE(refused) << nonsense;
    EXPECT_EQ(refused.error().code, Errc::malformed) << refused.error().message();
  }
  struct Refusal {
    int err;
    Errc code;
    const char* hint_says;
  };
  for (const Refusal& refusal : {Refusal{ENOTTY, Errc::not_supported, "PCIE_VFIO_BACKEND=type1"},
                                 Refusal{EOPNOTSUPP, Errc::not_supported, "CONFIG_IOMMUFD_NOIOMMU"},
                                 Refusal{EPERM, Errc::permission_denied, "CAP_SYS_RAWIO"},
                                 Refusal{EINVAL, Errc::io_error, ""}}) {
    auto refused = ioas_noiommu_physical_with([&](unsigned long, void*) { return -refusal.err; }, 7, 0x200000, 0x4000);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, refusal.code) << refused.error().message();
    EXPECT_EQ(refused.error().sys_errno, refusal.err);
    EXPECT_NE(refused.error().hint.find(refusal.hint_says), std::string::npos) << refused.error().message();
    EXPECT_NE(refused.error().message().find("IOMMU_IOAS_NOIOMMU_GET_PA"), std::string::npos);
  }
}

}  // namespace
}  // namespace pcie::sys::iommufd
