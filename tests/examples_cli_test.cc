// The example programs' command lines behave like the rest of our CLIs: --help prints the
// usage on standard output and exits 0 (wherever it stands), --version prints the program's
// and the library's version, and a usage error prints the usage on standard error and
// exits 2, touching no device (none is named that exists here).
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <string_view>

#include "examples/common/removal_watch.h"
#include "pcie/error.h"
#include "pcie/version.h"
#include "tests/cli_helpers.h"

namespace {

std::map<std::string, std::string> g_programs;  // name -> path, from --NAME=PATH

using pcie::cli::CommandResult;

CommandResult run(const std::string& program, const std::string& arguments) {
  static const std::string scratch = pcie::cli::make_scratch_dir("examples-cli");
  return pcie::cli::run_command(g_programs.at(program) + " " + arguments, scratch);
}

class ExampleCli : public ::testing::TestWithParam<std::string> {};

TEST_P(ExampleCli, HelpPrintsTheUsageOnStandardOutputAndExitsZero) {
  const std::string program = GetParam();
  for (const std::string arguments : {"--help", "-h", "0000:00:00.0 --help", "--interrupts --help"}) {
    const CommandResult result = run(program, arguments);
    EXPECT_EQ(result.exit_code, 0) << program << " " << arguments << ": " << result.err;
    EXPECT_TRUE(result.out.starts_with("usage: " + program + " [--backend vfio|vfio-noiommu|uio]")) << result.out;
    EXPECT_TRUE(result.err.empty()) << result.err;
  }
}

TEST_P(ExampleCli, VersionNamesTheProgramAndTheLibrary) {
  const std::string program = GetParam();
  const CommandResult result = run(program, "--version");
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(result.out, program + " " + PCIE_VERSION + " (libpcie " + PCIE_VERSION + ")\n");
  EXPECT_TRUE(result.err.empty()) << result.err;
}

TEST_P(ExampleCli, AUsageErrorPrintsTheUsageOnStandardErrorAndExitsTwo) {
  const std::string program = GetParam();
  for (const std::string arguments : {"", "--no-such-option 0000:00:00.0", "--backend bogus 0000:00:00.0"}) {
    const CommandResult result = run(program, arguments);
    EXPECT_EQ(result.exit_code, 2) << program << " '" << arguments << "': " << result.err;
    EXPECT_TRUE(result.err.starts_with("usage: " + program)) << program << " '" << arguments << "': " << result.err;
    EXPECT_TRUE(result.out.empty()) << result.out;
  }
}

// nvme-driver's peer-to-peer forms: the target and the flag's place are checked before any
// device is opened (none of these BDFs exists here, so reaching the device would say so).
TEST(NvmeDriverCli, PeerTargetsAreCheckedBeforeAnyDeviceIsOpened) {
  const std::string nvme = "0000:01:00.0 ";
  struct Case {
    std::string arguments;
    std::string said;  // on standard error, exit 1
  };
  const Case malformed[] = {
      {"0000:01:00.0 read 0 1 --into 00:04.0:bar6:0", "'bar6' is not bar0 .. bar5"},
      {"0000:01:00.0 read 0 1 --into 00:04.0:BAR2:0", "'BAR2' is not bar0 .. bar5"},
      {"0000:01:00.0 read 0 1 --into 00:04.0:bar:0", "'bar' is not bar0 .. bar5"},
      {"0000:01:00.0 read 0 1 --into 00:04.0:bar2:", "'' is not a byte offset"},
      {"0000:01:00.0 read 0 1 --into 00:04.0:bar2:-4", "'-4' is not a byte offset"},
      {"0000:01:00.0 read 0 1 --into '00:04.0:bar2: 4'", "' 4' is not a byte offset"},
      {"0000:01:00.0 read 0 1 --into 00:04.0:bar2:0x1g", "'0x1g' is not a byte offset"},
      {"0000:01:00.0 read 0 1 --into 00:04.0:bar2:99999999999999999999999", "is not a byte offset"},
      {"0000:01:00.0 write 0 1 --from 00:04.0:0x1000", "'04.0' is not bar0 .. bar5"},
      {"0000:01:00.0 write 0 1 --from bar2:0x1000", "no BAR"},
      {"0000:01:00.0 write 0 1 --from 0x1000", "no offset"},
      {"0000:01:00.0 write 0 1 --from :0x1000", "no offset"},
      {"0000:01:00.0 write 0 1 --from zz:04.0:bar2:0", "zz:04.0"},
      {"--backend uio 0000:01:00.0 read 0 1 --into 00:04.0:bar2:0", "peer DMA needs both devices in one VFIO container"},
      {"0000:01:00.0 read 0 1 --into 01:00.0:bar0:0", "one device named twice"},
  };
  for (const Case& c : malformed) {
    const CommandResult result = run("nvme-driver", c.arguments);
    EXPECT_EQ(result.exit_code, 1) << c.arguments << ": " << result.err;
    EXPECT_NE(result.err.find(c.said), std::string::npos) << c.arguments << ": " << result.err;
    EXPECT_TRUE(result.out.empty()) << result.out;
  }
  // The flag on a command it does not belong to, or without the block count: usage.
  for (const std::string arguments : {"read 0 1 --from 00:04.0:bar2:0", "write 0 --from 00:04.0:bar2:0",
                                      "write 0 1 --into 00:04.0:bar2:0", "identify --into 00:04.0:bar2:0",
                                      "bench 1 --into 00:04.0:bar2:0", "read 0 1 2 --into 00:04.0:bar2:0"}) {
    const CommandResult result = run("nvme-driver", nvme + arguments);
    EXPECT_EQ(result.exit_code, 2) << arguments << ": " << result.err;
    EXPECT_TRUE(result.err.starts_with("usage: nvme-driver")) << arguments << ": " << result.err;
  }
}

// A failure because the device went away ends an example with pciectl's exit status for it
// (6), any other failure with 1: what a script running the examples tells apart.
TEST(ExampleExitStatus, DeviceRemovedIsSixAndEveryOtherFailureOne) {
  EXPECT_EQ(examples::exit_status_for(pcie::make_error(pcie::Errc::device_removed, "read", "0000:01:00.0", "gone")), 6);
  EXPECT_EQ(examples::kExitDeviceRemoved, 6);
  for (const pcie::Errc code : {pcie::Errc::io_error, pcie::Errc::busy, pcie::Errc::not_found}) {
    EXPECT_EQ(examples::exit_status_for(pcie::make_error(code, "read", "0000:01:00.0", "failed")), 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Examples, ExampleCli, ::testing::Values("edu-driver", "nvme-driver", "e1000e-driver"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::erase(name, '-');
                           return name;
                         });

}  // namespace

// GoogleTest's main, plus --edu-driver=PATH, --nvme-driver=PATH, --e1000e-driver=PATH.
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    const std::size_t equals = argument.find('=');
    if (argument.starts_with("--") && equals != std::string_view::npos) {
      g_programs[std::string(argument.substr(2, equals - 2))] = std::string(argument.substr(equals + 1));
    }
  }
  return RUN_ALL_TESTS();
}
