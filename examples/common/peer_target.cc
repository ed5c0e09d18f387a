#include "examples/common/peer_target.h"

#include <cerrno>
#include <cstdlib>
#include <string>

namespace examples {

namespace {

pcie::Error malformed_target(std::string_view text, const std::string& why) {
  return pcie::make_error(pcie::Errc::invalid_argument, "parse peer target", std::string(text), why,
                          "write BDF:barN:OFFSET, e.g. 0000:00:04.0:bar2:0x1000");
}

}  // namespace

pcie::Result<PeerTarget> parse_peer_target(std::string_view text) {
  const std::size_t offset_colon = text.rfind(':');
  if (offset_colon == std::string_view::npos || offset_colon == 0) return std::unexpected(malformed_target(text, "no offset"));
  const std::size_t bar_colon = text.rfind(':', offset_colon - 1);
  if (bar_colon == std::string_view::npos) return std::unexpected(malformed_target(text, "no BAR"));
  const std::string_view bar = text.substr(bar_colon + 1, offset_colon - bar_colon - 1);
  if (bar.size() != 4 || !bar.starts_with("bar") || bar[3] < '0' || bar[3] > '5') {
    return std::unexpected(malformed_target(text, "'" + std::string(bar) + "' is not bar0 .. bar5"));
  }
  const std::string offset(text.substr(offset_colon + 1));
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(offset.c_str(), &end, 0);
  if (offset.empty() || offset[0] < '0' || offset[0] > '9' || *end != '\0' || errno != 0) {
    return std::unexpected(malformed_target(text, "'" + offset + "' is not a byte offset"));
  }
  auto bdf = pcie::Bdf::parse(text.substr(0, bar_colon));
  if (!bdf) return std::unexpected(bdf.error());
  return PeerTarget{.bdf = *bdf, .bar = static_cast<unsigned>(bar[3] - '0'), .offset = value};
}

}  // namespace examples
