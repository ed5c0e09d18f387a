// The `pcie` Python module (pybind11): discovery, BARs by width, numpy views and the bulk
// copy path, VFIO devices with DMA buffers as numpy arrays and interrupts. Every library
// error becomes a pcie.Error carrying the library's code, message and hint.
//
// Lifetimes: each Python object owns what it needs (a Bar owns its Region, which keeps a
// VFIO device and container open; a DmaBuffer keeps its IOMMU mapping's backend), and a
// numpy array made from a Bar or DmaBuffer keeps that object alive through its base, so
// no order of garbage collection leaves an array over unmapped memory.
//
// Removal (pcie/removal.h): unless pcie.watch_removal(False) turned it off, every Bar and
// Device watches its device. The module installs the library's removal guard once (SIGBUS
// and SIGSEGV handlers that act only on faults in the device mappings the library made; any
// other fault goes to the handler installed before it, Python's faulthandler included) and
// one watcher thread per device in use: a VfioDevice's request IRQ (the kernel asking for
// the device back: an unplug waits until Python lets go of it) and the device's uevents.
// On a removal the device's mappings are revoked (they read all ones and reach no device,
// nor one hot-added at its address) and the next call through the module on a Bar, a
// Device, its DmaBuffers or Interrupts raises pcie.Error with code "device_removed".
// numpy arrays from Bar.view() read all ones from then on (an array cannot raise).
//
// Width rules: Bar.read/write take an explicit width (write requires one). Bar.view()
// gives a numpy array over the mapping only where the region accepts every access width,
// since numpy copies with whatever instructions it likes; a region restricted to
// 32-bit accesses refuses, and read_into/write_from (the library's copy path, which
// respects the widths) are the way there.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "pcie/bar_opener.h"
#include "pcie/copy.h"
#include "pcie/discovery.h"
#include "pcie/dma.h"
#include "pcie/interrupts.h"
#include "pcie/peer_dma.h"
#include "pcie/region.h"
#include "pcie/removal.h"
#include "pcie/uio.h"
#include "pcie/version.h"
#include "pcie/vfio.h"
#include "tools/device_record/device_record.h"

namespace py = pybind11;

namespace {

py::object g_error_type;  // pcie.Error, made by bind_error

// Raises pcie.Error. Its parts quote paths, sysfs names and user input, which may hold any
// bytes: each goes through pcie::printable, as message() does, so every part is a str
// (never a UnicodeDecodeError in place of the error) and holds no terminal escape.
[[noreturn]] void raise(const pcie::Error& error) {
  py::object exception = g_error_type(error.message());
  exception.attr("code") = std::string(pcie::errc_name(error.code));
  exception.attr("operation") = pcie::printable(error.operation);
  exception.attr("object") = pcie::printable(error.object);
  exception.attr("reason") = pcie::printable(error.reason);
  exception.attr("hint") = pcie::printable(error.hint);
  exception.attr("errno") = error.sys_errno;
  PyErr_SetObject(g_error_type.ptr(), exception.ptr());
  throw py::error_already_set();
}

template <class T>
T value_or_raise(pcie::Result<T> result) {
  if (!result) raise(result.error());
  return std::move(*result);
}

void check(pcie::Result<void> result) {
  if (!result) raise(result.error());
}

pcie::Bdf parse_bdf(const std::string& text) { return value_or_raise(pcie::Bdf::parse(text)); }

pcie::Width width_of(unsigned bits) { return value_or_raise(pcie::width_from_bits(bits)); }

// The paths below a sysfs mount the caller names (a fake tree's <dir>/sys); procfs stays
// the machine's /proc, which the module has no option for.
pcie::SysfsPaths sysfs_paths(const std::optional<std::string>& sysfs) {
  return sysfs ? pcie::SysfsPaths::under(*sysfs, "/proc") : pcie::SysfsPaths();
}

pcie::VfioPaths vfio_paths(const std::optional<std::string>& sysfs, const std::optional<std::string>& dev_vfio) {
  // iommufd's node beside VFIO's: <dir>/dev/iommu for a fake tree's <dir>/dev/vfio.
  const std::string dev = dev_vfio ? std::filesystem::path(*dev_vfio).parent_path().string() : "/dev";
  pcie::VfioPaths paths = pcie::VfioPaths::under(sysfs.value_or("/sys"), "/proc", dev);
  if (dev_vfio) paths.dev_vfio = *dev_vfio;
  return paths;
}

// ---- Removal watches ----

bool g_watch_removal = true;  // pcie.watch_removal()

// Whether a device is gone, as its Bars, Device, DmaBuffers and Interrupts ask: set by a
// watcher thread (after it revoked the device's mappings) while one runs; without one (it
// could not start, or its DeviceWatch is gone) each check looks for the sysfs node.
class RemovalState {
 public:
  RemovalState(pcie::Bdf bdf, std::string node) : bdf_(bdf), node_(std::move(node)) {}
  void set_fired() { fired_.store(true); }
  void set_watched(bool watched) { watched_.store(watched); }

