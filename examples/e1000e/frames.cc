// echo, loopback_copy and loopback_rate (frames.h).
#include "examples/e1000e/frames.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace examples {

using pcie::Errc;
using pcie::make_error;
using pcie::Result;

namespace {

constexpr std::size_t kHeader = 14;
constexpr std::size_t kSequence = 4;
constexpr std::size_t kMaxPayload = e1000e::kMaxFrameBytes - kHeader - kSequence;  // 1496

// Our frame: to and from the NIC's own address, the experimental EtherType, a 32-bit
// sequence number, then the payload.
void write_header(std::span<std::byte> frame, const MacAddress& mac, std::uint32_t sequence) {
  std::memcpy(frame.data(), mac.data(), 6);
  std::memcpy(frame.data() + 6, mac.data(), 6);
  frame[12] = std::byte{kExperimentalEtherType >> 8};
  frame[13] = std::byte{kExperimentalEtherType & 0xff};
  std::memcpy(frame.data() + kHeader, &sequence, kSequence);
}

std::uint32_t sequence_of(std::span<const std::byte> frame) {
  std::uint32_t sequence = 0;
  std::memcpy(&sequence, frame.data() + kHeader, kSequence);
  return sequence;
}

bool ours(std::span<const std::byte> frame) {
  return frame.size() >= kHeader + kSequence && frame[12] == std::byte{kExperimentalEtherType >> 8} &&
         frame[13] == std::byte{kExperimentalEtherType & 0xff};
}

// Releases what the caller still holds of `packets` (after an error).
void release_all(E1000eDriver& nic, std::span<const Packet> packets) {
  for (const Packet& packet : packets) (void)nic.release(packet);
}

// Posts `made` for transmission; the ones the ring does not take (all of them on an
// error) go back to the pool. Returns how many were taken.
Result<std::size_t> post_frames(E1000eDriver& nic, std::span<const Packet> made) {
  if (made.empty()) return 0;
  auto taken = nic.tx_batch(made);
  if (!taken) {
    release_all(nic, made);
    return std::unexpected(taken.error());
  }
  release_all(nic, made.subspan(*taken));
  return *taken;
}

// One loopback copy under way: frame n carries bytes [n * kMaxPayload, ...) of `in`, which
// land at the same place in `out` when the frame comes back.
struct LoopbackCopy {
  E1000eDriver& nic;
  std::span<const std::byte> in;
  std::span<std::byte> out;
  const std::string& name;
  std::uint64_t total = 0;
  std::vector<Packet> packets;  // a batch
  std::uint64_t sent = 0;
  std::uint64_t received = 0;

