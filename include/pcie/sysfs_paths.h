// Where the library looks for sysfs. Every path is configurable so tests (and users'
// driver tests) can point the library at a fake tree; see pcie/testing/fake_sysfs.h.
#pragma once

#include <string>

#include "pcie/bdf.h"

namespace pcie {

// The files and directories the library reads and writes, defaulting to a real machine's
// /sys and /proc. Plain strings: nothing is checked until a call uses them.
struct SysfsPaths {
  // The PCI bus directory; libpci's `sysfs.path` parameter. Devices live in
  // <pci_root>/devices/<bdf>/.
  std::string pci_root = "/sys/bus/pci";
  // The kernel lockdown state file, read to explain refused mappings.
  std::string lockdown_file = "/sys/kernel/security/lockdown";
  // What the unbind guard (pcie/binding.h) reads to find the machine's own uses of a
  // device: every block device and network interface (whose real paths show which PCI
  // device they sit below, at any depth), the mount table with device numbers, and the
  // swap areas.
  std::string class_block = "/sys/class/block";
  std::string class_net = "/sys/class/net";             // network interfaces, for the guard
  std::string mountinfo_file = "/proc/self/mountinfo";  // mount table (proc(5) mountinfo)
  std::string swaps_file = "/proc/swaps";               // active swap areas
  // The memory types the kernel granted mappings of physical ranges (x86 PAT; root and
  // debugfs only), and the kernel command line (to tell "booted with nopat").
  std::string pat_memtype_list = "/sys/kernel/debug/x86/pat_memtype_list";
  std::string kernel_cmdline = "/proc/cmdline";  // the kernel's boot command line
  // The running kernel's release ("7.3.4"), read where a feature depends on it.
  std::string kernel_release_file = "/proc/sys/kernel/osrelease";
  // The kernel's resource tree (pcie/iomem.h), read to name who claimed a range.
  std::string iomem_file = "/proc/iomem";

  // <pci_root>/devices/<bdf>
  std::string device_dir(const Bdf& bdf) const;

  // Every path above below a sysfs mount `sys` ("/sys" on a machine, "<dir>/sys" in a fake
  // tree) and a procfs mount `proc` ("/proc", "<dir>/proc"). The one place that knows where
  // each file lies under the mounts: pciectl's --sysfs/--proc, the Python module and
  // FakeSysfs::paths() all build their paths here. Never fails.
  static SysfsPaths under(const std::string& sys, const std::string& proc);
};

}  // namespace pcie
