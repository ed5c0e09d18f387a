// pciectl peer INITIATOR PEER BAR: can INITIATOR reach PEER's BAR by peer-to-peer DMA, and
// by which path (pcie::peer_reachability: nothing is opened, bound or written).
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "pcie/peer_dma.h"
#include "tools/pciectl/command.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

struct PeerOptions {
  std::string initiator, peer, bar;
  bool json = false;
};

void print_text(const pcie::Bdf& initiator, const pcie::PeerReachability& found) {
  fmt::print("{} from {}:\n", pcie::printable(found.target), initiator.to_string());
  for (const pcie::PeerPathCheck& path : found.paths) {
    fmt::print("  {:<4} {}: {}\n", path.possible ? "yes" : "no", pcie::to_string(path.path), pcie::printable(path.reason));
  }
  for (const std::string& note : found.notes) fmt::print("  note: {}\n", pcie::printable(note));
}

void print_json(const pcie::Bdf& initiator, const pcie::PeerReachability& found) {
  nlohmann::ordered_json out = {{"initiator", initiator.to_string()},
                                {"target", pcie::printable(found.target)},
                                {"reachable", found.any_possible()},
                                {"paths", nlohmann::ordered_json::array()},
                                {"notes", nlohmann::ordered_json::array()}};
  for (const pcie::PeerPathCheck& path : found.paths) {
    out["paths"].push_back({{"path", pcie::to_string(path.path)},
                            {"possible", path.possible},
                            {"reason", pcie::printable(path.reason)}});
  }
  for (const std::string& note : found.notes) out["notes"].push_back(pcie::printable(note));
  print_json_document(out);
}

int run_peer(const GlobalOptions& global, const PeerOptions& options, bool json) {
  auto initiator = pcie::Bdf::parse(options.initiator);
  if (!initiator) return fail(initiator.error());
  auto peer = pcie::Bdf::parse(options.peer);
  if (!peer) return fail(peer.error());
  auto bar = parse_bar(options.bar);
  if (!bar) return fail(bar.error());
  auto found = pcie::peer_reachability(*initiator, *peer, *bar, vfio_paths_of(global));
  if (!found) return fail(found.error());
  if (json) {
    print_json(*initiator, *found);
  } else {
    print_text(*initiator, *found);
  }
  // No path: the operation's answer is no (1), not a usage error (2).
  return found->any_possible() ? kSuccess : kFailure;
}

}  // namespace

void register_peer(CLI::App& app, Commands& commands) {
  auto peer = std::make_shared<PeerOptions>();
  CLI::App* command = app.add_subcommand(
      "peer", "can INITIATOR reach PEER's BAR by peer-to-peer DMA, and how (reads only; exit 1 when no path)");
  command->add_option("initiator", peer->initiator, "the device that does the DMA, e.g. 0000:00:03.0")->required();
  command->add_option("peer", peer->peer, "the device whose BAR is the target")->required();
  command->add_option("bar", peer->bar, "the target BAR: bar2, BAR2 or 2")->required();
  command->add_flag("--json", peer->json, "print JSON");
  commands.push_back({command, [peer] { return peer->json; },
                      [peer](const GlobalOptions& global, bool json) { return run_peer(global, *peer, peer->json || json); }});
}

}  // namespace pciectl
