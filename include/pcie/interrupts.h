// Interrupts behind one interface, whichever backend delivers them: VFIO signals each
// vector on an eventfd (VfioInterrupts), UIO on its /dev/uioN node (UioInterrupts), so a
// driver waits for "vector N of this device" without knowing which opened it.
//
// The pattern every driver follows: wait() (or wait_any(), or the user's own event loop on
// fd()), read and acknowledge the device's interrupt status, then rearm(): INTx is masked
// each time it fires (by VFIO, or by uio_pci_generic through the command register's
// Interrupt Disable bit) until rearmed; for MSI and MSI-X rearm() does nothing.
//
// Threads: one waiter per vector at a time.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "pcie/error.h"

namespace pcie {

// What kind of interrupt a set of vectors is.
enum class IrqKind {
  intx,     // legacy INTx: one vector, masked each time it fires until rearmed
  msi,      // MSI: up to 32 vectors, each signalled by a memory write from the device
  msix,     // MSI-X: up to 2048 vectors, each with its own table entry and mask bit
  error,    // AER errors reported for the device (VFIO)
  request,  // the kernel asks the user to release the device (unbind, hot unplug; VFIO)
};

// "INTx", "MSI", "MSI-X", "error IRQ", "request IRQ".
const char* to_string(IrqKind kind);

// Each call's comment here is its contract for every backend (VfioInterrupts,
// UioInterrupts, the testing kit's fake); an override's comment says only what is specific
// to it. A call on a vector fails first with invalid_argument on an empty set (valid())
// and out_of_range for a vector that is not enabled: "as above" below.
class Interrupts {
 public:
  virtual ~Interrupts() = default;
  // Vectors enabled (0 for an empty or disabled set).
  virtual unsigned count() const = 0;
  // The kind these vectors are.
  virtual IrqKind kind() const = 0;
  // "0000:00:03.0 MSI", used in every error about these interrupts.
  virtual const std::string& name() const = 0;
  // A descriptor that becomes readable (poll/epoll) when `vector` fires, for the user's own
  // event loop; owned by this object. Call consume() when it is readable. Fails only as
  // above (invalid_argument, out_of_range).
  virtual Result<int> fd(unsigned vector) const = 0;
  // How many times `vector` fired since the last wait or consume, without blocking (0 when
  // it has not). Fails as above, or with the read error of its descriptor.
  virtual Result<std::uint64_t> consume(unsigned vector) const = 0;
  // Waits up to `timeout` for `vector`; returns how many times it fired since the last
  // wait or consume, 0 when the timeout passed first (VFIO: also at once when another
  // reader took the count). Fails as above, or with the poll or read error.
  virtual Result<std::uint64_t> wait(unsigned vector, std::chrono::milliseconds timeout) const = 0;
  // Lets `vector` fire again once the device's interrupt is acknowledged (see the top).
  // Fails as above, or with the backend's error (VFIO: the kernel's INTx unmask; UIO: the
  // config write).
  virtual Result<void> rearm(unsigned vector) const = 0;
  // Stops delivering `vector` until unmask(): for INTx the kernel masks the line (VFIO's
  // mask action; UIO's Interrupt Disable bit). VFIO has no mask for one MSI or MSI-X
  // vector, so the vector is detached from its eventfd instead: the PCI core then masks an
  // MSI-X vector, and the device holds what it raises meanwhile as pending and sends it at
  // unmask (PCIe Base 6.0, 6.1.4.5); a plain MSI vector without per-vector masking drops
  // it. Either way, read the device's own status after unmask. Masking a masked vector, or
  // unmasking an unmasked one, does nothing. Fails as above; not_supported where the
  // backend has no way (the default, which checks nothing else); else the backend's error
  // (VFIO_DEVICE_SET_IRQS, or UIO's config space access).
  virtual Result<void> mask(unsigned vector) const;
  // Delivers `vector` again after mask(); see mask() for what was held or lost meanwhile.
  // Fails as mask() does (not_supported by default).
  virtual Result<void> unmask(unsigned vector) const;
  // Enables `more` vectors after those enabled, keeping their descriptors (fd()) as they
  // are, and returns the new count. out_of_range past what the device offers (query it
  // with Device::vector_count, without enabling). Where the kernel cannot grow an enabled
  // set (MSI; MSI-X before Linux 6.5, VFIO_IRQ_INFO_NORESIZE) the set is disabled and
  // enabled again with the same eventfds, and an interrupt raised in between can be lost:
  // add vectors while the device is quiet. invalid_argument for an empty or disabled set;
  // not_supported by default (UIO: INTx only); else the kernel's error (eventfd,
  // VFIO_DEVICE_SET_IRQS), after which the old set is back, or, where even that was
  // refused, the set is disabled and the error says so.
  virtual Result<unsigned> add_vectors(unsigned more);
  // Disables the vectors now and reports what the kernel said (VFIO: VFIO_DEVICE_SET_IRQS;
  // UIO: setting Interrupt Disable); they are given up either way. On an empty or
  // already disabled set it does nothing and succeeds.
  virtual Result<void> disable() = 0;
  // False for an empty set (a default-constructed or moved-from VfioInterrupts or
  // UioInterrupts; a UioInterrupts after disable()): count() is 0, every call but disable()
  // fails with invalid_argument, and disable() does nothing. A VfioInterrupts stays valid
  // after disable() with count() 0: its vector calls fail with out_of_range instead.
  virtual bool valid() const { return true; }
};

// One vector of one interrupt set, for wait_any().
struct InterruptVector {
  const Interrupts* interrupts = nullptr;  // the set, not owned; must outlive the wait
  unsigned vector = 0;                     // the vector's number within that set
};

// Waits up to `timeout` for the first of `vectors` to fire (a completion, or the request
// IRQ saying the device is going away), from any backends: returns its index in `vectors`,
// having consumed its count, or nullopt when the timeout passed. Fails with out_of_range
// for a vector not enabled, invalid_argument for a null set (or an empty one: valid()
// false), or the poll error or consume()'s.
Result<std::optional<std::size_t>> wait_any(std::span<const InterruptVector> vectors, std::chrono::milliseconds timeout);

}  // namespace pcie
