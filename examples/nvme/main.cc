// nvme-driver [--backend vfio|vfio-noiommu|uio] [--interrupts] [--queue-depth N] BDF COMMAND:
// the example NVMe driver on a controller bound to vfio-pci (the default; with an IOMMU, or
// in no-IOMMU mode) or uio_pci_generic (examples/common/open_device.h). The two without an
// IOMMU let the controller reach all of memory: naming them accepts that.
//   identify                 model, serial, firmware, version, active namespaces, the first one's size
//                            and block size (a controller without namespaces is identified too)
//   read LBA BLOCKS          the blocks of the first active namespace, raw, on standard output
//   write LBA                standard input (whole blocks) to the namespace from LBA, then flush
//   nsid N read|write ...    the same on namespace N (to see the device refuse an invalid one)
//   read LBA BLOCKS --into PEER_BDF:barN:OFFSET
//   write LBA BLOCKS --from PEER_BDF:barN:OFFSET
//                            peer-to-peer: the blocks go straight between the namespace and
//                            another device's BAR (an FPGA card's memory, ivshmem), both
//                            devices bound to vfio-pci and opened in one container; no host
//                            memory holds the data (pcie/peer_dma.h says which paths exist)
//   bench [QD [COUNT]]       random one-block reads at queue depth QD: IOPS
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "examples/common/cli.h"
#include "examples/common/open_device.h"
#include "examples/common/removal_watch.h"
#include "examples/common/peer_target.h"
#include "examples/nvme/nvme_driver.h"

