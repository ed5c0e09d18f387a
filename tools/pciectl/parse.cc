#include "tools/pciectl/parse.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "tools/pciectl/exit_codes.h"

namespace pciectl {

namespace {
bool g_json_errors = false;
}  // namespace

void set_json_errors(bool json) { g_json_errors = json; }
bool json_errors() { return g_json_errors; }

int fail(const pcie::Error& error) {
  fmt::print(stderr, "pciectl: error: {}\n", error.message());
  if (g_json_errors) print_json_error(std::string(pcie::errc_name(error.code)), exit_code_for(error.code), error);
  return exit_code_for(error.code);
}

void print_json_error(const std::string& code, int exit_code, const pcie::Error& error) {
  nlohmann::ordered_json out;
  out["error"] = {{"code", code},
                  {"exit_code", exit_code},
                  {"message", error.message()},
                  {"operation", error.operation},
                  {"object", error.object},
                  {"reason", error.reason},
                  {"hint", error.hint},
                  {"errno", error.sys_errno}};
  print_json_document(out);
}

void print_json_document(const nlohmann::ordered_json& document) {
  fmt::print("{}\n", document.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
}

pcie::Result<std::uint64_t> parse_number(const std::string& text, std::string_view what) {
  std::string_view digits = text;
  int base = 10;
  if (digits.starts_with("0x") || digits.starts_with("0X")) {
    digits.remove_prefix(2);
    base = 16;
  }
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
  if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size()) {
    return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, fmt::format("parse {}", what),
                                            fmt::format("'{}'", text), "not a number",
                                            "use decimal or 0x-prefixed hex, e.g. 0x80"));
  }
  return value;
}

pcie::Result<unsigned> parse_bar(const std::string& text) {
  std::string digits = text;
  if (digits.starts_with("bar") || digits.starts_with("BAR")) digits = digits.substr(3);
  if (digits.size() == 1 && digits[0] >= '0' && digits[0] <= '5') return static_cast<unsigned>(digits[0] - '0');
  return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "parse BAR", fmt::format("'{}'", text),
                                          "expected bar0 .. bar5", ""));
}

pcie::Result<std::uint64_t> parse_size(const std::string& text, std::string_view what) {
  std::string digits = text;
  std::uint64_t multiplier = 1;
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'K': case 'k': multiplier = 1ull << 10; break;
      case 'M': case 'm': multiplier = 1ull << 20; break;
      case 'G': case 'g': multiplier = 1ull << 30; break;
      default: break;
    }
    if (multiplier != 1) digits.pop_back();
  }
  auto value = parse_number(digits, what);
  if (!value) return value;
  if (*value > UINT64_MAX / multiplier) {
    return std::unexpected(pcie::make_error(pcie::Errc::out_of_range, fmt::format("parse {}", what),
                                            fmt::format("'{}'", text), "too large"));
  }
  return *value * multiplier;
}

}  // namespace pciectl
