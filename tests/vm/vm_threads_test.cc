// The threading contract on a real kernel: boots the test VM with edus 00:03.0 and 00:06.0
// bound to vfio-pci and runs guest_threads_test, which is built with ThreadSanitizer
// (library included) and stops at the first data race it sees.
//
// Flags: --pcie-vm=PATH --guest=PATH (Bazel passes them).
#include <gtest/gtest.h>

#include "tests/vm/vm_harness.h"

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path&) {
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest"}, "guest_threads_test");
  options.vm_arguments = {"--bind", "0000:00:03.0=vfio-pci", "--bind", "0000:00:06.0=vfio-pci", "--memory", "1G"};
  // A race report ends the program at once with its own exit status, which the harness
  // reports (GuestProgramExitedCleanly) together with the console, where the report is.
  options.guest_command.insert(options.guest_command.begin(),
                               {"env", "TSAN_OPTIONS=halt_on_error=1 exitcode=66 second_deadlock_stack=1"});
  return options;
}
