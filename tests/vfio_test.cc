// VFIO error diagnosis without a kernel: the pure explain function over the situations a
// user meets (the VM tests trigger each for real), a container that cannot open, and the
// choice between the type1 and iommufd backends in every situation a fake tree can stage
// (what the program asks, PCIE_VFIO_BACKEND, a kernel without cdevs or /dev/iommu, a
// /dev/iommu that is not iommufd).
#include "pcie/vfio.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <type_traits>
#include <fstream>

#include "pcie/peer_dma.h"
#include "pcie/removal.h"
#include "pcie/testing/fake_sysfs.h"
#include "src/vfio/peer_mapping.h"
#include "src/vfio/state.h"
#include "tests/empty_handles.h"

namespace pcie {
namespace {

const Bdf kDevice{0, 0, 3, 0};

VfioFailureContext context_of(const Bdf& bdf, std::optional<int> group, std::optional<std::string> driver,
                              bool iommu_enabled = true) {
  VfioFailureContext context;
  context.bdf = bdf;
  context.group = group;
  context.driver = std::move(driver);
  context.iommu_enabled = iommu_enabled;
  return context;
}

Error raw_errno(int err) { return make_errno_error(err, "open VFIO group", "/dev/vfio/7"); }

TEST(ExplainVfioFailure, IommuOff) {
  VfioFailureContext context = context_of(kDevice, std::nullopt, std::nullopt, false);
  const Error error = explain_vfio_failure(raw_errno(ENOENT), "group", context);
  EXPECT_EQ(error.code, Errc::not_supported);
  EXPECT_NE(error.reason.find("the IOMMU is off"), std::string::npos);
  EXPECT_NE(error.hint.find("intel_iommu=on"), std::string::npos);
  EXPECT_NE(error.hint.find("amd_iommu=on"), std::string::npos);
}

TEST(ExplainVfioFailure, DeviceOutsideAnyGroupWhileOthersHaveOne) {
  VfioFailureContext context = context_of(kDevice, std::nullopt, std::nullopt);
  const Error error = explain_vfio_failure(raw_errno(ENOENT), "group", context);
  EXPECT_EQ(error.code, Errc::not_supported);
  EXPECT_NE(error.reason.find("in no IOMMU group"), std::string::npos);
}

TEST(ExplainVfioFailure, GroupNodeMissingMeansNotBoundToVfioPci) {
  VfioFailureContext context = context_of(kDevice, 7, "e1000e");
  const Error error = explain_vfio_failure(raw_errno(ENOENT), "group", context);
  EXPECT_EQ(error.code, Errc::not_found);
  EXPECT_EQ(error.reason, "/dev/vfio/7 does not exist: 0000:00:03.0 is bound to 'e1000e', not to vfio-pci");
  EXPECT_NE(error.hint.find("echo vfio-pci > /sys/bus/pci/devices/0000:00:03.0/driver_override"), std::string::npos);
  EXPECT_EQ(error.sys_errno, ENOENT);
}

TEST(ExplainVfioFailure, BusyAndPermission) {
  VfioFailureContext context = context_of(kDevice, 7, "vfio-pci");
  const Error busy = explain_vfio_failure(raw_errno(EBUSY), "group", context);
  EXPECT_EQ(busy.code, Errc::busy);
  EXPECT_NE(busy.reason.find("group 7 is already open"), std::string::npos);
  EXPECT_NE(busy.hint.find("fuser /dev/vfio/7"), std::string::npos);
  const Error denied = explain_vfio_failure(raw_errno(EACCES), "group", context);
  EXPECT_EQ(denied.code, Errc::permission_denied);
  EXPECT_NE(denied.hint.find("run as root"), std::string::npos);
}

TEST(ExplainVfioFailure, NotViableListsEveryBlockingDeviceButNotBridgesOrStubs) {
  VfioFailureContext context = context_of(Bdf{0, 0, 0x1f, 3}, 7, "vfio-pci");
  context.members = {
      {Bdf{0, 0, 0x1c, 0}, "pcieport", true},       // a bridge: allowed
      {Bdf{0, 0, 0x1f, 0}, "lpc_ich", false},
      {Bdf{0, 0, 0x1f, 2}, std::nullopt, false},    // no driver: allowed
      {Bdf{0, 0, 0x1f, 3}, "vfio-pci", false},
      {Bdf{0, 0, 0x1f, 4}, "pci-stub", false},      // allowed
      {Bdf{0, 0, 0x1f, 5}, "i801_smbus", false},
  };
  const Error error = explain_vfio_failure(make_error(Errc::busy, "open VFIO group", "/dev/vfio/7", ""), "viable", context);
  EXPECT_EQ(error.code, Errc::busy);
  EXPECT_EQ(error.reason,
            "group 7 not viable: 0000:00:1f.0 is bound to lpc_ich, 0000:00:1f.5 is bound to i801_smbus");
  EXPECT_NE(error.hint.find("echo 0000:00:1f.0 > /sys/bus/pci/drivers/lpc_ich/unbind"), std::string::npos);
}

TEST(ExplainVfioFailure, DeviceStepWhenNotBound) {
  VfioFailureContext context = context_of(kDevice, 7, std::nullopt);
  const Error error = explain_vfio_failure(raw_errno(ENODEV), "device", context);
  EXPECT_EQ(error.code, Errc::not_found);
  EXPECT_EQ(error.reason, "0000:00:03.0 is bound to no driver, not to vfio-pci");
}

TEST(VfioContainer, MissingVfioNodeSaysLoadTheModules) {
  auto tree = testing::FakeSysfs::create();
  ASSERT_TRUE(tree);
  VfioPaths paths;
  paths.sysfs = tree->paths();
  paths.dev_vfio = tree->directory() + "/dev/vfio";  // does not exist
  paths.dev_iommu = tree->directory() + "/dev/iommu";  // nor this
  auto container = VfioContainer::open(paths);
  ASSERT_FALSE(container);
  EXPECT_EQ(container.error().code, Errc::not_found);
  EXPECT_NE(container.error().hint.find("modprobe vfio-pci"), std::string::npos) << container.error().message();
}

// A fake tree's VFIO paths; `cdev_class` makes <sys>/class/vfio-dev (a kernel with device
// cdevs), `iommu_node` puts a regular file at <dir>/dev/iommu (opens, but is no iommufd).
struct BackendTree {
  std::unique_ptr<testing::FakeSysfs> tree;
  VfioPaths paths;
};

BackendTree backend_tree(bool cdev_class, bool iommu_node) {
  auto tree = testing::FakeSysfs::create();
  EXPECT_TRUE(tree);
  BackendTree made{std::make_unique<testing::FakeSysfs>(std::move(*tree)), {}};
  const std::string root = made.tree->directory();
  made.paths.sysfs = made.tree->paths();
  made.paths.dev_vfio = root + "/dev/vfio";
  made.paths.dev_iommu = root + "/dev/iommu";
  made.paths.vfio_dev_class = root + "/sys/class/vfio-dev";
  std::filesystem::create_directories(root + "/dev");
  if (cdev_class) std::filesystem::create_directories(made.paths.vfio_dev_class);
  if (iommu_node) std::ofstream(made.paths.dev_iommu) << "";
  return made;
}

// Sets PCIE_VFIO_BACKEND for one test and restores it.
class BackendVariable {
 public:
  explicit BackendVariable(const char* value) {
    if (const char* old = std::getenv(kVfioBackendVariable)) old_ = old;
    if (value) {
      ::setenv(kVfioBackendVariable, value, 1);
    } else {
      ::unsetenv(kVfioBackendVariable);
    }
  }
  ~BackendVariable() {
    if (old_) {
      ::setenv(kVfioBackendVariable, old_->c_str(), 1);
    } else {
      ::unsetenv(kVfioBackendVariable);
    }
  }

