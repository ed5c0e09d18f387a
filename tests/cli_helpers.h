// Helpers for tests that run the built pciectl as a child process.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace pcie::cli {

// The pciectl binary, from --pciectl=PATH (Bazel passes $(rootpath //tools/pciectl)).
inline std::string g_pciectl;

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs a shell command line, its stdout and stderr captured through files in scratch_dir.
inline CommandResult run_command(const std::string& command_line, const std::string& scratch_dir) {
  const std::string out_file = scratch_dir + "/out.txt";
  const std::string err_file = scratch_dir + "/err.txt";
  const int status = std::system((command_line + " >" + out_file + " 2>" + err_file).c_str());
  CommandResult run;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.out = slurp(out_file);
  run.err = slurp(err_file);
  return run;
}

// A fresh directory under /tmp ("/tmp" itself if it cannot be made), for run_command.
inline std::string make_scratch_dir(const std::string& prefix = "pcie-test") {
  std::string pattern = "/tmp/" + prefix + ".XXXXXX";
  return mkdtemp(pattern.data()) != nullptr ? pattern : std::string("/tmp");
}

// Runs `body` in a forked child and returns its exit status, or -1 if it died by a signal.
// For tests that must change credentials or limits, or be killed, without touching the
// test process.
template <class Body>
int run_in_child(Body body) {
  const pid_t child = fork();
  if (child == 0) _exit(body());
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// GoogleTest's main, plus --pciectl=PATH.
inline int run_all_tests(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument.starts_with("--pciectl=")) g_pciectl = std::string(argument.substr(10));
  }
  return RUN_ALL_TESTS();
}

}  // namespace pcie::cli
