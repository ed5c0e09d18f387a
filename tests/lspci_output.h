// pciutils' lspci as a reference for our discovery: runs it, parses `lspci -vvv -nn -D`,
// and compares the result with discover()'s, field by field. Shared by the fake-tree
// cross-check on the host and the real-kernel one inside the test VM.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "pcie/discovery.h"

namespace pcie::lspci {

inline constexpr const char* kLspci = "/usr/bin/lspci";

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

inline std::uint64_t parse_size(const std::string& text) {
  std::uint64_t value = std::stoull(text);
  switch (text.back()) {
    case 'K': return value << 10;
    case 'M': return value << 20;
    case 'G': return value << 30;
    case 'T': return value << 40;
    default: return value;
  }
}

// stdout of a shell command ("" if it cannot start).
inline std::string run(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), &pclose);
  if (!pipe) return {};
  std::string output;
  char buffer[4096];
  while (std::size_t n = fread(buffer, 1, sizeof buffer, pipe.get())) output.append(buffer, n);
  return output;
}

// `lspci -vvv -nn -D` with extra options (e.g. "-A linux-sysfs -O sysfs.path=DIR"), parsed.
inline std::vector<LspciDevice> run_lspci(const std::string& options = "") {
  const std::string output = run(std::string(kLspci) + " " + options + " -vvv -nn -D");
  static const std::regex header(R"(^([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) .*\[([0-9a-f]{4})\]: .*\[([0-9a-f]{4}):([0-9a-f]{4})\])");
  // "[virtual]": an SR-IOV VF's BAR, whose register reads 0 (lspci takes it from sysfs).
  static const std::regex region(
      R"(^\s+Region (\d): (Memory|I/O ports) at ([0-9a-f]+) (?:\(([^)]*)\) )?(?:\[virtual\] |\[disabled\] )?\[size=(\d+[KMGT]?)\])");
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

// Every device in the same order, with the same IDs, class, BARs, capabilities, driver,
// IOMMU group and NUMA node.
inline void expect_same(const std::vector<DeviceInfo>& ours, const std::vector<LspciDevice>& theirs) {
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

}  // namespace pcie::lspci
