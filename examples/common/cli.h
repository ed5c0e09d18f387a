// What every example program does with its command line before its own parsing, as
// pciectl does: --help (or -h) prints the usage on standard output and exits 0, --version
// prints the program's and the library's version and exits 0. A usage error is the
// program's own: the usage on standard error, exit 2.
#pragma once

#include <optional>
#include <string>

namespace examples {

// The exit status (0) when one of argv[1..argc) is --help, -h or --version, after printing
// `usage` (a line per form, without "usage: ") or "PROGRAM VERSION (libpcie VERSION)" on
// standard output; nullopt otherwise. Never fails.
std::optional<int> answer_help_or_version(int argc, char** argv, const char* program, const std::string& usage);

// Prints "usage: " and `usage` on standard error; returns 2, the usage error's exit status.
int usage_error(const std::string& usage);

}  // namespace examples
