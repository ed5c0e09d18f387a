// Every public header compiles on its own, twice included, with each compiler users build
// with: g++ (Debian 12's 12) and clang++-19 (clangd users, and anyone building with clang),
// with -Wall -Wextra -Werror. One test case per header and compiler, registered at run time
// from the headers Bazel hands over; and one per compiler with every header in one unit, as a
// user's test that takes the whole testing kit does (two headers declaring the same name
// each compile alone). And a compiler not in C++23 mode gets our #error, not a page of
// errors from <expected>.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/cli_helpers.h"

namespace {

namespace fs = std::filesystem;

std::string g_include_dir;  // the directory holding pcie/

struct Compiler {
  const char* name;     // in test names
  const char* command;  // on PATH
};
constexpr Compiler kCompilers[] = {{"gxx", "g++"}, {"clang19", "clang++-19"}};

// Compiles a translation unit that includes `headers` in order, then all of them again;
// returns the compiler's output.
pcie::cli::CommandResult compile(const char* compiler, const std::vector<std::string>& headers,
                                 const std::string& standard, const std::string& code = {}) {
  const std::string scratch = pcie::cli::make_scratch_dir("pcie-header");
  const std::string source = scratch + "/unit.cc";
  {
    std::ofstream unit(source);
    for (int pass = 0; pass < 2; ++pass) {
      for (const std::string& header : headers) unit << "#include <" << header << ">\n";
    }
    unit << code << "\nint main() { return 0; }\n";
  }
  auto result = pcie::cli::run_command(std::string(compiler) + " -std=" + standard +
                                           " -fsyntax-only -Wall -Wextra -Werror -I'" + g_include_dir + "' '" + source + "'",
                                       scratch);
  fs::remove_all(scratch);
  return result;
}

class HeadersCompile : public ::testing::Test {
 public:
  HeadersCompile(const Compiler& compiler, std::vector<std::string> headers)
      : compiler_(compiler), headers_(std::move(headers)) {}
  void TestBody() override {
    const auto result = compile(compiler_.command, headers_, "c++23");
    EXPECT_EQ(result.exit_code, 0) << compiler_.command << " on " << headers_.size() << " header(s) from "
                                   << headers_.front() << ":\n"
                                   << result.out << result.err;
  }

 private:
  Compiler compiler_;
  std::vector<std::string> headers_;
};

TEST(PublicHeaders, AllFoundAndTheVersionHeaderAmongThem) {
  ASSERT_FALSE(g_include_dir.empty()) << "run with --include=DIR";
  EXPECT_TRUE(fs::is_regular_file(g_include_dir + "/pcie/version.h"));
  EXPECT_TRUE(fs::is_regular_file(g_include_dir + "/pcie/testing/fake_sysfs.h"));
}

TEST(PublicHeaders, CompilerNotInCxx23ModeGetsOneClearError) {
  for (const Compiler& compiler : kCompilers) {
    const auto result = compile(compiler.command, {"pcie/region.h"}, "c++20");
    EXPECT_NE(result.exit_code, 0) << compiler.command;
    EXPECT_NE(result.err.find("pcie needs C++23: compile with -std=c++23"), std::string::npos) << compiler.command << ":\n"
                                                                                               << result.err;
  }
}

// Result is must-use: a dropped error fails a -Werror build, with the attribute's advice;
// a deliberate drop through (void) compiles.
TEST(PublicHeaders, ADroppedResultIsAWarningAndAVoidCastIsNot) {
  const std::string declared = "pcie::Result<int> may_fail();\npcie::Result<void> may_fail_too();\n";
  for (const Compiler& compiler : kCompilers) {
    for (const std::string call : {"may_fail();", "may_fail_too();"}) {
      const auto dropped = compile(compiler.command, {"pcie/error.h"}, "c++23", declared + "void use() { " + call + " }");
      EXPECT_NE(dropped.exit_code, 0) << compiler.command << " " << call;
      EXPECT_NE(dropped.err.find("check it, or drop it with (void)"), std::string::npos) << compiler.command << ":\n"
                                                                                        << dropped.err;
      const auto cast = compile(compiler.command, {"pcie/error.h"}, "c++23", declared + "void use() { (void)" + call + " }");
      EXPECT_EQ(cast.exit_code, 0) << compiler.command << ":\n" << cast.err;
    }
    // What the standard library's expected hands back still converts, both ways.
    const auto converted = compile(compiler.command, {"pcie/error.h"}, "c++23",
                                   "std::expected<int, pcie::Error> plain();\n"
                                   "pcie::Result<int> wrapped() { return plain(); }\n"
                                   "std::expected<int, pcie::Error> back() { return wrapped(); }\n");
    EXPECT_EQ(converted.exit_code, 0) << compiler.command << ":\n" << converted.err;
  }
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (!argument.starts_with("--include=")) continue;
    char resolved[PATH_MAX];
    g_include_dir = realpath(argument.substr(10).c_str(), resolved) ? resolved : argument.substr(10);
  }
  std::vector<std::string> headers;
  if (!g_include_dir.empty()) {
    for (const auto& entry : fs::recursive_directory_iterator(g_include_dir + "/pcie")) {
      if (entry.path().extension() == ".h") headers.push_back(fs::relative(entry.path(), g_include_dir).string());
    }
  }
  std::sort(headers.begin(), headers.end());
  for (const std::string& header : headers) {
    for (const Compiler& compiler : kCompilers) {
      std::string name = std::string(compiler.name) + "_" + header;
      for (char& c : name) if (c == '/' || c == '.') c = '_';
      ::testing::RegisterTest("HeaderCompilesAlone", name.c_str(), nullptr, header.c_str(), __FILE__, __LINE__,
                              [compiler, header]() -> ::testing::Test* {
                                return new HeadersCompile(compiler, {header});
                              });
    }
  }
  if (!headers.empty()) {
    for (const Compiler& compiler : kCompilers) {
      ::testing::RegisterTest("HeadersCompileTogether", compiler.name, nullptr, nullptr, __FILE__, __LINE__,
                              [compiler, headers]() -> ::testing::Test* { return new HeadersCompile(compiler, headers); });
    }
  }
  return RUN_ALL_TESTS();
}