  // Raises device_removed once the device is gone; without a watcher, when its sysfs node
  // is gone (ENOENT: another stat error says nothing), revoking its mappings first.
  void check(const char* operation) {
    if (!fired_.load()) {
      if (watched_.load()) return;
      struct stat status {};
      if (::stat(node_.c_str(), &status) == 0 || (errno != ENOENT && errno != ENOTDIR)) return;
      (void)pcie::revoke_device_mappings(bdf_);
      fired_.store(true);
    }
    raise(pcie::make_error(pcie::Errc::device_removed, operation, bdf_.to_string(),
                           "the device was removed (hot unplug), or the kernel asked for it back; its mappings are "
                           "revoked",
                           "release its objects (del, then gc.collect()) and open it again when it is back"));
  }

 private:
  pcie::Bdf bdf_;
  std::string node_;
  std::atomic<bool> fired_{false};
  std::atomic<bool> watched_{false};
};
using RemovalStatePtr = std::shared_ptr<RemovalState>;

// The watcher thread of one device. Held by the Device and the Bars opened from it (which
// keep the device open anyway), or by the Bars pcie.open_bar opened (uevents only, no
// device held): never by DmaBuffers or Interrupts, so that a buffer kept past its device
// does not keep the device open (they keep the RemovalState, and check the node once the
// watcher is gone).
class DeviceWatch {
 public:
  DeviceWatch(pcie::Bdf bdf, std::string node)
      : bdf_(bdf), state_(std::make_shared<RemovalState>(bdf, std::move(node))) {}
  DeviceWatch(const DeviceWatch&) = delete;
  DeviceWatch& operator=(const DeviceWatch&) = delete;
  ~DeviceWatch() {
    watcher_ = pcie::RemovalWatcher();  // stops and joins the thread
    state_->set_watched(false);
  }

  // Starts the watcher: on `device` where given (VFIO's request IRQ and uevents), else on
  // the BDF's uevents. A watcher that cannot start is a RuntimeWarning; the state then
  // looks for the device's sysfs node at each check instead.
  void start(const std::shared_ptr<pcie::Device>& device, const std::string& sysfs_devices) {
    pcie::RemovalWatchOptions options;
    options.sysfs_devices = sysfs_devices;
    auto on_removal = [state = state_](const pcie::RemovalNotice&) { state->set_fired(); };
    auto watcher = device ? pcie::RemovalWatcher::start(*device, on_removal, options)
                          : pcie::RemovalWatcher::start(bdf_, on_removal, options);
    if (!watcher && device) {  // the request IRQ is taken (busy): uevents alone
      options.request_irq = false;
      watcher = pcie::RemovalWatcher::start(*device, on_removal, options);
    }
    if (watcher) {
      device_ = device;
      watcher_ = std::move(*watcher);
      state_->set_watched(true);
      return;
    }
    const std::string warning = "pcie: not watching " + bdf_.to_string() + " for its removal (" +
                                watcher.error().message() + "); looking for its sysfs node at each call instead";
    if (PyErr_WarnEx(PyExc_RuntimeWarning, warning.c_str(), 1) != 0) throw py::error_already_set();
  }
  const RemovalStatePtr& state() const { return state_; }

 private:
  pcie::Bdf bdf_;
  RemovalStatePtr state_;
  std::shared_ptr<pcie::Device> device_;  // while the watcher holds its request IRQ
  pcie::RemovalWatcher watcher_;          // last: stops before the rest goes
};

// A watch of `bdf`: for a Device, its own (request IRQ and uevents); for pcie.open_bar, one
// uevent watch per device node shared by the Bars it opened (called with the GIL held).
// nullptr when watching is off.
std::shared_ptr<DeviceWatch> watch_device(const pcie::SysfsPaths& paths, const pcie::Bdf& bdf,
                                          const std::shared_ptr<pcie::Device>& device = nullptr) {
  if (!g_watch_removal) return nullptr;
  const std::string node = paths.device_dir(bdf);
  static std::map<std::string, std::weak_ptr<DeviceWatch>> uevent_watches;
  if (!device) {
    if (auto existing = uevent_watches[node].lock()) return existing;
  }
  auto watch = std::make_shared<DeviceWatch>(bdf, node);
  watch->start(device, paths.pci_root + "/devices");
  if (!device) uevent_watches[node] = watch;
  return watch;
}

void check_present(const std::shared_ptr<DeviceWatch>& watch, const char* operation) {
  if (watch) watch->state()->check(operation);
}
void check_present(const RemovalStatePtr& state, const char* operation) {
  if (state) state->check(operation);
}
RemovalStatePtr state_of(const std::shared_ptr<DeviceWatch>& watch) { return watch ? watch->state() : nullptr; }

std::vector<unsigned> width_bits(pcie::WidthSet widths) {
  std::vector<unsigned> bits;
  for (unsigned b : {8u, 16u, 32u, 64u}) {
    if (widths.allows(*pcie::width_from_bits(b))) bits.push_back(b);
  }
  return bits;
}

// A BAR (or any Region) and how it was reached.
class Bar {
 public:
  Bar(std::unique_ptr<pcie::Region> region, std::string path, std::shared_ptr<DeviceWatch> watch)
      : region_(std::move(region)), path_(std::move(path)), watch_(std::move(watch)) {}