namespace {

// Says why on standard error; the exit status: 6 when the device went away, else 1.
int fail(const pcie::Error& error) {
  std::fprintf(stderr, "nvme-driver: %s\n", error.message().c_str());
  return examples::exit_status_for(error);
}

std::string usage_text() {
  return std::string("nvme-driver [--backend ") + examples::kBackendNames +
         "] [--interrupts] [--queue-depth N] BDF identify | [nsid N] read LBA BLOCKS | "
         "[nsid N] write LBA < data | [nsid N] read LBA BLOCKS --into PEER_BDF:barN:OFFSET | "
         "[nsid N] write LBA BLOCKS --from PEER_BDF:barN:OFFSET | bench [QD [COUNT]]\n";
}

int usage() { return examples::usage_error(usage_text()); }

bool number(const char* text, std::uint64_t& value) {
  char* end = nullptr;
  errno = 0;
  value = std::strtoull(text, &end, 0);
  return end != text && *end == '\0' && errno == 0 && text[0] != '-';
}

// The command line, parsed.
struct Invocation {
  std::string_view backend = "vfio";
  examples::NvmeOptions options;
  pcie::Bdf bdf;
  std::uint32_t nsid = 0;    // 0: the first active namespace
  std::vector<char*> rest;  // the command and its arguments
  // --into (read) or --from (write): the place in the peer's BAR.
  std::optional<examples::PeerTarget> peer;
  bool into_peer = false;
};

// Takes a trailing "--into|--from PEER_BDF:barN:OFFSET" off the command. False for a usage
// error (the flag on another command); the target's parse error is said on stderr.
std::expected<bool, int> take_peer_target(Invocation& invocation) {
  std::vector<char*>& rest = invocation.rest;
  if (rest.size() < 2) return true;
  const std::string_view flag = rest[rest.size() - 2];
  if (flag != "--into" && flag != "--from") return true;
  auto target = examples::parse_peer_target(rest.back());
  if (!target) return std::unexpected(fail(target.error()));
  invocation.peer = *target;
  invocation.into_peer = flag == "--into";
  rest.resize(rest.size() - 2);
  return rest.size() == 3 && std::string_view(rest[0]) == (invocation.into_peer ? "read" : "write");
}

// The index of the first argument after the options; nullopt for a usage error.
std::optional<std::size_t> parse_options(const std::vector<std::string_view>& args, Invocation& invocation) {
  std::size_t next = 0;
  for (; next < args.size() && args[next].starts_with("--"); ++next) {
    std::uint64_t depth = 0;
    if (args[next] == "--backend" && next + 1 < args.size() && examples::known_backend(args[next + 1])) {
      invocation.backend = args[++next];
    } else if (args[next] == "--interrupts") {
      invocation.options.interrupts = true;
    } else if (args[next] == "--queue-depth" && next + 1 < args.size() && number(args[next + 1].data(), depth) &&
               depth >= 2 && depth <= 4096) {
      invocation.options.io_queue_depth = static_cast<std::uint16_t>(depth);
      ++next;
    } else {
      return std::nullopt;
    }
  }
  return next;
}

// The invocation, or the exit status of a command line that is wrong (said on stderr).
std::expected<Invocation, int> parse_invocation(int argc, char** argv) {
  Invocation invocation;
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  const auto next = parse_options(args, invocation);
  if (!next || *next + 2 > args.size()) return std::unexpected(usage());
  auto bdf = pcie::Bdf::parse(args[*next]);
  if (!bdf) return std::unexpected(fail(bdf.error()));
  invocation.bdf = *bdf;
  invocation.rest.assign(argv + 1 + *next + 1, argv + argc);
  std::uint64_t namespace_id = 0;
  if (invocation.rest.size() >= 3 && std::string_view(invocation.rest[0]) == "nsid") {
    if (!number(invocation.rest[1], namespace_id) || namespace_id > 0xffffffffu) return std::unexpected(usage());
    invocation.rest.erase(invocation.rest.begin(), invocation.rest.begin() + 2);
  }
  invocation.nsid = static_cast<std::uint32_t>(namespace_id);
  auto peer = take_peer_target(invocation);
  if (!peer) return std::unexpected(peer.error());
  if (!*peer) return std::unexpected(usage());
  return invocation;
}

void identify(const examples::NvmeIdentity& id) {
  std::printf("model: %s\nserial: %s\nfirmware: %s\nversion: %u.%u.%u\n", id.model.c_str(), id.serial.c_str(),
              id.firmware.c_str(), id.version >> 16, (id.version >> 8) & 0xff, id.version & 0xff);
  std::printf("active namespaces:");
  for (const std::uint32_t active : id.active_namespaces) std::printf(" %u", active);
  std::printf("%s\n", id.active_namespaces.empty() ? " none" : "");
  if (id.namespace_id != 0) {
    std::printf("namespace %u: %llu blocks of %u bytes\n", id.namespace_id,
                static_cast<unsigned long long>(id.namespace_blocks), id.block_size);
  }
  std::printf("max transfer: %llu bytes\n", static_cast<unsigned long long>(id.max_transfer_bytes));
}

std::optional<int> read_blocks(examples::NvmeDriver& driver, const std::vector<char*>& rest, std::uint32_t nsid) {
  std::uint64_t lba = 0, blocks = 0;
  if (!number(rest[1], lba) || !number(rest[2], blocks) || blocks > 0xffffffffu) return usage();
  auto data = driver.read(lba, static_cast<std::uint32_t>(blocks), nsid);
  if (!data) return fail(data.error());
  if (std::fwrite(data->data(), 1, data->size(), stdout) != data->size()) return 1;
  return std::nullopt;
}

std::optional<int> write_blocks(examples::NvmeDriver& driver, const std::vector<char*>& rest, std::uint32_t nsid) {
  std::uint64_t lba = 0;
  if (!number(rest[1], lba)) return usage();
  std::vector<std::byte> data;
  std::byte chunk[65536];
  // Never more than one transfer's worth plus a byte: write() refuses anything larger.
  for (ssize_t got; data.size() <= (1u << 20) && (got = ::read(STDIN_FILENO, chunk, sizeof chunk)) > 0;) {
    data.insert(data.end(), chunk, chunk + got);
  }
  if (auto written = driver.write(lba, data, nsid); !written) return fail(written.error());
  if (auto flushed = driver.flush(nsid); !flushed) return fail(flushed.error());
  std::fprintf(stderr, "wrote %zu bytes at LBA %llu\n", data.size(), static_cast<unsigned long long>(lba));
  return std::nullopt;
}

std::optional<int> bench(examples::NvmeDriver& driver, const std::vector<char*>& rest) {
  std::uint64_t depth = 1, count = 20000;
  if ((rest.size() > 1 && !number(rest[1], depth)) || (rest.size() > 2 && !number(rest[2], count)) || depth == 0 ||
      count == 0 || depth > 4096 || count > 100000000) {
    return usage();
  }
  auto elapsed = driver.random_reads(static_cast<unsigned>(depth), static_cast<unsigned>(count), 42);
  if (!elapsed) return fail(elapsed.error());
  const double seconds = std::chrono::duration<double>(*elapsed).count();
  std::printf("random %u-byte reads, queue depth %llu: %llu in %.3f s, %.0f IOPS\n",
              std::max(driver.identity().block_size, 4096u),
              static_cast<unsigned long long>(depth), static_cast<unsigned long long>(count), seconds,
              static_cast<double>(count) / seconds);
  return std::nullopt;
}

// An exit status where the program ends at once (a usage error, a failure); nullopt where
// the driver is then shut down as usual.
std::optional<int> run_command(examples::NvmeDriver& driver, const std::vector<char*>& rest, std::uint32_t nsid) {
  const std::string_view command = rest[0];
  if (command == "identify") {
    identify(driver.identity());
    return std::nullopt;
  }
  if (command == "read" && rest.size() == 3) return read_blocks(driver, rest, nsid);
  if (command == "write" && rest.size() == 2) return write_blocks(driver, rest, nsid);
  if (command == "bench" && rest.size() <= 3) return bench(driver, rest);
  return usage();
}

constexpr std::uint64_t kPage = 4096;

// A window of the pages of the peer's BAR that hold `bytes` from the target's offset (an
// IOMMU maps whole pages), for the controller to write into (`into_peer`) or read from.
pcie::Result<pcie::PeerDmaWindow> map_window_for(const examples::NvmeDriver& driver, const pcie::VfioDevice& peer,
                                                 const examples::PeerTarget& target, std::uint64_t bytes,
                                                 bool into_peer) {
  if (target.offset > ~std::uint64_t{0} - bytes - kPage) {
    return std::unexpected(pcie::make_error(pcie::Errc::out_of_range, "NVMe peer transfer", target.bdf.to_string(),
                                            "the offset and length overflow"));
  }
  const std::uint64_t first = target.offset / kPage * kPage;
  const std::uint64_t end = (target.offset + bytes + kPage - 1) / kPage * kPage;
  const auto* initiator = dynamic_cast<const pcie::VfioDevice*>(&driver.device());
  if (initiator == nullptr) {
    return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "NVMe peer transfer",
                                            driver.device().bdf().to_string(), "not a VFIO device"));
  }
  return pcie::map_peer_bar(*initiator, peer, target.bar, first, end - first,
                            {.device_reads = !into_peer, .device_writes = into_peer});
}

