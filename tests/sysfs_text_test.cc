// Numbers as sysfs attributes hold them (sysfs::parse_number, shared by discovery, binding,
// link and UIO code): a table of what is accepted and what is refused, including the
// inputs that would overflow a negation. Also the other sysfs texts the library parses
// (resource, modalias) and the one-read attribute reader.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pcie/sysfs_paths.h"
#include "pcie/vfio.h"
#include "src/pci/device_identity.h"
#include "src/pci/resource_file.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"

namespace pcie {
namespace {

TEST(SysfsNumber, AcceptsWhatTheKernelWritesAndNothingElse) {
  struct Case {
    const char* text;
    std::optional<std::int64_t> value;
  };
  const Case cases[] = {
      {"0", 0},
      {"42\n", 42},
      {"-1\n", -1},
      {"0x10de", 0x10de},
      {"0x7fffffffffffffff", std::numeric_limits<std::int64_t>::max()},
      {"-9223372036854775807", -std::numeric_limits<std::int64_t>::max()},
      {"", std::nullopt},
      {"-", std::nullopt},
      {"0x", std::nullopt},
      {"--5", std::nullopt},                      // one sign only
      {"-0x-5", std::nullopt},                    // no sign after the prefix
      {"0x-5", std::nullopt},
      {"-0x-8000000000000000", std::nullopt},     // found by fuzz_sysfs_text: negating INT64_MIN
      {"--9223372036854775808", std::nullopt},
      {"9223372036854775808", std::nullopt},      // past INT64_MAX
      {"+5", std::nullopt},
      {"5x", std::nullopt},
      {" 5", std::nullopt},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(sysfs::parse_number(c.text), c.value);
  }
}

}  // namespace
// <device>/resource as the kernel writes it, and what it must refuse: the BAR opener reads
// it directly (no libpci), so every line is parsed strictly.
TEST(ResourceFile, ParsesWhatTheKernelWritesAndRefusesTheRest) {
  const std::string line = "0x00000000fea00000 0x00000000feafffff 0x0000000000040200\n";
  auto parsed = sysfs::parse_resource_file(line + line, "resource");
  ASSERT_TRUE(parsed) << parsed.error().message();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[1].start, 0xfea00000u);
  EXPECT_EQ((*parsed)[1].end, 0xfeafffffu);
  EXPECT_EQ((*parsed)[1].flags, 0x40200u);
  EXPECT_TRUE(sysfs::parse_resource_file("", "resource").value_or(std::vector<sysfs::ResourceLine>{1}).empty());
  EXPECT_TRUE(sysfs::parse_resource_file("0xffffffffffffffff 0x0 0x0", "resource"));  // no newline at the end
  const char* hostile[] = {
      "0x1 0x2\n",                                  // a field short
      "0x1 0x2 0x3 0x4\n",                          // one too many
      "0x1  0x2 0x3\n",                             // two spaces
      "1 0x2 0x3\n",                                // no prefix
      "0x 0x2 0x3\n",                               // prefix only
      "0x1 0x2 0x3 \n",                             // trailing space
      "0x10000000000000000 0x0 0x0\n",              // past 64 bits
      "0x1 0x2 0xg\n",                              // not hex
      "0x1 0x2 0x3\n\n",                           // an empty line
      "0x1 0x2 0x3\r\n",                           // a carriage return
      "0x1 0x2 0x3\x1b[2J\n",                      // a terminal escape
  };
  for (const char* text : hostile) {
    SCOPED_TRACE(printable(text));
    auto refused = sysfs::parse_resource_file(text, "resource");
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, Errc::malformed);
    EXPECT_EQ(refused.error().message().find('\x1b'), std::string::npos) << "the line is printed escaped";
  }
  std::string too_long;
  for (std::size_t i = 0; i <= sysfs::kMaxResourceLines; ++i) too_long += line;
  EXPECT_FALSE(sysfs::parse_resource_file(too_long, "resource"));
}

