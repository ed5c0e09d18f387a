"""The `pcie` Python module when a device goes away under it (tests/vm:vm_python_hotplug_test,
pcie-vm --python --hotplug): an nvme added behind the root port at 00:1c.0 and removed with
QEMU's device_del, asked through hotplug-relay on /dev/ttyS2. Without the user installing
anything, the next call on a Bar, a Device, its DMA buffers and interrupts raises
pcie.Error with code device_removed (pcie.watch_removal is on by default):
 - a Bar opened through sysfs: the uevent watcher revokes the mapping (QEMU reads a vanished
   BAR as zeros, so without it reads would go on returning 0);
 - a VfioDevice: the kernel asks for the device back through VFIO's request IRQ and waits;
   the module says so on every call until Python lets go, and then the unplug completes."""
import gc
import os
import termios
import time
import tty
import unittest

import pcie

SLOT = "0000:01:00.0"
NODE = "/sys/bus/pci/devices/" + SLOT
VS = 0x08  # NVMe version register
AQA = 0x24  # admin queue attributes: read/write while the controller is off


def relay(command, timeout=60):
    """One command line to hotplug-relay, its one answer line back."""
    fd = os.open("/dev/ttyS2", os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd, termios.TCSANOW)
        os.write(fd, (command + "\n").encode())
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            byte = os.read(fd, 1)
            if byte == b"\n":
                return answer.decode().strip("\r")
            answer += byte
        return "error: no answer from hotplug-relay"
    finally:
        os.close(fd)


def wait_until(done, timeout):
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def bar0_assigned():
    try:
        with open(NODE + "/resource") as resource:
            return int(resource.readline().split()[0], 16) != 0
    except (OSError, ValueError, IndexError):
        return False


def write(path, text):
    with open(path, "w") as file:
        file.write(text)


def removal_code(call):
    """The pcie.Error code `call` raises, None when it returns."""
    try:
        call()
    except pcie.Error as error:
        return error.code
    return None


class GuestPythonHotplug(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The VM's own nvme (id "nvme") sits in the slot: the tests need it empty.
        if os.path.exists(NODE):
            assert relay("device_del nvme") == "ok"
            assert relay("wait_deleted nvme 30") == "ok"

    def setUp(self):
        # Hot-added devices get no driver: the tests choose one.
        with open("/sys/bus/pci/drivers_autoprobe") as autoprobe:
            self.autoprobe = autoprobe.read().strip() or "1"
        write("/sys/bus/pci/drivers_autoprobe", "0")
        self.assertFalse(os.path.exists(NODE), "the slot is occupied")

    def tearDown(self):
        write("/sys/bus/pci/drivers_autoprobe", self.autoprobe)

    def add_nvme(self, name):
        self.assertEqual(relay(f"device_add driver=nvme id={name} serial={name} bus=root-port"), "ok")
        self.assertTrue(wait_until(lambda: os.path.exists(NODE), 15))
        self.assertTrue(wait_until(bar0_assigned, 10))

    def test_1_a_bar_through_sysfs_raises_device_removed(self):
        self.add_nvme("pynvme1")
        bar = pcie.open_bar(SLOT, 0, writable=True, via="sysfs", enable=True)
        self.assertEqual(bar.path, "sysfs")
        version = bar.read(VS)
        self.assertNotIn(version, (0, 0xFFFFFFFF))
        self.assertEqual(relay("device_del pynvme1"), "ok")
        codes = []
        self.assertTrue(wait_until(lambda: codes.append(removal_code(lambda: bar.read(VS))) or codes[-1], 30),
                        "reads went on without an error for 30 s")
        self.assertEqual(codes[-1], "device_removed")
        self.assertEqual(removal_code(lambda: bar.write(AQA, 0x001F001F, 32)), "device_removed")
        self.assertEqual(removal_code(lambda: bar.view()), "device_removed")
        del bar
        gc.collect()
        self.assertEqual(relay("wait_deleted pynvme1 30"), "ok")

    def test_2_a_vfio_device_is_asked_and_lets_go(self):
        self.add_nvme("pynvme2")
        write(NODE + "/driver_override", "vfio-pci")
        write("/sys/bus/pci/drivers/vfio-pci/bind", SLOT)
        device = pcie.VfioDevice.open(SLOT)
        self.assertTrue(device.watched)
        bar = device.bar(0)
        buffer = device.dma_buffer(4096, huge_pages=False)
        array = buffer.array()
        self.assertNotEqual(bar.read(VS), 0xFFFFFFFF)
        device.check_removed()  # present: returns
        self.assertEqual(relay("device_del pynvme2"), "ok")
        # The kernel asks through the request IRQ and waits for the device.
        self.assertTrue(wait_until(lambda: removal_code(device.check_removed) == "device_removed", 30),
                        "not told within 30 s")
        self.assertTrue(os.path.exists(NODE), "the unplug waits while Python holds the device")
        self.assertEqual(removal_code(lambda: bar.read(VS)), "device_removed")
        self.assertEqual(removal_code(buffer.sync_for_device), "device_removed")
        self.assertEqual(removal_code(lambda: device.enable_bus_master(True)), "device_removed")
        self.assertEqual(removal_code(lambda: device.bar(0)), "device_removed")
        self.assertEqual(removal_code(lambda: device.dma_buffer(4096, huge_pages=False)), "device_removed")
        array[0] = 1  # host memory: still the process's
        del device, bar, buffer, array
        gc.collect()
        self.assertEqual(relay("wait_deleted pynvme2 30"), "ok")
        self.assertFalse(os.path.exists(NODE))

    def test_3_watching_can_be_turned_off(self):
        self.assertTrue(pcie.watch_removal(False))
        try:
            self.add_nvme("pynvme3")
            write(NODE + "/driver_override", "vfio-pci")
            write("/sys/bus/pci/drivers/vfio-pci/bind", SLOT)
            device = pcie.VfioDevice.open(SLOT)
            self.assertFalse(device.watched)
            device.check_removed()  # nothing watched: never raises
            del device
            gc.collect()
        finally:
            self.assertFalse(pcie.watch_removal(True))
        self.assertEqual(relay("device_del pynvme3"), "ok")
        self.assertEqual(relay("wait_deleted pynvme3 30"), "ok")


if __name__ == "__main__":
    unittest.main()
