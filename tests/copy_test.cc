// The bulk copy path: its access pattern (every byte once, aligned, allowed widths), every
// kernel this CPU has on real memory over a table of sizes and offsets, the fallback
// through an instrumented Region, fake sysfs BARs, the checks, and the helper threads.
#include "pcie/copy.h"

#include <gnu/libc-version.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/sys/mapping.h"
#include "pcie/sysfs_bar.h"
#include "pcie/testing/fake_sysfs.h"
#include "src/copy/host_plan.h"
#include "src/copy/span_walk.h"

namespace pcie {
namespace {

// The table: sizes around every block and page boundary, and one large odd size.
const std::vector<std::uint64_t> kLengths = {0, 1, 2, 3, 7, 63, 64, 65, 4095, 4096, 4097, (1u << 20) + 3};
constexpr std::uint64_t kLarge = (1u << 20) + 3;

// ---- the access pattern, recorded ----

struct Access {
  std::uintptr_t device;
  std::size_t bytes;
  std::ptrdiff_t host_minus_device;
};

struct RecordingOps {
  static constexpr std::size_t kWidest = 64;
  std::vector<Access>* log;
  template <std::size_t N>
  void move(std::uintptr_t device, std::byte* host) {
    log->push_back({device, N, reinterpret_cast<std::byte*>(host) - reinterpret_cast<std::byte*>(device)});
  }
};

// What must hold of any access log over [start, start + length): every byte covered
// exactly once, each access naturally aligned, allowed, inside the span, with the host
// side moving in step. Returns the first violation, or "".
std::string check_log(const std::vector<Access>& log, std::uintptr_t start, std::uint64_t length, unsigned allowed,
                      std::ptrdiff_t host_minus_device) {
  std::vector<std::uint8_t> touched(length, 0);
  for (const Access& access : log) {
    const std::string where = "access of " + std::to_string(access.bytes) + " bytes at +" +
                              std::to_string(access.device - start);
    if ((allowed & access.bytes) == 0) return where + ": width not allowed";
    if (access.device % access.bytes != 0) return where + ": not naturally aligned";
    if (access.device < start || access.device - start + access.bytes > length) return where + ": outside the span";
    if (access.host_minus_device != host_minus_device) return where + ": host side out of step";
    for (std::size_t i = 0; i < access.bytes; ++i) {
      if (touched[access.device - start + i]++ != 0) return where + ": byte accessed twice";
    }
  }
  for (std::uint64_t i = 0; i < length; ++i) {
    if (touched[i] == 0) return "byte +" + std::to_string(i) + " never accessed";
  }
  return "";
}

// Masks a window and kernel can combine to: vector kernels of each width, registers only,
// a 32-bit-only FPGA register file, 32/64-bit registers, MOVDIR64B's (no 32-byte), bytes.
const std::vector<unsigned> kMasks = {127, 63, 31, 15, 4, 4 | 8, 2 | 4, 1, 1 | 2 | 4 | 8 | 16 | 64, 8};

TEST(CopyAccessPattern, EveryByteOnceAlignedAndAllowedForEveryMaskSizeAndOffset) {
  constexpr std::uintptr_t kBase = 0x10000;  // page-aligned, like a mapping
  std::vector<Access> log;
  RecordingOps ops{&log};
  int checked = 0;
  for (unsigned mask : kMasks) {
    const unsigned narrowest = mask & (~mask + 1);
    for (std::uint64_t length : kLengths) {
      for (std::uintptr_t offset = 0; offset < 16; ++offset) {
        if (offset % narrowest != 0 || length % narrowest != 0) continue;  // refused up front (region_copy.cc)
        log.clear();
        const std::ptrdiff_t host_minus_device = 0x1234567 + static_cast<std::ptrdiff_t>(offset % 5);
        copy_detail::walk_span(ops, kBase + offset, reinterpret_cast<std::byte*>(kBase + offset + host_minus_device),
                               length, mask);
        const std::string problem = check_log(log, kBase + offset, length, mask, host_minus_device);
        ASSERT_EQ(problem, "") << "mask " << mask << " offset " << offset << " length " << length;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 500);
}

TEST(CopyAccessPattern, AlignedBodyUsesOnlyTheWidestAllowedAccess) {
  std::vector<Access> log;
  RecordingOps ops{&log};
  for (unsigned mask : {127u, 63u, 31u, 15u, 4u}) {
    log.clear();
    const std::size_t widest = std::bit_floor(mask);
    copy_detail::walk_span(ops, 0x10000, reinterpret_cast<std::byte*>(0x90000), 4096, mask);
    ASSERT_EQ(log.size(), 4096 / widest) << "mask " << mask;
    for (const Access& access : log) EXPECT_EQ(access.bytes, widest);
  }
}

TEST(CopyAccessPattern, UnalignedHeadGrowsAndTailShrinks) {
  std::vector<Access> log;
  RecordingOps ops{&log};
  // 0x10001 .. 0x10001 + 130: 1, 2, 4, 8, 16, 32 bytes up to 0x10040, one 64, then 1.
  copy_detail::walk_span(ops, 0x10001, reinterpret_cast<std::byte*>(0x90001), 128, 127);
  std::vector<std::size_t> widths;
  for (const Access& access : log) widths.push_back(access.bytes);
  EXPECT_EQ(widths, (std::vector<std::size_t>{1, 2, 4, 8, 16, 32, 64, 1}));
}

// ---- every kernel on real memory ----

// A page-aligned anonymous mapping standing in for a window, owned by pcie::Mapping.
struct Pages {
  explicit Pages(std::size_t bytes) {
    void* mapped = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapped != MAP_FAILED) mapping = Mapping(mapped, bytes);
    data = mapping.data();
  }
  Mapping mapping;
  std::byte* data = nullptr;
};

std::vector<CopyKernel> kernels_of_this_cpu() {
  std::vector<CopyKernel> kernels;
  for (CopyKernel kernel : {CopyKernel::registers, CopyKernel::sse2, CopyKernel::sse41, CopyKernel::avx2,
                            CopyKernel::avx512, CopyKernel::movdir64b}) {
    if (copy_kernel_supported(kernel)) kernels.push_back(kernel);
  }
  return kernels;
}

void fill_pattern(std::byte* data, std::size_t size, std::uint32_t seed) {
  std::uint32_t state = seed * 2654435761u + 1;
  for (std::size_t i = 0; i < size; ++i) {
    state = state * 1664525u + 1013904223u;
    data[i] = static_cast<std::byte>(state >> 24);
  }
}

// The first byte where `actual` differs from `expected`, or "".
std::string first_difference(const std::byte* actual, const std::byte* expected, std::size_t size) {
  const auto mismatch = std::mismatch(actual, actual + size, expected);
  if (mismatch.first == actual + size) return "";
  const std::size_t at = static_cast<std::size_t>(mismatch.first - actual);
  return "byte " + std::to_string(at) + " is " + std::to_string(std::to_integer<int>(*mismatch.first)) +
         ", expected " + std::to_string(std::to_integer<int>(*mismatch.second));
}

// Offsets for one length: all 16 x 16 pairs up to 4097 bytes, a spread for the large one.
std::vector<std::pair<std::uint64_t, std::uint64_t>> offset_pairs(std::uint64_t length) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> pairs;
  for (std::uint64_t device = 0; device < 16; ++device) {
    for (std::uint64_t host = 0; host < 16; ++host) {
      if (length < kLarge || (device + host) % 5 == 0) pairs.emplace_back(device, host);
    }
  }
  return pairs;
}

struct KernelCase {
  CopyKernel kernel;
  MemoryType memory_type;
};

class CopyKernelTest : public ::testing::TestWithParam<KernelCase> {};

// Writes source[host..] to window[device..] for every length and offset pair, and checks
// the window byte for byte: the span holds the source, everything else its old contents.
TEST_P(CopyKernelTest, ToDeviceWritesExactlyTheSpan) {
  const KernelCase& param = GetParam();
  constexpr std::size_t kSize = (2u << 20);
  Pages window(kSize), expected(kSize), source(kSize);
  ASSERT_NE(window.data, nullptr);
  fill_pattern(source.data, kSize, 7);
  fill_pattern(window.data, kSize, 9);
  std::memcpy(expected.data, window.data, kSize);
  const MmioView view(window.data, kSize, WidthSet::all(), "test window", param.memory_type);
  for (std::uint64_t length : kLengths) {
    for (const auto& [device, host] : offset_pairs(length)) {
      const std::uint64_t at = 4096 + device;  // guard bytes on both sides of every span
      auto copied = copy_to_device(view, at, source.data + host, length, {.kernel = param.kernel});
      ASSERT_TRUE(copied) << copied.error().message();
      std::memcpy(expected.data + at, source.data + host, length);
      ASSERT_EQ(first_difference(window.data, expected.data, at + length + 4096), "")
          << "length " << length << " device offset " << device << " host offset " << host;
    }
  }
}

TEST_P(CopyKernelTest, FromDeviceReadsExactlyTheSpan) {
  const KernelCase& param = GetParam();
  constexpr std::size_t kSize = (2u << 20);
  Pages window(kSize), destination(kSize), expected(kSize);
  ASSERT_NE(window.data, nullptr);
  fill_pattern(window.data, kSize, 11);
  fill_pattern(destination.data, kSize, 13);
  std::memcpy(expected.data, destination.data, kSize);
  const MmioView view(window.data, kSize, WidthSet::all(), "test window", param.memory_type);
  for (std::uint64_t length : kLengths) {
    for (const auto& [device, host] : offset_pairs(length)) {
      const std::uint64_t at = 4096 + host;
      auto copied = copy_from_device(destination.data + at, view, device, length, {.kernel = param.kernel});
      ASSERT_TRUE(copied) << copied.error().message();
      std::memcpy(expected.data + at, window.data + device, length);
      ASSERT_EQ(first_difference(destination.data, expected.data, at + length + 4096), "")
          << "length " << length << " device offset " << device << " host offset " << host;
    }
  }
}

// A window that allows only 32-bit accesses (an FPGA register file) is copied with 32-bit
// accesses whatever kernel is asked for, and only 4-byte-aligned spans are accepted.
TEST_P(CopyKernelTest, ThirtyTwoBitWindowTakesAlignedSpansOnly) {
  const KernelCase& param = GetParam();
  Pages window(8192), source(8192);
  fill_pattern(source.data, 8192, 3);
  const MmioView view(window.data, 8192, WidthSet::only(Width::bits32), "fpga regs", param.memory_type);
  ASSERT_TRUE(copy_to_device(view, 4, source.data + 1, 4088, {.kernel = param.kernel}));
  EXPECT_EQ(first_difference(window.data + 4, source.data + 1, 4088), "");
  auto misaligned = copy_to_device(view, 2, source.data, 8, {.kernel = param.kernel});
  ASSERT_FALSE(misaligned);
  EXPECT_EQ(misaligned.error().code, Errc::misaligned);
  EXPECT_NE(misaligned.error().reason.find("32-bit"), std::string::npos) << misaligned.error().message();
  auto ragged = copy_from_device(source.data, view, 4, 6, {.kernel = param.kernel});
  ASSERT_FALSE(ragged);
  EXPECT_EQ(ragged.error().code, Errc::misaligned);
}

#if defined(__x86_64__)
// Records where each instruction touches a window, to check access widths on real memory
// whatever instructions a kernel uses: the window is made inaccessible, so every access
// faults; the SIGSEGV handler logs the address, opens the window and sets the trap flag
// (x86 EFLAGS.TF); after that one instruction SIGTRAP closes the window again. Accesses
// in a row of one width w then lie exactly w bytes apart.
struct AccessRecorder {
  static constexpr std::size_t kMaxAccesses = 8192;
  static inline std::byte* base = nullptr;
  static inline std::size_t size = 0;
  static inline std::uint64_t offsets[kMaxAccesses];
  static inline std::size_t count = 0;
  static inline bool overflowed = false;
  static constexpr long long kTrapFlag = 0x100;