  std::uint64_t read(std::uint64_t offset, unsigned width) const {
    check_present(watch_, "read");
    auto value = region_->read(width_of(width), offset);
    check_present(watch_, "read");  // a value read across the removal is a revoked mapping's
    return value_or_raise(std::move(value));
  }
  void write(std::uint64_t offset, std::uint64_t value, unsigned width) {
    check_present(watch_, "write");
    check(region_->write(width_of(width), offset, value));
    check_present(watch_, "write");
  }
  void restrict_widths(const std::vector<unsigned>& widths) {
    pcie::WidthSet set;
    for (unsigned bits : widths) set = set | pcie::WidthSet::only(width_of(bits));
    region_->restrict_widths(set);
  }
  // The copy path, both ways, with numpy arrays (any dtype; contiguous).
  void read_into(std::uint64_t offset, py::array destination) const {
    if (!(destination.flags() & py::array::c_style) || !destination.writeable()) {
      raise(pcie::make_error(pcie::Errc::invalid_argument, "read_into", region_->name(),
                             "the array must be C-contiguous and writable"));
    }
    const auto bytes = static_cast<std::uint64_t>(destination.nbytes());
    check_present(watch_, "read_into");
    pcie::Result<void> copied;
    {
      py::gil_scoped_release unlocked;
      copied = pcie::copy_from_device(destination.mutable_data(), *region_, offset, bytes);
    }
    check_present(watch_, "read_into");
    check(copied);
  }
  void write_from(std::uint64_t offset, py::array source) {
    if (!(source.flags() & py::array::c_style)) {
      raise(pcie::make_error(pcie::Errc::invalid_argument, "write_from", region_->name(), "the array must be C-contiguous"));
    }
    const auto bytes = static_cast<std::uint64_t>(source.nbytes());
    check_present(watch_, "write_from");
    pcie::Result<void> copied;
    {
      py::gil_scoped_release unlocked;
      copied = pcie::copy_to_device(*region_, offset, source.data(), bytes);
    }
    check_present(watch_, "write_from");
    check(copied);
  }
  // A numpy array over the mapping, keeping this Bar alive.
  static py::array view(py::object self_object, py::object dtype_like, std::uint64_t offset,
                        std::optional<std::uint64_t> count) {
    Bar& self = self_object.cast<Bar&>();
    const py::dtype dtype = py::dtype::from_args(dtype_like);  // np.uint32 or np.dtype('<u4')
    check_present(self.watch_, "view");
    pcie::Region& region = *self.region_;
    const std::string& name = region.name();
    if (region.mapped_base() == nullptr) {
      raise(pcie::make_error(pcie::Errc::not_supported, "view", name, "the region is not one mapping (I/O port, "
                             "pread/pwrite or sparse VFIO region)", "use read/write or read_into/write_from"));
    }
    if (region.allowed_widths() != pcie::WidthSet::all()) {
      raise(pcie::make_error(pcie::Errc::width_not_allowed, "view", name,
                             "the region accepts only " + region.allowed_widths().to_string() +
                                 "-bit accesses, and numpy copies with whatever widths it likes",
                             "use read_into/write_from (the copy path keeps to the allowed widths), or read/write"));
    }
    const auto itemsize = static_cast<std::uint64_t>(dtype.itemsize());
    if (itemsize == 0 || offset % itemsize != 0 || offset > region.size()) {
      raise(pcie::make_error(pcie::Errc::misaligned, "view", name, "the offset is not a multiple of the item size, or "
                             "lies past the end"));
    }
    const std::uint64_t available = (region.size() - offset) / itemsize;
    const std::uint64_t items = count.value_or(available);
    if (items > available) {
      raise(pcie::make_error(pcie::Errc::out_of_range, "view", name, "the view reaches past the end of the region"));
    }
    py::array array(dtype, {static_cast<py::ssize_t>(items)}, {static_cast<py::ssize_t>(itemsize)},
                    region.mapped_base() + offset, self_object);
    if (!region.writable()) {
      py::detail::array_proxy(array.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    }
    return array;
  }

  std::uint64_t size() const { return region_->size(); }
  const std::string& name() const { return region_->name(); }
  const std::string& path() const { return path_; }
  bool writable() const { return region_->writable(); }
  std::vector<unsigned> widths() const { return width_bits(region_->allowed_widths()); }
  std::string memory_type() const { return pcie::to_string(region_->memory_type()); }

 private:
  std::unique_ptr<pcie::Region> region_;
  std::string path_;
  std::shared_ptr<DeviceWatch> watch_;  // nullptr: not watched
};

class DmaBuffer {
 public:
  DmaBuffer(pcie::DmaBuffer buffer, RemovalStatePtr removal)
      : buffer_(std::move(buffer)), watch_(std::move(removal)) {}
  static py::array array(py::object self_object, py::object dtype_like) {
    DmaBuffer& self = self_object.cast<DmaBuffer&>();
    check_present(self.watch_, "DMA buffer array");
    const py::dtype dtype = py::dtype::from_args(dtype_like);
    const auto itemsize = static_cast<std::size_t>(dtype.itemsize());
    return py::array(dtype, {static_cast<py::ssize_t>(self.buffer_.size() / itemsize)},
                     {static_cast<py::ssize_t>(itemsize)}, self.buffer_.data(), self_object);
  }
  std::uint64_t bus_address() const { return self_address(buffer_.bus_address()); }
  std::optional<std::uint64_t> physical_address() const { return buffer_.physical_address(); }
  std::size_t size() const { return buffer_.size(); }
  std::string backend() const { return std::string(buffer_.backend_name()); }
  // Before the device is told of the buffer, and before the CPU reads what it wrote: a
  // removed device did neither.
  void sync_for_device() const {
    check_present(watch_, "sync_for_device");
    buffer_.sync_for_device();
  }
  void sync_for_cpu() const {
    buffer_.sync_for_cpu();
    check_present(watch_, "sync_for_cpu");
  }

