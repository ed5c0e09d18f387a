// Fault injection: every pciectl command, against a fake tree, with each open, openat,
// fopen, opendir, mmap, pread, pwrite, ioctl and readlink it makes failing in turn (the
// LD_PRELOAD shim tests/fault/fault_shim.c). Each run must end in one of three ways:
//  - exactly as without the fault (the call's failure was handled and changed nothing);
//  - complete, with the errno's text in a warning (a field that could not be read says so);
//  - a one-line "pciectl: error: ..." that keeps the errno's text, with the exit code the
//    errno means (EACCES: 4, permission denied; the others here: 1, operation failed).
// Never a crash, a sanitizer report, a hang, a false success or a silently missing field.
//
// Flags: --pciectl=PATH --shim=PATH [--one-errno-per-call]. Prints how many runs it made,
// per command. With --one-errno-per-call (the ASan build: a sanitized pciectl starts about
// six times slower) each call fails once, with the errnos of its kind (the opens, readlink,
// mmap, the rest: errnos_for) taken in turn from call to call, so that each errno of a kind
// is tried wherever a command makes at least as many calls of that kind.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "pcie/testing/fake_sysfs.h"
#include "tests/cli_helpers.h"

namespace pcie {
namespace {

using cli::CommandResult;
using cli::g_pciectl;
using cli::lines_of;

std::string g_shim;
bool g_one_errno_per_call = false;

struct Command {
  const char* name;
  const char* arguments;
};

// Measured figures differ from run to run: in a measurement row each number becomes "#"
// and the padding around it one space.
std::string without_measurements(const std::string& text) {
  static const std::regex row(R"(^(uncached|write-combined) .*$)");
  static const std::regex number(R"(\b[0-9]+(\.[0-9]+)?\b)");
  static const std::regex spaces(R"( +)");
  std::string out;
  for (const std::string& line : lines_of(text)) {
    out += std::regex_match(line, row) ? std::regex_replace(std::regex_replace(line, number, "#"), spaces, " ") : line;
    out += '\n';
  }
  return out;
}

// Every command, on every kind of object the fake tree has: a plain endpoint (edu), a
// prefetchable 64-bit BAR (ivshmem), an I/O-port BAR (pci-testdev), a PCIe device with a
// driver and a mounted disk (nvme), an SR-IOV PF and VF; the kernel's resource tree and a
// stand-in for /dev/mem.
const Command kCommands[] = {
    {"ls", "ls"},
    {"ls_kernel", "ls -k"},
    {"ls_json", "ls --json"},
    {"ls_filtered", "ls -d ::0108"},
    {"info_nvme", "info 01:00.0"},
    {"info_edu_json", "info 00:03.0 --json"},
    {"info_vf", "info 02:02.1"},
    {"info_pf_json", "info 02:00.0 --json"},
    {"read", "read 00:03.0 bar0 0"},
    {"read_io_port", "read 00:05.0 bar1 0x10 -w 16"},
    {"write", "write 00:03.0 bar0 0x4 0x12345678 -w 32"},
    {"dump", "dump 00:04.0 bar0 --length 32"},
    {"config_dump", "config 00:03.0"},
    {"config_read", "config 01:00.0 0x100"},
    {"config_write", "config 00:03.0 0x40 0xabcd -w 16"},
    {"unbind_mounted", "unbind 01:00.0"},
    {"unbind_none", "unbind 00:03.0"},
    {"bind", "bind 00:03.0 vfio-pci"},
    {"bind_restore", "bind 00:03.0 --restore"},
    {"iomem", "iomem"},
    {"iomem_lookup", "iomem 0xfe600010"},
    {"mem_read", "mem --dev-mem mem read 0x1004"},
    {"mem_dump", "mem --dev-mem mem dump 0x1000 --length 32 -w 64"},
    {"bench", "bench 00:04.0 bar2 --sizes 64 --widths 32,copy --repetitions 1 --min-time-ms 1 --latency-samples 3"},
};

struct Call {
  long number = 0;
  std::string function;
  std::string argument;
};

// The errnos each kind of call is failed with.
std::vector<int> errnos_for(const std::string& function) {
  if (function.starts_with("open") || function.starts_with("fopen") || function == "opendir") {
    return {EIO, EACCES, EMFILE};
  }
  if (function == "readlink") return {EIO, EACCES};
  if (function.starts_with("mmap")) return {ENOMEM, EACCES};
  return {EIO};
}

int expected_exit(int err) { return err == EACCES ? 4 : 1; }

class FaultInjection : public ::testing::TestWithParam<Command> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(g_pciectl.empty()) << "run with --pciectl=PATH";
    ASSERT_FALSE(g_shim.empty()) << "run with --shim=PATH";
    auto tree = testing::make_vm_tree();
    ASSERT_TRUE(tree) << tree.error().message();
    tree_.emplace(std::move(*tree));
    const Bdf pf{0, 2, 0, 0};
    ASSERT_TRUE(tree_->add_device(testing::sriov_pf(pf, 4, 2)));
    ASSERT_TRUE(tree_->add_device(testing::sriov_vf({0, 2, 2, 0}, pf)));
    ASSERT_TRUE(tree_->add_device(testing::sriov_vf({0, 2, 2, 1}, pf)));
    ASSERT_TRUE(tree_->add_block_device({"nvme0n1", "259:0", testing::kVmNvme, "nvme/nvme0", ""}));
    ASSERT_TRUE(tree_->set_mountinfo("22 1 259:0 / / rw - ext4 /dev/nvme0n1 rw\n"));
    ASSERT_TRUE(tree_->set_iomem("00000000-00000fff : Reserved\n"
                                 "c0000000-febfffff : PCI Bus 0000:00\n"
                                 "  fe600000-fe603fff : 0000:01:00.0\n"
                                 "    fe600000-fe603fff : nvme\n"));
    scratch_ = cli::make_scratch_dir("pcie-fault");
    // A stand-in for /dev/mem (mem --dev-mem mem, relative to the scratch directory).
    std::ofstream(scratch_ + "/mem", std::ios::binary) << std::string(8192, '\x5a');
  }

