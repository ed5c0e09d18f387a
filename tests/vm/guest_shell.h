// Runs a command line in the guest as a user would type it (the programs the VM test added
// are on PATH, in /vm/bin), echoing it and its output into the test's log.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <utility>

namespace pcie::vm {

// Standard output and standard error together, and the exit status (-1 when the command
// did not exit normally or could not start).
inline std::pair<std::string, int> shell(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {"popen failed", -1};
  std::string out;
  char chunk[256];
  while (std::fgets(chunk, sizeof chunk, pipe) != nullptr) out += chunk;
  const int status = pclose(pipe);
  std::printf("$ %s\n%s", command.c_str(), out.c_str());
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

}  // namespace pcie::vm