  static void on_segv(int, siginfo_t* info, void* context) {
    const auto address = reinterpret_cast<std::uintptr_t>(info->si_addr);
    const auto begin = reinterpret_cast<std::uintptr_t>(base);
    if (address < begin || address >= begin + size) {
      ::signal(SIGSEGV, SIG_DFL);  // not ours: fault again and die
      return;
    }
    if (count < kMaxAccesses) {
      offsets[count++] = address - begin;
    } else {
      overflowed = true;
    }
    ::mprotect(base, size, PROT_READ | PROT_WRITE);
    static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_EFL] |= kTrapFlag;
  }
  static void on_trap(int, siginfo_t*, void* context) {
    ::mprotect(base, size, PROT_NONE);
    static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_EFL] &= ~kTrapFlag;
  }

  struct sigaction previous_segv {}, previous_trap {};
  AccessRecorder(std::byte* window, std::size_t bytes) {
    base = window;
    size = bytes;
    count = 0;
    overflowed = false;
    struct sigaction action {};
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    action.sa_sigaction = on_segv;
    ::sigaction(SIGSEGV, &action, &previous_segv);
    action.sa_sigaction = on_trap;
    ::sigaction(SIGTRAP, &action, &previous_trap);
    ::mprotect(base, size, PROT_NONE);
  }
  ~AccessRecorder() {
    ::mprotect(base, size, PROT_READ | PROT_WRITE);
    ::sigaction(SIGSEGV, &previous_segv, nullptr);
    ::sigaction(SIGTRAP, &previous_trap, nullptr);
  }
  // "" when the accesses were exactly `width`-byte steps covering [offset, offset + length).
  static std::string steps_of(std::size_t width, std::uint64_t offset, std::uint64_t length) {
    if (overflowed) return "more accesses than recorded";
    if (count != length / width) {
      return std::to_string(count) + " accesses for " + std::to_string(length) + " bytes";
    }
    for (std::size_t i = 0; i < count; ++i) {
      if (offsets[i] != offset + i * width) {
        return "access " + std::to_string(i) + " at offset " + std::to_string(offsets[i]) + ", expected " +
               std::to_string(offset + i * width);
      }
    }
    return "";
  }
};

