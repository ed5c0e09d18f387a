// Our discovery against pciutils' lspci on the same fake tree: device list, IDs, classes,
// BARs (address, size, type), capabilities, driver, IOMMU group and NUMA node.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <sstream>

#include "pcie/discovery.h"
#include "pcie/testing/fake_sysfs.h"

namespace pcie {
namespace {

using testing::FakeBar;
using testing::FakeDevice;
using testing::FakeSysfs;

constexpr const char* kLspci = "/usr/bin/lspci";

struct LspciBar {
  std::uint64_t address = 0;
  std::uint64_t size = 0;
  bool io = false;
  bool is_64bit = false;
  bool prefetchable = false;
};

struct LspciDevice {
  std::string bdf;
  std::uint16_t class_id = 0;
  std::uint16_t vendor = 0, device = 0;
  std::map<unsigned, LspciBar> bars;
  std::vector<std::pair<unsigned, std::string>> capabilities;  // offset, "vN" or ""
  std::string driver;
  int iommu_group = -1;
  int numa_node = -1;
};

std::uint64_t parse_size(const std::string& text) {
  std::uint64_t value = std::stoull(text);
  switch (text.back()) {
    case 'K': return value << 10;
    case 'M': return value << 20;
    case 'G': return value << 30;
    case 'T': return value << 40;
    default: return value;
  }
}

std::string run(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), &pclose);
  if (!pipe) return {};
  std::string output;
  char buffer[4096];
  while (std::size_t n = fread(buffer, 1, sizeof buffer, pipe.get())) output.append(buffer, n);
  return output;
}

std::vector<LspciDevice> run_lspci(const std::string& pci_root) {
  const std::string output = run(std::string(kLspci) + " -A linux-sysfs -O sysfs.path=" + pci_root + " -vvv -nn -D");
  static const std::regex header(R"(^([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) .*\[([0-9a-f]{4})\]: .*\[([0-9a-f]{4}):([0-9a-f]{4})\])");
  static const std::regex region(R"(^\s+Region (\d): (Memory|I/O ports) at ([0-9a-f]+) (?:\(([^)]*)\) )?\[size=(\d+[KMGT]?)\])");
  static const std::regex capability(R"(^\s+Capabilities: \[([0-9a-f]+)( v\d+)?\])");
  static const std::regex driver(R"(^\s+Kernel driver in use: (\S+))");
  static const std::regex group(R"(^\s+IOMMU group: (\d+))");
  static const std::regex numa(R"(^\s+NUMA node: (\d+))");
  std::vector<LspciDevice> devices;
  std::istringstream lines(output);
  std::string line;
  std::smatch m;
  while (std::getline(lines, line)) {
    if (std::regex_search(line, m, header)) {
      LspciDevice device;
      device.bdf = m[1];
      device.class_id = static_cast<std::uint16_t>(std::stoul(m[2], nullptr, 16));
      device.vendor = static_cast<std::uint16_t>(std::stoul(m[3], nullptr, 16));
      device.device = static_cast<std::uint16_t>(std::stoul(m[4], nullptr, 16));
      devices.push_back(std::move(device));
    } else if (devices.empty()) {
      continue;
    } else if (std::regex_search(line, m, region)) {
      LspciBar bar;
      bar.io = m[2] == "I/O ports";
      bar.address = std::stoull(m[3], nullptr, 16);
      const std::string flags = m[4];
      bar.is_64bit = flags.find("64-bit") != std::string::npos;
      bar.prefetchable = flags.find("non-prefetchable") == std::string::npos && flags.find("prefetchable") != std::string::npos;
      bar.size = parse_size(m[5]);
      devices.back().bars[static_cast<unsigned>(std::stoul(m[1]))] = bar;
    } else if (std::regex_search(line, m, capability)) {
      devices.back().capabilities.emplace_back(std::stoul(m[1], nullptr, 16), m[2].matched ? m[2].str().substr(2) : "");
    } else if (std::regex_search(line, m, driver)) {
      devices.back().driver = m[1];
    } else if (std::regex_search(line, m, group)) {
      devices.back().iommu_group = std::stoi(m[1]);
    } else if (std::regex_search(line, m, numa)) {
      devices.back().numa_node = std::stoi(m[1]);
    }
  }
  return devices;
}