 private:
  static std::uint64_t self_address(pcie::BusAddress address) { return address.value; }
  pcie::DmaBuffer buffer_;
  RemovalStatePtr watch_;  // not the watcher: a buffer does not keep the device open
};

class Interrupts {
 public:
  Interrupts(std::unique_ptr<pcie::Interrupts> interrupts, RemovalStatePtr removal)
      : interrupts_(std::move(interrupts)), watch_(std::move(removal)) {}
  // How many times `vector` fired since the last wait, 0 after `timeout` seconds; raises
  // device_removed for a device gone before or during the wait (it sends nothing more).
  std::uint64_t wait(unsigned vector, double timeout) const {
    check_present(watch_, "wait for interrupt");
    const auto milliseconds = std::chrono::milliseconds(static_cast<std::int64_t>(timeout * 1000.0));
    pcie::Result<std::uint64_t> fired;
    {
      py::gil_scoped_release unlocked;
      fired = interrupts_->wait(vector, milliseconds);
    }
    if (fired && *fired == 0) check_present(watch_, "wait for interrupt");
    return value_or_raise(std::move(fired));
  }
  void rearm(unsigned vector) const { check(interrupts_->rearm(vector)); }
  int fd(unsigned vector) const { return value_or_raise(interrupts_->fd(vector)); }
  unsigned count() const { return interrupts_->count(); }
  const std::string& name() const { return interrupts_->name(); }

 private:
  std::unique_ptr<pcie::Interrupts> interrupts_;
  RemovalStatePtr watch_;
};

// A device a driver owns, whichever backend opened it (pcie::Device): BARs, bus mastering,
// DMA buffers, interrupts. VfioDevice and UioDevice below only open it.
class Device {
 public:
  Bar bar(unsigned index) const {
    check_present(watch_, "open BAR");
    return Bar(value_or_raise(device_->open_bar(index)), bar_path_, watch_);
  }
  void enable_bus_master(bool enable) const {
    check_present(watch_, "enable bus master");
    check(device_->enable_bus_master(enable));
  }
  DmaBuffer dma_buffer(std::size_t size, unsigned dma_mask_bits, bool huge_pages) const {
    check_present(watch_, "allocate DMA buffer");
    if (!allocator_) raise(allocator_error_);
    pcie::DmaBufferOptions options;
    options.dma_limit = pcie::dma_mask_limit(dma_mask_bits);
    options.prefer = huge_pages ? pcie::DmaBacking::huge_2m : pcie::DmaBacking::pages;
    return DmaBuffer(value_or_raise(allocator_->allocate(size, options)), state_of(watch_));
  }
  Interrupts interrupts(const std::string& kind, unsigned count) const {
    check_present(watch_, "enable interrupts");
    return Interrupts(value_or_raise(device_->enable_interrupts(irq_kind(kind), count)), state_of(watch_));
  }
  // Raises device_removed when the device is gone (what every call above does first).
  void check_removed() const { check_present(watch_, "check device"); }
  bool watched() const { return watch_ != nullptr; }
  unsigned vector_count(const std::string& kind) const { return value_or_raise(device_->vector_count(irq_kind(kind))); }
  std::string bdf() const { return device_->bdf().to_string(); }
  std::string backend() const { return device_->backend_name(); }
  // True where buffers carry CPU physical addresses: nothing stands between the device and
  // memory.
  bool without_iommu() const { return without_iommu_; }

 protected:
  Device(std::shared_ptr<pcie::Device> device, std::string bar_path, bool without_iommu,
         const pcie::SysfsPaths& paths)
      : device_(std::move(device)), bar_path_(std::move(bar_path)), without_iommu_(without_iommu), paths_(paths) {
    watch_ = watch_device(paths, device_->bdf(), device_);
    auto allocator = device_->dma_allocator();
    if (allocator) {
      allocator_ = std::make_shared<pcie::DmaAllocator>(std::move(*allocator));
    } else {
      allocator_error_ = allocator.error();  // raised by dma_buffer(): the device itself works
    }
  }

