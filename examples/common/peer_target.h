// A place in another device's BAR, as the example programs take it on their command line:
// "0000:00:04.0:bar2:0x1000" (BDF, BAR, byte offset; the domain may be left out, the offset
// is decimal, 0x hex or 0 octal).
#pragma once

#include <cstdint>
#include <string_view>

#include "pcie/bdf.h"
#include "pcie/error.h"

namespace examples {

struct PeerTarget {
  pcie::Bdf bdf;
  unsigned bar = 0;
  std::uint64_t offset = 0;
};

// invalid_argument naming the text and the expected form for anything else: no two ':'
// fields after the BDF, a BAR other than bar0..bar5, an offset that is not a whole number
// or does not fit 64 bits; the BDF's own parse error for a malformed BDF.
pcie::Result<PeerTarget> parse_peer_target(std::string_view text);

}  // namespace examples
