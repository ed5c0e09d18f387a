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

struct RegisterAccess {
  bool write = false;
  Width width = Width::bits32;
  std::uint64_t offset = 0;
  std::uint64_t value = 0;  // written, or read (after the hook)
};

class RegisterModel {
 public:
  // Returns the value the driver reads (`access.value` holds what is stored).
  using ReadHook = std::function<std::uint64_t(const RegisterAccess& access)>;
  // Returns the value to store (`access.value` is what the driver wrote).
  using WriteHook = std::function<std::uint64_t(const RegisterAccess& access)>;

  // `size` bytes of registers, all zero; `name` appears in every error about the region.
  explicit RegisterModel(std::uint64_t size, std::string name = "model BAR");
  RegisterModel(const RegisterModel&) = delete;
  RegisterModel& operator=(const RegisterModel&) = delete;

  std::uint64_t size() const { return size_; }
  const std::string& name() const { return name_; }

  // The device's side: stores and loads that run no hook and are not logged. Out-of-range
  // or misaligned offsets are ignored (set) or read as all ones (get), as a bus would.
  void set(Width width, std::uint64_t offset, std::uint64_t value);
  std::uint64_t get(Width width, std::uint64_t offset) const;
  void set32(std::uint64_t offset, std::uint32_t value) { set(Width::bits32, offset, value); }
  std::uint32_t get32(std::uint64_t offset) const { return static_cast<std::uint32_t>(get(Width::bits32, offset)); }
  void set64(std::uint64_t offset, std::uint64_t value) { set(Width::bits64, offset, value); }
  std::uint64_t get64(std::uint64_t offset) const { return get(Width::bits64, offset); }

  // Hooks on accesses that start at `offset` (any width). A later hook on the same offset
  // replaces the earlier one. Hooks run with the model unlocked, in the driver's thread:
  // they may call set/get/fire, not the region's own accessors.
  void on_read(std::uint64_t offset, ReadHook hook);
  void on_write(std::uint64_t offset, WriteHook hook);
  // Common behaviours, built on the hooks:
  void read_only(std::uint64_t offset, Width width);                         // writes ignored
  void write_one_to_clear(std::uint64_t offset, Width width, std::uint64_t mask);  // RW1C bits
  void self_clearing(std::uint64_t offset, Width width, std::uint64_t mask);  // bits read back 0

  // Every driver access so far, in order (reads with the value returned).
  std::vector<RegisterAccess> log() const;
  void clear_log();

  // A Region over the model, accepting `widths`; the model must outlive it.
  // permission_denied for writes when `writable` is false, as a read-only mapping.
  std::unique_ptr<Region> open_region(bool writable = true, WidthSet widths = WidthSet::all());

  // What the Region calls: hooks, storage, log.
  std::uint64_t driver_read(Width width, std::uint64_t offset);
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
