// RemovalWatcher (pcie/removal.h): one thread per watched device, waiting on the device's
// request IRQ (VFIO), the kernel's uevents and a stop eventfd.
#include <array>
#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "pcie/device.h"
#include "pcie/removal.h"
#include "src/sys/syscalls.h"
#include "src/sys/uevent_socket.h"

namespace pcie {

const char* to_string(RemovalSignal signal) {
  switch (signal) {
    case RemovalSignal::request_irq: return "request IRQ";
    case RemovalSignal::removed: return "removed";
  }
  return "unknown";
}

struct RemovalWatcher::State {
  Bdf device;
  Callback on_removal;
  RemovalWatchOptions options;
  std::unique_ptr<Interrupts> request_irq;  // VFIO only; keeps the device open
  UniqueFd uevents;
  UniqueFd stop;
  std::optional<sys::FileIdentity> node_at_start;  // the device's sysfs node when the watch began
  bool node_at_start_known = false;  // false while no look at the node has worked yet
  std::atomic<bool> fired{false};
  std::thread thread;

  void notify(RemovalSignal signal) {
    if (fired.exchange(true)) return;
    RemovalNotice notice{device, signal, 0};
    if (signal == RemovalSignal::removed && options.revoke_mappings) {
      // Revocation failing (no memfd) leaves the mappings as they were; the callback still
      // runs, and the driver's own checks see all ones or a fault.
      if (auto revoked = revoke_device_mappings(device)) notice.mappings_revoked = *revoked;
    }
    on_removal(notice);
  }

  std::string node() const { return fmt::format("{}/{}", options.sysfs_devices, device.to_string()); }

  // Whether the device's sysfs node is gone, or is another one now (a remove and an add at
  // the same address between two looks): a removal that happened before the socket
  // listened, whose uevent the kernel dropped (ENOBUFS), or that no uevent announces. A
  // look that fails (EACCES, ENOMEM, a seccomp refusal) says nothing about the device:
  // never a removal, which would cut a live device off. Only the watcher's thread calls it.
  bool node_gone() {
    const auto now = sys::identity_of(node());
    if (!now) return false;
    if (!*now) return true;
    if (!node_at_start_known) {  // the look at the start failed: this one is the reference
      node_at_start = **now;
      node_at_start_known = true;
      return false;
    }
    return !node_at_start || **now != *node_at_start;
  }

  // Whether a non-blocking eventfd was signalled (reading it takes the signal), without
  // poll(2): what run_by_looking() has left.
  static bool signalled(int eventfd) {
    std::uint64_t count = 0;
    return sys::read_some(eventfd, std::as_writable_bytes(std::span(&count, 1)), "removal watcher").value_or(0) ==
               sizeof count &&
           count > 0;
  }

