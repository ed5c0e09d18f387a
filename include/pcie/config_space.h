// PCI configuration space: register offsets and a bounded, typed accessor over sysfs'
// `config` file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/byte_order.h"
#include "pcie/error.h"
#include "pcie/sys/unique_fd.h"
#include "pcie/sysfs_paths.h"

namespace pcie {

// Type 0/1 header registers (PCI Local Bus Spec 3.0, 6.1; PCIe Base Spec 6.0, 7.5.1).
namespace cfg {
// Vendor ID, 16 bits, assigned by the PCI-SIG (PCI 3.0, 6.2.1).
inline constexpr std::uint16_t kVendorId = 0x00;
// Device ID, 16 bits, assigned by the vendor (PCI 3.0, 6.2.1).
inline constexpr std::uint16_t kDeviceId = 0x02;
// Command register, 16 bits: the kCommand* bits below (PCI 3.0, 6.2.2).
inline constexpr std::uint16_t kCommand = 0x04;
// Status register, 16 bits: the kStatus* bits below; its error bits are cleared by writing
// 1 to them (PCI 3.0, 6.2.3).
inline constexpr std::uint16_t kStatus = 0x06;
// Revision ID, 8 bits, chosen by the vendor (PCI 3.0, 6.2.1).
inline constexpr std::uint16_t kRevisionId = 0x08;
inline constexpr std::uint16_t kClassCode = 0x09;  // 3 bytes: prog-if, subclass, base class
// Header Type, 8 bits: the header layout in bits 6:0 (kHeaderTypeMask) and the
// multi-function flag in bit 7 (PCI 3.0, 6.2.1).
inline constexpr std::uint16_t kHeaderType = 0x0e;
// Base Address Register 0, 32 bits. BAR n is at 0x10 + 4 * n: six in a type 0 header, two
// in a type 1 header; a 64-bit BAR takes two slots, the upper half second (PCI 3.0,
// 6.2.5.1).
inline constexpr std::uint16_t kBar0 = 0x10;
// Type 1 (and type 2, CardBus) headers: the bridge's bus numbers (PCI-to-PCI Bridge
// Architecture Spec 1.2, 3.2.5.2-3.2.5.4).
inline constexpr std::uint16_t kPrimaryBus = 0x18;      // the bus the bridge sits on
inline constexpr std::uint16_t kSecondaryBus = 0x19;    // the bus directly below the bridge
inline constexpr std::uint16_t kSubordinateBus = 0x1a;  // the highest bus number below it
inline constexpr std::uint16_t kCardbusCapabilityPointer = 0x14;  // type 2 header
// Subsystem Vendor ID, 16 bits: the vendor of the board or product; type 0 header only
// (PCI 3.0, 6.2.4).
inline constexpr std::uint16_t kSubsystemVendorId = 0x2c;
// Subsystem ID, 16 bits, assigned by the subsystem vendor; type 0 header only (PCI 3.0,
// 6.2.4).
inline constexpr std::uint16_t kSubsystemId = 0x2e;
// Expansion ROM Base Address, 32 bits, in a type 0 header; a type 1 header has it at 0x38
// (PCI 3.0, 6.2.5.2).
inline constexpr std::uint16_t kExpansionRom = 0x30;
// Capabilities Pointer, 8 bits: offset of the first standard capability, valid when Status
// has kStatusCapabilityList; its two low bits are reserved. Type 0 and 1 headers (type 2:
// kCardbusCapabilityPointer) (PCI 3.0, 6.7).
inline constexpr std::uint16_t kCapabilityPointer = 0x34;
// Interrupt Line, 8 bits: interrupt routing information written by firmware or the OS; the
// device itself does not use it (PCI 3.0, 6.2.4).
inline constexpr std::uint16_t kInterruptLine = 0x3c;
// Interrupt Pin, 8 bits, read-only: 0 for no INTx, 1 to 4 for INTA# to INTD# (PCI 3.0,
// 6.2.4).
inline constexpr std::uint16_t kInterruptPin = 0x3d;

// Command bit 0, I/O Space Enable: the function responds to accesses to its I/O BARs
// (PCI 3.0, 6.2.2).
inline constexpr std::uint16_t kCommandIoSpace = 1u << 0;
// Command bit 1, Memory Space Enable: the function responds to accesses to its memory BARs
// (PCI 3.0, 6.2.2).
inline constexpr std::uint16_t kCommandMemorySpace = 1u << 1;
// Command bit 2, Bus Master Enable: the function may issue memory requests, its DMA and its
// MSI/MSI-X messages (which are memory writes) included (PCI 3.0, 6.2.2).
inline constexpr std::uint16_t kCommandBusMaster = 1u << 2;
inline constexpr std::uint16_t kCommandInterruptDisable = 1u << 10;  // INTx off (PCI 3.0, 6.2.2)
inline constexpr std::uint16_t kStatusInterrupt = 1u << 3;           // INTx pending (PCI 3.0, 6.2.3)
// Status bit 4, Capabilities List: kCapabilityPointer starts a standard capability list
// (PCI 3.0, 6.2.3).
inline constexpr std::uint16_t kStatusCapabilityList = 1u << 4;
inline constexpr std::uint8_t kHeaderTypeMask = 0x7f;  // bit 7 is "multi-function"
inline constexpr std::uint8_t kHeaderTypeNormal = 0;   // type 0: not a bridge (an endpoint)
inline constexpr std::uint8_t kHeaderTypeBridge = 1;   // type 1: a bridge (PCIe ports too)
inline constexpr std::uint8_t kHeaderTypeCardbus = 2;  // type 2: CardBus bridge

// Sizes of the three views sysfs gives: unprivileged readers see the first 64 bytes (128
// for CardBus), conventional PCI has 256, PCIe extended config space is 4096.
inline constexpr std::size_t kUnprivilegedSize = 64;
inline constexpr std::size_t kConventionalSize = 256;  // offsets 0x00-0xff
inline constexpr std::size_t kExtendedSize = 4096;     // 0x000-0xfff; extended from 0x100
}  // namespace cfg

// Whether a config snapshot's first 8 bytes (IDs, command, status) all read 0xff: what a
// removed device or one in reset returns. Vendor ID 0xffff alone is not enough: an SR-IOV
// virtual function's Vendor and Device ID registers read 0xffff by specification (SR-IOV
// 1.1, 3.4.1.1, 3.4.1.2) while its command and status registers are real.
bool config_reads_all_ones(std::span<const std::uint8_t> config);

// Live access to one device's config space through <device>/config.
class ConfigSpace {
 public:
  // How open() opens the config file: read_only allows reads only (any user may open it),
  // read_write allows writes too (the file is root's: writing needs root).
  enum class Mode { read_only, read_write };

