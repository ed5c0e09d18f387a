#include "pcie/sys/mapping.h"

#include <sys/mman.h>

#include <cerrno>

#include "src/sys/guard_table.h"

namespace pcie {

// The guard's entry goes first: a fault between the two must not find a mapping that is
// being unmapped.
void Mapping::release() noexcept {
  if (guard_slot_ >= 0) detail::guard_table_unregister(std::exchange(guard_slot_, -1));
  if (addr_ != nullptr) ::munmap(std::exchange(addr_, nullptr), std::exchange(length_, 0));
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    release();
    addr_ = std::exchange(other.addr_, nullptr);
    length_ = std::exchange(other.length_, 0);
    guard_slot_ = std::exchange(other.guard_slot_, -1);
  }
  return *this;
}

Mapping::~Mapping() { release(); }

Result<void> Mapping::unmap() {
  if (guard_slot_ >= 0) detail::guard_table_unregister(std::exchange(guard_slot_, -1));
  void* addr = std::exchange(addr_, nullptr);
  const std::size_t length = std::exchange(length_, 0);
  if (addr == nullptr) return {};
  if (::munmap(addr, length) != 0) {
    return std::unexpected(make_errno_error(errno, "munmap", "mapping"));
  }
  return {};
}

Result<void> Mapping::guard_as_device_memory(const Bdf& device) {
  if (guard_slot_ >= 0 || addr_ == nullptr) return {};
  auto slot = detail::guard_table_register(addr_, length_, device);
  if (!slot) return std::unexpected(slot.error());
  guard_slot_ = *slot;
  return {};
}

bool Mapping::revoked() const noexcept { return guard_slot_ >= 0 && detail::guard_table_revoked(guard_slot_); }

}  // namespace pcie