// The same window, on real memory: every access the kernel makes is 4 bytes, in order,
// both ways (a wider one would fault an FPGA register file, or split into two writes).
TEST_P(CopyKernelTest, ThirtyTwoBitWindowIsAccessedFourBytesAtATime) {
  const KernelCase& param = GetParam();
  Pages window(8192), host(8192);
  ASSERT_NE(window.data, nullptr);
  fill_pattern(host.data, 8192, 5);
  const MmioView view(window.data, 8192, WidthSet::only(Width::bits32), "fpga regs", param.memory_type);
  const std::pair<std::uint64_t, std::uint64_t> spans[] = {{0, 4}, {4, 4088}, {64, 256}, {8188, 4}, {12, 1020}};
  for (const auto& [offset, length] : spans) {
    SCOPED_TRACE(::testing::Message() << "offset " << offset << " length " << length);
    std::string to_device, from_device;
    {
      AccessRecorder recorder(window.data, 8192);
      const bool copied = copy_to_device(view, offset, host.data + 3, length, {.kernel = param.kernel}).has_value();
      to_device = copied ? AccessRecorder::steps_of(4, offset, length) : "refused";
    }
    EXPECT_EQ(to_device, "");
    EXPECT_EQ(first_difference(window.data + offset, host.data + 3, length), "");
    {
      AccessRecorder recorder(window.data, 8192);
      const bool copied = copy_from_device(host.data + 4096 + 1, view, offset, length, {.kernel = param.kernel}).has_value();
      from_device = copied ? AccessRecorder::steps_of(4, offset, length) : "refused";
    }
    EXPECT_EQ(from_device, "");
    EXPECT_EQ(first_difference(host.data + 4096 + 1, window.data + offset, length), "");
  }
}
#endif  // the trap flag is x86's; on arm64 the recording Ops test covers the access pattern

std::vector<KernelCase> kernel_cases() {
  std::vector<KernelCase> cases;
  for (CopyKernel kernel : kernels_of_this_cpu()) {
    for (MemoryType type : {MemoryType::uncached, MemoryType::write_combined, MemoryType::write_back}) {
      cases.push_back({kernel, type});
    }
  }
  cases.push_back({CopyKernel::automatic, MemoryType::uncached});
  cases.push_back({CopyKernel::automatic, MemoryType::write_combined});
  return cases;
}

std::string kernel_case_name(const ::testing::TestParamInfo<KernelCase>& info) {
  std::string name = std::string(to_string(info.param.kernel)) + "_" + to_string(info.param.memory_type);
  std::replace_if(name.begin(), name.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(EveryKernelOfThisCpu, CopyKernelTest, ::testing::ValuesIn(kernel_cases()), kernel_case_name);

// ---- through an instrumented Region (no mapping: register by register) ----

// A Region over a byte array that logs every access and refuses widths it does not allow,
// as the fallback path sees I/O-port BARs and sparse VFIO regions.
class RecordingRegion final : public Region {
 public:
  RecordingRegion(std::size_t size, WidthSet allowed) : Region(allowed, true), bytes_(size) {}
  std::uint64_t size() const override { return bytes_.size(); }
  const std::string& name() const override { return name_; }
  std::vector<std::uint8_t>& bytes() { return bytes_; }
  mutable std::vector<Access> log;
  std::uint64_t fail_at = ~std::uint64_t{0};

 protected:
  Result<std::uint64_t> read_checked(Width width, std::uint64_t offset) const override {
    log.push_back({offset, byte_count(width), 0});
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < byte_count(width); ++i) value |= std::uint64_t{bytes_[offset + i]} << (8 * i);
    return value;
  }
  Result<void> write_checked(Width width, std::uint64_t offset, std::uint64_t value) override {
    if (offset == fail_at) return std::unexpected(make_error(Errc::io_error, "write", name_, "injected failure"));
    log.push_back({offset, byte_count(width), 0});
    for (std::size_t i = 0; i < byte_count(width); ++i) bytes_[offset + i] = static_cast<std::uint8_t>(value >> (8 * i));
    return {};
  }

 private:
  std::string name_ = "recording region";
  std::vector<std::uint8_t> bytes_;
};


TEST(CopyThroughRegion, EveryAccessIsRecordedAlignedAllowedAndOnce) {
  const std::vector<WidthSet> width_sets = {WidthSet::all(), WidthSet::up_to(Width::bits32),
                                            WidthSet::only(Width::bits32),
                                            WidthSet::only(Width::bits32) | WidthSet::only(Width::bits64)};
  std::vector<std::uint8_t> source(9000);
  for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<std::uint8_t>(i % 255 + 1);  // never 0
  int copies = 0;
  for (WidthSet allowed : width_sets) {
    const unsigned mask = allowed.byte_mask();
    const unsigned narrowest = mask & (~mask + 1);
    for (std::uint64_t length : {0u, 1u, 3u, 4u, 7u, 8u, 63u, 64u, 65u, 4095u, 4096u, 4097u}) {
      for (std::uint64_t offset = 0; offset < 16; ++offset) {
        RecordingRegion region(8192 + 64, allowed);
        auto written = copy_to_device(region, offset, source.data() + 3, length);
        if (offset % narrowest != 0 || length % narrowest != 0) {
          ASSERT_FALSE(written);
          EXPECT_EQ(written.error().code, Errc::misaligned);
          EXPECT_TRUE(region.log.empty()) << "a refused copy made an access";
          continue;
        }
        ASSERT_TRUE(written) << written.error().message();
        ASSERT_EQ(check_log(region.log, offset, length, mask, 0), "")
            << allowed.to_string() << " offset " << offset << " length " << length;
        ASSERT_TRUE(std::equal(source.begin() + 3, source.begin() + 3 + static_cast<std::ptrdiff_t>(length),
                               region.bytes().begin() + static_cast<std::ptrdiff_t>(offset)));
        EXPECT_EQ(std::count(region.bytes().begin(), region.bytes().end(), 0),
                  static_cast<std::ptrdiff_t>(region.bytes().size() - length));
        region.log.clear();
        std::vector<std::uint8_t> back(length + 1, 0xee);
        ASSERT_TRUE(copy_from_device(back.data(), region, offset, length));
        ASSERT_EQ(check_log(region.log, offset, length, mask, 0), "");
        EXPECT_TRUE(std::equal(back.begin(), back.begin() + static_cast<std::ptrdiff_t>(length), source.begin() + 3));
        EXPECT_EQ(back[length], 0xee);
        ++copies;
      }
    }
  }
  EXPECT_GT(copies, 300);
}

TEST(CopyThroughRegion, StopsAtTheFirstFailingAccessAndReportsIt) {
  RecordingRegion region(4096, WidthSet::all());
  region.fail_at = 64;
  std::vector<std::uint8_t> source(256, 0x5a);
  auto written = copy_to_device(region, 0, source.data(), 256);
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().reason, "injected failure");
  ASSERT_FALSE(region.log.empty());
  EXPECT_LT(region.log.back().device, 64u) << "accesses went on after the failure";
}

