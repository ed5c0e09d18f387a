// pciectl config: config space in setpci's habits (tools/pciectl/setpci.h): register names,
// capability-relative offsets, .b/.w/.l widths, REG=VALUE[:MASK], hex numbers, -s/-d
// selecting devices.
#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>

#include "pcie/discovery.h"
#include "tools/pciectl/command.h"
#include "tools/pciectl/config_access.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/setpci.h"

namespace pciectl {
namespace {

struct ConfigOptions {
  std::vector<std::string> items;  // [BDF] REG... (or the older form: BDF OFFSET VALUE)
  std::string slot, id;            // lspci/setpci selectors instead of a BDF
  unsigned width_bits = 0;
  bool json = false;
  bool vfio = false;  // through the VFIO config region
};

// Where the results go: printed as they come, or gathered into one JSON array.
struct ConfigOutput {
  bool json = false;
  bool selected = false;  // devices chosen with -s/-d: each line names its device
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
};

bool is_bare_number(const std::string& text) {
  return !text.empty() && text.find_first_of(".=+:_") == std::string::npos && parse_hex32(text, "value").has_value();
}

// The devices -s/-d select; at least one.
pcie::Result<std::vector<pcie::Bdf>> discover_selected(const GlobalOptions& global, const ConfigOptions& options) {
  pcie::DiscoveryOptions discovery = discovery_options(global);
  discovery.slot_filter = options.slot;
  discovery.id_filter = options.id;
  discovery.read_capabilities = false;
  discovery.read_bindings = false;
  auto found = pcie::discover(discovery);
  if (!found) return std::unexpected(found.error());
  std::vector<pcie::Bdf> devices;
  for (const auto& device : *found) devices.push_back(device.bdf);
  if (devices.empty()) {
    return std::unexpected(pcie::make_error(pcie::Errc::not_found, "select devices",
                                            fmt::format("-s '{}' -d '{}'", options.slot, options.id), "no device matches",
                                            "pciectl ls -s/-d with the same selector lists what matches"));
  }
  return devices;
}

// Without -s/-d the first item is the device: taken off `items`.
pcie::Result<pcie::Bdf> take_device(std::vector<std::string>& items) {
  if (items.empty()) {
    return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "config", "", "no device given",
                                            "pciectl config BDF [REG...], or select with -s SLOT / -d VENDOR:DEVICE"));
  }
  auto bdf = pcie::Bdf::parse(items.front());
  if (!bdf) return std::unexpected(bdf.error());
  items.erase(items.begin());
  return *bdf;
}

pcie::Result<std::vector<RegisterExpression>> parse_expressions(std::vector<std::string> items, unsigned width_bits) {
  // The older positional form "OFFSET VALUE": a second item that is a bare number is the
  // first one's value.
  if (items.size() == 2 && items[0].find('=') == std::string::npos && is_bare_number(items[1])) {
    items = {items[0] + "=" + items[1]};
  }
  std::vector<RegisterExpression> expressions;
  for (const std::string& item : items) {
    auto expression = parse_register_expression(item);
    if (!expression) return std::unexpected(expression.error());
    if (auto settled = settle_width(*expression, width_bits / 8); !settled) return std::unexpected(settled.error());
    expressions.push_back(std::move(*expression));
  }
  return expressions;
}

// The whole readable config space, as lspci -xxx lays it out.
void print_config_space(const pcie::Bdf& bdf, const std::vector<std::uint8_t>& bytes, ConfigOutput& out) {
  if (out.json) {
    out.results.push_back({{"bdf", bdf.to_string()}, {"config", bytes}});
    return;
  }
  if (out.selected) fmt::print("{}\n", bdf.to_string());
  for (std::size_t line = 0; line < bytes.size(); line += 16) {
    std::string text = fmt::format("{:03x}:", line);
    for (std::size_t at = line; at < std::min(line + 16, bytes.size()); ++at) text += fmt::format(" {:02x}", bytes[at]);
    fmt::print("{}\n", text);
  }
}

pcie::Result<std::uint32_t> register_offset(const ConfigAccess& config, const RegisterExpression& expression,
                                            std::span<const std::uint8_t> bytes) {
  auto offset = resolve_register_offset(expression, bytes);
  // A capability beyond what this user can read: say so rather than "not found".
  if (!offset && config.limited_by_privilege() && offset.error().code == pcie::Errc::not_found) {
    pcie::Error error = offset.error();
    error.hint = fmt::format("only {} of {} bytes of config space are readable without root", config.readable_size(),
                             config.file_size());
    return std::unexpected(error);
  }
  return offset;
}

