// A fake BAR whose registers behave like a device's, for unit tests of drivers without a
// device or a VM (target //:pcie_testing): storage plus hooks that run on each read and
// write of a register, so a test builds read-only IDs, self-clearing and write-1-to-clear
// bits, doorbells that start work, and status that changes under the driver.
//
//   pcie::testing::RegisterModel bar(0x1000, "fake BAR0");
//   bar.set32(0x00, 0x010000ed);                          // the device's side: no hooks
//   bar.read_only(0x00, pcie::Width::bits32);
//   bar.on_write(0x60, [&](const pcie::testing::RegisterAccess& access) {
//     bar.set32(0x24, bar.get32(0x24) | access.value);    // a doorbell: raise an interrupt
//     device.fire(pcie::IrqKind::msi, 0);
//     return access.value;
//   });
//   auto region = bar.open_region();                      // a pcie::Region over the model
//
// Drivers reach the model through the Region accessors (read/write, checked). It has no
// mapping (mapped_base() is nullptr): a plain pointer access cannot run a hook, so code
// that wants a mapped BAR (MmioView, the bulk copy path's vector kernels) is tested in the
// VM. Thread-safe: a test's "device" thread may change registers while the driver polls.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pcie/region.h"

namespace pcie::testing {

// One driver access to the model, as a hook receives it and as log() records it.
struct RegisterAccess {
  bool write = false;           // true for a write, false for a read
  Width width = Width::bits32;  // the access's width
  std::uint64_t offset = 0;     // byte offset from the start of the model (the BAR)
  std::uint64_t value = 0;  // written, or read (after the hook)
};

// The registers of a fake BAR: `size` bytes of little-endian storage, all zero at first,
// hooks by offset that run on the driver's accesses, and a log of those accesses. Drivers
// reach it through open_region(); the test plays the device with set/get and the hooks.
class RegisterModel {
 public:
  // Returns the value the driver reads (`access.value` holds what is stored).
  using ReadHook = std::function<std::uint64_t(const RegisterAccess& access)>;
  // Returns the value to store (`access.value` is what the driver wrote).
  using WriteHook = std::function<std::uint64_t(const RegisterAccess& access)>;

  // `size` bytes of registers, all zero; `name` appears in every error about the region.
  explicit RegisterModel(std::uint64_t size, std::string name = "model BAR");
  // Not copyable (nor movable): Regions and hooks refer to the model by its address.
  RegisterModel(const RegisterModel&) = delete;
  // Not assignable, as above.
  RegisterModel& operator=(const RegisterModel&) = delete;

  // The size in bytes given to the constructor, which is also the Regions' size().
  std::uint64_t size() const { return size_; }
  // The name given to the constructor (a DeviceModel's BARs: "0000:03:00.0 BAR0"), which
  // is also the Regions' name().
  const std::string& name() const { return name_; }

  // The device's side: stores and loads that run no hook and are not logged. Out-of-range
  // or misaligned offsets are ignored (set) or read as all ones (get), as a bus would.
  void set(Width width, std::uint64_t offset, std::uint64_t value);
  // The stored `width` bits at `offset` (little-endian), without hook or log entry; all
  // ones when the access would be out of range or misaligned.
  std::uint64_t get(Width width, std::uint64_t offset) const;
  // set() of a 32-bit register.
  void set32(std::uint64_t offset, std::uint32_t value) { set(Width::bits32, offset, value); }
  // get() of a 32-bit register.
  std::uint32_t get32(std::uint64_t offset) const { return static_cast<std::uint32_t>(get(Width::bits32, offset)); }
  // set() of a 64-bit register.
  void set64(std::uint64_t offset, std::uint64_t value) { set(Width::bits64, offset, value); }
  // get() of a 64-bit register.
  std::uint64_t get64(std::uint64_t offset) const { return get(Width::bits64, offset); }

  // Hooks on accesses that start at `offset` (any width). A later hook on the same offset
  // replaces the earlier one. Hooks run with the model unlocked, in the driver's thread:
  // they may call set/get/fire, not the region's own accessors.
  void on_read(std::uint64_t offset, ReadHook hook);
  // The write hook at `offset`, under the same rules: what it returns is stored (return
  // get() of the register to ignore the write). read_only, write_one_to_clear and
  // self_clearing below install one, so they replace a write hook of the same offset.
  void on_write(std::uint64_t offset, WriteHook hook);
  // Common behaviours, built on the hooks:
  void read_only(std::uint64_t offset, Width width);                         // writes ignored
  void write_one_to_clear(std::uint64_t offset, Width width, std::uint64_t mask);  // RW1C bits
  void self_clearing(std::uint64_t offset, Width width, std::uint64_t mask);  // bits read back 0

  // Every driver access so far, in order (reads with the value returned).
  std::vector<RegisterAccess> log() const;
  // Empties the log: log() then shows only the accesses made after this call.
  void clear_log();

  // A Region over the model, accepting `widths`; the model must outlive it.
  // permission_denied for writes when `writable` is false, as a read-only mapping.
  std::unique_ptr<Region> open_region(bool writable = true, WidthSet widths = WidthSet::all());

  // What the Region calls: hooks, storage, log.
  std::uint64_t driver_read(Width width, std::uint64_t offset);
  // A driver write: logged with the value written, passed to the write hook if there is
  // one, and stored. The Region checks bounds, width and alignment first; a test may call
  // it, and driver_read, directly to play a driver without a Region.
  void driver_write(Width width, std::uint64_t offset, std::uint64_t value);

 private:
  std::uint64_t size_;
  std::string name_;
  mutable std::mutex mutex_;
  std::vector<std::uint8_t> bytes_;
  std::map<std::uint64_t, ReadHook> read_hooks_;
  std::map<std::uint64_t, WriteHook> write_hooks_;
  std::vector<RegisterAccess> log_;
};

}  // namespace pcie::testing