// ---- fake sysfs BARs: the copy lands in the resource file ----

TEST(CopyThroughBar, WriteCombinedAndUncachedMappingsOfTheFakeTree) {
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree) << tree.error().message();
  std::vector<std::uint8_t> source(70000);
  fill_pattern(reinterpret_cast<std::byte*>(source.data()), source.size(), 21);
  for (MemoryType type : {MemoryType::uncached, MemoryType::write_combined}) {
    auto bar = BarMapping::map(tree->paths(), testing::kVmIvshmem, 2, {.memory_type = type});
    ASSERT_TRUE(bar) << bar.error().message();
    Region& region = *bar;
    ASSERT_TRUE(copy_to_device(region, 4099, source.data(), source.size()));
    const char* file = type == MemoryType::write_combined ? "resource2_wc" : "resource2";
    auto in_file = tree->read_device_bytes(testing::kVmIvshmem, file, 4099, source.size());
    ASSERT_TRUE(in_file) << in_file.error().message();
    EXPECT_EQ(*in_file, source) << to_string(type);
    std::vector<std::uint8_t> back(source.size());
    ASSERT_TRUE(copy_from_device(back.data(), region, 4099, back.size()));
    EXPECT_EQ(back, source) << to_string(type);
  }
}

TEST(CopyThroughBar, ReadOnlyMappingRefusesCopiesToIt) {
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree) << tree.error().message();
  auto bar = BarMapping::map(tree->paths(), testing::kVmIvshmem, 2, {.writable = false});
  ASSERT_TRUE(bar) << bar.error().message();
  std::uint8_t byte = 1;
  auto written = copy_to_device(*bar, 0, &byte, 1);
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, Errc::permission_denied);
}

// ---- checks made before any access ----

TEST(CopyChecks, SpanOutsideTheWindowIsRefusedWithoutOverflow) {
  Pages window(4096);
  std::byte buffer[16]{};
  const MmioView view(window.data, 4096, WidthSet::all(), "w");
  for (auto [offset, length] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
           {4096, 1}, {4095, 2}, {0, 4097}, {~std::uint64_t{0}, 2}, {8, ~std::uint64_t{0} - 4}}) {
    auto written = copy_to_device(view, offset, buffer, length);
    ASSERT_FALSE(written) << offset << "+" << length;
    EXPECT_EQ(written.error().code, Errc::out_of_range);
    auto read = copy_from_device(buffer, view, offset, length);
    ASSERT_FALSE(read);
    EXPECT_EQ(read.error().code, Errc::out_of_range);
  }
  EXPECT_TRUE(copy_to_device(view, 4096, buffer, 0)) << "an empty span at the end is fine";
}

TEST(CopyChecks, BadOptionsAndBuffers) {
  Pages window(4096);
  std::byte buffer[64]{};
  const MmioView view(window.data, 4096, WidthSet::all(), "w");
  auto null_source = copy_to_device(view, 0, nullptr, 4);
  ASSERT_FALSE(null_source);
  EXPECT_EQ(null_source.error().code, Errc::invalid_argument);
  for (std::size_t bad : {std::size_t{0}, std::size_t{3}, std::size_t{128}}) {
    auto written = copy_to_device(view, 0, buffer, 4, {.max_access_bytes = bad});
    ASSERT_FALSE(written) << bad;
    EXPECT_EQ(written.error().code, Errc::invalid_argument);
  }
  auto libc = copy_to_device(view, 0, buffer, 64, {.kernel = CopyKernel::libc});
  ASSERT_FALSE(libc);
  EXPECT_EQ(libc.error().code, Errc::invalid_argument);
  EXPECT_NE(libc.error().reason.find("not safe"), std::string::npos);
  for (CopyKernel kernel : {CopyKernel::sse41, CopyKernel::avx2, CopyKernel::avx512, CopyKernel::movdir64b}) {
    if (copy_kernel_supported(kernel)) continue;
    auto missing = copy_to_device(view, 0, buffer, 64, {.kernel = kernel});
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().code, Errc::not_supported);
    EXPECT_NE(missing.error().reason.find(std::string(to_string(kernel))), std::string::npos);
  }
}

TEST(CopyChecks, MaxAccessBytesCapsTheWidth) {
  // The automatic kernel never exceeds the cap.
  for (std::size_t cap : {8u, 16u, 32u, 64u}) {
    for (CopyDirection direction : {CopyDirection::to_device, CopyDirection::from_device}) {
      const CopyKernel kernel =
          choose_copy_kernel(direction, MemoryType::write_combined, WidthSet::all(), {.max_access_bytes = cap});
      EXPECT_LE(copy_kernel_access_bytes(kernel), cap) << to_string(kernel);
      EXPECT_TRUE(copy_kernel_supported(kernel));
    }
  }
  // And a capped copy makes no access wider than the cap: through an unmapped region the
  // accesses are visible (the recorded pattern shows every kernel shares it).
  RecordingRegion region(256, WidthSet::all());
  std::vector<std::uint8_t> source(200, 7);
  ASSERT_TRUE(copy_to_device(region, 3, source.data(), 200, {.max_access_bytes = 2}));
  ASSERT_FALSE(region.log.empty());
  for (const Access& access : region.log) EXPECT_LE(access.bytes, 2u);
  EXPECT_EQ(check_log(region.log, 3, 200, 1 | 2, 0), "");
  // A cap below everything the window allows leaves no access to make: refused.
  Pages window(4096);
  const MmioView words(window.data, 4096, WidthSet::only(Width::bits32), "fpga regs", MemoryType::write_combined);
  auto capped = copy_to_device(words, 0, source.data(), 8, {.max_access_bytes = 2});
  ASSERT_FALSE(capped);
  EXPECT_EQ(capped.error().code, Errc::width_not_allowed);
}