  std::size_t payload_of(std::uint64_t frame) const { return std::min(kMaxPayload, in.size() - frame * kMaxPayload); }
};

// Send what the receive side has room for: a batch at most ahead.
std::size_t make_frames(LoopbackCopy& copy) {
  const std::size_t batch = copy.packets.size();
  std::size_t made = 0;
  while (made < batch && copy.sent + made < copy.total && copy.sent + made < copy.received + batch) {
    auto packet = copy.nic.allocate_packet();
    if (!packet) break;  // buffers still in flight: receive first
    const std::uint64_t frame = copy.sent + made;
    const std::size_t payload = copy.payload_of(frame);
    std::span<std::byte> bytes = copy.nic.buffer(*packet);
    write_header(bytes, copy.nic.mac(), static_cast<std::uint32_t>(frame));
    std::memcpy(bytes.data() + kHeader + kSequence, copy.in.data() + frame * kMaxPayload, payload);
    packet->length = static_cast<std::uint16_t>(kHeader + kSequence + payload);
    copy.packets[made++] = *packet;
  }
  return made;
}

// The frames posted: progress is a frame posted or received, not one only made.
Result<std::size_t> send_frames(LoopbackCopy& copy) {
  const std::size_t made = make_frames(copy);
  auto taken = post_frames(copy.nic, std::span(copy.packets).first(made));
  if (!taken) return std::unexpected(taken.error());
  copy.sent += *taken;
  return *taken;
}

pcie::Error unexpected_frame(const LoopbackCopy& copy, std::span<const std::byte> frame, std::size_t length) {
  const std::string what = !ours(frame) ? "a frame that is not ours"
                                        : "frame " + std::to_string(sequence_of(frame)) + " of " +
                                              std::to_string(frame.size()) + " bytes";
  return make_error(Errc::malformed, "loopback copy", copy.name,
                    what + " came back where frame " + std::to_string(copy.received) + " of " +
                        std::to_string(length) + " bytes was expected");
}

// The frames that came back, in order, copied out; any other frame is an error.
Result<std::size_t> receive_frames(LoopbackCopy& copy) {
  auto got = copy.nic.rx_batch(copy.packets);
  if (!got) return std::unexpected(got.error());
  for (std::size_t i = 0; i < *got; ++i) {
    const std::span<const std::byte> frame = copy.nic.frame(copy.packets[i]);
    const bool expected = ours(frame) && sequence_of(frame) == copy.received;
    const std::size_t payload = expected ? copy.payload_of(copy.received) : 0;
    // Frames under 60 bytes come back padded to 60 (TCTL.PSP).
    const std::size_t length = kHeader + kSequence + payload;
    if (!expected || frame.size() != std::max<std::size_t>(length, 60)) {
      const pcie::Error error = unexpected_frame(copy, frame, length);  // before the frame goes back
      release_all(copy.nic, std::span(copy.packets).subspan(i, *got - i));
      return std::unexpected(error);
    }
    std::memcpy(copy.out.data() + copy.received * kMaxPayload, frame.data() + kHeader + kSequence, payload);
    (void)copy.nic.release(copy.packets[i]);
    ++copy.received;
  }
  return *got;
}

// One loopback rate measurement under way: frames of frame_bytes, only their headers written.
struct LoopbackRate {
  E1000eDriver& nic;
  std::uint64_t frames = 0;
  std::uint16_t frame_bytes = 0;
  std::vector<Packet> packets;  // a batch
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
};

// Makes what the receive side has room for, a batch at most ahead, into rate.packets; how many.
std::size_t make_rate_frames(LoopbackRate& rate) {
  const std::size_t batch = rate.packets.size();
  std::size_t made = 0;
  while (made < batch && rate.sent + made < rate.frames && rate.sent + made < rate.received + batch) {
    auto packet = rate.nic.allocate_packet();
    if (!packet) break;
    write_header(rate.nic.buffer(*packet), rate.nic.mac(), static_cast<std::uint32_t>(rate.sent + made));
    packet->length = rate.frame_bytes;
    rate.packets[made++] = *packet;
  }
  return made;
}

// The frames that came back, straight back to the pool; how many.
Result<std::size_t> receive_and_release(E1000eDriver& nic, std::span<Packet> packets) {
  auto got = nic.rx_batch(packets);
  if (!got) return std::unexpected(got.error());
  release_all(nic, packets.first(*got));
  return *got;
}

// Swaps the addresses of the `received` frames to echo them, up to the first one
// options.keep_going refuses (the ones after it go to `left`). Returns how many to echo.
std::size_t turn_around(E1000eDriver& nic, std::span<const Packet> received, const EchoOptions& options,
                        std::vector<Packet>& left) {
  for (std::size_t i = 0; i < received.size(); ++i) {
    if (options.keep_going && !options.keep_going(nic.frame(received[i]))) {
      // This frame goes back to the pool; the ones after it stay the caller's.
      (void)nic.release(received[i]);
      left.assign(received.begin() + static_cast<std::ptrdiff_t>(i) + 1, received.end());
      return i;
    }
    swap_macs(nic.frame(received[i]));
  }
  return received.size();
}

// Sends `frames` back; what the ring does not take is dropped, back to the pool.
Result<void> send_echoes(E1000eDriver& nic, std::span<const Packet> frames, EchoResult& result) {
  auto sent = nic.tx_batch(frames);
  if (!sent) return std::unexpected(sent.error());
  result.echoed += *sent;
  result.dropped += frames.size() - *sent;
  release_all(nic, frames.subspan(*sent));
  return {};
}

// Lets the last echoes leave (up to 1 s) before the caller tears the NIC down.
void drain_transmits(E1000eDriver& nic) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (nic.tx_in_flight() > 0 && std::chrono::steady_clock::now() < deadline) nic.reap_transmitted();
}

}  // namespace

