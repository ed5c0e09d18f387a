// The install (tools/install/install.sh, as ./scripts/install runs it) and its consumers:
// the installed tree's layout, soname and version; what libpcie.so exports and which libpci
// ABI it binds to; a program built against the installed tree with CMake (find_package),
// with pkg-config and make (shared and static), and a separate Bazel workspace that depends
// on this one through local_repository with Bazel's default link mode. The consumer program
// (tests/consumers/consumer.cc) fails when libpci binds to its oldest ABI, as it did for
// Bazel consumers before //:pcie was made linkstatic.
#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
#include <string>

#include "pcie/version.h"
#include "tests/cli_helpers.h"

namespace pcie {
namespace {

namespace fs = std::filesystem;
using cli::run_command;

// --name=PATH arguments from BUILD.bazel ($(rootpath ...)), made absolute.
std::map<std::string, std::string> g_inputs;

std::string input(const std::string& name) {
  auto found = g_inputs.find(name);
  return found == g_inputs.end() ? std::string() : found->second;
}

std::string shell_quoted(const std::string& text) { return "'" + text + "'"; }

// One install for the whole suite, into a temporary prefix.
class InstallTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = cli::make_scratch_dir("pcie-install");
    prefix_ = scratch_ + "/prefix";
    const auto run = run_command(
        shell_quoted(input("install_sh")) + " --prefix " + shell_quoted(prefix_) + " --shared " + shell_quoted(input("shared")) +
            " --static " + shell_quoted(input("static")) + " --testing-static " + shell_quoted(input("testing_static")) +
            " --headers " + shell_quoted(input("headers")) + " --pciectl " + shell_quoted(input("pciectl")) + " --license " +
            shell_quoted(input("license")) + " --python-module " + shell_quoted(input("python_module")) +
            " --api-reference " + shell_quoted(input("api_reference")),
        scratch_);
    install_exit_ = run.exit_code;
    install_log_ = run.out + run.err;
  }
  static void TearDownTestSuite() { fs::remove_all(scratch_); }

  void SetUp() override { ASSERT_EQ(install_exit_, 0) << install_log_; }

  static std::string lib(const std::string& name) { return prefix_ + "/lib/" + name; }

  // A fresh copy of tests/consumers in its own directory.
  static std::string copy_consumer(const std::string& name) {
    const std::string dir = scratch_ + "/" + name;
    fs::create_directories(dir);
    for (const char* file : {"consumer.cc", "CMakeLists.txt", "Makefile"}) {
      fs::copy_file(input("consumers") + "/" + file, dir + "/" + file, fs::copy_options::overwrite_existing);
    }
    return dir;
  }

  static inline std::string scratch_, prefix_, install_log_;
  static inline int install_exit_ = -1;
};

TEST_F(InstallTest, LaysOutLibrariesHeadersPackageFilesToolAndLicense) {
  for (const std::string& path :
       {lib("libpcie.so.0.1.0"), lib("libpcie.a"), lib("libpcie_testing.a"), lib("pkgconfig/pcie.pc"),
        lib("pkgconfig/pcie-testing.pc"), lib("cmake/pcie/pcieConfig.cmake"), lib("cmake/pcie/pcieConfigVersion.cmake"),
        prefix_ + "/include/pcie/version.h", prefix_ + "/include/pcie/testing/fake_sysfs.h",
        prefix_ + "/include/pcie/sys/unique_fd.h", prefix_ + "/bin/pciectl", prefix_ + "/share/man/man1/pciectl.1",
        prefix_ + "/share/doc/pcie/LICENSE"}) {
    EXPECT_TRUE(fs::is_regular_file(path)) << path;
  }
  // Headers are real files (not links into Bazel's tree), the links name the soname.
  EXPECT_FALSE(fs::is_symlink(prefix_ + "/include/pcie/version.h"));
  EXPECT_EQ(fs::read_symlink(lib("libpcie.so")), "libpcie.so.0.1");
  EXPECT_EQ(fs::read_symlink(lib("libpcie.so.0.1")), "libpcie.so.0.1.0");
  EXPECT_NE(cli::slurp(prefix_ + "/share/doc/pcie/LICENSE").find("Apache License"), std::string::npos);
}