  const pcie::SysfsPaths& paths() const { return paths_; }

  // The C++ hint names UioOptions; a Python user passes a keyword instead.
  void set_dma_hint(std::string hint) {
    if (!allocator_) allocator_error_.hint = std::move(hint);
  }

 private:
  static pcie::IrqKind irq_kind(const std::string& kind) {
    if (kind == "msix" || kind == "msi-x") return pcie::IrqKind::msix;
    if (kind == "intx") return pcie::IrqKind::intx;
    if (kind == "msi") return pcie::IrqKind::msi;
    raise(pcie::make_error(pcie::Errc::invalid_argument, "interrupts", kind, "expected msi, msix or intx"));
  }

  std::shared_ptr<pcie::Device> device_;
  std::shared_ptr<pcie::DmaAllocator> allocator_;
  pcie::Error allocator_error_;
  std::string bar_path_;
  bool without_iommu_;
  pcie::SysfsPaths paths_;
  std::shared_ptr<DeviceWatch> watch_;  // after device_: the watcher stops first
};

// Without an IOMMU a device that is handed bus addresses reaches all of memory: the Python
// API asks for the same explicit acknowledgement as the C++ one (pcie/dma_backend.h).
std::optional<pcie::DeviceMayReachAllMemory> acknowledgement(bool device_may_reach_all_memory) {
  if (!device_may_reach_all_memory) return std::nullopt;
  return pcie::DeviceMayReachAllMemory::acknowledged;
}

// A window of a peer device's BAR that a VfioDevice of the same container reaches by DMA
// (pcie/peer_dma.h). Moved behind a shared_ptr so that Python may hold it in any order
// with the devices: it keeps the peer open itself.
class PeerWindow {
 public:
  explicit PeerWindow(pcie::PeerDmaWindow window)
      : window_(std::make_shared<pcie::PeerDmaWindow>(std::move(window))) {}
  std::uint64_t bus_address() const { return window_->bus_address().value; }
  std::uint64_t size() const { return window_->size(); }
  std::string path() const { return std::string(pcie::to_string(window_->path())); }
  std::string name() const { return pcie::printable(window_->name()); }
  bool valid() const { return window_->valid(); }
  std::uint64_t bus_address_of(std::uint64_t offset, std::uint64_t length) const {
    return value_or_raise(window_->bus_address_of(offset, length)).value;
  }
  void check() const { ::check(window_->check()); }
  void release() const { ::check(window_->release()); }

 private:
  std::shared_ptr<pcie::PeerDmaWindow> window_;
};

// A device owned through VFIO (bound to vfio-pci), with the IOMMU or in no-IOMMU mode.
class VfioDevice : public Device {
 public:
  static VfioDevice open(const std::string& bdf, bool reset, bool no_iommu, bool device_may_reach_all_memory,
                         const std::optional<std::string>& sysfs, const std::optional<std::string>& dev_vfio) {
    const pcie::Bdf address = parse_bdf(bdf);
    const auto acknowledged = acknowledgement(device_may_reach_all_memory);
    if (no_iommu && !acknowledged) {
      raise(pcie::make_error(pcie::Errc::invalid_argument, "open without IOMMU", address.to_string(),
                             "without an IOMMU the device can read and write all of memory",
                             "pass device_may_reach_all_memory=True to accept that"));
    }
    auto container = value_or_raise(no_iommu ? pcie::VfioContainer::open_without_iommu(*acknowledged, vfio_paths(sysfs, dev_vfio))
                                             : pcie::VfioContainer::open(vfio_paths(sysfs, dev_vfio)));
    auto device = value_or_raise(container.open_device(address, pcie::VfioDeviceOptions{.reset_on_open = reset}));
    return VfioDevice(std::make_shared<pcie::VfioDevice>(std::move(device)), no_iommu,
                      std::make_shared<pcie::VfioContainer>(std::move(container)), sysfs_paths(sysfs));
  }
  void reset() const {
    check_removed();
    check(vfio_->reset());
  }
  // Another device opened in this one's container (one IOMMU address space), as peer DMA
  // between the two needs.
  VfioDevice open_peer(const std::string& bdf, bool reset) const {
    auto device = value_or_raise(container_->open_device(parse_bdf(bdf), pcie::VfioDeviceOptions{.reset_on_open = reset}));
    return VfioDevice(std::make_shared<pcie::VfioDevice>(std::move(device)), without_iommu(), container_, paths());
  }
  // Bytes [offset, offset + length) of `peer`'s BAR `bar` made a DMA target for this device.
  PeerWindow map_peer_bar(const VfioDevice& peer, unsigned bar, std::uint64_t offset, std::uint64_t length,
                          unsigned dma_mask_bits, bool device_reads, bool device_writes) const {
    const pcie::PeerDmaOptions options{.dma_limit = pcie::dma_mask_limit(dma_mask_bits),
                                       .device_reads = device_reads,
                                       .device_writes = device_writes};
    return PeerWindow(value_or_raise(pcie::map_peer_bar(*vfio_, *peer.vfio_, bar, offset, length, options)));
  }