// What this CPU can run, as the copy path sees it, agrees with the kernel's /proc/cpuinfo,
// so the per-kernel tests above cannot quietly leave out a kernel the CPU has.
TEST(CopyChecks, SupportedKernelsMatchCpuinfo) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string flags;
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.starts_with("flags")) {
      flags = line + " ";
      break;
    }
  }
  ASSERT_FALSE(flags.empty()) << "no flags line in /proc/cpuinfo";
  auto has = [&](const std::string& flag) { return flags.find(" " + flag + " ") != std::string::npos; };
  EXPECT_TRUE(copy_kernel_supported(CopyKernel::sse2));
  EXPECT_EQ(copy_kernel_supported(CopyKernel::sse41), has("sse4_1"));
  EXPECT_EQ(copy_kernel_supported(CopyKernel::avx2), has("avx2"));
  EXPECT_EQ(copy_kernel_supported(CopyKernel::avx512), has("avx512f"));
  EXPECT_EQ(copy_kernel_supported(CopyKernel::movdir64b), has("movdir64b") && has("sse4_1"));
}

TEST(CopyChecks, KernelNamesRoundTrip) {
  for (CopyKernel kernel : {CopyKernel::automatic, CopyKernel::registers, CopyKernel::sse2, CopyKernel::sse41,
                            CopyKernel::avx2, CopyKernel::avx512, CopyKernel::movdir64b, CopyKernel::libc}) {
    auto parsed = copy_kernel_from_string(to_string(kernel));
    ASSERT_TRUE(parsed) << to_string(kernel);
    EXPECT_EQ(*parsed, kernel);
  }
  EXPECT_EQ(copy_kernel_from_string("automatic").value(), CopyKernel::automatic);
  auto bad = copy_kernel_from_string("avx1024");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::invalid_argument);
  EXPECT_EQ(copy_kernel_access_bytes(CopyKernel::avx512), 64u);
  EXPECT_EQ(copy_kernel_access_bytes(CopyKernel::registers), 8u);
  EXPECT_TRUE(copy_kernel_supported(CopyKernel::registers));
}

TEST(CopyChecks, AutomaticChoiceFollowsMemoryTypeAndWidths) {
  // A register file (32-bit only) is copied register by register, whatever the type.
  for (MemoryType type : {MemoryType::uncached, MemoryType::write_combined}) {
    EXPECT_EQ(choose_copy_kernel(CopyDirection::to_device, type, WidthSet::only(Width::bits32)), CopyKernel::registers);
    EXPECT_EQ(choose_copy_kernel(CopyDirection::from_device, type, WidthSet::up_to(Width::bits32)),
              CopyKernel::registers);
  }
  // Host copies resolve per size (the host copy plan), not to one kernel.
  EXPECT_EQ(choose_copy_kernel(CopyDirection::host_to_host, MemoryType::write_back, WidthSet::all()),
            CopyKernel::automatic);
  // Reads from write-combined windows use streaming loads where the CPU has SSE4.1.
  const CopyKernel wc_read = choose_copy_kernel(CopyDirection::from_device, MemoryType::write_combined, WidthSet::all());
  if (copy_kernel_supported(CopyKernel::sse41)) {
    EXPECT_NE(wc_read, CopyKernel::sse2);
  }
  EXPECT_NE(wc_read, CopyKernel::registers);
  EXPECT_TRUE(copy_kernel_supported(wc_read));
  const CopyKernel uc_write = choose_copy_kernel(CopyDirection::to_device, MemoryType::uncached, WidthSet::all());
  EXPECT_TRUE(copy_kernel_supported(uc_write));
  if (copy_kernel_supported(CopyKernel::movdir64b)) {
    EXPECT_EQ(uc_write, CopyKernel::movdir64b);
  }
  EXPECT_EQ(choose_copy_kernel(CopyDirection::to_device, MemoryType::uncached, WidthSet::all(),
                               {.kernel = CopyKernel::sse2}),
            CopyKernel::sse2);
}

// ---- host to host, and helper threads ----

TEST(CopyHost, OverlappingRangesAreRefused) {
  std::vector<std::byte> buffer(100);
  volatile std::size_t ten = 10;  // opaque, or g++ warns (-Wrestrict) about the memcpy this refuses
  auto overlapping = pcie::copy(buffer.data() + ten, buffer.data(), 20);
  ASSERT_FALSE(overlapping);
  EXPECT_EQ(overlapping.error().code, Errc::invalid_argument);
  EXPECT_NE(overlapping.error().hint.find("memmove"), std::string::npos);
  EXPECT_TRUE(pcie::copy(buffer.data() + 20, buffer.data(), 20)) << "adjacent ranges do not overlap";
}

TEST(CopyHost, EveryKernelAndTheWorkersCopyExactly) {
  auto workers = CopyWorkers::start(3);
  ASSERT_TRUE(workers) << workers.error().message();
  EXPECT_EQ(workers->helpers(), 3u);
  constexpr std::size_t kSize = 3u << 20;
  Pages source(kSize), destination(kSize), expected(kSize);
  fill_pattern(source.data, kSize, 5);
  std::vector<CopyKernel> kernels = kernels_of_this_cpu();
  kernels.push_back(CopyKernel::libc);
  kernels.push_back(CopyKernel::automatic);
  for (CopyKernel kernel : kernels) {
    for (const CopyWorkers* helpers : {static_cast<const CopyWorkers*>(nullptr), static_cast<const CopyWorkers*>(&*workers)}) {
      for (std::uint64_t length : kLengths) {
        for (std::uint64_t offset : {0u, 1u, 7u, 15u}) {
          fill_pattern(destination.data, kSize, 6);
          std::memcpy(expected.data, destination.data, kSize);
          const std::size_t at = 4096 + offset;
          std::memcpy(expected.data + at, source.data + 3, length);
          auto copied = pcie::copy(destination.data + at, source.data + 3, length,
                             {.kernel = kernel, .workers = helpers, .parallel_threshold = 64});
          ASSERT_TRUE(copied) << copied.error().message();
          ASSERT_EQ(first_difference(destination.data, expected.data, at + length + 4096), "")
              << to_string(kernel) << (helpers ? " with workers" : "") << " length " << length << " offset " << offset;
        }
      }
    }
  }
}

