"""Host tests of the `pcie` Python module on a fake sysfs tree (pcie-fake-tree): discovery,
BAR access by width, numpy views and their width rules and lifetimes, the copy path, and
errors as pcie.Error, and the UIO and no-IOMMU openers (their refusals, UIO's INTx counts
from a fake /dev/uio0). DMA needs a real device: the VM runs that (vm_python_test, and
vm_python_noiommu_* on uio_pci_generic and VFIO's no-IOMMU mode).
"""
import gc
import json
import os
import re
import subprocess
import unittest

import numpy as np

import pcie

FAKE_TREE_TOOL = os.environ["PCIE_FAKE_TREE"]
VERSION_HEADER = os.environ["PCIE_VERSION_HEADER"]
PCIECTL = os.environ["PCIE_PCIECTL"]


class FakeTree(unittest.TestCase):
    def setUp(self):
        out = subprocess.run([FAKE_TREE_TOOL, os.environ.get("TEST_TMPDIR", "/tmp")], check=True,
                             capture_output=True, text=True).stdout
        self.sysfs = out.strip().splitlines()[-1]
        self.tree = os.path.dirname(self.sysfs)

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.tree], check=False)

    def bar(self, bdf="0000:00:03.0", index=0, **kwargs):
        return pcie.open_bar(bdf, index, sysfs=self.sysfs, dev_vfio=self.tree + "/dev/vfio", **kwargs)


class Version(unittest.TestCase):
    def test_version_matches_the_header(self):
        header = open(VERSION_HEADER).read()
        self.assertEqual(pcie.__version__, re.search(r'#define PCIE_VERSION "([^"]+)"', header).group(1))


class Discovery(FakeTree):
    def test_devices_lists_the_tree(self):
        bdfs = [d["bdf"] for d in pcie.devices(sysfs=self.sysfs)]
        self.assertEqual(bdfs, ["0000:00:03.0", "0000:00:04.0", "0000:00:05.0", "0000:01:00.0"])

    def test_class_filter_needs_the_right_libpci_abi(self):
        nvme = pcie.devices(id="::0108", sysfs=self.sysfs)
        self.assertEqual([d["bdf"] for d in nvme], ["0000:01:00.0"])

    def test_describe(self):
        edu = pcie.describe("00:03.0", sysfs=self.sysfs)
        self.assertEqual((edu["vendor_id"], edu["device_id"]), (0x1234, 0x11E8))
        self.assertEqual(edu["bars"][0]["size"], 1 << 20)
        self.assertEqual(edu["bars"][0]["type"], "memory")
        self.assertEqual((edu["class"], edu["class_id"], edu["prog_if"]), (0x00FF00, 0x00FF, 0))

    def test_dicts_are_pciectls_json_with_integer_ids(self):
        # One record for both front ends: every field of `pciectl info --json` but its own
        # probes (VFIO nodes, granted memory types), the same values, IDs as integers.
        pciectl_only = {"vfio", "memory_types_verified", "memory_types_note"}
        ids = {"vendor_id", "device_id", "subsystem_vendor_id", "subsystem_id", "class", "class_id", "prog_if"}
        for device in pcie.devices(sysfs=self.sysfs):
            with self.subTest(device["bdf"]):
                out = subprocess.run([PCIECTL, "--sysfs", self.sysfs, "info", device["bdf"], "--json"], check=True,
                                     capture_output=True, text=True).stdout
                expected = {k: v for k, v in json.loads(out).items() if k not in pciectl_only}
                for bar in expected["bars"]:
                    bar.pop("mapped_memory_types", None)
                for key in ids:
                    self.assertIsInstance(expected[key], str, key)
                    expected[key] = int(expected[key], 16)
                self.assertEqual(list(device.keys()), list(expected.keys()))
                self.assertEqual(device, expected)

    def test_hostile_sysfs_names_are_escaped_text(self):
        # A driver link and a slot whose names are not UTF-8 or hold a terminal escape: the
        # dict holds them as \\xNN text (as pciectl's JSON does), and an error that quotes
        # them is still a pcie.Error whose every part is a str.
        device_dir = f"{self.sysfs}/bus/pci/devices/0000:00:03.0".encode()
        driver_dir = f"{self.sysfs}/bus/pci/drivers/".encode() + b"bad\xff\x1b[2J"
        os.makedirs(driver_dir)
        os.symlink(os.path.relpath(driver_dir, device_dir), device_dir + b"/driver")
        os.makedirs(f"{self.sysfs}/bus/pci/slots/".encode() + b"slot\xc3")
        with open(f"{self.sysfs}/bus/pci/slots/".encode() + b"slot\xc3/address", "w") as address:
            address.write("0000:00:03\n")
        for edu in (pcie.describe("00:03.0", sysfs=self.sysfs),
                    [d for d in pcie.devices(sysfs=self.sysfs) if d["bdf"] == "0000:00:03.0"][0]):
            self.assertEqual(edu["driver"], "bad\\xff\\x1b[2J")
            self.assertEqual(edu["physical_slot"], "slot\\xc3")
        with self.assertRaises(pcie.Error) as caught:
            pcie.UioDevice.open("0000:00:03.0", sysfs=self.sysfs, dev=self.tree)
        self.assertEqual(caught.exception.code, "not_supported")
        self.assertIn("bad\\xff\\x1b[2J", caught.exception.reason)
        self.assertIn("bad\\xff\\x1b[2J", str(caught.exception))
        for part in ("operation", "object", "reason", "hint"):
            self.assertNotIn("\x1b", getattr(caught.exception, part), part)

    def test_unknown_device_is_a_pcie_error(self):
        with self.assertRaises(pcie.Error) as caught:
            pcie.describe("0000:09:00.0", sysfs=self.sysfs)
        self.assertEqual(caught.exception.code, "not_found")
        self.assertIn("0000:09:00.0", str(caught.exception))
        self.assertIsInstance(caught.exception, RuntimeError)

    def test_bad_bdf(self):
        with self.assertRaises(pcie.Error) as caught:
            pcie.describe("not-a-bdf")
        self.assertEqual(caught.exception.code, "invalid_argument")


