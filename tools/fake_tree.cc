// pcie-fake-tree: writes a fake sysfs tree with the devices of the test VM (QEMU's edu,
// ivshmem-plain, pci-testdev and nvme) and prints the sysfs directory to pass to
// `pciectl --sysfs`. Nothing in it is a real device: mapping and writing its BAR files is
// safe on any machine.
#include <fmt/format.h>

#include <cstdio>
#include <fstream>

#include "pcie/testing/fake_sysfs.h"

int main(int argc, char** argv) {
  if (argc > 2 || (argc == 2 && std::string_view(argv[1]).starts_with("-"))) {
    fmt::print(stderr, "usage: pcie-fake-tree [PARENT_DIR]\n  writes a fake sysfs tree under PARENT_DIR "
                       "($TMPDIR or /tmp by default) and prints its sysfs directory\n");
    return 2;
  }
  if (argc == 2) setenv("TMPDIR", argv[1], 1);
  auto tree = pcie::testing::FakeSysfs::create();
  if (!tree) {
    fmt::print(stderr, "pcie-fake-tree: error: {}\n", tree.error().message());
    return 1;
  }
  const pcie::Bdf edu{0, 0, 3, 0};
  for (const auto& device : {pcie::testing::qemu_edu(edu), pcie::testing::qemu_ivshmem({0, 0, 4, 0}),
                             pcie::testing::qemu_pci_testdev({0, 0, 5, 0}), pcie::testing::qemu_nvme({0, 1, 0, 0})}) {
    if (auto added = tree->add_device(device); !added) {
      fmt::print(stderr, "pcie-fake-tree: error: {}\n", added.error().message());
      return 1;
    }
  }
  // edu answers its identification register with 0x010000ed (QEMU hw/misc/edu.c).
  std::fstream bar(tree->device_dir(edu) + "/resource0", std::ios::in | std::ios::out | std::ios::binary);
  const unsigned char id[] = {0xed, 0x00, 0x00, 0x01};
  bar.write(reinterpret_cast<const char*>(id), sizeof id);
  if (!bar) {
    fmt::print(stderr, "pcie-fake-tree: error: cannot write edu's BAR file\n");
    return 1;
  }
  fmt::print("{}/sys\n", tree->release());
  return 0;
}
