// pcie-fake-tree: writes a fake sysfs tree with the devices of the test VM (QEMU's edu,
// ivshmem-plain, pci-testdev and nvme) and prints the sysfs directory to pass to
// `pciectl --sysfs`. Nothing in it is a real device: mapping and writing its BAR files is
// safe on any machine.
#include <fmt/format.h>

#include <cstdlib>

#include "pcie/testing/fake_sysfs.h"

int main(int argc, char** argv) {
  if (argc > 2 || (argc == 2 && std::string_view(argv[1]).starts_with("-"))) {
    fmt::print(stderr, "usage: pcie-fake-tree [PARENT_DIR]\n  writes a fake sysfs tree under PARENT_DIR "
                       "($TMPDIR or /tmp by default) and prints its sysfs directory\n");
    return 2;
  }
  if (argc == 2) setenv("TMPDIR", argv[1], 1);
  auto tree = pcie::testing::make_vm_tree();
  if (!tree) {
    fmt::print(stderr, "pcie-fake-tree: error: {}\n", tree.error().message());
    return 1;
  }
  fmt::print("{}/sys\n", tree->release());
  return 0;
}
