// BAR access through sysfs: memory BARs mapped from <device>/resourceN (or resourceN_wc
// for write-combining), I/O-port BARs through pread/pwrite on the same file.
// Needs root; the kernel refuses the mapping while a driver owns the BAR when it is built
// with CONFIG_IO_STRICT_DEVMEM (Debian's is), and under kernel lockdown.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "pcie/bdf.h"
#include "pcie/discovery.h"
#include "pcie/error.h"
#include "pcie/mmio.h"
#include "pcie/region.h"
#include "pcie/sys/mapping.h"
#include "pcie/sys/unique_fd.h"
#include "pcie/sysfs_paths.h"

namespace pcie {

// What to do when the kernel grants a mapping another memory type than asked for (x86 PAT
// gives a second mapping of a range the first one's type: pcie/memory_type.h).
enum class MemoryTypeMismatch {
  fail,         // refuse the mapping (busy), saying what the kernel granted
  use_granted,  // map it; memory_type() and memory_type_report() say what it really is
};

// How BarMapping::map (and open_sysfs_bar) maps a BAR.
struct BarMapOptions {
  MemoryType memory_type = MemoryType::uncached;  // uncached or write_combined
  // When the kernel grants another memory type than `memory_type` (checked where it can be).
  MemoryTypeMismatch on_mismatch = MemoryTypeMismatch::fail;
  std::uint64_t offset = 0;  // window start inside the BAR; must be page-aligned
  std::uint64_t length = 0;  // window length; 0 maps to the end of the BAR
  bool writable = true;      // false maps read-only (PROT_READ)
  // When the device does not decode the BAR's space (Memory or I/O Space Enable off in its
  // command register), call enable_decoding() first instead of failing.
  bool enable_decoding = false;
};

// Makes the device decode its BARs, as libpciaccess's pci_device_enable does: writes "1"
// to <device>/enable (the kernel's pci_enable_device, which sets Memory/I/O Space Enable
// for the BARs the device has and counts the enable until "0" is written), then, if the
// bits are still off (the kernel counted an earlier enable), sets them in the command
// register directly. Needs root. Fails with device_removed when config space reads all
// ones, permission_denied without root, io_error when the device still does not decode.
Result<void> enable_decoding(const SysfsPaths& paths, const Bdf& bdf);

// A mapped window of a memory BAR. Move-only; unmaps, then closes the file.
class BarMapping final : public Region {
 public:
  // Maps BAR `bar` of `bdf`. Errors say why the kernel refused: not_found (no such device
  // or BAR), not_supported (an I/O BAR, or WC on a non-prefetchable BAR),
  // permission_denied (not root), driver_owns_region (names the driver), lockdown,
  // misaligned/out_of_range (window), device_disabled (Memory Space Enable is off and
  // options.enable_decoding is not set), device_removed (config space reads all ones),
  // malformed (the resource file is shorter than the window: a fake or broken tree),
  // busy (the kernel granted another memory type than asked for, with options.on_mismatch
  // fail), not_supported for write-combining when PAT is off (nopat).
  //
  // The memory type is checked against the kernel's PAT table after mapping where root can
  // read it (debugfs); elsewhere memory_type_report() says it is unverified.
  static Result<BarMapping> map(const SysfsPaths& paths, const Bdf& bdf, unsigned bar,
                                const BarMapOptions& options = {});

  // An empty mapping (Region::valid() false), for a struct built step by step.
  BarMapping() : Region(WidthSet::all(), false) {}
  // Move-only: the moved-from mapping is empty (valid() false).
  BarMapping(BarMapping&&) noexcept = default;
  // Closes this mapping's file and unmaps it, then takes `other`'s; `other` is left empty.
  BarMapping& operator=(BarMapping&&) noexcept = default;

  std::uint64_t size() const override { return valid() ? length_ : 0; }
  const std::string& name() const override { return name_; }
  bool valid() const override { return mapping_.valid(); }
  // The accessor view of the window (offset 0 = window start). Valid while this lives;
  // of size 0 for an empty mapping.
  MmioView mmio() const { return MmioView(mapping_.data(), size(), allowed_widths(), name_, memory_type()); }
  // Where the window starts inside the BAR, in bytes (BarMapOptions::offset).
  std::uint64_t window_offset() const { return window_offset_; }
  // The granted type where verified, else the one asked for.
  MemoryType memory_type() const override { return report_.granted.value_or(report_.requested); }
  MemoryTypeReport memory_type_report() const override { return report_; }
  std::byte* mapped_base() const override { return mapping_.data(); }
  bool revoked() const override { return mapping_.revoked(); }

 protected:
  Result<std::uint64_t> read_checked(Width width, std::uint64_t offset) const override;
  Result<void> write_checked(Width width, std::uint64_t offset, std::uint64_t value) override;

