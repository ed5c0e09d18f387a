"""What the Python guest scripts share (guest_python_test.py, guest_python_noiommu_test.py):
QEMU edu's registers (QEMU docs/specs/edu.rst) and a DMA round trip through a pcie DMA
buffer, RAM to edu and back, checked byte for byte."""
import time

import numpy as np

ID, LIVENESS, FACTORIAL, STATUS = 0x00, 0x04, 0x08, 0x20
IRQ_STATUS, IRQ_ACK = 0x24, 0x64
DMA_SOURCE, DMA_DESTINATION, DMA_COUNT, DMA_COMMAND = 0x80, 0x88, 0x90, 0x98
DMA_START, DMA_TO_RAM = 0x1, 0x2
INTERNAL_BUFFER = 0x40000  # edu's own 4 KiB


def wait_dma_idle(regs, seconds=2.0):
    deadline = time.monotonic() + seconds
    while regs.read(DMA_COMMAND) & DMA_START:
        if time.monotonic() > deadline:
            raise AssertionError("edu's DMA did not finish")
        time.sleep(0.001)


def _run_dma(regs, source, destination, count, command):
    regs.write(DMA_SOURCE, source, 64)
    regs.write(DMA_DESTINATION, destination, 64)
    regs.write(DMA_COUNT, count, 64)
    regs.write(DMA_COMMAND, command, 64)
    wait_dma_idle(regs)


def copy_by_dma(regs, source, destination, count):
    """edu copies `count` bytes from bus address `source` to bus address `destination`
    through its internal buffer (it can only DMA between that buffer and the bus)."""
    _run_dma(regs, source, INTERNAL_BUFFER, count, DMA_START)
    _run_dma(regs, INTERNAL_BUFFER, destination, count, DMA_START | DMA_TO_RAM)


def dma_round_trip(regs, buffer, transfer, multiplier):
    """Fills `buffer` (4096 bytes) with a pattern, has edu copy its first `transfer` bytes in
    (QEMU 7.2's edu aborts on its whole 4096), clears the buffer, has edu copy them back,
    and checks them and that nothing past them was written. Returns the buffer's array and
    the pattern, for the caller's lifetime checks."""
    data = buffer.array(np.uint8)
    pattern = (np.arange(4096) * multiplier % 251).astype(np.uint8)
    data[:] = pattern
    buffer.sync_for_device()  # the pattern is in memory before edu reads it
    _run_dma(regs, buffer.bus_address, INTERNAL_BUFFER, transfer, DMA_START)  # RAM -> edu
    data[:] = 0
    _run_dma(regs, INTERNAL_BUFFER, buffer.bus_address, transfer, DMA_START | DMA_TO_RAM)  # edu -> RAM
    buffer.sync_for_cpu()
    np.testing.assert_array_equal(data[:transfer], pattern[:transfer])
    assert not data[transfer:].any(), "edu wrote past the transfer"
    return data, pattern