 private:
  VfioDevice(std::shared_ptr<pcie::VfioDevice> device, bool no_iommu, std::shared_ptr<pcie::VfioContainer> container,
             const pcie::SysfsPaths& paths)
      : Device(device, "VFIO", no_iommu, paths), vfio_(std::move(device)), container_(std::move(container)) {}
  std::shared_ptr<pcie::VfioDevice> vfio_;
  std::shared_ptr<pcie::VfioContainer> container_;  // for open_peer: the devices keep its state alive anyway
};

// A device bound to uio_pci_generic: BARs through sysfs, INTx through /dev/uioN, DMA
// buffers at physical addresses once acknowledged.
class UioDevice : public Device {
 public:
  static UioDevice open(const std::string& bdf, bool device_may_reach_all_memory, const std::optional<std::string>& sysfs,
                        const std::optional<std::string>& dev) {
    pcie::UioOptions options;
    options.dma = acknowledgement(device_may_reach_all_memory);
    pcie::UioPaths paths;
    paths.sysfs = sysfs_paths(sysfs);
    if (dev) paths.dev = *dev;
    auto device = value_or_raise(pcie::UioDevice::open(parse_bdf(bdf), options, paths));
    UioDevice opened(std::make_shared<pcie::UioDevice>(std::move(device)), paths.sysfs);
    if (!device_may_reach_all_memory) {
      opened.set_dma_hint("open it with UioDevice.open(..., device_may_reach_all_memory=True) if that is acceptable, "
                          "or use VfioDevice with an IOMMU");
    }
    return opened;
  }
  int uio_number() const { return uio_->uio_number(); }

