// The host side of a test that runs in the test VM: boots it through tests/vm/pcie-vm with a
// GoogleTest program inside, reads back what the guest left (its GoogleTest JSON, dmesg,
// files), and turns that into host test cases: one per in-guest case, plus checks that the
// VM powered off in time, that the guest reported results, and that the kernel log has no
// WARNING, BUG or unexpected DMAR fault.
//
// A VM test target links vm_test_main.cc and defines pcie_vm_test_options(); its own TESTs
// (host-side checks on what the guest left, e.g. a device's backing file) read current_run().
#pragma once

#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "tests/vm/flags.h"

namespace pcie::vm {

// Set to 1 to skip every VM test explicitly (each target then reports one skipped case).
// Without it, a missing QEMU or kernel fails the tests with a pointer to scripts/setup.
inline constexpr const char* kSkipVariable = "PCIE_SKIP_VM_TESTS";

struct Options {
  std::string pcie_vm;                     // path of tests/vm/pcie-vm
  std::vector<std::string> vm_arguments;   // its options: --no-iommu, --bind BDF=DRIVER, ...
  std::vector<std::string> guest_programs; // copied into the guest's /vm/bin (--add)
  // Run in the guest. It must write GoogleTest JSON to kGuestResults.
  std::vector<std::string> guest_command;
  int timeout_seconds = 150;
  // DMAR faults in the guest's kernel log are failures, except faults at these addresses,
  // which a guest case provokes on purpose: each must appear where its case ran
  // (Vm.ExpectedDmarFaultsHappened).
  struct ExpectedDmarFault {
    std::string address;      // as the kernel prints it: "0xf000000"
    std::string provoked_by;  // the guest case that provokes it: "Suite.Name"
  };
  std::vector<ExpectedDmarFault> expected_dmar_faults;
};

// Where the guest's GoogleTest program writes its results ($PCIE_VM_OUT/results.json).
inline constexpr const char* kGuestResults = "/out/results.json";

// What every VM target starts from: pcie-vm's path from --pcie-vm, the programs that the
// flags in `program_flags` name ("guest", "pciectl", ...) copied into the guest, and
// `guest_program` as the guest command, writing its results to kGuestResults. The target
// adds its VM arguments and any further guest arguments.
inline Options options_from_flags(const Flags& flags, std::initializer_list<const char*> program_flags,
                                  const std::string& guest_program) {
  Options options;
  options.pcie_vm = flags.contains("pcie-vm") ? flags.at("pcie-vm") : "tests/vm/pcie-vm";
  for (const char* program : program_flags) {
    if (flags.contains(program)) options.guest_programs.push_back(flags.at(program));
  }
  options.guest_command = {guest_program, std::string("--gtest_output=json:") + kGuestResults};
  return options;
}

struct Run {
  int exit_status = -1;     // pcie-vm's: the guest command's, 124 timeout, 125 harness error
  double seconds = 0;       // the whole boot-test-poweroff cycle, as seen from the host
  std::string console;      // the guest's serial console
  std::string dmesg;        // its full kernel log, "" when it did not come back
  std::string harness_errors;  // pcie-vm's own stderr
  std::filesystem::path work_dir;  // host scratch dir of this run
  std::filesystem::path out_dir;   // the guest's $PCIE_VM_OUT, copied back
};

// Boots the VM once and waits for it (bounded by options.timeout_seconds inside pcie-vm).
// Never throws; a VM that cannot start gives exit_status 125 and harness_errors.
Run run_vm(const Options& options, const std::filesystem::path& work_dir);

// Kernel log lines that mean the kernel went wrong: WARNING, BUG, Oops, panics, call
// traces, UBSAN reports, hung tasks, and DMAR faults other than at `expected_fault_addresses`.
std::vector<std::string> kernel_log_problems(std::string_view log,
                                             const std::vector<std::string>& expected_fault_addresses = {});

// One in-guest GoogleTest case, from its JSON report.
struct GuestCase {
  std::string suite;
  std::string name;
  bool skipped = false;
  std::vector<std::string> failures;  // failure messages; empty when it passed
};

// Parses GoogleTest's JSON output (--gtest_output=json). Fails (returns false, with a
// reason in `error`) on text that is not such a report.
bool parse_guest_results(std::string_view json, std::vector<GuestCase>& cases, std::string& error);

// The run of this test target, valid once main() has booted the VM.
const Run& current_run();

}  // namespace pcie::vm

// Defined by each VM test target: how to boot the VM and what to run in it. `work_dir` is
// this run's scratch directory on the host (for files shared with the VM).
pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path& work_dir);
