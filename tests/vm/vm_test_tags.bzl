"""Which VM tests ./scripts/test runs in which configuration.

Every VM test runs under --config=asan: the device paths only the VM reaches (VFIO regions
and interrupts, DMA through a real IOMMU, hot unplug) are where a memory error would hide.
The plain configuration runs the ones named here as well, for the optimized build users
run: the copy kernels on every CPU model (the compiler must not merge or split their MMIO
stores), one suite per way to a BAR and per kind of device (sysfs with the IOMMU, VFIO
type1 with the edu driver, NVMe, the e1000e NIC through VFIO), the
threading contract (whose plain build is the ThreadSanitizer one), and the Python tests (tagged plain_only: Python cannot load an ASan-built extension). The others
carry the tag asan_only, which scripts/test's plain run filters out; `bazel test` without
that filter runs them in any configuration.
"""

_PLAIN_TOO = [
    "vm_copy_test_qemu64",
    "vm_copy_test_nehalem",
    "vm_copy_test_max",
    "vm_sysfs_test",
    "vm_vfio_test",
    "vm_nvme_test",
    "vm_e1000e_vfio_test",
    "vm_threads_test",
]

def vm_test_tags(name):
    return [] if name in _PLAIN_TOO else ["asan_only"]
