// The testing kit itself (pcie/testing/register_model.h, device_model.h): registers behave
// as their hooks say, the Region over them checks what a real one checks, and the fake
// device's DMA and interrupts refuse what a device behind an IOMMU could not do.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>

#include "pcie/dma.h"
#include "pcie/testing/device_model.h"

namespace pcie::testing {
namespace {

using namespace std::chrono_literals;

TEST(RegisterModel, HooksStorageAndTheLog) {
  RegisterModel model(0x100, "model BAR0");
  model.set32(0x00, 0xabcd1234);
  model.read_only(0x00, Width::bits32);
  model.write_one_to_clear(0x04, Width::bits32, 0xff);
  model.set32(0x04, 0x1ff);
  model.self_clearing(0x08, Width::bits32, 0x1);
  int doorbells = 0;
  model.on_write(0x10, [&](const RegisterAccess& access) {
    ++doorbells;
    return access.value;
  });
  unsigned reads = 0;
  model.on_read(0x14, [&](const RegisterAccess&) { return ++reads; });  // status that changes

  auto region = model.open_region();
  ASSERT_TRUE(region->write(Width::bits32, 0x00, 1));
  EXPECT_EQ(region->read(Width::bits32, 0x00).value_or(0), 0xabcd1234u) << "read-only";
  ASSERT_TRUE(region->write(Width::bits32, 0x04, 0x0f));
  EXPECT_EQ(model.get32(0x04), 0x1f0u) << "RW1C: written ones clear, bits outside the mask stay";
  ASSERT_TRUE(region->write(Width::bits32, 0x08, 0x3));
  EXPECT_EQ(model.get32(0x08), 0x2u) << "the self-clearing bit reads back 0";
  ASSERT_TRUE(region->write(Width::bits64, 0x10, 5));
  EXPECT_EQ(doorbells, 1);
  EXPECT_EQ(region->read(Width::bits32, 0x14).value_or(0), 1u);
  EXPECT_EQ(region->read(Width::bits32, 0x14).value_or(0), 2u);
  // Byte lanes: little-endian, like the bus.
  ASSERT_TRUE(region->write(Width::bits32, 0x20, 0x44332211));
  EXPECT_EQ(region->read(Width::bits8, 0x21).value_or(0), 0x22u);
  EXPECT_EQ(region->read(Width::bits16, 0x22).value_or(0), 0x4433u);

  const auto log = model.log();
  ASSERT_EQ(log.size(), 10u);  // 5 writes, 5 reads
  EXPECT_TRUE(log[0].write);
  EXPECT_EQ(log[0].offset, 0x00u);
  EXPECT_FALSE(log[1].write);
  EXPECT_EQ(log[1].value, 0xabcd1234u);
  EXPECT_EQ(log[4].width, Width::bits64);
  model.clear_log();
  EXPECT_TRUE(model.log().empty());
}

TEST(RegisterModel, TheRegionChecksWhatARealOneChecks) {
  RegisterModel model(0x40, "model BAR2");
  auto region = model.open_region(true, WidthSet::only(Width::bits32));
  EXPECT_EQ(region->read(Width::bits64, 0).error().code, Errc::width_not_allowed);
  EXPECT_EQ(region->read(Width::bits32, 2).error().code, Errc::misaligned);
  EXPECT_EQ(region->read(Width::bits32, 0x40).error().code, Errc::out_of_range);
  EXPECT_EQ(region->read(Width::bits32, ~std::uint64_t{0} - 3).error().code, Errc::out_of_range);
  EXPECT_EQ(region->name(), "model BAR2");
  EXPECT_EQ(region->mapped_base(), nullptr);
  auto read_only = model.open_region(false);
  EXPECT_EQ(read_only->write(Width::bits32, 0, 1).error().code, Errc::permission_denied);
  EXPECT_TRUE(model.log().empty()) << "refused accesses reached the model";
  // The device's side ignores what a bus would not carry.
  model.set32(0x3e, 1);
  EXPECT_EQ(model.get32(0x3e), 0xffffffffu);
  EXPECT_EQ(model.get(Width::bits32, 0x40), 0xffffffffu);
}

TEST(DeviceModel, DmaReachesOnlyMappedBuffersAndOnlyWithBusMastering) {
  DeviceModel fake({.bdf = {0, 5, 0, 0}});
  auto device = fake.open();
  EXPECT_EQ(device->backend_name(), "fake");
  EXPECT_EQ(device->bdf(), (Bdf{0, 5, 0, 0}));
  auto allocator = device->dma_allocator();
  ASSERT_TRUE(allocator) << allocator.error().message();
  auto buffer = allocator->allocate(8192, {.dma_limit = dma_mask_limit(32), .prefer = DmaBacking::pages});
  ASSERT_TRUE(buffer) << buffer.error().message();
  EXPECT_GE(buffer->bus_address().value, 0x100000u);
  EXPECT_EQ(fake.dma_mapped_bytes(), 8192u);
  std::memset(buffer->data(), 0x5a, buffer->size());

  std::array<std::byte, 16> bytes{};
  auto before = fake.dma_read(buffer->bus_address().value, bytes);
  ASSERT_FALSE(before);
  EXPECT_EQ(before.error().code, Errc::permission_denied) << "no Bus Master Enable yet";
  ASSERT_TRUE(device->enable_bus_master());
  ASSERT_TRUE(fake.dma_read(buffer->bus_address().value + 100, bytes));
  EXPECT_EQ(bytes[0], std::byte{0x5a});
  const std::array<std::byte, 4> word{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
  ASSERT_TRUE(fake.dma_write(buffer->bus_address().value + 8188, word));
  EXPECT_EQ(buffer->data()[8191], std::byte{4});
  // Past the end, before the start, straddling: IOMMU faults, counted.
  EXPECT_EQ(fake.dma_write(buffer->bus_address().value + 8190, word).error().code, Errc::not_found);
  EXPECT_EQ(fake.dma_read(buffer->bus_address().value - 4, bytes).error().code, Errc::not_found);
  EXPECT_EQ(fake.dma_read(0, bytes).error().code, Errc::not_found);
  EXPECT_EQ(fake.dma_faults(), 3u);
  // A released buffer is out of the device's reach at once.
  const std::uint64_t released = buffer->bus_address().value;
  ASSERT_TRUE(buffer->release());
  EXPECT_EQ(fake.dma_mapped_bytes(), 0u);
  EXPECT_EQ(fake.dma_read(released, bytes).error().code, Errc::not_found);
  // The DMA limit is honoured.
  auto too_high = allocator->allocate(4096, {.dma_limit = 0xfff, .prefer = DmaBacking::pages});
  ASSERT_FALSE(too_high);
  EXPECT_EQ(too_high.error().code, Errc::out_of_range);
}

TEST(DeviceModel, InterruptsFireOnlyWhereEnabled) {
  DeviceModel fake({.msi_vectors = 2});
  auto device = fake.open();
  EXPECT_EQ(device->vector_count(IrqKind::msi).value_or(0), 2u);
  EXPECT_EQ(device->vector_count(IrqKind::msix).value_or(9), 0u);
  EXPECT_FALSE(fake.fire(IrqKind::msi, 0)) << "not enabled";
  auto msi = device->enable_interrupts(IrqKind::msi, 2);
  ASSERT_TRUE(msi) << msi.error().message();
  EXPECT_EQ(device->enable_interrupts(IrqKind::intx, 1).error().code, Errc::busy);
  EXPECT_EQ(device->enable_interrupts(IrqKind::msix, 1).error().code, Errc::out_of_range);
  EXPECT_FALSE(fake.fire(IrqKind::msi, 1)) << "an MSI is a memory write: no bus mastering, no message";
  ASSERT_TRUE(device->enable_bus_master());
  EXPECT_TRUE(fake.fire(IrqKind::msi, 1));
  EXPECT_FALSE(fake.fire(IrqKind::msi, 2));
  EXPECT_EQ((*msi)->wait(1, 100ms).value_or(0), 1u);
  EXPECT_EQ((*msi)->wait(0, 10ms).value_or(9), 0u);
  auto request = device->enable_interrupts(IrqKind::request, 1);
  ASSERT_TRUE(request);
  EXPECT_TRUE(fake.fire(IrqKind::request));
  const InterruptVector vectors[] = {{msi->get(), 0}, {request->get(), 0}};
  EXPECT_EQ(wait_any(vectors, 100ms).value_or(std::nullopt), std::optional<std::size_t>(1));
  msi->reset();
  EXPECT_FALSE(fake.interrupts_enabled(IrqKind::msi));
  EXPECT_FALSE(fake.fire(IrqKind::msi, 0));
  EXPECT_TRUE(device->enable_interrupts(IrqKind::intx, 1)) << "free again";
  EXPECT_EQ(device->open_bar(1).error().code, Errc::not_found);
  EXPECT_EQ(device->open_bar(6).error().code, Errc::invalid_argument) << "beyond BAR5 is the caller's error";
}

// Per-vector control as on the real backends: a masked vector holds what fires as pending
// and gets it at unmask; vectors can be added up to what the device offers.
TEST(DeviceModel, VectorsMaskHoldAsPendingAndGrow) {
  DeviceModel fake({.msix_vectors = 3});
  auto device = fake.open();
  ASSERT_TRUE(device->enable_bus_master());
  auto msix = device->enable_interrupts(IrqKind::msix, 1);
  ASSERT_TRUE(msix) << msix.error().message();
  Interrupts& vectors = **msix;
  const int first_fd = vectors.fd(0).value_or(-1);

  ASSERT_TRUE(vectors.mask(0));
  EXPECT_FALSE(fake.fire(IrqKind::msix, 0)) << "masked: held, not delivered";
  EXPECT_EQ(vectors.wait(0, 10ms).value_or(9), 0u);
  ASSERT_TRUE(vectors.unmask(0));
  EXPECT_EQ(vectors.wait(0, 100ms).value_or(0), 1u) << "the pending message arrives at unmask";
  ASSERT_TRUE(vectors.unmask(0));
  EXPECT_EQ(vectors.wait(0, 10ms).value_or(9), 0u) << "a second unmask sends nothing";

  EXPECT_EQ(vectors.add_vectors(2).value_or(0), 3u);
  EXPECT_EQ(vectors.fd(0).value_or(-2), first_fd) << "vector 0 keeps its descriptor";
  EXPECT_TRUE(fake.fire(IrqKind::msix, 2));
  EXPECT_EQ(vectors.wait(2, 100ms).value_or(0), 1u);
  auto too_many = vectors.add_vectors(1);
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().code, Errc::out_of_range);
  EXPECT_EQ(vectors.mask(3).error().code, Errc::out_of_range);
  ASSERT_TRUE(vectors.disable());
  EXPECT_FALSE(fake.fire(IrqKind::msix, 0));
  EXPECT_EQ(vectors.add_vectors(1).error().code, Errc::invalid_argument);
}

// Bus addresses never wrap around the top of the address space, whatever the first one.
TEST(DeviceModel, BusAddressesNeverWrap) {
  DeviceModel fake({.first_bus_address = ~std::uint64_t{0} - 100});
  auto device = fake.open();
  auto allocator = device->dma_allocator();
  ASSERT_TRUE(allocator) << allocator.error().message();
  auto buffer = allocator->allocate(4096);
  ASSERT_FALSE(buffer) << "a bus address past the top was handed out";
  EXPECT_EQ(buffer.error().code, Errc::out_of_range) << buffer.error().message();
  EXPECT_EQ(fake.dma_mapped_bytes(), 0u);
}

}  // namespace
}  // namespace pcie::testing