  CommandResult run(const std::string& arguments, long nth, int err, const std::string& log) {
    const std::string environment = "PCIE_FAULT_NTH=" + std::to_string(nth) + " PCIE_FAULT_ERRNO=" +
                                     std::to_string(err) + (log.empty() ? "" : " PCIE_FAULT_LOG=" + log) +
                                     " ASAN_OPTIONS=verify_asan_link_order=0 LD_PRELOAD=" + g_shim;
    CommandResult result = cli::run_command(environment + " timeout -s KILL 60 " + g_pciectl + " --sysfs " +
                                                tree_->directory() + "/sys --proc " + tree_->directory() + "/proc --dev-vfio " +
                                                tree_->directory() + "/dev/vfio " + arguments,
                                            scratch_);
    result.out = without_measurements(result.out);
    return result;
  }

  std::vector<Call> calls_of(const std::string& arguments, CommandResult& baseline) {
    const std::string log = scratch_ + "/calls.log";
    std::remove(log.c_str());
    baseline = run(arguments, 0, EIO, log);
    std::vector<Call> calls;
    std::istringstream lines(cli::slurp(log));
    for (std::string line; std::getline(lines, line);) {
      std::istringstream fields(line);
      Call call;
      fields >> call.number >> call.function >> call.argument;
      calls.push_back(call);
    }
    return calls;
  }

  std::optional<testing::FakeSysfs> tree_;
  std::string scratch_;
};

