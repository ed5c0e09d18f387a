#include "tests/vm/vm_harness.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

extern char** environ;

namespace pcie::vm {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs argv with stdout and stderr sent to files; returns the exit status (-1 when it could
// not start or was killed by a signal, with the reason appended to stderr_file).
int spawn_and_wait(const std::vector<std::string>& argv, const std::filesystem::path& stdout_file,
                   const std::filesystem::path& stderr_file, const std::vector<std::string>& extra_environment) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);

  std::vector<std::string> environment_storage(extra_environment);
  for (char** entry = environ; *entry != nullptr; ++entry) environment_storage.emplace_back(*entry);
  std::vector<char*> environment;
  for (std::string& entry : environment_storage) environment.push_back(entry.data());
  environment.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, stdout_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  const int spawn_error = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environment.data());
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_error != 0) {
    std::ofstream(stderr_file, std::ios::app) << "cannot start " << argv[0] << ": " << std::strerror(spawn_error) << "\n";
    return -1;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  std::ofstream(stderr_file, std::ios::app) << argv[0] << " was killed by signal " << WTERMSIG(status) << "\n";
  return -1;
}

}  // namespace

Run run_vm(const Options& options, const std::filesystem::path& work_dir) {
  Run run;
  run.work_dir = work_dir;
  run.out_dir = work_dir / "out";
  std::filesystem::create_directories(work_dir);
  const std::filesystem::path console = work_dir / "console.log";

  std::vector<std::string> argv{options.pcie_vm};
  argv.insert(argv.end(), options.vm_arguments.begin(), options.vm_arguments.end());
  for (const std::string& program : options.guest_programs) {
    argv.push_back("--add");
    argv.push_back(program);
  }
  argv.insert(argv.end(), {"--out", run.out_dir.string(), "--console", console.string(), "--timeout",
                           std::to_string(options.timeout_seconds), "--"});
  argv.insert(argv.end(), options.guest_command.begin(), options.guest_command.end());

  // pcie-vm's scratch files (initramfs, ivshmem file unless given) go to the test's tmpdir.
  const auto start = std::chrono::steady_clock::now();
  run.exit_status = spawn_and_wait(argv, work_dir / "pcie-vm.stdout", work_dir / "pcie-vm.stderr",
                                   {"TMPDIR=" + work_dir.string()});
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.console = read_file(console);
  run.dmesg = read_file(run.out_dir / "dmesg.txt");
  run.harness_errors = read_file(work_dir / "pcie-vm.stderr");
  return run;
}

std::vector<std::string> kernel_log_problems(std::string_view log, const std::vector<std::string>& expected_fault_addresses) {
  // The kernel's own markers (include/asm-generic/bug.h, kernel/panic.c, lib/ubsan.c,
  // kernel/hung_task.c) and the Intel IOMMU driver's fault report
  // (drivers/iommu/intel/dmar.c: "DMAR: [DMA Read NO_PASID] Request device [..] fault addr 0x..").
  static const std::regex kernel_trouble(
      R"(WARNING:|\bBUG:|kernel BUG at|Oops|Kernel panic|general protection fault|Call Trace:|UBSAN:|blocked for more than)");
  static const std::regex dmar_fault(R"(DMAR: \[(DMA|INTR))");
  static const std::regex dmar_fault_address(R"(fault addr (0x[0-9a-f]+))");
  static const std::regex dmar_fault_status(R"(DMAR: DRHD: handling fault)");
  std::vector<std::string> problems;
  std::istringstream lines{std::string(log)};
  for (std::string line; std::getline(lines, line);) {
    std::smatch address;
    if (std::regex_search(line, kernel_trouble)) {
      problems.push_back(line);
    } else if (std::regex_search(line, dmar_fault)) {
      const bool expected = std::regex_search(line, address, dmar_fault_address) &&
                            std::find(expected_fault_addresses.begin(), expected_fault_addresses.end(),
                                      address[1].str()) != expected_fault_addresses.end();
      if (!expected) problems.push_back(line);
    } else if (std::regex_search(line, dmar_fault_status) && expected_fault_addresses.empty()) {
      problems.push_back(line);  // the fault's first line; the next says where
    }
  }
  return problems;
}

bool parse_guest_results(std::string_view json, std::vector<GuestCase>& cases, std::string& error) {
  const nlohmann::json report = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (report.is_discarded() || !report.is_object() || !report.contains("testsuites") ||
      !report["testsuites"].is_array()) {
    error = "not a GoogleTest JSON report";
    return false;
  }
  for (const nlohmann::json& suite : report["testsuites"]) {
    if (!suite.contains("testsuite") || !suite["testsuite"].is_array()) continue;
    for (const nlohmann::json& test : suite["testsuite"]) {
      GuestCase guest_case;
      guest_case.suite = suite.value("name", "");
      guest_case.name = test.value("name", "");
      // GoogleTest 1.12 reports "result": "COMPLETED", "SKIPPED" or "SUPPRESSED".
      guest_case.skipped = test.value("result", "") == "SKIPPED";
      if (test.contains("failures") && test["failures"].is_array()) {
        for (const nlohmann::json& failure : test["failures"]) guest_case.failures.push_back(failure.value("failure", "?"));
      }
      if (test.value("status", "RUN") == "NOTRUN") continue;  // filtered out or disabled
      cases.push_back(std::move(guest_case));
    }
  }
  if (cases.empty()) {
    error = "the report lists no test cases";
    return false;
  }
  return true;
}

}  // namespace pcie::vm