TEST(CopyHost, WorkersSplitDeviceCopiesWithoutChangingThem) {
  auto workers = CopyWorkers::start(2);
  ASSERT_TRUE(workers);
  constexpr std::size_t kSize = 4u << 20;
  Pages window(kSize), source(kSize);
  fill_pattern(source.data, kSize, 8);
  const MmioView view(window.data, kSize, WidthSet::all(), "w", MemoryType::write_combined);
  for (std::uint64_t offset : {0u, 3u, 4095u}) {
    std::memset(window.data, 0, kSize);
    const std::uint64_t length = kSize - 8192 + 5;
    ASSERT_TRUE(copy_to_device(view, offset, source.data, length, {.workers = &*workers, .parallel_threshold = 1}));
    EXPECT_EQ(first_difference(window.data + offset, source.data, length), "");
    EXPECT_EQ(std::count(window.data + offset + length, window.data + kSize, std::byte{0}),
              static_cast<std::ptrdiff_t>(kSize - offset - length));
    std::vector<std::byte> back(length);
    ASSERT_TRUE(copy_from_device(back.data(), view, offset, length, {.workers = &*workers, .parallel_threshold = 1}));
    EXPECT_EQ(first_difference(back.data(), source.data, length), "");
  }
}

TEST(CopyHost, WorkersRunEveryPartOnceAndCanBeMoved) {
  auto started = CopyWorkers::start(3);
  ASSERT_TRUE(started);
  CopyWorkers workers = std::move(*started);
  for (int round = 0; round < 50; ++round) {
    std::array<std::atomic<int>, 4> runs{};
    workers.run([&](unsigned part, unsigned parts) {
      EXPECT_EQ(parts, 4u);
      runs[part].fetch_add(1);
    });
    for (const auto& count : runs) ASSERT_EQ(count.load(), 1);
  }
  auto none = CopyWorkers::start(0);
  ASSERT_TRUE(none);
  int calls = 0;
  none->run([&](unsigned part, unsigned parts) {
    EXPECT_EQ(part, 0u);
    EXPECT_EQ(parts, 1u);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
}

// ---- the host copy plan: per CPU model, and its loops on this CPU ----

using copy_detail::CpuFacts;
using copy_detail::HostCopyPlan;
using copy_detail::kNever;
using Vendor = CpuFacts::Vendor;

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;

struct PlanCase {
  const char* model;
  CpuFacts facts;
  std::size_t loop_from, loop_below, loop_vector;   // kNever, kNever, 0: no loop
  std::size_t streaming_from, streaming_vector;     // kNever, 0: no streaming
};

// What the plan must be for CPU models we know (and for what VMs make of them): only Zen
// (AMD from family 0x17, Hygon) with AVX2 leaves memcpy, and only where it was measured to
// lose; nothing that needs AVX2 or AVX-512 is chosen where the OS or CPU lacks it.
const std::vector<PlanCase> kPlanCases = {
    {"Zen 5 EPYC in a VM (whole host L3 reported)", {Vendor::amd, 0x1a, true, true, true, true, 48 * kKiB, 508 * kMiB},
     2112, 24 * kKiB, 64, 16 * kMiB, 32},
    {"Zen 4 EPYC", {Vendor::amd, 0x19, true, true, true, true, 32 * kKiB, 32 * kMiB}, 2112, 16 * kKiB, 64,
     8 * kMiB, 32},
    {"Zen 3 (no AVX-512)", {Vendor::amd, 0x19, true, false, true, true, 32 * kKiB, 32 * kMiB}, 2112, 16 * kKiB,
     32, 8 * kMiB, 32},
    {"Zen 2 (ERMS, no FSRM)", {Vendor::amd, 0x17, true, false, true, false, 32 * kKiB, 16 * kMiB}, 8 * kKiB,
     16 * kKiB, 32, 4 * kMiB, 32},
    {"Zen 1, 8 MiB L3", {Vendor::amd, 0x17, true, false, true, false, 32 * kKiB, 8 * kMiB}, 8 * kKiB, 16 * kKiB, 32,
     4 * kMiB, 32},
    {"Hygon Dhyana", {Vendor::hygon, 0x18, true, false, true, false, 32 * kKiB, 8 * kMiB}, 8 * kKiB, 16 * kKiB, 32,
     4 * kMiB, 32},
    {"Zen 4 in a VM that hides FSRM (glibc: rep movsb from 16 KiB = L1d/2: no loop)",
     {Vendor::amd, 0x19, true, true, true, false, 32 * kKiB, 32 * kMiB}, kNever, kNever, 0, 8 * kMiB, 32},
    {"Zen 4 with a 64 KiB L1d, FSRM hidden (loop from 16 KiB)",
     {Vendor::amd, 0x19, true, true, true, false, 64 * kKiB, 32 * kMiB}, 16 * kKiB, 32 * kKiB, 64, 8 * kMiB, 32},
    {"Zen, caches unknown", {Vendor::amd, 0x19, true, false, true, true, 0, 0}, 2112, 16 * kKiB, 32, 16 * kMiB,
     32},
    {"Zen, an L1d of 2 KiB reported", {Vendor::amd, 0x19, true, false, true, true, 2 * kKiB, 32 * kMiB}, kNever,
     kNever, 0, 8 * kMiB, 32},
    {"Zen in a VM that hides ERMS", {Vendor::amd, 0x19, true, true, false, false, 32 * kKiB, 32 * kMiB}, kNever,
     kNever, 0, 8 * kMiB, 32},
    {"Zen in a VM that hides AVX (no XSAVE)", {Vendor::amd, 0x19, false, false, true, true, 32 * kKiB, 32 * kMiB},
     kNever, kNever, 0, kNever, 0},
    {"AMD Excavator (family 0x15)", {Vendor::amd, 0x15, true, false, false, false, 16 * kKiB, 0}, kNever, kNever, 0,
     kNever, 0},
    {"Intel Skylake-SP", {Vendor::intel, 6, true, true, true, false, 32 * kKiB, 38 * kMiB}, kNever, kNever, 0, kNever,
     0},
    {"Intel Ice Lake (FSRM)", {Vendor::intel, 6, true, true, true, true, 48 * kKiB, 12 * kMiB}, kNever, kNever, 0,
     kNever, 0},
    {"Intel Atom (no AVX)", {Vendor::intel, 6, false, false, true, false, 24 * kKiB, 0}, kNever, kNever, 0, kNever, 0},
    {"another vendor (Zhaoxin)", {Vendor::other, 7, true, false, true, false, 32 * kKiB, 16 * kMiB}, kNever, kNever,
     0, kNever, 0},
};

TEST(CopyHostPlan, ChosenPerCpuModelAsTheTableSays) {
  for (const PlanCase& c : kPlanCases) {
    SCOPED_TRACE(c.model);
    const HostCopyPlan plan = copy_detail::plan_host_copy(c.facts);
    EXPECT_EQ(plan.loop_from, c.loop_from);
    EXPECT_EQ(plan.loop_below, c.loop_below);
    EXPECT_EQ(plan.loop_vector_bytes, c.loop_vector);
    EXPECT_EQ(plan.loop != nullptr, c.loop_vector != 0);
    EXPECT_EQ(plan.streaming_from, c.streaming_from);
    EXPECT_EQ(plan.streaming_vector_bytes, c.streaming_vector);
    EXPECT_EQ(plan.streaming != nullptr, c.streaming_vector != 0);
#if defined(__x86_64__)
    if (c.loop_vector == 64) {
      EXPECT_EQ(plan.loop, copy_detail::kAvx512HostLoops.cached);
    } else if (c.loop_vector == 32) {
      EXPECT_EQ(plan.loop, copy_detail::kAvx2HostLoops.cached);
    }
    if (c.streaming_vector == 32) {
      EXPECT_EQ(plan.streaming, copy_detail::kAvx2HostLoops.streaming);
    }
#endif
    // The ranges nest: the inline memcpy, then the loop, then memcpy, then streaming.
    if (plan.loop != nullptr) {
      EXPECT_GE(plan.loop_from, detail::kInlineHostCopyBytes);
      EXPECT_LE(plan.loop_from, plan.loop_below);
      EXPECT_LE(plan.loop_below, plan.streaming_from);
    }
    EXPECT_FALSE(plan.description.empty());
    if (plan.streaming != nullptr) {
      EXPECT_NE(plan.description.find("non-temporal"), std::string::npos) << plan.description;
    }
    if (plan.loop == nullptr && plan.streaming == nullptr) {
      EXPECT_NE(plan.description.find("memcpy at every size"), std::string::npos) << plan.description;
    }
  }
}

// glibc_rep_movsb_threshold against what this machine's glibc says it uses
// (`ld.so --list-diagnostics`): the plan's loop starts exactly there. Compared where the
// plan uses it and the model is glibc's: AMD and Hygon under glibc 2.36. (On Intel with
// AVX-512 and no FSRM glibc prefers 32-byte vectors, Prefer_No_AVX512, and starts at 8 KiB;
// the plan leaves Intel to memcpy, so the model does not follow that.)
TEST(CopyHostPlan, GlibcsRepMovsbThresholdIsTheOneLdSoReports) {
#if defined(__x86_64__)
  const CpuFacts facts = copy_detail::this_cpu();
  if (facts.vendor != Vendor::amd && facts.vendor != Vendor::hygon) {
    GTEST_SKIP() << "the plan uses glibc's threshold on AMD and Hygon only (this CPU: memcpy at every size)";
  }
  if (std::string_view(gnu_get_libc_version()) != "2.36") {
    GTEST_SKIP() << "the model is glibc 2.36's (Debian 12); this is glibc " << gnu_get_libc_version();
  }
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(
      popen("env -u GLIBC_TUNABLES /lib64/ld-linux-x86-64.so.2 --list-diagnostics 2>/dev/null", "r"), &pclose);
  ASSERT_NE(pipe, nullptr);
  std::string line;
  std::optional<std::size_t> reported;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe.get()) != nullptr) {
    line = buffer;
    constexpr std::string_view kKey = "x86.cpu_features.rep_movsb_threshold=";
    if (line.starts_with(kKey)) reported = std::stoull(line.substr(kKey.size()), nullptr, 16);
  }
  if (!reported) GTEST_SKIP() << "this glibc's ld.so has no --list-diagnostics (before 2.33)";
  EXPECT_EQ(copy_detail::glibc_rep_movsb_threshold(facts), *reported);
#else
  GTEST_SKIP() << "x86-64 only";
#endif
}