  // Opens the config file of `bdf` under `paths`. The readable size is probed once at open:
  // 64 bytes for unprivileged users, 256 or 4096 for root. Fails with not_found when the
  // device does not exist, permission_denied when the file cannot be opened in `mode`
  // (read_write needs root), malformed when fewer than 64 bytes can be read, or the stat
  // or read error.
  static Result<ConfigSpace> open(const SysfsPaths& paths, const Bdf& bdf,
                                  Mode mode = Mode::read_only);

  // The device this config space belongs to.
  const Bdf& bdf() const { return bdf_; }
  // Bytes that reads may touch (64, 128, 256 or 4096).
  std::size_t readable_size() const { return readable_size_; }
  // Bytes that writes may touch: the config file's size.
  std::size_t file_size() const { return file_size_; }
  // True when the kernel let this process read less than the file holds: unprivileged
  // readers see the first 64 bytes only (drivers/pci/pci-sysfs.c). A file that is itself
  // short (a fake tree, a device exposing less) is not limited by privilege.
  bool limited_by_privilege() const { return readable_size_ < file_size_; }

  // Typed reads and writes. Each checks, in order: width is 1, 2 or 4 bytes
  // (width_not_allowed); the offset is naturally aligned (misaligned); [offset, offset +
  // width) lies inside the readable (writable) size (out_of_range, with a hint when only
  // privilege limits it). Then the read error: device_removed when the device's file is
  // gone, io_error on a short read. Values are little-endian as the spec defines them; a
  // removed device's all-ones value is returned as read (see check_present()).
  Result<std::uint8_t> read8(std::uint32_t offset) const;
  // As read8(), for a 16-bit register: `offset` must be a multiple of 2.
  Result<std::uint16_t> read16(std::uint32_t offset) const;
  // As read8(), for a 32-bit register: `offset` must be a multiple of 4.
  Result<std::uint32_t> read32(std::uint32_t offset) const;
  // Width in bytes (1, 2 or 4), for callers that pick the width at run time.
  Result<std::uint32_t> read(std::uint32_t offset, std::size_t width) const;
  // After the checks above: permission_denied when opened read-only, invalid_argument
  // when `value` does not fit in `width`; then the write error (device_removed, io_error).
  Result<void> write8(std::uint32_t offset, std::uint8_t value) const;
  // As write8(), for a 16-bit register: `offset` must be a multiple of 2.
  Result<void> write16(std::uint32_t offset, std::uint16_t value) const;
  // As write8(), for a 32-bit register: `offset` must be a multiple of 4.
  Result<void> write32(std::uint32_t offset, std::uint32_t value) const;
  // Width in bytes (1, 2 or 4), for callers that pick the width at run time; fails with
  // invalid_argument when `value` does not fit in it, and as write8() otherwise.
  Result<void> write(std::uint32_t offset, std::size_t width, std::uint32_t value) const;

  // All readable bytes, for capability walks and dumps (fewer where the file ends
  // sooner). Fails with the read error (device_removed when the device's file is gone).
  Result<std::vector<std::uint8_t>> snapshot() const;

  // Fails with device_removed when the header reads all ones (config_reads_all_ones): the
  // device is gone or in reset (PCIe Base Spec 6.0, 2.3.2); or with read32()'s error.
  Result<void> check_present() const;

 private:
  ConfigSpace(Bdf bdf, std::string path, UniqueFd fd, std::size_t readable, std::size_t file,
              bool writable)
      : bdf_(bdf), path_(std::move(path)), fd_(std::move(fd)), readable_size_(readable),
        file_size_(file), writable_(writable) {}
  Result<void> check_access(std::uint32_t offset, std::size_t width, std::size_t limit,
                            std::string_view operation) const;

  Bdf bdf_;
  std::string path_;
  UniqueFd fd_;
  std::size_t readable_size_ = 0;
  std::size_t file_size_ = 0;
  bool writable_ = false;
};

}  // namespace pcie
