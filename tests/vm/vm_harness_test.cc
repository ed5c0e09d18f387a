// The harness's own judgement, without booting anything: which kernel log lines fail a VM
// test, and how an in-guest GoogleTest report is read.
#include "tests/vm/vm_harness.h"

#include <gtest/gtest.h>

namespace pcie::vm {
namespace {

TEST(KernelLogProblems, CleanBootHasNone) {
  const char* log =
      "[    0.100705] DMAR: IOMMU enabled\n"
      "[    1.480373] DMAR: No RMRR found\n"
      "[    1.527977] DMAR: Intel(R) Virtualization Technology for Directed I/O\n"
      "[    2.498751] VFIO - User Level meta-driver version: 0.3\n";
  EXPECT_TRUE(kernel_log_problems(log).empty());
}

TEST(KernelLogProblems, WarningsBugsAndTracesAreProblems) {
  const char* log =
      "[    3.1] ------------[ cut here ]------------\n"
      "[    3.2] WARNING: CPU: 0 PID: 1 at drivers/vfio/vfio_main.c:123 vfio_foo+0x1/0x2\n"
      "[    3.3] Call Trace:\n"
      "[    3.4] BUG: unable to handle page fault for address: 0000000000001000\n"
      "[    3.5] UBSAN: shift-out-of-bounds in drivers/pci/foo.c:12:3\n"
      "[    3.6] INFO: task sh:1 blocked for more than 120 seconds.\n"
      "[    3.7] pci 0000:00:03.0: BAR 0: assigned [mem 0xfe800000-0xfe8fffff]\n";
  const auto problems = kernel_log_problems(log);
  ASSERT_EQ(problems.size(), 5u);
  EXPECT_NE(problems[0].find("WARNING: CPU: 0"), std::string::npos);
  EXPECT_NE(problems[4].find("blocked for more than"), std::string::npos);
}

TEST(KernelLogProblems, DmarFaultsOnlyWhenNotExpected) {
  const char* log =
      "[    5.1] DMAR: DRHD: handling fault status reg 2\n"
      "[    5.2] DMAR: [DMA Write NO_PASID] Request device [00:03.0] fault addr 0x10000000 [fault reason 0x05] "
      "PTE Write access is not set\n";
  EXPECT_EQ(kernel_log_problems(log).size(), 2u);
  EXPECT_TRUE(kernel_log_problems(log, {"0x10000000"}).empty());
  // A fault elsewhere still counts when another address is expected.
  const auto other = kernel_log_problems(log, {"0xf000000"});
  ASSERT_EQ(other.size(), 1u);
  EXPECT_NE(other[0].find("fault addr 0x10000000"), std::string::npos);
}

TEST(ParseGuestResults, PassFailAndSkip) {
  const char* json = R"({"tests": 3, "failures": 1, "testsuites": [
    {"name": "GuestEdu", "testsuite": [
      {"name": "Passes", "status": "RUN", "result": "COMPLETED"},
      {"name": "Fails", "status": "RUN", "result": "COMPLETED",
       "failures": [{"failure": "guest_sysfs_test.cc:10\nExpected equality", "type": ""}]},
      {"name": "Skips", "status": "RUN", "result": "SKIPPED"},
      {"name": "DISABLED_Off", "status": "NOTRUN", "result": "SUPPRESSED"}]}]})";
  std::vector<GuestCase> cases;
  std::string error;
  ASSERT_TRUE(parse_guest_results(json, cases, error)) << error;
  ASSERT_EQ(cases.size(), 3u);
  EXPECT_EQ(cases[0].suite, "GuestEdu");
  EXPECT_EQ(cases[0].name, "Passes");
  EXPECT_TRUE(cases[0].failures.empty());
  ASSERT_EQ(cases[1].failures.size(), 1u);
  EXPECT_NE(cases[1].failures[0].find("Expected equality"), std::string::npos);
  EXPECT_TRUE(cases[2].skipped);
}

TEST(ParseGuestResults, TruncatedOrEmptyReportsAreRejected) {
  std::vector<GuestCase> cases;
  std::string error;
  EXPECT_FALSE(parse_guest_results("", cases, error));
  EXPECT_FALSE(parse_guest_results(R"({"testsuites": [{"name": "GuestEdu", "testsuite": [)", cases, error));
  EXPECT_FALSE(parse_guest_results(R"({"testsuites": []})", cases, error));
  EXPECT_EQ(error, "the report lists no test cases");
  EXPECT_FALSE(parse_guest_results("[1, 2]", cases, error));
}

}  // namespace
}  // namespace pcie::vm