 private:
  std::optional<std::string> old_;
};

TEST(VfioBackend, NamesRoundTripAndStrangersAreRefused) {
  for (VfioIommuBackend backend : {VfioIommuBackend::automatic, VfioIommuBackend::type1, VfioIommuBackend::iommufd}) {
    auto parsed = parse_vfio_iommu_backend(to_string(backend));
    ASSERT_TRUE(parsed) << to_string(backend);
    EXPECT_EQ(*parsed, backend);
  }
  EXPECT_EQ(parse_vfio_iommu_backend("automatic").value(), VfioIommuBackend::automatic);
  for (const char* wrong : {"", "Type1", "iommu", "type1 ", "vfio"}) {
    auto parsed = parse_vfio_iommu_backend(wrong);
    ASSERT_FALSE(parsed) << wrong;
    EXPECT_EQ(parsed.error().code, Errc::invalid_argument);
    EXPECT_NE(parsed.error().hint.find("auto, type1 or iommufd"), std::string::npos);
  }
}

// Without an IOMMU: iommufd asked for (by the option or PCIE_VFIO_BACKEND) where it cannot
// do is that error, never the group model in its place; automatic, and type1, go to the
// group model (whose /dev/vfio/vfio this fake tree lacks: its error).
TEST(VfioBackend, NoIommuContainersPickTheirInterfaceAsAsked) {
  constexpr auto kAccepted = DeviceMayReachAllMemory::acknowledged;
  struct Case {
    const char* variable;
    VfioIommuBackend option;
    bool iommu_node;
    std::string_view error_names;  // the node whose failure is reported
    Errc code;
  };
  const Case cases[] = {
      {nullptr, VfioIommuBackend::iommufd, false, "/dev/iommu", Errc::not_found},
      {"iommufd", VfioIommuBackend::automatic, false, "/dev/iommu", Errc::not_found},
      {nullptr, VfioIommuBackend::iommufd, true, "/dev/iommu", Errc::io_error},  // a file, not an iommufd
      {nullptr, VfioIommuBackend::automatic, false, "/dev/vfio/vfio", Errc::not_found},
      {nullptr, VfioIommuBackend::automatic, true, "/dev/vfio/vfio", Errc::not_found},
      {"type1", VfioIommuBackend::automatic, true, "/dev/vfio/vfio", Errc::not_found},
      {"iommufd", VfioIommuBackend::type1, true, "/dev/vfio/vfio", Errc::not_found},  // the option wins
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.variable ? c.variable : "unset") + ", option " + std::string(to_string(c.option)) +
                 (c.iommu_node ? ", /dev/iommu a file" : ", no /dev/iommu"));
    BackendVariable variable(c.variable);
    BackendTree tree = backend_tree(true, c.iommu_node);
    auto container = VfioContainer::open_without_iommu(kAccepted, tree.paths, {}, {.backend = c.option});
    ASSERT_FALSE(container);
    EXPECT_EQ(container.error().code, c.code) << container.error().message();
    EXPECT_NE(container.error().message().find(c.error_names), std::string::npos) << container.error().message();
  }
  BackendVariable wrong("vfio");
  EXPECT_EQ(VfioContainer::open_without_iommu(kAccepted, backend_tree(true, true).paths).error().code,
            Errc::invalid_argument);
}