TEST_P(FaultInjection, EveryFailingCallEndsCleanly) {
  const Command& command = GetParam();
  CommandResult baseline;
  const std::vector<Call> calls = calls_of(command.arguments, baseline);
  ASSERT_GE(baseline.exit_code, 0) << baseline.err;
  ASSERT_LE(baseline.exit_code, 5) << baseline.err;
  ASSERT_FALSE(calls.empty()) << "the shim saw no calls: is it loaded?";
  std::size_t runs = 0;
  std::map<std::vector<int>, std::size_t> seen;  // calls of each kind so far, for the errno in turn
  for (const Call& call : calls) {
    std::vector<int> errnos = errnos_for(call.function);
    if (g_one_errno_per_call) errnos = {errnos[seen[errnos]++ % errnos.size()]};
    for (const int err : errnos) {
      ++runs;
      const CommandResult result = run(command.arguments, call.number, err, "");
      const std::string text = std::strerror(err);
      const std::string where = "call " + std::to_string(call.number) + " (" + call.function + " " + call.argument +
                                ") failing with " + text;
      SCOPED_TRACE(where);
      ASSERT_GE(result.exit_code, 0) << "killed by a signal or hung\n" << result.err;
      if (result.exit_code == baseline.exit_code && result.out == baseline.out && result.err == baseline.err) continue;
      bool mentioned = result.err.find(text) != std::string::npos || result.out.find(text) != std::string::npos;
      // libudev keeps no errno when it cannot open its hwdb (libpci asks it for names first,
      // as lspci does): then the warning must say that names come from pci.ids alone.
      if (call.argument.ends_with("hwdb.bin")) {
        mentioned = mentioned || result.err.find("udev's hwdb could not be opened") != std::string::npos ||
                    result.out.find("udev's hwdb could not be opened") != std::string::npos;
      }
      if (result.exit_code == baseline.exit_code) {
        EXPECT_TRUE(mentioned) << "the output changed without saying why\n--- expected:\n"
                               << baseline.out << baseline.err << "--- got:\n" << result.out << result.err;
        continue;
      }
      const auto err_lines = lines_of(result.err);
      ASSERT_FALSE(err_lines.empty()) << "exit " << result.exit_code << " without an error";
      const std::string& last = err_lines.back();
      EXPECT_TRUE(last.starts_with("pciectl: error: ")) << result.err;
      EXPECT_NE(last.find(text), std::string::npos) << "the errno was lost: " << result.err;
      EXPECT_EQ(result.exit_code, expected_exit(err)) << result.err;
      for (const std::string& line : err_lines) {
        // pciectl's own lines: errors, warnings and notices ("pciectl bench: reads only").
        EXPECT_TRUE(line.starts_with("pciectl: ") || line.starts_with("pciectl bench: "))
            << "stray stderr output: " << result.err;
      }
    }
  }
  RecordProperty("calls", static_cast<int>(calls.size()));
  RecordProperty("runs", static_cast<int>(runs));
  std::printf("fault injection: %s: %zu calls, %zu runs\n", command.name, calls.size(), runs);
}

// Discovery's cost on a paravirtualized machine is its syscall count (issue 25): the calls
// the shim counts per device (open, pread, readlink...; close is not counted) for `ls`
// (IDs, class, BARs), `ls -k` (with bindings) and `ls -v` (the full description), from
// the VM's tree to the same tree with 32 more devices. Today: modalias, revision and
// resource (an open and one pread each) and the physfn link; with bindings the driver
// and IOMMU group links, numa_node, and one failed open of sriov_totalvfs; at the full
// level config (whose bytes give the revision) in place of the revision file, and
// pciectl's own look at the PAT list for the BARs' memory types.
TEST(DiscoveryCost, CallsPerDeviceStayWithinBudget) {
  ASSERT_FALSE(g_shim.empty()) << "run with --shim=PATH";
  auto small = testing::make_vm_tree();
  auto large = testing::make_vm_tree();
  ASSERT_TRUE(small && large);
  constexpr int kAdded = 32;
  for (int i = 0; i < kAdded; ++i) {
    const Bdf bdf{0, static_cast<std::uint8_t>(0x10 + i / 8), static_cast<std::uint8_t>(i % 8), 0};
    const testing::FakeDevice shapes[] = {testing::qemu_edu(bdf), testing::qemu_ivshmem(bdf),
                                          testing::qemu_pci_testdev(bdf), testing::qemu_nvme(bdf)};
    ASSERT_TRUE(large->add_device(shapes[i % 4]));
  }
  const std::string scratch = cli::make_scratch_dir("pcie-cost");
  const auto calls = [&](const testing::FakeSysfs& tree, const std::string& arguments) {
    const std::string log = scratch + "/calls.log";
    std::remove(log.c_str());
    const CommandResult result = cli::run_command(
        "PCIE_FAULT_NTH=0 PCIE_FAULT_LOG=" + log + " ASAN_OPTIONS=verify_asan_link_order=0 LD_PRELOAD=" + g_shim + " " +
            g_pciectl + " --sysfs " + tree.directory() + "/sys --proc " + tree.directory() + "/proc " + arguments,
        scratch);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return static_cast<double>(lines_of(cli::slurp(log)).size());
  };
  for (const auto& [arguments, budget] : {std::pair{"ls", 7}, std::pair{"ls -k", 12}, std::pair{"ls -v", 13}}) {
    const double per_device = (calls(*large, arguments) - calls(*small, arguments)) / kAdded;
    EXPECT_LE(per_device, budget) << arguments;
    std::printf("discovery cost: %s: %.2f counted calls per device (budget %d)\n", arguments, per_device, budget);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryCommand, FaultInjection, ::testing::ValuesIn(kCommands),
                         [](const ::testing::TestParamInfo<Command>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace pcie

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument.starts_with("--shim=")) pcie::g_shim = std::string(argument.substr(7));
    if (argument == "--one-errno-per-call") pcie::g_one_errno_per_call = true;
  }
  return pcie::cli::run_all_tests(argc, argv);
}
