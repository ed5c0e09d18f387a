// What every interrupt backend shares: names of kinds, and waiting on several at once.
#include "pcie/interrupts.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "src/sys/syscalls.h"

namespace pcie {

const char* to_string(IrqKind kind) {
  switch (kind) {
    case IrqKind::intx: return "INTx";
    case IrqKind::msi: return "MSI";
    case IrqKind::msix: return "MSI-X";
    case IrqKind::error: return "error IRQ";
    case IrqKind::request: return "request IRQ";
  }
  return "?";
}

Result<void> Interrupts::mask(unsigned) const {
  return std::unexpected(make_error(Errc::not_supported, "mask interrupt", name(), "this backend cannot mask a vector"));
}

Result<void> Interrupts::unmask(unsigned) const {
  return std::unexpected(make_error(Errc::not_supported, "unmask interrupt", name(), "this backend cannot mask a vector"));
}

Result<unsigned> Interrupts::add_vectors(unsigned) {
  return std::unexpected(make_error(Errc::not_supported, "add interrupt vectors", name(),
                                    "this backend cannot enable more vectors"));
}

Result<std::optional<std::size_t>> wait_any(std::span<const InterruptVector> vectors, std::chrono::milliseconds timeout) {
  std::vector<int> fds;
  for (const InterruptVector& wanted : vectors) {
    if (wanted.interrupts == nullptr) {
      return std::unexpected(make_error(Errc::invalid_argument, "wait for interrupts", "", "a null interrupt set"));
    }
    auto fd = wanted.interrupts->fd(wanted.vector);
    if (!fd) return std::unexpected(fd.error());
    fds.push_back(*fd);
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    // poll() takes an int of milliseconds, where -1 means forever: clamp, never wrap.
    const auto bounded = std::clamp<std::chrono::milliseconds::rep>(left.count(), 0, std::numeric_limits<int>::max());
    auto ready = sys::wait_readable(fds, static_cast<int>(bounded));
    if (!ready) return std::unexpected(ready.error());
    if (!*ready) return std::optional<std::size_t>{};
    const InterruptVector& fired = vectors[**ready];
    auto count = fired.interrupts->consume(fired.vector);
    if (!count) return std::unexpected(count.error());
    if (*count > 0) return *ready;
    // Readable but nothing to consume (another reader took it): wait for what is left.
    if (left.count() <= 0) return std::optional<std::size_t>{};
  }
}

}  // namespace pcie