TEST(CopyHostPlan, ThisCpusFactsAgreeWithCpuinfo) {
  const CpuFacts facts = copy_detail::this_cpu();
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, flags, vendor;
  while (std::getline(cpuinfo, line) && (flags.empty() || vendor.empty())) {
    if (line.starts_with("flags")) flags = " " + line.substr(line.find(':') + 1) + " ";
    if (line.starts_with("vendor_id")) vendor = line.substr(line.find(':') + 2);
  }
  if (flags.empty()) GTEST_SKIP() << "no flags line in /proc/cpuinfo (not x86)";
  EXPECT_EQ(facts.erms, flags.find(" erms ") != std::string::npos);
  EXPECT_EQ(facts.fsrm, flags.find(" fsrm ") != std::string::npos);
  EXPECT_EQ(facts.avx2, flags.find(" avx2 ") != std::string::npos);
  EXPECT_EQ(facts.avx512, flags.find(" avx512f ") != std::string::npos);
  EXPECT_EQ(facts.vendor == Vendor::amd, vendor == "AuthenticAMD");
  EXPECT_EQ(facts.vendor == Vendor::intel, vendor == "GenuineIntel");
  EXPECT_EQ(host_copy_plan_description(), copy_detail::plan_host_copy(facts).description);
}

// Each loop this CPU can run, called directly: every length around its block and vector
// sizes and the plan's boundaries, at every alignment of source and destination, copies
// exactly and writes nothing outside the destination (canaries on both sides).
TEST(CopyHostPlan, TheLoopsCopyExactlyAtEveryLengthAndAlignment) {
#if defined(__x86_64__)
  struct Loop {
    const char* name;
    copy_detail::HostCopyFunction function;
    std::size_t vector;
  };
  std::vector<Loop> loops;
  if (copy_kernel_supported(CopyKernel::avx2)) {
    loops.push_back({"avx2 cached", copy_detail::kAvx2HostLoops.cached, 32});
    loops.push_back({"avx2 streaming", copy_detail::kAvx2HostLoops.streaming, 32});
  }
  if (copy_kernel_supported(CopyKernel::avx512)) {
    loops.push_back({"avx512 cached", copy_detail::kAvx512HostLoops.cached, 64});
    loops.push_back({"avx512 streaming", copy_detail::kAvx512HostLoops.streaming, 64});
  }
  if (loops.empty()) GTEST_SKIP() << "this CPU has no AVX2: the plan never runs a loop (see the table test)";
  constexpr std::size_t kSize = 1u << 21;
  Pages source(kSize), destination(kSize), expected(kSize);
  fill_pattern(source.data, kSize, 11);
  for (const Loop& loop : loops) {
    std::vector<std::size_t> lengths = {0, 1, 31, 2047, 2048, 2049, 24 * kKiB - 1, 24 * kKiB, (1u << 20) + 5};
    for (std::size_t base : {4 * loop.vector, 5 * loop.vector, 8 * loop.vector}) {
      lengths.insert(lengths.end(), {base - 1, base, base + 1});
    }
    for (std::size_t length : lengths) {
      for (std::size_t to_offset : {0u, 1u, 31u, 32u, 63u}) {
        for (std::size_t from_offset : {0u, 5u, 32u}) {
          fill_pattern(destination.data, kSize, 12);
          std::memcpy(expected.data, destination.data, kSize);
          const std::size_t at = 4096 + to_offset;
          std::memcpy(expected.data + at, source.data + 64 + from_offset, length);
          loop.function(destination.data + at, source.data + 64 + from_offset, length);
          ASSERT_EQ(first_difference(destination.data, expected.data, at + length + 4096), "")
              << loop.name << " length " << length << " to+" << to_offset << " from+" << from_offset;
        }
      }
    }
  }
#else
  GTEST_SKIP() << "the host loops are x86-64 only";
#endif
}

