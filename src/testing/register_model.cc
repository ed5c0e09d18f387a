#include "pcie/testing/register_model.h"

#include <utility>

namespace pcie::testing {
namespace {

bool inside(std::uint64_t size, Width width, std::uint64_t offset) {
  const std::uint64_t bytes = byte_count(width);
  return offset % bytes == 0 && offset <= size && bytes <= size - offset;
}

// The Region a driver sees: the base class checks width, alignment, bounds and
// writability; every access that passes reaches the model.
class ModelRegion final : public Region {
 public:
  ModelRegion(RegisterModel& model, bool writable, WidthSet widths)
      : Region(widths, writable), model_(model) {}
  std::uint64_t size() const override { return model_.size(); }
  const std::string& name() const override { return model_.name(); }

 protected:
  Result<std::uint64_t> read_checked(Width width, std::uint64_t offset) const override {
    return model_.driver_read(width, offset);
  }
  Result<void> write_checked(Width width, std::uint64_t offset, std::uint64_t value) override {
    model_.driver_write(width, offset, value);
    return {};
  }

 private:
  RegisterModel& model_;
};

}  // namespace

RegisterModel::RegisterModel(std::uint64_t size, std::string name)
    : size_(size), name_(std::move(name)), bytes_(size, 0) {}

void RegisterModel::set(Width width, std::uint64_t offset, std::uint64_t value) {
  if (!inside(size_, width, offset)) return;
  const std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < byte_count(width); ++i) bytes_[offset + i] = static_cast<std::uint8_t>(value >> (8 * i));
}

std::uint64_t RegisterModel::get(Width width, std::uint64_t offset) const {
  if (!inside(size_, width, offset)) return all_ones(width);
  const std::lock_guard lock(mutex_);
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < byte_count(width); ++i) value |= std::uint64_t{bytes_[offset + i]} << (8 * i);
  return value;
}

void RegisterModel::on_read(std::uint64_t offset, ReadHook hook) {
  const std::lock_guard lock(mutex_);
  read_hooks_[offset] = std::move(hook);
}

void RegisterModel::on_write(std::uint64_t offset, WriteHook hook) {
  const std::lock_guard lock(mutex_);
  write_hooks_[offset] = std::move(hook);
}

void RegisterModel::read_only(std::uint64_t offset, Width width) {
  on_write(offset, [this, width, offset](const RegisterAccess&) { return get(width, offset); });
}

void RegisterModel::write_one_to_clear(std::uint64_t offset, Width width, std::uint64_t mask) {
  on_write(offset, [this, width, offset, mask](const RegisterAccess& access) {
    const std::uint64_t stored = get(width, offset);
    // Written 1s clear their bits; 0s and bits outside the mask leave the register alone.
    return stored & ~(access.value & mask);
  });
}

void RegisterModel::self_clearing(std::uint64_t offset, Width, std::uint64_t mask) {
  on_write(offset, [mask](const RegisterAccess& access) { return access.value & ~mask; });
}

std::uint64_t RegisterModel::driver_read(Width width, std::uint64_t offset) {
  ReadHook hook;
  {
    const std::lock_guard lock(mutex_);
    if (auto found = read_hooks_.find(offset); found != read_hooks_.end()) hook = found->second;
  }
  const std::uint64_t stored = get(width, offset);
  const std::uint64_t value = (hook ? hook({false, width, offset, stored}) : stored) & all_ones(width);
  const std::lock_guard lock(mutex_);
  log_.push_back({false, width, offset, value});
  return value;
}

void RegisterModel::driver_write(Width width, std::uint64_t offset, std::uint64_t value) {
  WriteHook hook;
  {
    const std::lock_guard lock(mutex_);
    log_.push_back({true, width, offset, value});
    if (auto found = write_hooks_.find(offset); found != write_hooks_.end()) hook = found->second;
  }
  set(width, offset, hook ? hook({true, width, offset, value}) : value);
}

std::vector<RegisterAccess> RegisterModel::log() const {
  const std::lock_guard lock(mutex_);
  return log_;
}

void RegisterModel::clear_log() {
  const std::lock_guard lock(mutex_);
  log_.clear();
}

std::unique_ptr<Region> RegisterModel::open_region(bool writable, WidthSet widths) {
  return std::make_unique<ModelRegion>(*this, writable, widths);
}

}  // namespace pcie::testing