 private:
  UioDevice(std::shared_ptr<pcie::UioDevice> device, const pcie::SysfsPaths& paths)
      : Device(device, "sysfs", true, paths), uio_(std::move(device)) {}
  std::shared_ptr<pcie::UioDevice> uio_;
};

// A record (tools/device_record: the fields pciectl's JSON has) as Python objects: objects
// become dicts in the record's order, arrays lists, numbers ints (bools stay bools),
// null None.
py::object to_python(const nlohmann::ordered_json& value) {
  switch (value.type()) {
    case nlohmann::ordered_json::value_t::object: {
      py::dict dict;
      for (const auto& [key, item] : value.items()) dict[py::str(key)] = to_python(item);
      return dict;
    }
    case nlohmann::ordered_json::value_t::array: {
      py::list list;
      for (const auto& item : value) list.append(to_python(item));
      return list;
    }
    case nlohmann::ordered_json::value_t::string: return py::str(value.get<std::string>());
    case nlohmann::ordered_json::value_t::boolean: return py::bool_(value.get<bool>());
    case nlohmann::ordered_json::value_t::number_unsigned: return py::int_(value.get<std::uint64_t>());
    case nlohmann::ordered_json::value_t::number_integer: return py::int_(value.get<std::int64_t>());
    case nlohmann::ordered_json::value_t::number_float: return py::float_(value.get<double>());
    default: return py::none();
  }
}

py::object device_info(const pcie::DeviceInfo& device) {
  return to_python(pcie_records::device_record(device, pcie_records::IdStyle::integers));
}

// Opens a BAR the way pcie.open_bar's `via` asks: any path that works, or only one.
Bar open_bar(const std::string& bdf, unsigned bar, bool writable, const std::string& via, bool enable,
             const std::optional<std::string>& sysfs, const std::optional<std::string>& dev_vfio) {
  pcie::BarOpenOptions options;
  options.writable = writable;
  options.enable_decoding = enable;
  options.paths = vfio_paths(sysfs, dev_vfio);
  if (via == "sysfs") options.preference = pcie::BarPathPreference::sysfs_only;
  else if (via == "vfio") options.preference = pcie::BarPathPreference::vfio_only;
  else if (via != "auto") raise(pcie::make_error(pcie::Errc::invalid_argument, "open_bar", via, "expected auto, sysfs or vfio"));
  const pcie::Bdf address = parse_bdf(bdf);
  auto opened = value_or_raise(pcie::open_bar(address, bar, options));
  return Bar(std::move(opened.region), pcie::to_string(opened.path), watch_device(options.paths.sysfs, address));
}

void bind_error(py::module_& m) {
  g_error_type = py::reinterpret_steal<py::object>(
      PyErr_NewExceptionWithDoc("pcie.Error",
                                "A pcie library error: str() is the message; .code, .operation, .object, .reason, "
                                ".hint and .errno carry its parts.",
                                PyExc_RuntimeError, nullptr));
  m.attr("Error") = g_error_type;
}

void bind_discovery(py::module_& m) {
  m.def(
      "devices",
      [](const std::string& slot, const std::string& id, const std::string& driver, const std::optional<std::string>& sysfs) {
        pcie::DiscoveryOptions options;
        options.paths = sysfs_paths(sysfs);
        options.slot_filter = slot;
        options.id_filter = id;
        options.driver_filter = driver;
        py::list list;
        for (const auto& device : value_or_raise(pcie::discover(options))) list.append(device_info(device));
        return list;
      },
      py::arg("slot") = "", py::arg("id") = "", py::arg("driver") = "", py::arg("sysfs") = py::none(),
      "Devices as dicts (pciectl info --json's record without its VFIO and memory-type probes, IDs as "
      "integers); slot and id filter in "
      "lspci's -s and -d syntax (id='::0108' for NVMe).");
  m.def(
      "describe",
      [](const std::string& bdf, const std::optional<std::string>& sysfs) {
        pcie::DiscoveryOptions options;
        options.paths = sysfs_paths(sysfs);
        return device_info(value_or_raise(pcie::describe(parse_bdf(bdf), options)));
      },
      py::arg("bdf"), py::arg("sysfs") = py::none(), "One device as a dict (as devices() gives).");
}

void bind_regions(py::module_& m) {
  py::class_<Bar>(m, "Bar", "A BAR (or another region): checked accesses of an explicit width.")
      .def("read", &Bar::read, py::arg("offset"), py::arg("width") = 32, "Reads `width` bits (8/16/32/64) at `offset`.")
      .def("write", &Bar::write, py::arg("offset"), py::arg("value"), py::arg("width"),
           "Writes `value` as `width` bits at `offset`: the width is required.")
      .def("read_into", &Bar::read_into, py::arg("offset"), py::arg("array"),
           "Copies array.nbytes bytes from `offset` into a numpy array (the library's copy path).")
      .def("write_from", &Bar::write_from, py::arg("offset"), py::arg("array"),
           "Copies a numpy array's bytes to `offset` (the library's copy path).")
      .def("view", &Bar::view, py::arg("dtype") = py::dtype::of<std::uint32_t>(), py::arg("offset") = 0,
           py::arg("count") = py::none(),
           "A numpy array over the mapping (read-only unless opened writable); refused when the region "
           "restricts access widths.")
      .def("restrict_widths", &Bar::restrict_widths, py::arg("widths"),
           "Narrows the accepted access widths, e.g. [32] for a 32-bit-only register file.")
      .def_property_readonly("size", &Bar::size)
      .def_property_readonly("name", &Bar::name)
      .def_property_readonly("path", &Bar::path, "How it was reached: 'sysfs' or 'VFIO'.")
      .def_property_readonly("writable", &Bar::writable)
      .def_property_readonly("widths", &Bar::widths)
      .def_property_readonly("memory_type", &Bar::memory_type);

  m.def(
      "watch_removal",
      [](bool enabled) { return std::exchange(g_watch_removal, enabled); },
      py::arg("enabled") = true,
      "Whether Bars and Devices opened from now on watch their device for removal (default True): the "
      "module then installs the library's removal guard (SIGBUS/SIGSEGV handlers acting only on faults in "
      "device mappings; other faults go to the handler before them) and a watcher thread per device, and a "
      "call on a removed device raises pcie.Error(code='device_removed'). Returns the previous setting.");
  m.def("open_bar", &open_bar, py::arg("bdf"), py::arg("bar"), py::arg("writable") = false, py::arg("via") = "auto",
        py::arg("enable") = false, py::arg("sysfs") = py::none(), py::arg("dev_vfio") = py::none(),
        "Opens BAR `bar` through sysfs or VFIO, whichever works (pcie/bar_opener.h).");
}

void bind_dma_and_interrupts(py::module_& m) {
  py::class_<DmaBuffer>(m, "DmaBuffer", "Pinned memory the device reaches at bus_address.")
      .def("array", &DmaBuffer::array, py::arg("dtype") = py::dtype::of<std::uint8_t>(),
           "The buffer as a numpy array (keeps the buffer alive).")
      .def("sync_for_device", &DmaBuffer::sync_for_device)
      .def("sync_for_cpu", &DmaBuffer::sync_for_cpu)
      .def_property_readonly("bus_address", &DmaBuffer::bus_address)
      .def_property_readonly("physical_address", &DmaBuffer::physical_address)
      .def_property_readonly("size", &DmaBuffer::size)
      .def_property_readonly("backend", &DmaBuffer::backend);

  py::class_<Interrupts>(m, "Interrupts")
      .def("wait", &Interrupts::wait, py::arg("vector") = 0, py::arg("timeout") = 1.0,
           "Waits up to `timeout` seconds; returns how many times the vector fired (0: timed out).")
      .def("rearm", &Interrupts::rearm, py::arg("vector") = 0)
      .def("fd", &Interrupts::fd, py::arg("vector") = 0)
      .def_property_readonly("count", &Interrupts::count)
      .def_property_readonly("name", &Interrupts::name);
}

void bind_peer_windows(py::module_& m) {
  py::class_<PeerWindow>(m, "PeerWindow",
                         "A window of another device's BAR that a device reaches by DMA at bus_address "
                         "(peer-to-peer).")
      .def("bus_address_of", &PeerWindow::bus_address_of, py::arg("offset"), py::arg("length") = 1,
           "The bus address of byte `offset`; pcie.Error (out_of_range) unless offset + length fits.")
      .def("check", &PeerWindow::check,
           "Raises pcie.Error (device_disabled, device_removed) when DMA through the window would no longer "
           "reach the BAR: the peer stopped decoding memory, or the kernel revoked an iommufd window; "
           "io_error when the peer's command register cannot be read (the window may still work).")
      .def("release", &PeerWindow::release,
           "Unmaps the window now (it is empty afterwards either way); raises pcie.Error with the kernel's "
           "error when the unmap failed (its bus address then stays taken).")
      .def_property_readonly("bus_address", &PeerWindow::bus_address)
      .def_property_readonly("size", &PeerWindow::size)
      .def_property_readonly("path", &PeerWindow::path, "How it was mapped: type1, iommufd (dma-buf) or no IOMMU.")
      .def_property_readonly("name", &PeerWindow::name)
      .def_property_readonly("valid", &PeerWindow::valid);
}

void bind_devices(py::module_& m) {
  py::class_<Device>(m, "Device",
                     "A device a driver owns, whichever backend opened it (VfioDevice.open, UioDevice.open).")
      .def("bar", &Device::bar, py::arg("index"))
      .def("enable_bus_master", &Device::enable_bus_master, py::arg("enable") = true)
      .def("dma_buffer", &Device::dma_buffer, py::arg("size"), py::arg("dma_mask_bits") = 64,
           py::arg("huge_pages") = true,
           "Pinned memory the device can reach, below its DMA mask (e.g. 28 for QEMU's edu). Without an IOMMU "
           "its bus_address is its physical_address (huge pages keep larger buffers contiguous).")
      .def("interrupts", &Device::interrupts, py::arg("kind") = "msi", py::arg("count") = 1,
           "Enables `count` vectors of `kind` (msi, msix, intx; UIO offers intx only).")
      .def("vector_count", &Device::vector_count, py::arg("kind"), "Vectors the backend offers for `kind`.")
      .def("check_removed", &Device::check_removed,
           "Raises pcie.Error(code='device_removed') when the device is gone or the kernel asked for it back "
           "(as every call on it and its Bars, buffers and interrupts does).")
      .def_property_readonly("watched", &Device::watched, "Whether its removal is watched (pcie.watch_removal).")
      .def_property_readonly("bdf", &Device::bdf)
      .def_property_readonly("backend", &Device::backend)
      .def_property_readonly("without_iommu", &Device::without_iommu);

  py::class_<VfioDevice, Device>(m, "VfioDevice", "A device owned through VFIO (bound to vfio-pci).")
      .def_static("open", &VfioDevice::open, py::arg("bdf"), py::arg("reset") = true, py::arg("no_iommu") = false,
                  py::arg("device_may_reach_all_memory") = false, py::arg("sysfs") = py::none(),
                  py::arg("dev_vfio") = py::none(),
                  "Opens `bdf` through its IOMMU group; no_iommu=True opens it in VFIO's no-IOMMU mode "
                  "(/dev/vfio/noiommu-N), which needs device_may_reach_all_memory=True.")
      .def("reset", &VfioDevice::reset)
      .def("open_peer", &VfioDevice::open_peer, py::arg("bdf"), py::arg("reset") = false,
           "Opens another device (bound to vfio-pci) in this one's container, so that one can DMA into "
           "the other's BAR (map_peer_bar); not reset unless reset=True (its BAR's contents are the point).")
      .def("map_peer_bar", &VfioDevice::map_peer_bar, py::arg("peer"), py::arg("bar"), py::arg("offset"),
           py::arg("length"), py::arg("dma_mask_bits") = 64, py::arg("device_reads") = true,
           py::arg("device_writes") = true,
           "Makes [offset, offset + length) of `peer`'s BAR `bar` (multiples of 4096) a DMA target for this "
           "device: a PeerWindow with the bus address to give it. `peer` comes from open_peer().");

  py::class_<UioDevice, Device>(m, "UioDevice", "A device bound to uio_pci_generic (no IOMMU, INTx only).")
      .def_static("open", &UioDevice::open, py::arg("bdf"), py::arg("device_may_reach_all_memory") = false,
                  py::arg("sysfs") = py::none(), py::arg("dev") = py::none(),
                  "Opens `bdf`'s /dev/uioN; DMA buffers (physical addresses) need "
                  "device_may_reach_all_memory=True.")
      .def_property_readonly("uio_number", &UioDevice::uio_number);
}

}  // namespace

PYBIND11_MODULE(pcie, m) {
  m.doc() = "PCIe devices from user space: discovery, BARs, VFIO, DMA buffers, interrupts (the pcie C++ library)";
  m.attr("__version__") = pcie::library_version();
  bind_error(m);
  bind_discovery(m);
  bind_regions(m);
  bind_dma_and_interrupts(m);
  bind_peer_windows(m);  // before the devices, whose map_peer_bar returns a PeerWindow
  bind_devices(m);
}
