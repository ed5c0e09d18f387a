// Command-line values shared by pciectl's subcommands.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "pcie/error.h"

namespace pciectl {

// Prints "pciectl: error: ..." on stderr and returns the exit code for the error's code;
// with set_json_errors(true) (--json) also {"error": {...}} on stdout, for scripts.
int fail(const pcie::Error& error);
void set_json_errors(bool json);
bool json_errors();
// {"error": {"code", "exit_code", "message", "operation", "object", "reason", "hint", "errno"}}
void print_json_error(const std::string& code, int exit_code, const pcie::Error& error);
// Prints `document` on stdout, indented by 2, and a newline: the one way pciectl prints
// JSON. Strings that are not UTF-8 (command-line text, sysfs data a command did not pass
// through pcie::printable) are printed with U+FFFD in place of the bad bytes, never a
// thrown exception: the output is always valid JSON.
void print_json_document(const nlohmann::ordered_json& document);
// Decimal or 0x-prefixed hex.
pcie::Result<std::uint64_t> parse_number(const std::string& text, std::string_view what);
// Decimal or hex with an optional K/M/G suffix (powers of 1024): "64", "4K", "1M", "0x1000".
pcie::Result<std::uint64_t> parse_size(const std::string& text, std::string_view what);
// "bar2", "BAR2" or "2".
pcie::Result<unsigned> parse_bar(const std::string& text);

}  // namespace pciectl