void expect_same(const std::vector<DeviceInfo>& ours, const std::vector<LspciDevice>& theirs) {
  ASSERT_EQ(ours.size(), theirs.size());
  for (std::size_t i = 0; i < ours.size(); ++i) {
    const DeviceInfo& a = ours[i];
    const LspciDevice& b = theirs[i];
    SCOPED_TRACE(b.bdf);
    EXPECT_EQ(a.bdf.to_string(), b.bdf);
    EXPECT_EQ(a.vendor_id, b.vendor);
    EXPECT_EQ(a.device_id, b.device);
    EXPECT_EQ(a.class_id(), b.class_id);
    ASSERT_EQ(a.bars.size(), b.bars.size());
    for (const BarInfo& bar : a.bars) {
      SCOPED_TRACE("BAR" + std::to_string(bar.index));
      ASSERT_TRUE(b.bars.contains(bar.index));
      const LspciBar& other = b.bars.at(bar.index);
      EXPECT_EQ(bar.bus_address, other.address);
      EXPECT_EQ(bar.size, other.size);
      EXPECT_EQ(bar.space == BarInfo::Space::io, other.io);
      if (!other.io) {
        EXPECT_EQ(bar.is_64bit, other.is_64bit);
        EXPECT_EQ(bar.prefetchable, other.prefetchable);
      }
    }
    ASSERT_EQ(a.capabilities.size(), b.capabilities.size());
    for (std::size_t c = 0; c < a.capabilities.size(); ++c) {
      EXPECT_EQ(a.capabilities[c].offset, b.capabilities[c].first);
      if (a.capabilities[c].space == Capability::Space::extended) {
        EXPECT_EQ(std::to_string(a.capabilities[c].version), b.capabilities[c].second);
      }
    }
    EXPECT_EQ(a.driver.value_or(""), b.driver);
    EXPECT_EQ(a.iommu_group.value_or(-1), b.iommu_group);
    EXPECT_EQ(a.numa_node.value_or(-1), b.numa_node);
  }
}

// Random devices: BAR kinds, sizes and addresses, optional links and capabilities.
FakeDevice random_device(std::mt19937_64& rng, const Bdf& bdf) {
  FakeDevice device;
  device.bdf = bdf;
  device.vendor_id = static_cast<std::uint16_t>(rng() % 0xfffe);
  device.device_id = static_cast<std::uint16_t>(rng());
  device.class_code = static_cast<std::uint32_t>(rng() % 0x120000);
  device.revision = static_cast<std::uint8_t>(rng());
  unsigned index = 0;
  while (index < kBarCount) {
    const unsigned choice = rng() % 4;
    if (choice == 0) { ++index; continue; }
    FakeBar bar;
    bar.index = index;
    if (choice == 1 || index == kBarCount - 1) {
      bar.kind = (rng() % 3 == 0) ? FakeBar::Kind::io : FakeBar::Kind::memory32;
    } else {
      bar.kind = FakeBar::Kind::memory64;
    }
    if (bar.kind == FakeBar::Kind::io) {
      bar.size = 4ull << (rng() % 7);
      bar.bus_address = 0x1000 + bar.size * (rng() % 64);
    } else if (bar.kind == FakeBar::Kind::memory32) {
      bar.size = 4096ull << (rng() % 16);
      bar.bus_address = 0x80000000ull + bar.size * (rng() % 4);
      bar.prefetchable = rng() % 2;
    } else {
      bar.size = 1ull << (12 + rng() % 24);
      bar.bus_address = (1ull << 36) + bar.size * (rng() % 1024);
      bar.prefetchable = rng() % 2;
    }
    index += bar.kind == FakeBar::Kind::memory64 ? 2 : 1;
    device.bars.push_back(bar);
  }
  if (rng() % 2) device.link = testing::FakeLink{static_cast<std::uint8_t>(1 + rng() % 5), 1, 5, 16};
  if (rng() % 2) device.driver = "drv" + std::to_string(rng() % 3);
  if (rng() % 2) device.iommu_group = static_cast<int>(rng() % 50);
  if (rng() % 2) device.numa_node = static_cast<int>(rng() % 2);
  return device;
}

TEST(LspciCrossCheck, LspciIsInstalled) {
  ASSERT_FALSE(run(std::string(kLspci) + " --version").empty())
      << kLspci << " is missing: run scripts/setup (it installs pciutils)";
}

TEST(LspciCrossCheck, QemuShapesMatch) {
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree) << tree.error().message();
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto ours = discover(options);
  ASSERT_TRUE(ours) << ours.error().message();
  expect_same(*ours, run_lspci(tree->pci_root()));
}

TEST(LspciCrossCheck, RandomDevicesMatch) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  std::mt19937_64 rng(20261121);
  for (std::uint8_t bus = 0; bus < 4; ++bus) {
    for (std::uint8_t slot = 0; slot < 16; ++slot) {
      auto added = tree->add_device(random_device(rng, Bdf{0, bus, slot, 0}));
      ASSERT_TRUE(added) << added.error().message();
    }
  }
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto ours = discover(options);
  ASSERT_TRUE(ours) << ours.error().message();
  const auto theirs = run_lspci(tree->pci_root());
  ASSERT_EQ(theirs.size(), 64u);
  expect_same(*ours, theirs);
}

TEST(LspciCrossCheck, HugeUnbackedBarSize) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  FakeDevice testdev = testing::qemu_pci_testdev({0, 0, 5, 0});
  testdev.bars.push_back({2, FakeBar::Kind::memory64, 8ull << 30, 8ull << 30, true});
  ASSERT_TRUE(tree->add_device(testdev));
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto ours = discover(options);
  ASSERT_TRUE(ours) << ours.error().message();
  ASSERT_EQ(ours->size(), 1u);
  ASSERT_NE((*ours)[0].find_bar(2), nullptr);
  EXPECT_EQ((*ours)[0].find_bar(2)->size, 8ull << 30);
  expect_same(*ours, run_lspci(tree->pci_root()));
}

}  // namespace
}  // namespace pcie
