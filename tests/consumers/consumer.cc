// A program as a user outside this repository writes it, built by tests/install_test with
// CMake, with pkg-config and make, and with Bazel through local_repository. It checks the
// two things a broken install gets wrong silently: libpci bound to the wrong ABI (a class
// filter then matches nothing), and a header/library version mismatch. Prints "consumer ok".
#include <pcie/discovery.h>
#include <pcie/sysfs_bar.h>
#include <pcie/testing/fake_sysfs.h>
#include <pcie/version.h>

#include <cstdio>
#include <cstring>

int main() {
  if (std::strcmp(pcie::library_version(), PCIE_VERSION) != 0) {
    std::fprintf(stderr, "headers say %s, library says %s\n", PCIE_VERSION, pcie::library_version());
    return 1;
  }
  auto tree = pcie::testing::make_vm_tree();
  if (!tree) {
    std::fprintf(stderr, "%s\n", tree.error().message().c_str());
    return 1;
  }
  pcie::DiscoveryOptions options;
  options.paths = tree->paths();
  options.id_filter = "::0108";  // NVM Express controllers: needs libpci's 3.8 filter ABI
  auto devices = pcie::discover(options);
  if (!devices) {
    std::fprintf(stderr, "%s\n", devices.error().message().c_str());
    return 1;
  }
  if (devices->size() != 1 || (*devices)[0].bdf != pcie::testing::kVmNvme) {
    std::fprintf(stderr, "class filter ::0108 matched %zu devices, expected only the nvme\n", devices->size());
    return 1;
  }
  auto bar = pcie::open_sysfs_bar(tree->paths(), pcie::testing::kVmEdu, 0);
  if (!bar) {
    std::fprintf(stderr, "%s\n", bar.error().message().c_str());
    return 1;
  }
  auto id = (*bar)->read(pcie::Width::bits32, 0);
  if (!id || *id != 0x010000ed) {
    std::fprintf(stderr, "edu id register: %s\n", id ? "wrong value" : id.error().message().c_str());
    return 1;
  }
  std::printf("consumer ok: pcie %s, nvme at %s\n", PCIE_VERSION, (*devices)[0].bdf.to_string().c_str());
  return 0;
}
