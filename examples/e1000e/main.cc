// e1000e-driver [--backend vfio|vfio-noiommu|uio] [--interrupts] BDF COMMAND: the example
// NIC driver on an Intel 82574L (QEMU's e1000e) bound to the backend's driver.
//   echo [--count N] [--idle SECONDS] [--batch B]
//                                       send every received frame back, MACs swapped (N
//                                       frames, or until none came for SECONDS; default 10),
//                                       received and sent B frames at a time (default 32)
//   loopback [--bytes N]                N bytes (default 1 MiB) of random data out through
//                                       transmit and back through receive (MAC loopback),
//                                       compared: the NIC as a DMA engine
//   bench [--frames N]                  packets per second through MAC loopback, 60-byte
//                                       frames, at batch sizes 1, 4, 16, 32, 64, 128
// vfio-noiommu and uio let the NIC reach all of memory, which this program accepts.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "examples/common/cli.h"
#include "examples/common/open_device.h"
#include "examples/common/removal_watch.h"
#include "examples/e1000e/e1000e_driver.h"
#include "examples/e1000e/frames.h"

namespace {

// Says why on standard error; the exit status: 6 when the device went away, else 1.
int fail(const pcie::Error& error) {
  std::fprintf(stderr, "e1000e-driver: %s\n", error.message().c_str());
  return examples::exit_status_for(error);
}

std::string usage_text() {
  return std::string("e1000e-driver [--backend ") + examples::kBackendNames +
         "] [--interrupts] BDF\n"
         "         echo [--count N] [--idle SECONDS] [--batch 1..256] | loopback [--bytes N] | bench [--frames N]\n";
}

int usage() { return examples::usage_error(usage_text()); }

bool number(std::string_view text, std::uint64_t& value, std::uint64_t max) {
  if (text.empty() || text[0] == '-') return false;
  char* end = nullptr;
  const std::string copy(text);
  errno = 0;
  value = std::strtoull(copy.c_str(), &end, 0);
  return *end == '\0' && errno == 0 && value <= max;
}

void print_stats(examples::E1000eDriver& nic) {
  const examples::E1000eStats& stats = nic.stats();
  std::printf("NIC counters: rx %llu frames %llu bytes, tx %llu frames %llu bytes, missed %llu, no buffers %llu\n",
              static_cast<unsigned long long>(stats.rx_packets), static_cast<unsigned long long>(stats.rx_bytes),
              static_cast<unsigned long long>(stats.tx_packets), static_cast<unsigned long long>(stats.tx_bytes),
              static_cast<unsigned long long>(stats.rx_missed), static_cast<unsigned long long>(stats.rx_no_buffers));
  if (nic.interrupt_mode() != examples::E1000eInterruptMode::polled) {
    const examples::E1000eInterruptCounts& counts = nic.interrupt_counts();
    std::printf("interrupts (%s): rx %llu, tx %llu, other %llu\n", examples::to_string(nic.interrupt_mode()),
                static_cast<unsigned long long>(counts.rx), static_cast<unsigned long long>(counts.tx),
                static_cast<unsigned long long>(counts.other));
  }
}

// The command line, parsed.
struct Invocation {
  std::string_view backend = "vfio";
  examples::E1000eOptions options;
  pcie::Bdf bdf;
  std::string_view command;
  std::uint64_t count = 0, idle = 10, batch = 32, bytes = 1 << 20, frames = 100000;
};

// The index of the first argument after the options; nullopt for a usage error.
std::optional<std::size_t> parse_options(const std::vector<std::string_view>& args, Invocation& invocation) {
  std::size_t next = 0;
  for (; next < args.size() && args[next].starts_with("--"); ++next) {
    if (args[next] == "--backend" && next + 1 < args.size()) {
      invocation.backend = args[++next];
    } else if (args[next] == "--interrupts") {
      invocation.options.interrupts = true;
    } else {
      return std::nullopt;
    }
  }
  return next;
}

// The command's own options, from args[first]; false for a usage error.
bool parse_command_options(const std::vector<std::string_view>& args, std::size_t first, Invocation& in) {
  const std::string_view command = in.command;
  for (std::size_t i = first; i < args.size(); i += 2) {
    if (i + 1 >= args.size()) return false;
    const bool ok = (command == "echo" && args[i] == "--count" && number(args[i + 1], in.count, ~0ull)) ||
                    (command == "echo" && args[i] == "--idle" && number(args[i + 1], in.idle, 86400)) ||
                    (command == "echo" && args[i] == "--batch" && number(args[i + 1], in.batch, 256) && in.batch > 0) ||
                    (command == "loopback" && args[i] == "--bytes" && number(args[i + 1], in.bytes, 1ull << 32)) ||
                    (command == "bench" && args[i] == "--frames" && number(args[i + 1], in.frames, 1ull << 32));
    if (!ok) return false;
  }
  return true;
}

// The invocation, or the exit status of a command line that is wrong (said on stderr).
std::expected<Invocation, int> parse_invocation(int argc, char** argv) {
  Invocation invocation;
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  const auto next = parse_options(args, invocation);
  if (!next || *next + 2 > args.size() || !examples::known_backend(invocation.backend)) return std::unexpected(usage());
  auto bdf = pcie::Bdf::parse(args[*next]);
  if (!bdf) return std::unexpected(fail(bdf.error()));
  invocation.bdf = *bdf;
  invocation.command = args[*next + 1];
  if (!parse_command_options(args, *next + 2, invocation)) return std::unexpected(usage());
  const std::string_view command = invocation.command;
  if (command != "echo" && command != "loopback" && command != "bench") return std::unexpected(usage());
  invocation.options.loopback = command != "echo";
  return invocation;
}

// The commands: an exit status where the program ends at once, nullopt where the driver
// is then shut down as usual.
std::optional<int> run_echo(examples::E1000eDriver& nic, const Invocation& invocation) {
  examples::EchoOptions echo_options;
  echo_options.count = invocation.count;
  echo_options.idle = std::chrono::seconds(invocation.idle);
  echo_options.batch = invocation.batch;
  auto echoed = examples::echo(nic, echo_options);
  if (!echoed) return fail(echoed.error());
  std::printf("echoed %llu frames (%llu dropped: transmit ring full)%s\n", static_cast<unsigned long long>(echoed->echoed),
              static_cast<unsigned long long>(echoed->dropped), echoed->idle_timeout ? ", stopped when idle" : "");
  return std::nullopt;
}

std::optional<int> run_loopback(examples::E1000eDriver& nic, std::uint64_t bytes) {
  std::vector<std::byte> in(bytes), out(bytes);
  std::mt19937_64 random(42);
  for (std::byte& byte : in) byte = std::byte(random() & 0xff);
  auto copied = examples::loopback_copy(nic, in, out);
  if (!copied) return fail(copied.error());
  const bool same = in == out;
  const double seconds = std::chrono::duration<double>(copied->elapsed).count();
  std::printf("loopback: %llu bytes in %llu frames, %.3f s (%.1f MB/s), %s\n", static_cast<unsigned long long>(bytes),
              static_cast<unsigned long long>(copied->frames), seconds, seconds > 0 ? bytes / seconds / 1e6 : 0.0,
              same ? "identical" : "DIFFERENT");
  if (!same) return 1;
  return std::nullopt;
}

std::optional<int> run_bench(examples::E1000eDriver& nic, std::uint64_t frames) {
  std::printf("%-6s %12s %10s\n", "batch", "frames/s", "seconds");
  for (std::size_t batch : {1, 4, 16, 32, 64, 128}) {
    auto rate = examples::loopback_rate(nic, batch, frames);
    if (!rate) return fail(rate.error());
    std::printf("%-6zu %12.0f %10.3f\n", batch, rate->frames_per_second(),
                std::chrono::duration<double>(rate->elapsed).count());
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  if (auto answered = examples::answer_help_or_version(argc, argv, "e1000e-driver", usage_text())) return *answered;
  auto invocation = parse_invocation(argc, argv);
  if (!invocation) return invocation.error();
  auto device = examples::open_device(invocation->backend, invocation->bdf);
  if (!device) return fail(device.error());
  auto nic = examples::E1000eDriver::open(std::move(*device), invocation->options);
  if (!nic) return fail(nic.error());
  const auto removal = examples::DeviceRemovalWatch::start(nic->device(), "e1000e-driver");
  std::printf("%s: MAC %s, %s, link %s, interrupts %s\n", invocation->bdf.to_string().c_str(),
              examples::to_string(nic->mac()).c_str(), nic->device().backend_name().c_str(),
              nic->link_up() ? "up" : "down", examples::to_string(nic->interrupt_mode()));
  const std::string_view command = invocation->command;
  const auto ended = command == "echo"       ? run_echo(*nic, *invocation)
                     : command == "loopback" ? run_loopback(*nic, invocation->bytes)
                                             : run_bench(*nic, invocation->frames);
  if (ended) return removal.final_status(*ended, "e1000e-driver", nic->device());
  // Statistics gathered while the device went away are not the NIC's.
  if (removal.fired()) return removal.final_status(0, "e1000e-driver", nic->device());
  print_stats(*nic);
  int status = 0;
  if (auto done = nic->shutdown(); !done) status = fail(done.error());
  return removal.final_status(status, "e1000e-driver", nic->device());
}