// REG=VALUE, or with :MASK a read-modify-write of the masked bits.
pcie::Result<void> write_register(const ConfigAccess& config, const pcie::Bdf& bdf,
                                  const RegisterExpression& expression, std::uint32_t offset, ConfigOutput& out) {
  const std::size_t width = expression.width_bytes;
  std::uint32_t value = *expression.value;
  const std::uint32_t mask = write_mask(expression);
  RegisterExpression whole = expression;
  whole.has_mask = false;
  if (mask != write_mask(whole)) {
    auto old = config.read(offset, width);  // read-modify-write for VALUE:MASK
    if (!old) return std::unexpected(old.error());
    value = (*old & ~mask) | (value & mask);
  }
  auto written = config.write(offset, width, value);
  if (!written) return std::unexpected(written.error());
  if (out.json) {
    out.results.push_back({{"bdf", bdf.to_string()}, {"register", expression.text}, {"offset", offset},
                           {"width", width * 8}, {"written", value}});
  }
  return {};
}

pcie::Result<void> read_register(const ConfigAccess& config, const pcie::Bdf& bdf,
                                 const RegisterExpression& expression, std::uint32_t offset, ConfigOutput& out) {
  const std::size_t width = expression.width_bytes;
  auto value = config.read(offset, width);
  if (!value) return std::unexpected(value.error());
  if (out.json) {
    out.results.push_back({{"bdf", bdf.to_string()}, {"register", expression.text}, {"offset", offset},
                           {"width", width * 8}, {"value", *value}});
  } else {
    fmt::print("{}0x{:0{}x}\n", out.selected ? bdf.to_string() + " " : "", *value, width * 2);
  }
  return {};
}

// One device: its config space when no registers are named, else each register in turn.
pcie::Result<void> run_on_device(const GlobalOptions& global, const ConfigOptions& options, const pcie::Bdf& bdf,
                                 const std::vector<RegisterExpression>& expressions, ConfigOutput& out) {
  const bool writing = std::ranges::any_of(expressions, [](const auto& e) { return e.value.has_value(); });
  auto config = ConfigAccess::open(global, bdf, writing, options.vfio);
  if (!config) return std::unexpected(config.error());
  auto bytes = config->snapshot();
  if (!bytes) return std::unexpected(bytes.error());
  if (expressions.empty()) {
    print_config_space(bdf, *bytes, out);
    return {};
  }
  for (const RegisterExpression& expression : expressions) {
    auto offset = register_offset(*config, expression, *bytes);
    if (!offset) return std::unexpected(offset.error());
    auto done = expression.value ? write_register(*config, bdf, expression, *offset, out)
                                 : read_register(*config, bdf, expression, *offset, out);
    if (!done) return done;
  }
  return {};
}

int run_config(const GlobalOptions& global, const ConfigOptions& options) {
  ConfigOutput out{.json = options.json, .selected = !options.slot.empty() || !options.id.empty()};
  std::vector<std::string> items = options.items;
  std::vector<pcie::Bdf> devices;
  if (out.selected) {
    auto found = discover_selected(global, options);
    if (!found) return fail(found.error());
    devices = std::move(*found);
  } else {
    auto bdf = take_device(items);
    if (!bdf) return fail(bdf.error());
    devices.push_back(*bdf);
  }
  auto expressions = parse_expressions(std::move(items), options.width_bits);
  if (!expressions) return fail(expressions.error());
  for (const pcie::Bdf& bdf : devices) {
    if (auto done = run_on_device(global, options, bdf, *expressions, out); !done) return fail(done.error());
  }
  if (out.json) print_json_document(out.results);
  return kSuccess;
}

void add_config_options(CLI::App* command, ConfigOptions& config) {
  command->add_option("device_and_registers", config.items,
                      "BDF (unless -s/-d), then registers: COMMAND, 0x40.w, CAP_EXP+0x10.w, ECAP_AER+4.l=1:1 "
                      "(hex, as in setpci; none: dump config space)");
  command->add_option("-s,--slot", config.slot, "every device in this slot, lspci -s syntax");
  command->add_option("-d,--id", config.id, "every device with this ID, lspci -d syntax");
  command->add_option("-w,--width", config.width_bits,
                      "width in bits for registers without .b/.w/.l: 8, 16 or 32 (reads default to 32 or the "
                      "register's own; writes need one)")
      ->check(CLI::IsMember({8u, 16u, 32u}));
  command->add_flag("--json", config.json, "print JSON");
  command->add_flag("--vfio", config.vfio,
                    "through the device's VFIO config region (bound to vfio-pci; all of it for a user given the "
                    "group, where sysfs shows them 64 bytes)");
}

}  // namespace

void register_config(CLI::App& app, Commands& commands) {
  auto config = std::make_shared<ConfigOptions>();
  CLI::App* command = app.add_subcommand(
      "config", "config space in setpci's syntax: dump it, read registers, or write REG=VALUE[:MASK]");
  add_config_options(command, *config);
  commands.push_back({command, [config] { return config->json; },
                      [config](const GlobalOptions& global, bool json) {
                        config->json = config->json || json;
                        return run_config(global, *config);
                      }});
}

}  // namespace pciectl
