"""The `pcie` Python module inside the test VM booted without an IOMMU
(tests/vm:vm_python_noiommu_uio_test and vm_python_noiommu_vfio_test): QEMU's edu at 00:03.0
(64-bit DMA mask) is bound to uio_pci_generic or to vfio-pci in VFIO's no-IOMMU mode, and
the script drives it through whichever opener its driver calls for, as a lab script on a
board without an IOMMU would: the acknowledgement, factorial by interrupt (INTx through
/dev/uioN, MSI through VFIO), a DMA round trip at a physical address that the script checks
against pagemap, and lifetimes when Python drops objects in any order."""
import gc
import os
import unittest

import numpy as np

import pcie
from edu_dma import FACTORIAL, ID, IRQ_ACK, IRQ_STATUS, STATUS, dma_round_trip

EDU = "0000:00:03.0"
TRANSFER = 3000


def driver():
    return pcie.describe(EDU)["driver"]


def open_edu(acknowledged=True):
    if driver() == "uio_pci_generic":
        return pcie.UioDevice.open(EDU, device_may_reach_all_memory=acknowledged)
    return pcie.VfioDevice.open(EDU, no_iommu=True, device_may_reach_all_memory=acknowledged)


def physical_address_of(array):
    """The physical address of an array's first byte, from /proc/self/pagemap (root)."""
    address = array.__array_interface__["data"][0]
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(address // page * 8)
        entry = int.from_bytes(pagemap.read(8), "little")
    assert entry >> 63, "page not present"
    return (entry & ((1 << 55) - 1)) * page + address % page


class GuestPythonNoIommu(unittest.TestCase):
    def test_the_driver_is_a_no_iommu_one(self):
        self.assertIn(driver(), ("uio_pci_generic", "vfio-pci"))

    def test_dma_needs_the_acknowledgement(self):
        if driver() == "uio_pci_generic":
            device = open_edu(acknowledged=False)  # BARs and INTx without it; no DMA
            self.assertEqual(device.bar(0).read(ID), 0x010000ED)
            with self.assertRaises(pcie.Error) as caught:
                device.dma_buffer(4096)
            self.assertEqual(caught.exception.code, "not_supported")
            del device
        else:
            with self.assertRaises(pcie.Error) as caught:
                open_edu(acknowledged=False)
            self.assertEqual(caught.exception.code, "invalid_argument")
        self.assertIn("device_may_reach_all_memory", caught.exception.hint + str(caught.exception))
        gc.collect()

    def test_factorial_by_interrupt_and_dma_at_a_physical_address(self):
        device = open_edu()
        self.assertTrue(device.without_iommu)
        self.assertIn(device.backend, ("UIO (uio_pci_generic)", "VFIO (no IOMMU)"))
        regs = device.bar(0)
        self.assertEqual(regs.read(ID), 0x010000ED)

        kind = "intx" if driver() == "uio_pci_generic" else "msi"
        irq = device.interrupts(kind, 1)
        self.assertEqual(irq.wait(0, timeout=0.05), 0)  # nothing pending: the timeout
        device.enable_bus_master(True)
        regs.write(STATUS, 0x80, 32)  # raise an interrupt when the factorial is done
        regs.write(FACTORIAL, 8, 32)
        self.assertGreaterEqual(irq.wait(0, timeout=2.0), 1)
        self.assertEqual(regs.read(FACTORIAL), 40320)
        regs.write(IRQ_ACK, regs.read(IRQ_STATUS), 32)
        irq.rearm(0)  # INTx: uio_pci_generic masked it in the command register
        regs.write(STATUS, 0, 32)

        buffer = device.dma_buffer(4096, huge_pages=False)
        data = buffer.array(np.uint8)
        self.assertEqual(buffer.physical_address, buffer.bus_address)  # no IOMMU: the device sees RAM
        self.assertEqual(physical_address_of(data), buffer.bus_address)
        data, pattern = dma_round_trip(regs, buffer, TRANSFER, multiplier=13)
        device.enable_bus_master(False)

        # The device goes first; the array keeps its (locked) buffer until it goes last.
        del device, irq, regs, buffer
        gc.collect()
        self.assertEqual(int(data[5]), int(pattern[5]))
        del data
        gc.collect()
        again = open_edu()  # everything was released: the device opens again
        self.assertEqual(again.bar(0).read(ID), 0x010000ED)


if __name__ == "__main__":
    unittest.main()