// A device in VFIO's no-IOMMU mode is reported with what open_without_iommu() would choose
// (here VFIO's group model: no /dev/iommu), never as a device an IOMMU container serves;
// the same device with a real IOMMU group is the IOMMU choice.
TEST(VfioBackend, ANoIommuDeviceGetsTheNoIommuChoice) {
  BackendVariable unset(nullptr);
  BackendTree tree = backend_tree(false, false);
  tree.paths.iommu_groups = tree.tree->directory() + "/sys/kernel/iommu_groups";
  testing::FakeDevice edu = testing::qemu_edu(Bdf{0, 0, 6, 0});
  edu.driver = "vfio-pci";
  edu.iommu_group = 30;
  ASSERT_TRUE(tree.tree->add_device(edu));
  auto with_iommu = choose_vfio_backend_for(edu.bdf, tree.paths);
  ASSERT_TRUE(with_iommu) << with_iommu.error().message();
  EXPECT_EQ(with_iommu->reason.find("no-IOMMU"), std::string::npos) << with_iommu->reason;
  std::filesystem::create_directories(tree.paths.iommu_groups + "/30");
  std::ofstream(tree.paths.iommu_groups + "/30/name") << "vfio-noiommu\n";
  auto without = choose_vfio_backend_for(edu.bdf, tree.paths);
  ASSERT_TRUE(without) << without.error().message();
  EXPECT_EQ(without->backend, VfioIommuBackend::type1);
  EXPECT_NE(without->reason.find("group no-IOMMU mode"), std::string::npos) << without->reason;
  EXPECT_NE(without->reason.find("open_without_iommu"), std::string::npos) << without->reason;
}