 private:
  friend Result<std::unique_ptr<Region>> open_sysfs_bar(const SysfsPaths&, const Bdf&, unsigned,
                                                        const BarMapOptions&);
  // map() once the BAR has been looked up.
  static Result<BarMapping> map_bar(const SysfsPaths& paths, const Bdf& bdf, const BarInfo& bar,
                                    const std::optional<std::string>& driver, const BarMapOptions& options);
  BarMapping(std::string name, UniqueFd fd, Mapping mapping, std::uint64_t window_offset,
             std::uint64_t length, MemoryTypeReport report, bool writable)
      : Region(WidthSet::all(), writable), name_(std::move(name)), fd_(std::move(fd)),
        mapping_(std::move(mapping)), window_offset_(window_offset), length_(length),
        report_(std::move(report)) {}

  std::string name_;
  UniqueFd fd_;       // declared before mapping_: released after it
  Mapping mapping_;
  std::uint64_t window_offset_ = 0;
  std::uint64_t length_ = 0;
  MemoryTypeReport report_;
};

// An I/O-port BAR reached through pread/pwrite on <device>/resourceN, which the kernel
// turns into in/out instructions of 8, 16 or 32 bits.
class IoPortBar final : public Region {
 public:
  // Errors as BarMapping::map; device_disabled when I/O Space Enable is off and
  // `enable_decoding` is not set.
  static Result<IoPortBar> open(const SysfsPaths& paths, const Bdf& bdf, unsigned bar,
                                bool writable = true, bool enable_decoding = false);

  // An empty BAR (Region::valid() false), for a struct built step by step.
  IoPortBar() : Region(WidthSet::up_to(Width::bits32), false) {}
  // Move-only: the moved-from BAR is empty (valid() false).
  IoPortBar(IoPortBar&&) noexcept = default;
  // Closes this BAR's file, then takes `other`'s; `other` is left empty.
  IoPortBar& operator=(IoPortBar&&) noexcept = default;

  std::uint64_t size() const override { return valid() ? size_ : 0; }
  const std::string& name() const override { return name_; }
  bool valid() const override { return fd_.valid(); }

 protected:
  Result<std::uint64_t> read_checked(Width width, std::uint64_t offset) const override;
  Result<void> write_checked(Width width, std::uint64_t offset, std::uint64_t value) override;

 private:
  friend Result<std::unique_ptr<Region>> open_sysfs_bar(const SysfsPaths&, const Bdf&, unsigned,
                                                        const BarMapOptions&);
  // open() once the BAR has been looked up.
  static Result<IoPortBar> open_bar(const SysfsPaths& paths, const Bdf& bdf, const BarInfo& bar,
                                    const std::optional<std::string>& driver, bool writable,
                                    bool enable_decoding);
  IoPortBar(std::string name, std::string path, UniqueFd fd, std::uint64_t size, bool writable)
      : Region(WidthSet::up_to(Width::bits32), writable), name_(std::move(name)), path_(std::move(path)),
        fd_(std::move(fd)), size_(size) {}

  std::string name_;
  std::string path_;
  UniqueFd fd_;
  std::uint64_t size_ = 0;
};

// Opens BAR `bar` whatever its kind: memory BARs are mapped with `options`, I/O BARs use
// IoPortBar (options.offset/length must then be 0).
Result<std::unique_ptr<Region>> open_sysfs_bar(const SysfsPaths& paths, const Bdf& bdf,
                                               unsigned bar, const BarMapOptions& options = {});

// What is known when a sysfs BAR open or mmap fails, to explain it.
struct BarFailureContext {
  Bdf bdf;                            // the device
  unsigned bar = 0;                   // the BAR's index, 0-5
  std::string path;                   // the resource file that failed (resourceN, resourceN_wc)
  std::optional<std::string> driver;  // the driver bound to the device, if any
  // What claimed the BAR's range in /proc/iomem (request_mem_region's name: "nvme",
  // "vfio-pci"), which the kernel's IO_STRICT_DEVMEM check goes by; nullopt when nothing
  // did or it could not be read (not root).
  std::optional<std::string> claimed_by;
  std::string lockdown_mode;          // "none", "integrity", "confidentiality" or "" (unknown)
  bool running_as_root = false;       // whether the effective user ID is 0
};

// Turns the raw error of a failed open/mmap of a resource file into one the user can act
// on: EPERM/EACCES under lockdown -> lockdown; as non-root -> permission_denied with "run
// as root"; EINVAL from mmap with the range claimed (or a driver bound) ->
// driver_owns_region naming the claimer from /proc/iomem (else the driver).
// Other errors pass through with the BAR named. Public so tools can reuse the diagnosis.
Error explain_bar_failure(const Error& raw, const BarFailureContext& context);

// The active mode in a lockdown file ("none [integrity] confidentiality" -> "integrity"),
// or "" when the file is absent or unreadable.
std::string read_lockdown_mode(const std::string& lockdown_file);

}  // namespace pcie
