// main() of every VM test target: boots the VM once, then registers one host test case per
// in-guest case and the checks every VM run must pass, and runs them all with the
// target's own host-side TESTs.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <system_error>

#include "tests/vm/vm_harness.h"

namespace pcie::vm {
namespace {

Run g_run;

class FunctionTest : public ::testing::Test {
 public:
  explicit FunctionTest(std::function<void()> body) : body_(std::move(body)) {}
  void TestBody() override { body_(); }

 private:
  std::function<void()> body_;
};

void register_test(const std::string& suite, const std::string& name, std::function<void()> body) {
  ::testing::RegisterTest(suite.c_str(), name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                          [body]() -> ::testing::Test* { return new FunctionTest(body); });
}

std::string tail(const std::string& text, std::size_t lines) {
  std::size_t position = text.size();
  while (lines-- > 0 && position > 0) {
    position = text.rfind('\n', position - 1);
    if (position == std::string::npos) return text;
  }
  return text.substr(position);
}

// Prints the guest's console after the results when anything failed: the first place to
// look, and Bazel shows it with --test_output=errors.
class ConsoleOnFailure : public ::testing::EmptyTestEventListener {
  void OnTestProgramEnd(const ::testing::UnitTest& unit_test) override {
    if (unit_test.Passed()) return;
    const bool kept = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR") != nullptr;
    std::printf("\n---- guest console%s ----\n%s\n---- end of guest console ----\n",
                kept ? " (kept with dmesg.txt in this test's test.outputs/outputs.zip)" : "", g_run.console.c_str());
    if (!g_run.harness_errors.empty()) std::printf("---- pcie-vm said ----\n%s\n", g_run.harness_errors.c_str());
  }
};

// Keeps the console and kernel log with Bazel's test outputs (test.outputs/outputs.zip).
void keep_logs() {
  const char* outputs = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  if (outputs == nullptr) return;
  std::error_code ignored;
  std::filesystem::copy_file(g_run.work_dir / "console.log", std::filesystem::path(outputs) / "console.log",
                             std::filesystem::copy_options::overwrite_existing, ignored);
  std::filesystem::copy_file(g_run.out_dir / "dmesg.txt", std::filesystem::path(outputs) / "dmesg.txt",
                             std::filesystem::copy_options::overwrite_existing, ignored);
}

void register_run_checks(const Options& options) {
  std::vector<GuestCase> cases;
  std::string results_error;
  const std::string results_text = [] {
    std::ifstream in(g_run.out_dir / "results.json");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }();
  const bool have_results = parse_guest_results(results_text, cases, results_error);
  std::printf("pcie-vm: boot, %zu in-guest test cases and power-off took %.1f s (exit status %d)\n",
              cases.size(), g_run.seconds, g_run.exit_status);

  register_test("Vm", "BootedAndPoweredOff", [timeout = options.timeout_seconds] {
    ::testing::Test::RecordProperty("vm_cycle_seconds", std::to_string(g_run.seconds));
    ASSERT_NE(g_run.exit_status, 124) << "the VM did not power off within " << timeout << " s";
    ASSERT_NE(g_run.exit_status, 125) << "the VM run failed (pcie-vm exit 125):\n" << g_run.harness_errors;
    ASSERT_NE(g_run.exit_status, -1) << g_run.harness_errors;
  });
  register_test("Vm", "GuestReportedResults", [have_results, results_error] {
    ASSERT_TRUE(have_results) << "no usable " << kGuestResults << " came back from the guest ("
                              << results_error << "); the guest program crashed or never ran. Console tail:\n"
                              << tail(g_run.console, 40);
  });
  const bool any_guest_failure = std::any_of(cases.begin(), cases.end(), [](const GuestCase& c) { return !c.failures.empty(); });
  register_test("Vm", "GuestProgramExitedCleanly", [any_guest_failure] {
    // A non-zero status with every case passed: a crash after the report, or a leak found at
    // exit by LeakSanitizer. Failed cases already fail on their own.
    if (!any_guest_failure && g_run.exit_status != 124 && g_run.exit_status != 125) {
      EXPECT_EQ(g_run.exit_status, 0) << "the in-guest program exited with status " << g_run.exit_status
                                      << " although every case passed. Console tail:\n" << tail(g_run.console, 40);
    }
  });
  register_test("Vm", "GuestSetupSucceeded", [] {
    // /init reports a module that would not load or a device that would not bind.
    std::istringstream lines(g_run.console);
    for (std::string line; std::getline(lines, line);) {
      if (line.starts_with("pcie-vm: ") && line.find("failed") != std::string::npos) ADD_FAILURE() << line;
    }
  });
  std::vector<std::string> expected_addresses;
  for (const auto& fault : options.expected_dmar_faults) expected_addresses.push_back(fault.address);
  register_test("Vm", "KernelLogClean", [expected_addresses] {
    const std::string& log = g_run.dmesg.empty() ? g_run.console : g_run.dmesg;
    ASSERT_FALSE(log.empty()) << "no kernel log came back";
    for (const std::string& line : kernel_log_problems(log, expected_addresses)) ADD_FAILURE() << "guest kernel: " << line;
  });
  if (!options.expected_dmar_faults.empty()) {
    // A fault a guest case provokes on purpose must show where that case ran: else the case
    // cannot fail on it. A case that skipped itself in the guest has nothing to check; one
    // missing from the results is a renamed or misspelt name (or filtered out by the
    // harness's own --gtest_filter), which must not pass unnoticed.
    register_test("Vm", "ExpectedDmarFaultsHappened", [expected = options.expected_dmar_faults, cases] {
      if (cases.empty()) return;  // Vm.GuestReportedResults fails already
      const std::string& log = g_run.dmesg.empty() ? g_run.console : g_run.dmesg;
      std::string not_run;
      for (const auto& fault : expected) {
        const auto found = std::find_if(cases.begin(), cases.end(), [&](const GuestCase& c) {
          return c.suite + "." + c.name == fault.provoked_by;
        });
        if (found == cases.end()) {
          ADD_FAILURE() << "no guest case " << fault.provoked_by << " in the results: renamed, misspelt, or filtered out";
          continue;
        }
        if (found->skipped) {
          not_run += " " + fault.provoked_by;
          continue;
        }
        EXPECT_NE(log.find("fault addr " + fault.address), std::string::npos)
            << "no DMAR fault at " << fault.address << " in the guest's kernel log, although " << fault.provoked_by
            << " ran";
      }
      if (!not_run.empty() && !::testing::Test::HasFailure()) {
        GTEST_SKIP() << "the guest cases that provoke the faults skipped themselves:" << not_run;
      }
    });
  }
  for (const GuestCase& guest_case : cases) {
    register_test(guest_case.suite, guest_case.name, [guest_case] {
      for (const std::string& failure : guest_case.failures) ADD_FAILURE() << "in the guest:\n" << failure;
      if (guest_case.skipped && guest_case.failures.empty()) GTEST_SKIP() << "skipped in the guest";
    });
  }
}

std::filesystem::path make_work_dir() {
  const char* test_tmpdir = std::getenv("TEST_TMPDIR");
  std::string pattern = std::string(test_tmpdir != nullptr ? test_tmpdir : "/tmp") + "/vm.XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return "/tmp";
  return pattern;
}

}  // namespace

const Run& current_run() { return g_run; }

}  // namespace pcie::vm

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const pcie::vm::Flags flags = pcie::vm::parse_flags(argc, argv);

  const char* skip = std::getenv(pcie::vm::kSkipVariable);
  if (skip != nullptr && *skip != '\0' && std::string(skip) != "0") {
    // Explicitly asked for: every host TEST of this target is filtered out and one skipped
    // case says why.
    ::testing::GTEST_FLAG(filter) = "VmSkipped.*";
    pcie::vm::register_test("VmSkipped", "OnRequest", [] {
      GTEST_SKIP() << pcie::vm::kSkipVariable << " is set: the VM tests were skipped on request";
    });
    return RUN_ALL_TESTS();
  }

  const std::filesystem::path work_dir = pcie::vm::make_work_dir();
  const pcie::vm::Options options = pcie_vm_test_options(flags, work_dir);
  pcie::vm::g_run = pcie::vm::run_vm(options, work_dir);
  pcie::vm::keep_logs();
  pcie::vm::register_run_checks(options);
  ::testing::UnitTest::GetInstance()->listeners().Append(new pcie::vm::ConsoleOnFailure);
  return RUN_ALL_TESTS();
}