// Every situation the automatic choice meets, and what it must pick and say.
TEST(VfioBackend, AutomaticChoiceInEverySituation) {
  BackendVariable unset(nullptr);
  struct Case {
    const char* name;
    bool cdev_class, iommu_node;
    const char* reason;
  };
  const Case cases[] = {
      {"kernel without device cdevs", false, true, "gives VFIO devices no cdevs"},
      {"no /dev/iommu", true, false, "iommufd unusable"},
      {"/dev/iommu is not iommufd", true, true, "not an iommufd node"},
      {"neither", false, false, "gives VFIO devices no cdevs"},
  };
  for (const Case& c : cases) {
    BackendTree tree = backend_tree(c.cdev_class, c.iommu_node);
    auto choice = choose_vfio_backend(tree.paths);
    ASSERT_TRUE(choice) << c.name << ": " << choice.error().message();
    EXPECT_EQ(choice->backend, VfioIommuBackend::type1) << c.name;
    EXPECT_TRUE(choice->reason.starts_with("type1: ")) << c.name << ": " << choice->reason;
    EXPECT_NE(choice->reason.find(c.reason), std::string::npos) << c.name << ": " << choice->reason;
    // The container itself then needs /dev/vfio/vfio, which the fake tree lacks: the type1 error.
    auto container = VfioContainer::open(tree.paths);
    ASSERT_FALSE(container) << c.name;
    EXPECT_EQ(container.error().code, Errc::not_found) << c.name;
    EXPECT_NE(container.error().hint.find("modprobe vfio-pci"), std::string::npos) << container.error().message();
  }
}

TEST(VfioBackend, ForcedIommufdFailsWithWhatToDo) {
  BackendVariable unset(nullptr);
  const VfioContainerOptions iommufd{.backend = VfioIommuBackend::iommufd};
  {
    BackendTree tree = backend_tree(true, false);
    auto container = VfioContainer::open(tree.paths, iommufd);
    ASSERT_FALSE(container) << "no /dev/iommu";
    EXPECT_EQ(container.error().code, Errc::not_found) << container.error().message();
    EXPECT_NE(container.error().hint.find("CONFIG_IOMMUFD"), std::string::npos) << container.error().message();
    EXPECT_NE(container.error().hint.find("PCIE_VFIO_BACKEND=type1"), std::string::npos) << container.error().message();
  }
  {
    BackendTree tree = backend_tree(true, true);
    auto container = VfioContainer::open(tree.paths, iommufd);
    ASSERT_FALSE(container) << "a regular file is no iommufd";
    EXPECT_NE(container.error().message().find("IOMMU_IOAS_ALLOC"), std::string::npos) << container.error().message();
    EXPECT_NE(container.error().reason.find("not an iommufd node"), std::string::npos) << container.error().message();
  }
}

TEST(VfioBackend, VariableForcesABackendAndTheProgramsOptionWins) {
  BackendTree tree = backend_tree(true, false);
  {
    BackendVariable type1("type1");
    auto choice = choose_vfio_backend(tree.paths);
    ASSERT_TRUE(choice) << choice.error().message();
    EXPECT_EQ(choice->backend, VfioIommuBackend::type1);
    EXPECT_EQ(choice->reason, "type1: asked for (PCIE_VFIO_BACKEND=type1)");
  }
  {
    BackendVariable iommufd("iommufd");
    auto choice = choose_vfio_backend(tree.paths);
    ASSERT_FALSE(choice) << "iommufd forced by the variable, and /dev/iommu is missing";
    EXPECT_EQ(choice.error().code, Errc::not_found);
    auto option = choose_vfio_backend(tree.paths, {.backend = VfioIommuBackend::type1});
    ASSERT_TRUE(option) << "the program's own option wins over the variable";
    EXPECT_EQ(option->reason, "type1: asked for (VfioContainerOptions::backend)");
  }
  {
    BackendVariable automatic("auto");
    auto choice = choose_vfio_backend(tree.paths);
    ASSERT_TRUE(choice);
    EXPECT_NE(choice->reason.find("iommufd unusable"), std::string::npos) << choice->reason;
  }
  {
    BackendVariable wrong("iommu");
    auto choice = choose_vfio_backend(tree.paths);
    ASSERT_FALSE(choice);
    EXPECT_EQ(choice.error().code, Errc::invalid_argument);
    EXPECT_EQ(choice.error().object, "PCIE_VFIO_BACKEND=iommu") << choice.error().message();
    auto container = VfioContainer::open(tree.paths);
    ASSERT_FALSE(container);
    EXPECT_EQ(container.error().code, Errc::invalid_argument) << "a typo is refused, not ignored";
  }
}