// read/write --into/--from: both devices in one container, a window of the peer's BAR
// covering the pages the blocks touch, and the transfer through it.
int run_with_peer(const Invocation& invocation) {
  std::uint64_t lba = 0, blocks = 0;
  if (!number(invocation.rest[1], lba) || !number(invocation.rest[2], blocks) || blocks == 0 || blocks > 0xffffffffu) {
    return usage();
  }
  const examples::PeerTarget& target = *invocation.peer;
  auto devices = examples::open_device_and_peer(invocation.backend, invocation.bdf, target.bdf);
  if (!devices) return fail(devices.error());
  auto driver = examples::NvmeDriver::open(std::move(devices->device), invocation.options);
  if (!driver) return fail(driver.error());
  const auto removal = examples::DeviceRemovalWatch::start(driver->device(), "nvme-driver");
  auto block = driver->block_size(invocation.nsid);
  if (!block) return fail(block.error());
  const std::uint64_t bytes = blocks * *block;  // at most 2^32 blocks of 2^16 bytes
  auto window = map_window_for(*driver, *devices->peer, target, bytes, invocation.into_peer);
  if (!window) return fail(window.error());
  const std::uint64_t in_window = target.offset % kPage;  // the window starts at the offset's page
  const auto count = static_cast<std::uint32_t>(blocks);
  auto moved = invocation.into_peer ? driver->read_to(lba, count, *window, in_window, invocation.nsid)
                                    : driver->write_from(lba, count, *window, in_window, invocation.nsid);
  if (!moved) return fail(moved.error());
  if (!invocation.into_peer) {
    if (auto flushed = driver->flush(invocation.nsid); !flushed) return fail(flushed.error());
  }
  std::fprintf(stderr, "%s %llu bytes %s LBA %llu %s %s BAR%u at 0x%llx, through %s\n",
               invocation.into_peer ? "read" : "wrote", static_cast<unsigned long long>(bytes),
               invocation.into_peer ? "from" : "to", static_cast<unsigned long long>(lba),
               invocation.into_peer ? "into" : "from", target.bdf.to_string().c_str(), target.bar,
               static_cast<unsigned long long>(target.offset), std::string(pcie::to_string(window->path())).c_str());
  int status = 0;
  if (auto done = driver->shutdown(); !done) status = fail(done.error());
  return removal.final_status(status, "nvme-driver", driver->device());
}

}  // namespace

int main(int argc, char** argv) {
  if (auto answered = examples::answer_help_or_version(argc, argv, "nvme-driver", usage_text())) return *answered;
  auto invocation = parse_invocation(argc, argv);
  if (!invocation) return invocation.error();
  if (invocation->peer) return run_with_peer(*invocation);
  auto device = examples::open_device(invocation->backend, invocation->bdf);
  if (!device) return fail(device.error());
  auto driver = examples::NvmeDriver::open(std::move(*device), invocation->options);
  if (!driver) return fail(driver.error());
  const auto removal = examples::DeviceRemovalWatch::start(driver->device(), "nvme-driver");
  if (auto ended = run_command(*driver, invocation->rest, invocation->nsid)) {
    return removal.final_status(*ended, "nvme-driver", driver->device());
  }
  int status = 0;
  if (auto done = driver->shutdown(); !done) status = fail(done.error());
  return removal.final_status(status, "nvme-driver", driver->device());
}