class Registers(FakeTree):
    def test_read_by_width_through_sysfs(self):
        bar = self.bar()
        self.assertEqual(bar.path, "sysfs")
        self.assertEqual(bar.read(0), 0x010000ED)
        self.assertEqual(bar.read(0, width=16), 0x00ED)
        self.assertEqual(bar.read(0, 64) & 0xFFFFFFFF, 0x010000ED)
        self.assertEqual(bar.size, 1 << 20)

    def test_write_needs_a_width_and_a_writable_bar(self):
        with self.assertRaises(TypeError):
            self.bar(writable=True).write(0x80, 5)  # no width: refused before any access
        with self.assertRaises(pcie.Error) as caught:
            self.bar().write(0x80, 5, 32)
        self.assertEqual(caught.exception.code, "permission_denied")
        bar = self.bar(writable=True)
        bar.write(0x80, 0xDEADBEEF, 32)
        self.assertEqual(bar.read(0x80), 0xDEADBEEF)
        with self.assertRaises(pcie.Error) as caught:
            bar.write(0x80, 0x100, 8)
        self.assertEqual(caught.exception.code, "invalid_argument")

    def test_checked_accesses_raise_with_a_hint(self):
        bar = self.bar()
        with self.assertRaises(pcie.Error) as caught:
            bar.read(2, 32)
        self.assertEqual(caught.exception.code, "misaligned")
        with self.assertRaises(pcie.Error) as caught:
            bar.read(1 << 20, 32)
        self.assertEqual(caught.exception.code, "out_of_range")
        with self.assertRaises(pcie.Error) as caught:
            self.bar(index=3)
        self.assertEqual(caught.exception.code, "not_found")
        self.assertTrue(caught.exception.hint)
        with self.assertRaises(pcie.Error):
            pcie.open_bar("0000:00:03.0", 0, via="nowhere")