// Empty handles, for a driver's structs built step by step: every call on one fails with
// invalid_argument (or returns an empty value) instead of touching a null state.
TEST(VfioEmptyHandles, FailCleanlyAndSayWhy) {
  static_assert(std::is_default_constructible_v<VfioContainer> && std::is_default_constructible_v<VfioDevice> &&
                std::is_default_constructible_v<DmaBuffer>);
  VfioContainer container;
  EXPECT_FALSE(container.valid());
  EXPECT_EQ(container.fd(), -1);
  EXPECT_TRUE(container.attached_groups().empty());
  EXPECT_TRUE(container.iova_ranges().empty());
  EXPECT_FALSE(container.ioas_id().has_value());
  EXPECT_FALSE(container.without_iommu());
  auto opened = container.open_device(Bdf{0, 3, 0, 0});
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, Errc::invalid_argument);
  EXPECT_NE(opened.error().message().find("empty"), std::string::npos) << opened.error().message();
  auto allocator = DmaAllocator::create(container);
  ASSERT_FALSE(allocator);
  EXPECT_EQ(allocator.error().code, Errc::invalid_argument);

  VfioDevice device;
  EXPECT_FALSE(device.valid());
  EXPECT_EQ(device.bdf(), Bdf{});
  EXPECT_EQ(device.fd(), -1);
  EXPECT_EQ(device.iommu_group(), -1);
  EXPECT_EQ(device.backend_name(), "VFIO (empty)");
  const Device& as_device = device;
  const std::vector<Error> errors = {
      as_device.open_bar(0).error(),
      device.open_region(kVfioConfigRegion).error(),
      device.region_info(0).error(),
      as_device.vector_count(IrqKind::msi).error(),
      as_device.enable_interrupts(IrqKind::msi, 1).error(),
      VfioInterrupts::enable(device, IrqKind::request, 1).error(),
      as_device.dma_allocator().error(),
      as_device.enable_bus_master(true).error(),
      map_peer_bar(device, device, 2, 0, 4096).error(),
  };
  for (const Error& error : errors) {
    EXPECT_EQ(error.code, Errc::invalid_argument) << error.message();
    EXPECT_NE(error.message().find("empty"), std::string::npos) << error.message();
  }
  EXPECT_FALSE(device.reset());
  auto watcher = RemovalWatcher::start(device, [](const RemovalNotice&) {});
  ASSERT_FALSE(watcher) << "a watcher on an empty device would never hear the request IRQ";
  EXPECT_EQ(watcher.error().code, Errc::invalid_argument);
  testing::expect_empty_device(device);
  VfioDevice moved = std::move(device);
  EXPECT_FALSE(moved.valid());

  VfioRegion region;
  testing::expect_empty_region(region);
  EXPECT_FALSE(region.mapped());
  EXPECT_FALSE(region.mmio());
  EXPECT_FALSE(region.mmio_at(0, 4));
  EXPECT_EQ(region.info().size, 0u);
  VfioInterrupts interrupts;
  testing::expect_empty_interrupts(interrupts);

  DmaBuffer buffer;
  EXPECT_FALSE(buffer.valid());
  EXPECT_EQ(buffer.size(), 0u);
  EXPECT_EQ(buffer.data(), nullptr);
  EXPECT_TRUE(buffer.bytes().empty());
  EXPECT_FALSE(buffer.physical_address().has_value());
  int local = 0;
  EXPECT_FALSE(buffer.iova_of(&local));
  buffer.sync_for_device();
  buffer.sync_for_cpu();
  EXPECT_TRUE(buffer.release());
}