// The API reference (docs/api: Doxygen over the installed headers' comments) lies beside
// the license, readable, with a page for each public class.
TEST_F(InstallTest, InstallsTheApiReference) {
  const std::string html = prefix_ + "/share/doc/pcie/html";
  for (const char* page : {"index.html", "classpcie_1_1DmaPool.html", "classpcie_1_1Region.html",
                           "classpcie_1_1testing_1_1FakeSysfs.html", "structpcie_1_1Bdf.html"}) {
    EXPECT_TRUE(fs::is_regular_file(html + "/" + page)) << page;
  }
  EXPECT_NE(cli::slurp(html + "/classpcie_1_1DmaPool.html").find("allocate"), std::string::npos);
  EXPECT_EQ(fs::status(html).permissions() & fs::perms::others_read, fs::perms::others_read);
}

TEST_F(InstallTest, VersionAgreesEverywhere) {
  // version.h (compiled into this test), version.bzl (the soname Bazel links), the file
  // names, the .pc files and pciectl --version.
  const std::string bzl = cli::slurp(input("version_bzl"));
  EXPECT_NE(bzl.find(std::string("PCIE_VERSION = \"") + PCIE_VERSION + "\""), std::string::npos) << bzl;
  EXPECT_NE(bzl.find("PCIE_SONAME = \"libpcie.so." + std::to_string(PCIE_VERSION_MAJOR) + "." +
                     std::to_string(PCIE_VERSION_MINOR) + "\""),
            std::string::npos)
      << bzl;
  EXPECT_NE(cli::slurp(lib("pkgconfig/pcie.pc")).find(std::string("Version: ") + PCIE_VERSION), std::string::npos);
  const auto version = run_command(shell_quoted(prefix_ + "/bin/pciectl") + " --version", scratch_);
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out, std::string("pciectl ") + PCIE_VERSION + " (library " + PCIE_VERSION + "), Apache-2.0\n");
  const auto soname = run_command("readelf -d " + shell_quoted(lib("libpcie.so.0.1.0")), scratch_);
  EXPECT_NE(soname.out.find("Library soname: [libpcie.so.0.1]"), std::string::npos) << soname.out;
}

TEST_F(InstallTest, SharedLibraryExportsOnlyThePcieApi) {
  const auto symbols = run_command("nm -DC --defined-only " + shell_quoted(lib("libpcie.so.0.1.0")), scratch_);
  ASSERT_EQ(symbols.exit_code, 0) << symbols.err;
  int pcie_symbols = 0;
  for (const std::string& line : cli::lines_of(symbols.out)) {
    // "<address> <type> <name>"
    const std::string name = line.size() > 19 ? line.substr(19) : line;
    if (name.starts_with("pcie::") || std::regex_search(name, std::regex("^(typeinfo|typeinfo name|vtable|VTT|guard variable|(non-)?virtual thunk) (for|to) pcie::"))) {
      ++pcie_symbols;
      continue;
    }
    if (name == "PCIE_0.1") continue;  // the version node
    // The linker keeps a weak std::string member dynamic when a library it links (fmt)
    // refers to it; libstdc++ defines the same, so this is no leak of ours.
    if (line[17] == 'W' && name.starts_with("std::")) continue;
    ADD_FAILURE() << "exported: " << line;
  }
  EXPECT_GT(pcie_symbols, 100);
  // No libpci function or fmt symbol defined here (a pcie:: signature may name their types).
  EXPECT_FALSE(std::regex_search(symbols.out, std::regex(R"(\s[A-Za-z] (pci_|fmt::))"))) << "libpci or fmt leaks";
}

TEST_F(InstallTest, SharedLibraryBindsLibpciToItsVersionedAbi) {
  // pci_filter_parse_id exists only from LIBPCI_3.8; an unversioned reference would bind
  // pci_filter_init to LIBPCI_3.0, whose filter rejects classes.
  const auto dynamic = run_command("objdump -T " + shell_quoted(lib("libpcie.so.0.1.0")), scratch_);
  ASSERT_EQ(dynamic.exit_code, 0) << dynamic.err;
  EXPECT_TRUE(std::regex_search(dynamic.out, std::regex(R"(\(LIBPCI_3\.[89]\)\s+pci_filter_init)"))) << dynamic.out;
  EXPECT_FALSE(std::regex_search(dynamic.out, std::regex(R"(\*UND\*\s+\S+\s+pci_)"))) << "an unversioned libpci reference";
  const auto needed = run_command("readelf -d " + shell_quoted(lib("libpcie.so.0.1.0")), scratch_);
  EXPECT_NE(needed.out.find("[libpci.so.3]"), std::string::npos);
  EXPECT_NE(needed.out.find("[libfmt.so"), std::string::npos);
}