// pcie::copy at each boundary of this CPU's plan (the inline memcpy, the loop, memcpy
// again, the streaming stores), one byte either side: exact, nothing outside.
TEST(CopyHostPlan, CopyIsExactAcrossEveryBoundaryOfThisCpusPlan) {
  const HostCopyPlan& plan = copy_detail::host_copy_plan();
  std::vector<std::size_t> boundaries = {detail::kInlineHostCopyBytes};
  for (std::size_t boundary : {plan.loop_from, plan.loop_below, plan.streaming_from}) {
    if (boundary != kNever) boundaries.push_back(boundary);
  }
  const std::size_t largest = *std::max_element(boundaries.begin(), boundaries.end()) + 4096 + 64;
  const std::size_t size = (largest + 2 * 4096 + 4095) / 4096 * 4096;
  Pages source(size), destination(size), expected(size);
  fill_pattern(source.data, size, 21);
  for (std::size_t boundary : boundaries) {
    for (std::size_t length : {boundary - 1, boundary, boundary + 1, boundary + 4097}) {
      if (4096 + 7 + length + 4096 > size) continue;
      fill_pattern(destination.data, size, 22);
      std::memcpy(expected.data, destination.data, size);
      std::memcpy(expected.data + 4096 + 7, source.data + 3, length);
      ASSERT_TRUE(pcie::copy(destination.data + 4096 + 7, source.data + 3, length));
      ASSERT_EQ(first_difference(destination.data, expected.data, size), "")
          << "length " << length << " (" << host_copy_plan_description() << ")";
    }
  }
}

// copy_by_plan sends each length to the plan's loop, its streaming loop or memcpy, as the
// plan's ranges say (loops that count their calls and copy by memcpy stand in).
int g_loop_calls = 0;
int g_streaming_calls = 0;
void counting_loop(std::byte* to, const std::byte* from, std::size_t length) {
  ++g_loop_calls;
  std::memcpy(to, from, length);
}
void counting_streaming(std::byte* to, const std::byte* from, std::size_t length) {
  ++g_streaming_calls;
  std::memcpy(to, from, length);
}

TEST(CopyHostPlan, EachLengthGoesWhereThePlanSays) {
  HostCopyPlan plan;
  plan.loop_from = 2048;
  plan.loop_below = 8192;
  plan.loop = counting_loop;
  plan.streaming_from = 65536;
  plan.streaming = counting_streaming;
  std::vector<std::byte> source(70000, std::byte{7}), destination(70000);
  struct Case {
    std::size_t length;
    int loop, streaming;
  };
  for (const Case c : {Case{2047, 0, 0}, Case{2048, 1, 0}, Case{8191, 1, 0}, Case{8192, 0, 0}, Case{65535, 0, 0},
                       Case{65536, 0, 1}, Case{69999, 0, 1}}) {
    g_loop_calls = g_streaming_calls = 0;
    std::fill(destination.begin(), destination.end(), std::byte{0});
    copy_detail::copy_by_plan(plan, destination.data(), source.data(), c.length);
    EXPECT_EQ(g_loop_calls, c.loop) << c.length;
    EXPECT_EQ(g_streaming_calls, c.streaming) << c.length;
    EXPECT_EQ(std::count(destination.begin(), destination.end(), std::byte{7}), static_cast<long>(c.length));
  }
  // A plan without loops (Intel, no AVX2) is memcpy at every size.
  const HostCopyPlan plain;
  g_loop_calls = g_streaming_calls = 0;
  copy_detail::copy_by_plan(plain, destination.data(), source.data(), 69999);
  EXPECT_EQ(g_loop_calls + g_streaming_calls, 0);
}

// Each loop with its source and destination starting right after, and ending right at, an
// inaccessible page: a load or a store one byte before or past either range faults (and
// fails the test).
TEST(CopyHostPlan, TheLoopsTouchNothingPastEitherEnd) {
#if defined(__x86_64__)
  std::vector<copy_detail::HostCopyFunction> loops;
  if (copy_kernel_supported(CopyKernel::avx2)) {
    loops = {copy_detail::kAvx2HostLoops.cached, copy_detail::kAvx2HostLoops.streaming};
  }
  if (copy_kernel_supported(CopyKernel::avx512)) {
    loops.push_back(copy_detail::kAvx512HostLoops.cached);
    loops.push_back(copy_detail::kAvx512HostLoops.streaming);
  }
  if (loops.empty()) GTEST_SKIP() << "this CPU has no AVX2: the plan never runs a loop (see the table test)";
  constexpr std::size_t kGuard = 4096;
  constexpr std::size_t kBytes = 1u << 16;
  Pages source(kGuard + kBytes + kGuard), destination(kGuard + kBytes + kGuard);
  for (Pages* pages : {&source, &destination}) {
    ASSERT_EQ(mprotect(pages->data, kGuard, PROT_NONE), 0);
    ASSERT_EQ(mprotect(pages->data + kGuard + kBytes, kGuard, PROT_NONE), 0);
  }
  std::byte* const source_bytes = source.data + kGuard;
  std::byte* const destination_bytes = destination.data + kGuard;
  fill_pattern(source_bytes, kBytes, 31);
  for (auto loop : loops) {
    for (std::size_t length : {320u, 321u, 2047u, 4099u, 65535u, 65536u}) {
      // Ending at the guard pages after, then starting right after the guard pages before.
      const std::size_t at_end = kBytes - length;
      loop(destination_bytes + at_end, source_bytes + at_end, length);
      ASSERT_EQ(first_difference(destination_bytes + at_end, source_bytes + at_end, length), "") << length;
      std::memset(destination_bytes, 0, kBytes);
      loop(destination_bytes, source_bytes, length);
      ASSERT_EQ(first_difference(destination_bytes, source_bytes, length), "") << length;
    }
  }
#else
  GTEST_SKIP() << "the host loops are x86-64 only";
#endif
}

}  // namespace
}  // namespace pcie