// An empty peer window (default-constructed, moved from, released): no address, and every
// call that needs one fails instead of handing out address 0.
TEST(PeerDmaEmptyHandles, FailCleanlyAndSayWhy) {
  PeerDmaWindow window;
  EXPECT_FALSE(window.valid());
  EXPECT_EQ(window.bus_address().value, 0u);
  EXPECT_EQ(window.size(), 0u);
  EXPECT_EQ(window.name(), "");
  auto translated = window.bus_address_of(0);
  ASSERT_FALSE(translated);
  EXPECT_EQ(translated.error().code, Errc::invalid_argument);
  EXPECT_NE(translated.error().message().find("empty"), std::string::npos) << translated.error().message();
  EXPECT_TRUE(window.release()) << "releasing nothing is harmless";
  PeerDmaWindow moved = std::move(window);
  EXPECT_FALSE(moved.valid());
  for (PeerDmaPath path : {PeerDmaPath::iommu_bar_mapping, PeerDmaPath::iommufd_dma_buf, PeerDmaPath::bus_address}) {
    EXPECT_NE(to_string(path), "?");
  }
}

// The MSI-X check over config snapshots of every shape: a type 0 header whose capability
// list leads to MSI-X at 0x40 (table of `entries` entries at `table` in BAR `table_bar`, PBA
// at `pba` in BAR `pba_bar`), or something worse.
std::vector<std::uint8_t> msix_config(unsigned entries, unsigned table_bar, std::uint32_t table, unsigned pba_bar,
                                      std::uint32_t pba) {
  std::vector<std::uint8_t> config(256, 0);
  const auto put32 = [&](std::size_t at, std::uint32_t value) {
    for (unsigned i = 0; i < 4; ++i) config[at + i] = static_cast<std::uint8_t>(value >> (8 * i));
  };
  put32(0x00, 0x11111af4);  // IDs
  config[0x06] = 0x10;       // status: capability list
  config[0x34] = 0x40;
  config[0x40] = cap::kMsiX;
  config[0x41] = 0;
  put32(0x40, 0x11 | ((entries - 1) << 16));
  put32(0x44, table | table_bar);
  put32(0x48, pba | pba_bar);
  return config;
}