void swap_macs(std::span<std::byte> frame) {
  if (frame.size() < kHeader) return;
  std::byte destination[6];
  std::memcpy(destination, frame.data(), 6);
  std::memmove(frame.data(), frame.data() + 6, 6);
  std::memcpy(frame.data() + 6, destination, 6);
}

Result<EchoResult> echo(E1000eDriver& nic, const EchoOptions& options) {
  EchoResult result;
  std::vector<Packet> batch(std::max<std::size_t>(options.batch, 1));
  auto last_frame = std::chrono::steady_clock::now();
  bool stop = false;
  while (!stop && (options.count == 0 || result.echoed < options.count)) {
    const std::size_t room = options.count == 0 ? batch.size()
                                                : std::min<std::uint64_t>(batch.size(), options.count - result.echoed);
    auto received = nic.rx_batch(std::span(batch).first(room));
    if (!received) return std::unexpected(received.error());
    if (*received == 0) {
      nic.reap_transmitted();
      if (std::chrono::steady_clock::now() - last_frame > options.idle) {
        result.idle_timeout = true;
        break;
      }
      continue;
    }
    last_frame = std::chrono::steady_clock::now();
    const std::size_t to_send = turn_around(nic, std::span(batch).first(*received), options, result.left);
    stop = to_send < *received;  // keep_going refused a frame
    if (auto sent = send_echoes(nic, std::span(batch).first(to_send), result); !sent) {
      return std::unexpected(sent.error());
    }
  }
  drain_transmits(nic);
  return result;
}

Result<LoopbackResult> loopback_copy(E1000eDriver& nic, std::span<const std::byte> in, std::span<std::byte> out,
                                     std::size_t batch) {
  const std::string name = nic.device().bdf().to_string();
  if (in.size() != out.size() || batch == 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "loopback copy", name,
                                      "the input and output differ in size, or the batch is 0"));
  }
  LoopbackCopy copy{.nic = nic, .in = in, .out = out, .name = name,
                    .total = (in.size() + kMaxPayload - 1) / kMaxPayload, .packets = std::vector<Packet>(batch)};
  auto last_progress = std::chrono::steady_clock::now();
  const auto start = last_progress;
  while (copy.received < copy.total) {
    auto posted = send_frames(copy);
    if (!posted) return std::unexpected(posted.error());
    auto got = receive_frames(copy);
    if (!got) return std::unexpected(got.error());
    if (*got > 0 || *posted > 0) {
      last_progress = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - last_progress > std::chrono::seconds(1)) {
      return std::unexpected(make_error(Errc::io_error, "loopback copy", name,
                                        std::to_string(copy.received) + " of " + std::to_string(copy.total) +
                                            " frames came back; none for 1 s",
                                        "was the driver opened with E1000eOptions::loopback?"));
    }
  }
  return LoopbackResult{.frames = copy.total,
                        .elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)};
}

Result<RateResult> loopback_rate(E1000eDriver& nic, std::size_t batch, std::uint64_t frames, std::uint16_t frame_bytes) {
  const std::string name = nic.device().bdf().to_string();
  if (batch == 0 || frame_bytes < 60 || frame_bytes > e1000e::kMaxFrameBytes) {
    return std::unexpected(make_error(Errc::invalid_argument, "loopback rate", name,
                                      "the batch is 0 or the frame size is outside 60..1514"));
  }
  LoopbackRate rate{.nic = nic, .frames = frames, .frame_bytes = frame_bytes, .packets = std::vector<Packet>(batch)};
  auto last_progress = std::chrono::steady_clock::now();
  const auto start = last_progress;
  while (rate.received < frames) {
    const std::size_t made = make_rate_frames(rate);
    auto posted = post_frames(nic, std::span(rate.packets).first(made));
    if (!posted) return std::unexpected(posted.error());
    rate.sent += *posted;
    auto got = receive_and_release(nic, rate.packets);
    if (!got) return std::unexpected(got.error());
    rate.received += *got;
    if (*got > 0) {
      last_progress = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - last_progress > std::chrono::seconds(1)) {
      return std::unexpected(make_error(Errc::io_error, "loopback rate", name,
                                        std::to_string(rate.received) + " of " + std::to_string(frames) +
                                            " frames came back; none for 1 s"));
    }
  }
  return RateResult{.frames = rate.received,
                    .elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)};
}

}  // namespace examples