// IORESOURCE_UNSET and IORESOURCE_DISABLED (include/linux/ioport.h) mark a BAR the kernel
// gave no address; every other flag leaves it assigned.
TEST(ResourceFile, UnsetOrDisabledFlagsMeanNoAddress) {
  const std::pair<std::uint64_t, bool> cases[] = {
      {0x40200, true},       {0x14220c, true},     {0x40101, true},     {0x80040200, true},
      {0x20040200, false},   {0x10040200, false},  {0x30040200, false}, {0x2014220c, false},
  };
  for (const auto& [flags, assigned] : cases) {
    SCOPED_TRACE(flags);
    EXPECT_EQ(sysfs::resource_assigned(flags), assigned);
    EXPECT_EQ(sysfs::bar_from_resource(0, {0xfea00000, 0xfeafffff, flags}).assigned, assigned);
  }
}

TEST(ResourceFile, FlagsSayTheBarsType) {
  struct Case {
    sysfs::ResourceLine line;
    BarInfo::Space space;
    bool is_64bit, prefetchable;
    std::uint64_t size;
  };
  const Case cases[] = {
      {{0xfea00000, 0xfeafffff, 0x40200}, BarInfo::Space::memory, false, false, 0x100000},
      {{0xfe000000, 0xfe3fffff, 0x14220c}, BarInfo::Space::memory, true, true, 0x400000},
      {{0xc000, 0xc03f, 0x40101}, BarInfo::Space::io, false, false, 0x40},
      {{0x0, 0x0, 0x0}, BarInfo::Space::memory, false, false, 0},        // not implemented
      {{0x1000, 0xfff, 0x200}, BarInfo::Space::memory, false, false, 0},  // end before start: none, as libpci
      {{0x0, 0xffffffffffffffff, 0x200}, BarInfo::Space::memory, false, false, 0},  // wraps: none
  };
  for (const Case& c : cases) {
    const BarInfo bar = sysfs::bar_from_resource(3, c.line);
    SCOPED_TRACE(c.line.flags);
    EXPECT_EQ(bar.index, 3u);
    EXPECT_EQ(bar.space, c.space);
    EXPECT_EQ(bar.is_64bit, c.is_64bit);
    EXPECT_EQ(bar.prefetchable, c.prefetchable);
    EXPECT_EQ(bar.size, c.size);
    if (c.size != 0) {
      EXPECT_EQ(bar.bus_address, c.line.start);
    }
  }
}

// <device>/modalias as drivers/pci/pci-sysfs.c writes it: discovery takes the kernel's IDs
// and class from it, and from the separate attributes when it does not parse.
TEST(Modalias, ParsesWhatTheKernelWritesAndRefusesTheRest) {
  const auto parsed = detail::parse_modalias("pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02\n");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, (detail::KernelIds{0x1b36, 0x0010, 0x1af4, 0x1100, 0x010802}));
  EXPECT_EQ(detail::parse_modalias("pci:v0000ffffd0000FFFFsv00000000sd00000000bcFFscffi00"),
            (detail::KernelIds{0xffff, 0xffff, 0, 0, 0xffff00}));
  const char* refused[] = {
      "",
      "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i0\n",     // a digit short
      "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i023\n",   // a digit too many
      "pci:v00011B36d00000010sv00001AF4sd00001100bc01sc08i02\n",    // past 16 bits
      "pci:v00001B36d00000010sv00001AF4sd0001FFFFbc01sc08i02\n",
      "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02\n\n",  // two newlines
      "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02 ",      // a space
      "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i0g\n",     // not hex
      "pci:v00001B36d0000-010sv00001AF4sd00001100bc01sc08i02\n",    // a sign
      "pci:v00001B36d00000010sd00001100sv00001AF4bc01sc08i02\n",    // fields swapped
      "usb:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02\n",
      "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02\x1b[2J",
  };
  for (const char* text : refused) {
    SCOPED_TRACE(printable(text));
    EXPECT_FALSE(detail::parse_modalias(text));
  }
}