TEST(PeerDmaChecks, WindowsOverAnMsixTableOrPbaAreRefused) {
  // 64 entries: a 1 KiB table at BAR1 0x2000, an 8-byte PBA at BAR1 0x3000.
  const std::vector<std::uint8_t> config = msix_config(64, 1, 0x2000, 1, 0x3000);
  struct Case {
    const char* name;
    unsigned bar;
    std::uint64_t offset, length;
    bool refused;
    const char* names;
  };
  const Case cases[] = {
      {"the page of the table", 1, 0x2000, 0x1000, true, "MSI-X table"},
      {"a window that ends on the table's first byte", 1, 0x1000, 0x1001, true, "MSI-X table"},
      {"a window that ends before it", 1, 0x1000, 0x1000, false, ""},
      {"the page of the PBA", 1, 0x3000, 0x1000, true, "pending-bit array"},
      {"a large window over both", 1, 0, 0x100000, true, "MSI-X table"},
      {"after both", 1, 0x4000, 0x1000, false, ""},
      {"the same offsets in another BAR", 2, 0x2000, 0x2000, false, ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto checked = detail::check_window_avoids_msix(config, c.bar, c.offset, c.length, "window");
    if (!c.refused) {
      EXPECT_TRUE(checked) << checked.error().message();
      continue;
    }
    ASSERT_FALSE(checked);
    EXPECT_EQ(checked.error().code, Errc::invalid_argument);
    EXPECT_NE(checked.error().reason.find(c.names), std::string::npos) << checked.error().message();
  }
  // 2048 entries (32 KiB of table) in BAR0: the table's size comes from Message Control.
  EXPECT_FALSE(detail::check_window_avoids_msix(msix_config(2048, 0, 0, 4, 0), 0, 0x7000, 0x1000, "w"));
  EXPECT_TRUE(detail::check_window_avoids_msix(msix_config(2048, 0, 0, 4, 0), 0, 0x8000, 0x1000, "w"));

  // No MSI-X, no capability list: nothing to avoid.
  std::vector<std::uint8_t> plain = config;
  plain[0x06] = 0;
  EXPECT_TRUE(detail::check_window_avoids_msix(plain, 1, 0x2000, 0x1000, "w"));
  // A list that loops, a pointer into the header, a snapshot cut short, all ones: refused.
  std::vector<std::uint8_t> looping = config;
  looping[0x41] = 0x40;
  std::vector<std::uint8_t> into_header = config;
  into_header[0x34] = 0x20;
  const std::vector<std::uint8_t> short_snapshot(config.begin(), config.begin() + 0x42);
  const std::vector<std::uint8_t> all_ones(256, 0xff);
  const std::pair<const std::vector<std::uint8_t>*, Errc> broken[] = {
      {&looping, Errc::malformed}, {&into_header, Errc::malformed}, {&short_snapshot, Errc::malformed},
      {&all_ones, Errc::device_removed}};
  for (const auto& [snapshot, code] : broken) {
    auto checked = detail::check_window_avoids_msix(*snapshot, 3, 0, 0x1000, "w");
    ASSERT_FALSE(checked) << "a list that cannot be read must not pass";
    EXPECT_EQ(checked.error().code, code) << checked.error().message();
  }
}

// type1 maps a window as it maps a buffer (the container's DMA backend), but its failures
// are the window's: the error names the window, not a DMA buffer or a bare IOVA, and gives
// no RLIMIT_MEMLOCK hint (BAR pages are not pinned or counted, vfio_iommu_type1 skips
// reserved PFNs). EFAULT is the peer's BAR not reachable through its mapping (memory
// decoding off, or a reset in progress: vfio-pci's fault handler refuses): device_disabled.
class FailingType1Backend final : public DmaBackend {
 public:
  explicit FailingType1Backend(int err) : errno_(err) {}
  std::string_view name() const override { return "VFIO type1 IOMMU"; }
  bool bus_addresses_are_physical() const override { return false; }
  Result<BusAddress> map(const Mapping&, const DmaMapRequest&) override {
    // What the type1 backend answers: its buffer wording, its memlock hint on ENOMEM.
    Error error = make_errno_error(errno_, "map DMA buffer", "IOVA 0x100000 (VFIO type1 IOMMU)");
    if (errno_ == ENOMEM) {
      error.code = Errc::permission_denied;
      error.hint = "raise it to at least 8192 bytes (ulimit -l 8, or LimitMEMLOCK= for a service), or run with "
                   "CAP_IPC_LOCK";
    }
    if (errno_ == ENOSPC) {
      error.code = Errc::busy;
      error.hint = "use fewer, larger buffers (or pool small ones), or raise vfio_iommu_type1's dma_entry_limit";
    }
    return std::unexpected(error);
  }
  bool retry_with_other_memory(const Error&) const override { return false; }
  Result<void> unmap(BusAddress, const Mapping&) override { return {}; }
  std::uint64_t mapped_bytes() const override { return 0; }

 private:
  int errno_;
};

TEST(PeerDmaChecks, Type1WindowFailuresNameTheWindow) {
  detail::VfioDeviceState peer;
  const int memfd = ::memfd_create("peer-bar", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  peer.fd = UniqueFd(memfd);
  ASSERT_EQ(::ftruncate(memfd, 2 * 4096), 0);
  detail::PeerWindowRequest request;
  request.peer = &peer;
  request.bar = 2;
  request.region = VfioRegionInfo{.index = 2, .size = 8192, .file_offset = 0, .readable = true, .writable = true,
                                  .mappable = true, .mmap_areas = {{0, 8192}}};
  request.length = 4096;
  request.dma.device_reads = request.dma.device_writes = true;
  request.name = "0000:00:04.0 BAR2 [0x0, 0x1000)";
  struct Case {
    int err;
    Errc code;
    const char* hint_says;  // nullptr: no hint
  };
  for (const Case& c : {Case{EFAULT, Errc::device_disabled, "memory decoding"}, Case{ENOMEM, Errc::io_error, nullptr},
                        Case{ENOSPC, Errc::busy, "dma_entry_limit"}, Case{EINVAL, Errc::io_error, nullptr}}) {
    SCOPED_TRACE(c.err);
    auto mapped = detail::map_bar_through_iommu(std::make_shared<FailingType1Backend>(c.err), request);
    ASSERT_FALSE(mapped);
    const Error& error = mapped.error();
    EXPECT_EQ(error.code, c.code) << error.message();
    EXPECT_EQ(error.operation, "map peer BAR");
    EXPECT_TRUE(error.object.starts_with(request.name)) << error.object;
    EXPECT_EQ(error.sys_errno, c.err);
    EXPECT_EQ(error.message().find("RLIMIT_MEMLOCK"), std::string::npos) << error.message();
    EXPECT_EQ(error.message().find("ulimit"), std::string::npos) << error.message();
    EXPECT_EQ(error.message().find("DMA buffer"), std::string::npos) << error.message();
    if (c.hint_says != nullptr) {
      EXPECT_NE(error.hint.find(c.hint_says), std::string::npos) << error.message();
    }
  }
  // An error of the backend's own (no errno: the IOVA space below the limit is used up)
  // keeps its code and hint, under the window's name.
  class FullBackend final : public DmaBackend {
   public:
    std::string_view name() const override { return "VFIO type1 IOMMU"; }
    bool bus_addresses_are_physical() const override { return false; }
    Result<BusAddress> map(const Mapping&, const DmaMapRequest&) override {
      return std::unexpected(make_error(Errc::out_of_range, "allocate IOVA", "4096 bytes below 0xfffffff",
                                        "no free IOVA range", "free DMA buffers, or raise the DMA mask"));
    }
    bool retry_with_other_memory(const Error&) const override { return false; }
    Result<void> unmap(BusAddress, const Mapping&) override { return {}; }
    std::uint64_t mapped_bytes() const override { return 0; }
  };
  auto full = detail::map_bar_through_iommu(std::make_shared<FullBackend>(), request);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::out_of_range);
  EXPECT_EQ(full.error().operation, "map peer BAR");
  EXPECT_EQ(full.error().hint, "free DMA buffers, or raise the DMA mask");
  EXPECT_NE(full.error().object.find("below 0xfffffff"), std::string::npos) << full.error().message();
}

// Without an IOMMU a window's address comes from the peer's own BAR registers, which an
// SR-IOV VF does not have (they read zero; its Memory Space Enable is the PF's): refused as
// not_supported naming the VF, never "decodes no memory" or a translation at 0x0.
TEST(PeerDmaChecks, AVirtualFunctionsBarAddressIsNotGuessed) {
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree) << tree.error().message();
  const Bdf pf{0, 2, 0, 0}, vf{0, 2, 2, 0};
  ASSERT_TRUE(tree->add_device(testing::sriov_pf(pf, 4, 1)));
  ASSERT_TRUE(tree->add_device(testing::sriov_vf(vf, pf)));
  auto address = detail::bar_bus_address(tree->paths(), vf, 0);
  ASSERT_FALSE(address);
  EXPECT_EQ(address.error().code, Errc::not_supported) << address.error().message();
  EXPECT_NE(address.error().reason.find("virtual function"), std::string::npos) << address.error().message();
  EXPECT_TRUE(detail::bar_bus_address(tree->paths(), testing::kVmEdu, 0, /*require_decoding=*/false))
      << "a function's own BAR is read";
}

TEST(PeerDmaChecks, HostBridgeDirectoriesAsSysfsNamesThem) {
  for (const char* bridge : {"pci0000:00", "pci0001:3a", "pci10000:e0", "pciffff:ff"}) {
    EXPECT_TRUE(detail::is_host_bridge_directory(bridge)) << bridge;
  }
  for (const char* other : {"pci", "pci0000", "pci000:00", "pci0000:0", "pci0000:000", "pcie@1000", "pci-host",
                            "pci0000:0g", "PCI0000:00", "0000:00:1c.0", "devices", ""}) {
    EXPECT_FALSE(detail::is_host_bridge_directory(other)) << other;
  }
}

}  // namespace
}  // namespace pcie
