"""The `pcie` Python module inside the test VM (tests/vm:vm_python_test), driving QEMU's edu
at 00:06.0 (bound to vfio-pci) the way a lab script would: discovery, registers through
the path the opener picks, factorial by MSI with a timeout, a DMA round trip through a
numpy-backed buffer, edu DMA into ivshmem's BAR through a peer window, and lifetimes when
Python drops objects in any order."""
import gc
import unittest

import pcie
import numpy as np

from edu_dma import FACTORIAL, ID, IRQ_ACK, IRQ_STATUS, LIVENESS, STATUS, copy_by_dma, dma_round_trip

EDU = "0000:00:06.0"
IVSHMEM = "0000:00:04.0"  # bound to vfio-pci too: the peer whose BAR2 edu writes into
TRANSFER = 4000  # QEMU 7.2's edu aborts on a transfer of its whole 4096-byte buffer


class GuestPython(unittest.TestCase):
    def test_discovery_finds_both_edus(self):
        edus = [d["bdf"] for d in pcie.devices(id="1234:11e8")]
        self.assertIn("0000:00:03.0", edus)
        self.assertIn(EDU, edus)
        self.assertEqual(pcie.describe(EDU)["driver"], "vfio-pci")

    def test_registers_through_the_opener(self):
        bar = pcie.open_bar(EDU, 0, writable=True)
        self.assertEqual(bar.path, "VFIO")  # bound to vfio-pci: VFIO first
        self.assertEqual(bar.read(ID), 0x010000ED)
        bar.write(LIVENESS, 0x12345678, 32)
        self.assertEqual(bar.read(LIVENESS), 0xEDCBA987)
        del bar
        gc.collect()  # releases the group for the tests below

    def test_factorial_by_msi_and_dma_round_trip(self):
        device = pcie.VfioDevice.open(EDU)
        self.assertEqual(device.backend, "VFIO (IOMMU)")
        regs = device.bar(0)
        self.assertEqual(regs.read(ID), 0x010000ED)

        irq = device.interrupts("msi", 1)
        self.assertEqual(irq.wait(0, timeout=0.05), 0)  # nothing pending: the timeout
        device.enable_bus_master(True)  # an MSI is a memory write by the device
        regs.write(STATUS, 0x80, 32)  # raise an interrupt when the factorial is done
        regs.write(FACTORIAL, 10, 32)
        self.assertGreaterEqual(irq.wait(0, timeout=2.0), 1)
        self.assertEqual(regs.read(FACTORIAL), 3628800)
        regs.write(IRQ_ACK, regs.read(IRQ_STATUS), 32)

        buffer = device.dma_buffer(4096, dma_mask_bits=28, huge_pages=False)
        self.assertLess(buffer.bus_address + buffer.size - 1, 1 << 28)
        self.assertIsNone(buffer.physical_address)  # behind the IOMMU: an IOVA only
        data, pattern = dma_round_trip(regs, buffer, TRANSFER, multiplier=7)
        device.enable_bus_master(False)

        # Drop the device first, then the interrupts and the register view; the numpy array
        # keeps its buffer (and the buffer its IOMMU mapping) until it goes last.
        del device, irq, regs, buffer
        gc.collect()
        self.assertEqual(int(data[7]), int(pattern[7]))
        del data
        gc.collect()
        again = pcie.VfioDevice.open(EDU)  # everything was released: the group opens again
        self.assertEqual(again.bar(0).read(ID), 0x010000ED)

    def test_edu_dmas_into_ivshmems_bar_through_a_peer_window(self):
        device = pcie.VfioDevice.open(EDU)
        ivshmem = device.open_peer(IVSHMEM)
        window = device.map_peer_bar(ivshmem, 2, 0x10000, 4096, dma_mask_bits=28)
        self.assertEqual(window.path, "type1 (the BAR's mapping)")
        self.assertEqual(window.size, 4096)
        self.assertIn("0000:00:04.0 BAR2 [0x10000, 0x11000)", window.name)
        self.assertLess(window.bus_address + 4095, 1 << 28)
        window.check()  # decodes memory: no error
        with self.assertRaises(pcie.Error) as caught:
            window.bus_address_of(4000, 200)  # past the window's end
        self.assertEqual(caught.exception.code, "out_of_range")

        buffer = device.dma_buffer(4096, dma_mask_bits=28)
        data = buffer.array(np.uint8)
        data[:] = (np.arange(4096) * 13 % 251 + 1).astype(np.uint8)
        buffer.sync_for_device()
        device.enable_bus_master(True)
        regs = device.bar(0)
        copy_by_dma(regs, buffer.bus_address, window.bus_address_of(0x100, 3000), 3000)  # RAM -> edu -> BAR
        bar2 = ivshmem.bar(2)
        seen = np.array([bar2.read(0x10000 + i, 8) for i in range(0x100 - 4, 0x100 + 3000 + 4)], dtype=np.uint8)
        self.assertTrue(np.array_equal(seen[4:-4], data[:3000]), "ivshmem's BAR does not hold what edu wrote")
        self.assertTrue(np.all(seen[:4] == 0) and np.all(seen[-4:] == 0), "edu wrote outside the transfer")
        device.enable_bus_master(False)

        window.release()
        self.assertFalse(window.valid)
        with self.assertRaises(pcie.Error) as caught:
            window.bus_address_of(0)
        self.assertEqual(caught.exception.code, "invalid_argument")
        with self.assertRaises(pcie.Error) as caught:
            device.map_peer_bar(ivshmem, 2, 0x10001, 4096)  # not a page multiple
        self.assertEqual(caught.exception.code, "invalid_argument")
        # Dropped in any order: the window keeps the peer open until it goes.
        again = device.map_peer_bar(ivshmem, 2, 0, 4096)
        del ivshmem, device, bar2, regs
        gc.collect()
        self.assertTrue(again.valid)
        del again, buffer, data
        gc.collect()

    def test_errors_carry_the_library_hint(self):
        with self.assertRaises(pcie.Error) as caught:
            pcie.VfioDevice.open("0000:00:03.0")  # not bound to vfio-pci
        self.assertIn("vfio-pci", caught.exception.hint + str(caught.exception))
        holder = pcie.VfioDevice.open(EDU)
        with self.assertRaises(pcie.Error) as caught:
            pcie.VfioDevice.open(EDU)  # the group is held
        self.assertEqual(caught.exception.code, "busy")
        del holder


if __name__ == "__main__":
    unittest.main()