// An attribute read in one pread: all of it up to the limit, malformed past it, the
// open's error (with its errno) when it cannot be opened.
TEST(SysfsAttribute, OneReadGivesTheWholeValue) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string directory = std::string(base != nullptr ? base : "/tmp") + "/pcie-attribute-XXXXXX";
  ASSERT_NE(::mkdtemp(directory.data()), nullptr);
  const std::string path = directory + "/numa_node";
  for (const std::size_t size : {0u, 1u, 63u, 64u, 65u}) {
    SCOPED_TRACE(size);
    std::ofstream(path, std::ios::trunc) << std::string(size, '7');
    auto text = sys::read_attribute(path, 64);
    if (size <= 64) {
      ASSERT_TRUE(text) << text.error().message();
      EXPECT_EQ(*text, std::string(size, '7'));
    } else {
      ASSERT_FALSE(text);
      EXPECT_EQ(text.error().code, Errc::malformed);
    }
  }
  std::remove(path.c_str());
  auto missing = sys::read_attribute(path, 64);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().sys_errno, ENOENT);
  ::rmdir(directory.c_str());
}

}  // namespace pcie

namespace pcie {
namespace {

// Every path of SysfsPaths and VfioPaths lies below the mounts named, and only the one
// place builds them: a field added later and left out of under() keeps its /sys, /proc or
// /dev default and fails here (the list below names every field).
TEST(PathsUnderMounts, EveryPathLiesBelowTheMountItBelongsTo) {
  const VfioPaths vfio = VfioPaths::under("/t/sys", "/t/proc", "/t/dev");
  const SysfsPaths& sysfs = vfio.sysfs;
  const std::vector<std::pair<std::string, std::string>> paths = {
      {sysfs.pci_root, "/t/sys/bus/pci"},
      {sysfs.lockdown_file, "/t/sys/kernel/security/lockdown"},
      {sysfs.class_block, "/t/sys/class/block"},
      {sysfs.class_net, "/t/sys/class/net"},
      {sysfs.mountinfo_file, "/t/proc/self/mountinfo"},
      {sysfs.swaps_file, "/t/proc/swaps"},
      {sysfs.pat_memtype_list, "/t/sys/kernel/debug/x86/pat_memtype_list"},
      {sysfs.kernel_cmdline, "/t/proc/cmdline"},
      {sysfs.kernel_release_file, "/t/proc/sys/kernel/osrelease"},
      {sysfs.iomem_file, "/t/proc/iomem"},
      {vfio.dev_vfio, "/t/dev/vfio"},
      {vfio.iommu_groups, "/t/sys/kernel/iommu_groups"},
      {vfio.dev_iommu, "/t/dev/iommu"},
      {vfio.vfio_dev_class, "/t/sys/class/vfio-dev"},
  };
  for (const auto& [built, expected] : paths) EXPECT_EQ(built, expected);
  // The defaults are the same paths below the machine's own mounts.
  const VfioPaths machine = VfioPaths::under("/sys", "/proc", "/dev");
  const VfioPaths defaults;
  EXPECT_EQ(machine.sysfs.pci_root, defaults.sysfs.pci_root);
  EXPECT_EQ(machine.sysfs.lockdown_file, defaults.sysfs.lockdown_file);
  EXPECT_EQ(machine.sysfs.class_block, defaults.sysfs.class_block);
  EXPECT_EQ(machine.sysfs.class_net, defaults.sysfs.class_net);
  EXPECT_EQ(machine.sysfs.mountinfo_file, defaults.sysfs.mountinfo_file);
  EXPECT_EQ(machine.sysfs.swaps_file, defaults.sysfs.swaps_file);
  EXPECT_EQ(machine.sysfs.pat_memtype_list, defaults.sysfs.pat_memtype_list);
  EXPECT_EQ(machine.sysfs.kernel_cmdline, defaults.sysfs.kernel_cmdline);
  EXPECT_EQ(machine.sysfs.kernel_release_file, defaults.sysfs.kernel_release_file);
  EXPECT_EQ(machine.sysfs.iomem_file, defaults.sysfs.iomem_file);
  EXPECT_EQ(machine.dev_vfio, defaults.dev_vfio);
  EXPECT_EQ(machine.iommu_groups, defaults.iommu_groups);
  EXPECT_EQ(machine.dev_iommu, defaults.dev_iommu);
  EXPECT_EQ(machine.vfio_dev_class, defaults.vfio_dev_class);
  // The struct has exactly the fields listed (a new one must join the lists above).
  EXPECT_EQ(sizeof(SysfsPaths), 10 * sizeof(std::string));
  EXPECT_EQ(sizeof(VfioPaths), sizeof(SysfsPaths) + 4 * sizeof(std::string));
}

}  // namespace
}  // namespace pcie