class Arrays(FakeTree):
    def test_view_reads_the_mapping_and_outlives_the_bar(self):
        bar = self.bar()
        view = bar.view(np.uint32)
        self.assertEqual(view[0], 0x010000ED)
        self.assertEqual(len(view), (1 << 20) // 4)
        self.assertFalse(view.flags.writeable)
        del bar
        gc.collect()
        self.assertEqual(view[0], 0x010000ED)  # the array keeps the mapping alive

    def test_writable_view_writes_the_file(self):
        bar = self.bar(writable=True)
        view = bar.view(np.uint8, offset=0x100, count=16)
        view[:] = np.arange(16, dtype=np.uint8)
        self.assertEqual(bar.read(0x100), 0x03020100)

    def test_restricted_widths_refuse_a_view_but_copy(self):
        bar = self.bar(writable=True)
        bar.restrict_widths([32])
        self.assertEqual(bar.widths, [32])
        with self.assertRaises(pcie.Error) as caught:
            bar.view(np.uint32)
        self.assertEqual(caught.exception.code, "width_not_allowed")
        self.assertIn("read_into", caught.exception.hint)
        data = np.arange(64, dtype=np.uint32)
        bar.write_from(0x200, data)
        back = np.zeros(64, dtype=np.uint32)
        bar.read_into(0x200, back)
        np.testing.assert_array_equal(back, data)
        with self.assertRaises(pcie.Error) as caught:
            bar.read_into(0x200, np.zeros(3, dtype=np.uint8))  # 3 bytes: no 32-bit access covers it
        self.assertIn(caught.exception.code, ("misaligned", "invalid_argument", "width_not_allowed"))

    def test_read_into_needs_a_writable_contiguous_array(self):
        bar = self.bar()
        with self.assertRaises(pcie.Error) as caught:
            bar.read_into(0, np.zeros((4, 4), dtype=np.uint32)[:, 0])
        self.assertEqual(caught.exception.code, "invalid_argument")
        self.assertIn("C-contiguous", str(caught.exception))
        read_only = np.zeros(4, dtype=np.uint32)
        read_only.flags.writeable = False
        with self.assertRaises(pcie.Error) as caught:
            bar.read_into(0, read_only)
        self.assertEqual(caught.exception.code, "invalid_argument")
        self.assertIn("writable", str(caught.exception))
        self.assertFalse(read_only.any(), "nothing was written into the read-only array")


class Vfio(FakeTree):
    def test_vfio_device_without_vfio_is_an_error(self):
        with self.assertRaises(pcie.Error) as caught:
            pcie.VfioDevice.open("0000:00:03.0", sysfs=self.sysfs, dev_vfio=self.tree + "/dev/vfio")
        self.assertEqual(caught.exception.code, "not_found")
        self.assertTrue(caught.exception.hint)


class NoIommu(FakeTree):
    """UIO and VFIO's no-IOMMU mode: the same Device API, and DMA only once the user accepts
    that the device reaches all of memory."""

    def make_uio(self, bdf="0000:00:03.0", counts=()):
        device_dir = f"{self.sysfs}/bus/pci/devices/{bdf}"
        driver_dir = f"{self.sysfs}/bus/pci/drivers/uio_pci_generic"
        os.makedirs(driver_dir, exist_ok=True)
        os.symlink(os.path.relpath(driver_dir, device_dir), device_dir + "/driver")
        os.makedirs(device_dir + "/uio/uio0")
        with open(device_dir + "/uio/uio0/event", "w") as event:
            event.write("7\n")
        dev = self.tree + "/dev"
        os.makedirs(dev, exist_ok=True)
        with open(dev + "/uio0", "wb") as node:  # what read() of /dev/uio0 returns: 32-bit totals
            node.write(b"".join(total.to_bytes(4, "little") for total in counts))
        return dev

    def test_uio_device_has_the_device_api(self):
        dev = self.make_uio(counts=(9, 10))
        device = pcie.UioDevice.open("0000:00:03.0", sysfs=self.sysfs, dev=dev)
        self.assertIsInstance(device, pcie.Device)
        self.assertEqual(device.backend, "UIO (uio_pci_generic)")
        self.assertEqual(device.uio_number, 0)
        self.assertTrue(device.without_iommu)
        self.assertEqual(device.bar(0).read(0x00), 0x010000ED)
        self.assertEqual(device.vector_count("intx"), 1)
        self.assertEqual(device.vector_count("msi"), 0)
        with self.assertRaises(pcie.Error) as caught:
            device.interrupts("msi")
        self.assertIn("vfio-pci", caught.exception.hint)
        irq = device.interrupts("intx")
        self.assertEqual(irq.wait(0, timeout=0.1), 2)  # 7 at enable, then a total of 9
        self.assertEqual(irq.wait(0, timeout=0.1), 1)

    def test_uio_dma_needs_the_acknowledgement(self):
        dev = self.make_uio()
        device = pcie.UioDevice.open("0000:00:03.0", sysfs=self.sysfs, dev=dev)
        with self.assertRaises(pcie.Error) as caught:
            device.dma_buffer(4096)
        self.assertEqual(caught.exception.code, "not_supported")
        self.assertIn("all of memory", str(caught.exception))
        self.assertIn("device_may_reach_all_memory=True", caught.exception.hint)

    def test_uio_open_of_a_device_without_uio_says_how_to_bind(self):
        with self.assertRaises(pcie.Error) as caught:
            pcie.UioDevice.open("0000:00:03.0", sysfs=self.sysfs, dev=self.tree)
        self.assertEqual(caught.exception.code, "not_supported")
        self.assertIn("uio_pci_generic", caught.exception.hint)

    def test_vfio_without_iommu_needs_the_acknowledgement(self):
        with self.assertRaises(pcie.Error) as caught:
            pcie.VfioDevice.open("0000:00:03.0", no_iommu=True, sysfs=self.sysfs, dev_vfio=self.tree + "/dev/vfio")
        self.assertEqual(caught.exception.code, "invalid_argument")
        self.assertIn("device_may_reach_all_memory=True", caught.exception.hint)
        # Acknowledged, it goes on to VFIO, which this fake tree does not have.
        with self.assertRaises(pcie.Error) as caught:
            pcie.VfioDevice.open("0000:00:03.0", no_iommu=True, device_may_reach_all_memory=True, sysfs=self.sysfs,
                                 dev_vfio=self.tree + "/dev/vfio")
        self.assertNotEqual(caught.exception.code, "invalid_argument")


if __name__ == "__main__":
    unittest.main()