TEST_F(InstallTest, ManPageCoversEveryCommand) {
  const std::string page = cli::slurp(prefix_ + "/share/man/man1/pciectl.1");
  EXPECT_TRUE(page.starts_with(".TH PCIECTL 1")) << page.substr(0, 80);
  for (const char* command : {"ls", "info", "read", "write", "dump", "config", "bind", "unbind", "iomem", "mem", "bench"}) {
    EXPECT_NE(page.find(std::string(".SS pciectl ") + command + "\n"), std::string::npos) << command;
  }
  // man's own formatter accepts it (man-db's man -l, when installed).
  if (access("/usr/bin/man", X_OK) == 0) {
    const auto man = run_command("MANWIDTH=100 man -l " + shell_quoted(prefix_ + "/share/man/man1/pciectl.1"), scratch_);
    EXPECT_EQ(man.exit_code, 0) << man.err;
  }
}

TEST_F(InstallTest, CmakeFindPackageConsumerSharedAndStatic) {
  const std::string dir = copy_consumer("cmake");
  const auto configure = run_command("cmake -S " + shell_quoted(dir) + " -B " + shell_quoted(dir + "/build") +
                                         " -DCMAKE_PREFIX_PATH=" + shell_quoted(prefix_),
                                     scratch_);
  ASSERT_EQ(configure.exit_code, 0) << configure.out << configure.err;
  const auto build = run_command("cmake --build " + shell_quoted(dir + "/build"), scratch_);
  ASSERT_EQ(build.exit_code, 0) << build.out << build.err;
  for (const char* program : {"consumer_shared", "consumer_static"}) {
    const auto run = run_command(shell_quoted(dir + "/build/" + program), scratch_);
    EXPECT_EQ(run.exit_code, 0) << program << ": " << run.out << run.err;
    EXPECT_TRUE(run.out.starts_with("consumer ok")) << program << ": " << run.out;
  }
  // The shared one loads the installed library through its soname; the static one none.
  const auto shared = run_command("ldd " + shell_quoted(dir + "/build/consumer_shared"), scratch_);
  EXPECT_NE(shared.out.find("libpcie.so.0.1 => " + prefix_ + "/lib/libpcie.so.0.1"), std::string::npos) << shared.out;
  const auto statically = run_command("ldd " + shell_quoted(dir + "/build/consumer_static"), scratch_);
  EXPECT_EQ(statically.out.find("libpcie.so"), std::string::npos) << statically.out;
}

TEST_F(InstallTest, PythonModuleImportsFromTheInstalledTree) {
  const auto run = run_command("PYTHONPATH=" + shell_quoted(prefix_ + "/lib/python3/dist-packages") +
                                   " /usr/bin/python3 -c 'import pcie; print(pcie.__version__, pcie.__file__)'",
                               scratch_);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, std::string(PCIE_VERSION) + " " + prefix_ + "/lib/python3/dist-packages/pcie.so\n") << run.err;
}

TEST_F(InstallTest, CmakeRefusesAnIncompatibleVersion) {
  // Before 1.0 only the same minor version is compatible.
  const std::string dir = scratch_ + "/cmake-version";
  fs::create_directories(dir);
  {
    std::FILE* file = std::fopen((dir + "/CMakeLists.txt").c_str(), "w");
    ASSERT_NE(file, nullptr);
    std::fputs("cmake_minimum_required(VERSION 3.20)\nproject(v CXX)\nfind_package(pcie 0.2 REQUIRED)\n", file);
    std::fclose(file);
  }
  const auto configure = run_command("cmake -S " + shell_quoted(dir) + " -B " + shell_quoted(dir + "/build") +
                                         " -DCMAKE_PREFIX_PATH=" + shell_quoted(prefix_),
                                     scratch_);
  EXPECT_NE(configure.exit_code, 0);
  EXPECT_NE((configure.out + configure.err).find("0.1.0"), std::string::npos) << configure.out << configure.err;
}

TEST_F(InstallTest, PkgConfigMakefileConsumerSharedAndStatic) {
  const std::string dir = copy_consumer("make");
  const auto modversion = run_command("PKG_CONFIG_PATH=" + shell_quoted(lib("pkgconfig")) + " pkg-config --modversion pcie pcie-testing", scratch_);
  EXPECT_EQ(modversion.out, std::string(PCIE_VERSION) + "\n" + PCIE_VERSION + "\n") << modversion.err;
  const auto build = run_command("make -C " + shell_quoted(dir) + " PKG_CONFIG_PATH=" + shell_quoted(lib("pkgconfig")), scratch_);
  ASSERT_EQ(build.exit_code, 0) << build.out << build.err;
  for (const char* program : {"consumer_shared", "consumer_static"}) {
    const auto run = run_command(shell_quoted(dir + "/" + program), scratch_);
    EXPECT_EQ(run.exit_code, 0) << program << ": " << run.out << run.err;
    EXPECT_TRUE(run.out.starts_with("consumer ok")) << program << ": " << run.out;
  }
}