  // The watch once poll itself has failed (ENOMEM, or a descriptor limit lowered below the
  // watcher's three descriptors: EINVAL): no signal may go unheard because of it, so the
  // thread looks every 100 ms at what it would have waited on. The uevent socket's messages
  // are not read here; the sysfs node's absence says the same.
  void run_by_looking() {
    while (!signalled(stop.get())) {
      if (request_irq) {
        if (auto fd = request_irq->fd(0); fd && signalled(*fd)) notify(RemovalSignal::request_irq);
      }
      if (node_gone()) notify(RemovalSignal::removed);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  void run() {
    std::array<char, 8192> buffer{};
    for (;;) {
      std::array<int, 3> fds{stop.get(), uevents.get(), -1};
      std::size_t count = 2;
      if (request_irq) {
        if (auto fd = request_irq->fd(0)) fds[count++] = *fd;
      }
      auto ready = sys::wait_readable(std::span<const int>(fds.data(), count), 1000);
      if (!ready) {
        run_by_looking();
        return;
      }
      if (!*ready) {
        // A second without a word: look at the node, for where uevents never arrive (a
        // network namespace owned by a user namespace other than the initial one, as in a
        // rootless container: the kernel sends uevents to the initial user namespace's only).
        if (node_gone()) notify(RemovalSignal::removed);
        continue;
      }
      if (**ready == 0) return;  // stop
      if (**ready == 2) {
        (void)request_irq->consume(0);
        notify(RemovalSignal::request_irq);
        continue;
      }
      for (;;) {
        auto received = sys::receive_uevent(uevents.get(), buffer);
        if (!received) {
          if (node_gone()) notify(RemovalSignal::removed);
          break;
        }
        if (!*received) break;
        if (detail::uevent_removes(std::string_view(buffer.data(), **received), device)) {
          notify(RemovalSignal::removed);
        }
      }
    }
  }
};

RemovalWatcher::RemovalWatcher(RemovalWatcher&&) noexcept = default;

RemovalWatcher& RemovalWatcher::operator=(RemovalWatcher&& other) noexcept {
  if (this != &other) {
    RemovalWatcher old(std::move(*this));
    state_ = std::move(other.state_);
  }
  return *this;
}

RemovalWatcher::~RemovalWatcher() {
  if (!state_) return;
  const std::uint64_t one = 1;
  (void)sys::write_once(state_->stop.get(), std::as_bytes(std::span(&one, 1)), "removal watcher");
  if (!state_->thread.joinable()) return;
  if (state_->thread.get_id() == std::this_thread::get_id()) {
    // Destroyed from its own callback: the thread ends on its own once the callback
    // returns, holding the state (the lambda's copy) until then.
    state_->thread.detach();
  } else {
    state_->thread.join();
  }
}

bool RemovalWatcher::fired() const noexcept { return state_ && state_->fired.load(); }

Result<RemovalWatcher> RemovalWatcher::launch(std::shared_ptr<State> state) {
  if (!state->on_removal) {
    return std::unexpected(make_error(Errc::invalid_argument, "watch removal of", state->device.to_string(),
                                      "no callback given"));
  }
  if (state->options.revoke_mappings) {
    if (auto guard = install_removal_guard(); !guard) return std::unexpected(guard.error());
  }
  auto uevents = sys::open_uevent_socket();
  if (!uevents) return std::unexpected(uevents.error());
  state->uevents = std::move(*uevents);
  auto stop = sys::make_eventfd();
  if (!stop) return std::unexpected(stop.error());
  state->stop = std::move(*stop);
  if (auto at_start = sys::identity_of(state->node())) {
    state->node_at_start = *at_start;
    state->node_at_start_known = true;
  }
  RemovalWatcher watcher;
  watcher.state_ = state;
  // The thread holds the state too, so a watcher destroyed from its own callback (which
  // detaches) leaves the thread valid memory to finish with.
  state->thread = std::thread([state] {
    if (state->node_gone()) state->notify(RemovalSignal::removed);
    state->run();
  });
  return watcher;
}

Result<RemovalWatcher> RemovalWatcher::start(const Bdf& device, Callback on_removal, RemovalWatchOptions options) {
  auto state = std::make_shared<State>();
  state->device = device;
  state->on_removal = std::move(on_removal);
  state->options = std::move(options);
  return launch(std::move(state));
}

Result<RemovalWatcher> RemovalWatcher::start(const Device& device, Callback on_removal, RemovalWatchOptions options) {
  auto state = std::make_shared<State>();
  state->device = device.bdf();
  state->on_removal = std::move(on_removal);
  state->options = std::move(options);
  if (state->options.request_irq) {
    // A refusal here (an empty device, a kernel error) is the caller's to see: a watcher
    // that silently lacked the request IRQ would never hear a cooperative unplug.
    auto vectors = device.vector_count(IrqKind::request);
    if (!vectors) return std::unexpected(vectors.error());
    if (*vectors > 0) {
      auto irq = device.enable_interrupts(IrqKind::request, 1);
      if (!irq) return std::unexpected(irq.error());
      state->request_irq = std::move(*irq);
    }
  }
  return launch(std::move(state));
}

}  // namespace pcie
