// pciectl on the machine's own devices, read-only: listing and describing them must work
// for root and for an unprivileged user (who sees 64 bytes of config space). Nothing is
// mapped or written. Runs outside Bazel's sandbox (tag "local") so that it can switch to
// the user nobody, which the sandbox's user namespace does not map.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tests/cli_helpers.h"

namespace pcie {
namespace {

using cli::CommandResult;
using cli::g_pciectl;
using cli::lines_of;
using cli::slurp;

class RealMachine : public ::testing::Test {
 protected:
  CommandResult run(const std::string& command) {
    const std::string out_file = directory_ + "/out.txt";
    const int status = std::system((command + " >" + out_file + " 2>&1").c_str());
    return CommandResult{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out_file), ""};
  }
  void SetUp() override {
    char pattern[] = "/tmp/pciectl-real-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    directory_ = pattern;
  }
  void TearDown() override { std::system(("rm -rf " + directory_).c_str()); }
  std::string directory_;
};

TEST_F(RealMachine, LsMatchesLspciDeviceList) {
  const CommandResult ours = run(g_pciectl + " ls");
  ASSERT_EQ(ours.exit_code, 0) << ours.out;
  const CommandResult theirs = run("/usr/bin/lspci -D -nn");
  ASSERT_EQ(theirs.exit_code, 0) << theirs.out;
  const auto our_lines = lines_of(ours.out);
  const auto their_lines = lines_of(theirs.out);
  ASSERT_EQ(our_lines.size(), their_lines.size()) << ours.out << "\n---\n" << theirs.out;
  ASSERT_FALSE(our_lines.empty());
  // Line for line the same text: names from the same pci.ids, no prog-if (lspci -v only).
  for (std::size_t i = 0; i < our_lines.size(); ++i) EXPECT_EQ(our_lines[i], their_lines[i]);
}

TEST_F(RealMachine, InfoOfEveryDeviceAsRootAndAsNobody) {
  const auto devices = lines_of(run(g_pciectl + " ls").out);
  ASSERT_FALSE(devices.empty());
  // A copy the unprivileged user can execute (Bazel's runfiles live under root's home).
  const std::string copy = directory_ + "/pciectl";
  ASSERT_EQ(run("cp " + g_pciectl + " " + copy + " && chmod 755 " + directory_ + " " + copy).exit_code, 0);
  const bool root = ::geteuid() == 0;
  for (const std::string& line : devices) {
    const std::string bdf = line.substr(0, 12);
    const CommandResult info = run(copy + " info " + bdf + " --json");
    ASSERT_EQ(info.exit_code, 0) << info.out;
    const auto json = nlohmann::json::parse(info.out);
    EXPECT_EQ(json["bdf"], bdf);
    if (!root) continue;
    const CommandResult unprivileged =
        run("setpriv --reuid=nobody --regid=nogroup --clear-groups " + copy + " info " + bdf + " --json");
    ASSERT_EQ(unprivileged.exit_code, 0) << unprivileged.out;
    const auto limited = nlohmann::json::parse(unprivileged.out);
    EXPECT_EQ(limited["vendor_id"], json["vendor_id"]);
    EXPECT_EQ(limited["device_id"], json["device_id"]);
    // The BARs' live memory types need root and debugfs: unverified (null) for nobody, an
    // array for root where debugfs is mounted. Everything else about the BARs is the same.
    EXPECT_EQ(limited["memory_types_verified"], false);
    auto bars = json["bars"];
    for (auto& bar : bars) {
      EXPECT_TRUE(bar["mapped_memory_types"].is_array() == json["memory_types_verified"].get<bool>()) << bar;
      bar.erase("mapped_memory_types");
    }
    auto limited_bars = limited["bars"];
    for (auto& bar : limited_bars) {
      EXPECT_TRUE(bar["mapped_memory_types"].is_null()) << bar;
      bar.erase("mapped_memory_types");
    }
    EXPECT_EQ(limited_bars, bars);
    EXPECT_EQ(limited["config_bytes_readable"], 64);
    EXPECT_EQ(limited["config_file_bytes"], json["config_file_bytes"]);
    EXPECT_EQ(limited["warnings"], json["warnings"]) << "being unprivileged is not a device problem";
    // "Run as root" where it helps (nobody), never where it cannot (root).
    const CommandResult human = run(copy + " info " + bdf);
    EXPECT_EQ(human.out.find("run as root"), std::string::npos) << human.out;
    const CommandResult limited_human =
        run("setpriv --reuid=nobody --regid=nogroup --clear-groups " + copy + " info " + bdf);
    EXPECT_NE(limited_human.out.find("(run as root for all"), std::string::npos) << limited_human.out;
  }
}

}  // namespace
}  // namespace pcie

int main(int argc, char** argv) { return pcie::cli::run_all_tests(argc, argv); }