TEST_F(InstallTest, RelocatedTreeStillWorks) {
  // The .pc files and the CMake config compute paths from where they lie (packaging with
  // DESTDIR, or moving the tree): move it and build again.
  const std::string moved = scratch_ + "/moved/prefix";
  fs::create_directories(scratch_ + "/moved");
  fs::copy(prefix_, moved, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  const std::string dir = copy_consumer("moved-cmake");
  const auto configure =
      run_command("cmake -S " + shell_quoted(dir) + " -B " + shell_quoted(dir + "/build") + " -DCMAKE_PREFIX_PATH=" + shell_quoted(moved), scratch_);
  ASSERT_EQ(configure.exit_code, 0) << configure.out << configure.err;
  ASSERT_EQ(run_command("cmake --build " + shell_quoted(dir + "/build"), scratch_).exit_code, 0);
  const auto ldd = run_command("ldd " + shell_quoted(dir + "/build/consumer_shared"), scratch_);
  EXPECT_NE(ldd.out.find(moved + "/lib/libpcie.so.0.1"), std::string::npos) << ldd.out;
  const auto cflags = run_command("PKG_CONFIG_PATH=" + shell_quoted(moved + "/lib/pkgconfig") + " pkg-config --cflags pcie", scratch_);
  EXPECT_NE(cflags.out.find(moved + "/lib/pkgconfig/../../include"), std::string::npos) << cflags.out;
}

// A separate Bazel workspace with Bazel's default link mode for tests (shared libraries
// where a cc_library allows them) and only the recipe from the README.
TEST(BazelConsumer, LocalRepositoryConsumerPassesWithDefaultLinkMode) {
  const std::string scratch = cli::make_scratch_dir("pcie-bazel-consumer");
  // The checkout this test was built from: the runfile links point into it.
  const std::string source_root = fs::canonical(input("workspace_file")).parent_path();
  const std::string workspace = scratch + "/workspace";
  fs::create_directories(workspace);
  const std::string consumers = input("consumers");
  ASSERT_EQ(run_command("sed 's|@PCIE_PATH@|" + source_root + "|g' " + shell_quoted(consumers + "/WORKSPACE.consumer") + " > " +
                            shell_quoted(workspace + "/WORKSPACE") + " && cp " + shell_quoted(consumers + "/BUILD.consumer") + " " +
                            shell_quoted(workspace + "/BUILD.bazel") + " && cp " + shell_quoted(consumers + "/bazelrc.consumer") + " " +
                            shell_quoted(workspace + "/.bazelrc") + " && cp " + shell_quoted(consumers + "/consumer.cc") + " " +
                            shell_quoted(workspace),
                        scratch)
                .exit_code,
            0);
  // Its own server and output tree, gone afterwards; local spawns (no sandbox in a sandbox).
  const std::string bazel = "cd " + shell_quoted(workspace) + " && HOME=" + shell_quoted(scratch) + " bazel --output_user_root=" +
                            shell_quoted(scratch + "/root") + " --max_idle_secs=30";
  const auto test = run_command(bazel + " test --spawn_strategy=local --color=no --curses=no --noshow_progress "
                                        "--test_output=all //:consumer",
                                scratch);
  run_command(bazel + " shutdown", scratch);
  EXPECT_EQ(test.exit_code, 0) << test.out.substr(test.out.size() > 8000 ? test.out.size() - 8000 : 0) << test.err.substr(test.err.size() > 8000 ? test.err.size() - 8000 : 0);
  EXPECT_NE(test.out.find("consumer ok"), std::string::npos) << test.out;
  run_command("chmod -R u+w " + shell_quoted(scratch), "/tmp");
  fs::remove_all(scratch);
}

}  // namespace
}  // namespace pcie

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    const auto equals = argument.find('=');
    if (!argument.starts_with("--") || equals == std::string::npos) continue;
    char resolved[PATH_MAX];
    const std::string value = argument.substr(equals + 1);
    pcie::g_inputs[argument.substr(2, equals - 2)] = realpath(value.c_str(), resolved) ? std::string(resolved) : value;
  }
  return RUN_ALL_TESTS();
}
