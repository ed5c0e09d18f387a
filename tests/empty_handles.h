// What every empty handle (default-constructed, moved from, or released) must do, checked
// the same way for each kind: no call reaches memory or a descriptor the handle no longer
// owns; each fails with invalid_argument (or, for a release, does nothing).
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstddef>

#include "pcie/copy.h"
#include "pcie/device.h"
#include "pcie/interrupts.h"
#include "pcie/region.h"

namespace pcie::testing {

inline void expect_invalid_argument(const Error& error, const char* call) {
  EXPECT_EQ(error.code, Errc::invalid_argument) << call << ": " << error.message();
  EXPECT_NE(error.message().find("empty"), std::string::npos) << call << ": " << error.message();
}

// Every access, at every width and at offsets 0 and 4096, both 64-bit halves orders and
// both copy directions.
inline void expect_empty_region(Region& region) {
  EXPECT_FALSE(region.valid());
  EXPECT_EQ(region.size(), 0u);
  EXPECT_EQ(region.mapped_base(), nullptr);
  EXPECT_FALSE(region.revoked());
  for (const Width width : {Width::bits8, Width::bits16, Width::bits32, Width::bits64}) {
    for (const std::uint64_t offset : {0u, 4096u}) {
      auto read = region.read(width, offset);
      ASSERT_FALSE(read);
      expect_invalid_argument(read.error(), "read");
      auto write = region.write(width, offset, 0);
      ASSERT_FALSE(write);
      expect_invalid_argument(write.error(), "write");
    }
  }
  for (const HalfOrder order : {HalfOrder::low_first, HalfOrder::high_first}) {
    auto read = region.read64_halves(0, order);
    ASSERT_FALSE(read);
    expect_invalid_argument(read.error(), "read64_halves");
    auto write = region.write64_halves(0, 1, order);
    ASSERT_FALSE(write);
    expect_invalid_argument(write.error(), "write64_halves");
  }
  std::array<std::byte, 64> buffer{};
  for (const std::uint64_t length : {std::uint64_t{0}, std::uint64_t{64}}) {
    auto to = copy_to_device(region, 0, buffer.data(), length);
    ASSERT_FALSE(to);
    expect_invalid_argument(to.error(), "copy_to_device");
    auto from = copy_from_device(buffer.data(), region, 0, length);
    ASSERT_FALSE(from);
    expect_invalid_argument(from.error(), "copy_from_device");
  }
}

inline void expect_empty_interrupts(Interrupts& interrupts) {
  EXPECT_FALSE(interrupts.valid());
  EXPECT_EQ(interrupts.count(), 0u);
  for (const unsigned vector : {0u, 1u}) {
    auto fd = interrupts.fd(vector);
    ASSERT_FALSE(fd);
    expect_invalid_argument(fd.error(), "fd");
    auto consumed = interrupts.consume(vector);
    ASSERT_FALSE(consumed);
    expect_invalid_argument(consumed.error(), "consume");
    auto waited = interrupts.wait(vector, std::chrono::milliseconds(0));
    ASSERT_FALSE(waited);
    expect_invalid_argument(waited.error(), "wait");
    auto rearmed = interrupts.rearm(vector);
    ASSERT_FALSE(rearmed);
    expect_invalid_argument(rearmed.error(), "rearm");
    auto masked = interrupts.mask(vector);
    ASSERT_FALSE(masked);
    expect_invalid_argument(masked.error(), "mask");
    auto unmasked = interrupts.unmask(vector);
    ASSERT_FALSE(unmasked);
    expect_invalid_argument(unmasked.error(), "unmask");
  }
  auto added = interrupts.add_vectors(1);
  ASSERT_FALSE(added);
  expect_invalid_argument(added.error(), "add_vectors");
  EXPECT_TRUE(interrupts.disable()) << "releasing nothing succeeds";
  EXPECT_TRUE(interrupts.disable());
}

inline void expect_empty_device(const Device& device) {
  EXPECT_FALSE(device.valid());
  EXPECT_EQ(device.bdf(), Bdf{});
  auto bar = device.open_bar(0);
  ASSERT_FALSE(bar);
  expect_invalid_argument(bar.error(), "open_bar");
  auto master = device.enable_bus_master();
  ASSERT_FALSE(master);
  expect_invalid_argument(master.error(), "enable_bus_master");
  for (const IrqKind kind : {IrqKind::intx, IrqKind::msi, IrqKind::msix}) {
    auto count = device.vector_count(kind);
    ASSERT_FALSE(count);
    expect_invalid_argument(count.error(), "vector_count");
    auto enabled = device.enable_interrupts(kind, 1);
    ASSERT_FALSE(enabled);
    expect_invalid_argument(enabled.error(), "enable_interrupts");
  }
  auto allocator = device.dma_allocator();
  ASSERT_FALSE(allocator);
  expect_invalid_argument(allocator.error(), "dma_allocator");
}

inline void expect_empty(Region& region) { expect_empty_region(region); }
inline void expect_empty(Interrupts& interrupts) { expect_empty_interrupts(interrupts); }
inline void expect_empty(const Device& device) { expect_empty_device(device); }

// The empty state through a handle's life: a default-constructed handle is empty; `opened`,
// moved into a new handle, is empty and the new one works (`works(handle)` checks it, with
// gtest assertions); that one, moved over the default-constructed one, is empty and the
// target works. Returns the target.
template <class Handle, class Works>
Handle expect_moves_leave_empty(Handle& opened, Works works) {
  Handle target;
  expect_empty(target);
  Handle moved = std::move(opened);
  expect_empty(opened);
  works(moved);
  target = std::move(moved);
  expect_empty(moved);
  works(target);
  return target;
}

}  // namespace pcie::testing
