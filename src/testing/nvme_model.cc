// The NVMe model's construction and public side: options normalised, CAP and VS set, the
// hooks that connect BAR0 and the DeviceModel's unmap callback to the model, and the test's
// view (completion policy, held commands, what happened, the namespaces' data).
#include "pcie/testing/nvme_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "src/testing/nvme_core.h"

namespace pcie::testing {

using namespace nvme;

namespace {

NvmeModelOptions normalized(NvmeModelOptions options) {
  options.max_queue_entries = std::clamp<std::uint32_t>(options.max_queue_entries, 2, 65536);
  options.max_io_queues = std::clamp<std::uint16_t>(options.max_io_queues, 1, (kBarSize - kDoorbells) / 8 - 1);
  std::vector<NvmeNamespace> kept;
  for (NvmeNamespace space : options.namespaces) {
    const bool repeated = std::any_of(kept.begin(), kept.end(), [&](const auto& k) { return k.id == space.id; });
    if (space.id == 0 || repeated) continue;
    space.block_shift = std::clamp(space.block_shift, 9u, 16u);
    kept.push_back(space);
  }
  std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  options.namespaces = kept;
  if (options.namespace_count == 0 && !kept.empty()) options.namespace_count = kept.back().id;
  return options;
}

using Core = NvmeModel::Core;

// Runs `body` on the model under its lock, or does what plain storage would once the
// model is gone (the driver may hold the Device longer).
template <class Body>
RegisterModel::WriteHook locked_write(std::weak_ptr<Core> weak, Body body) {
  return [weak = std::move(weak), body](const RegisterAccess& access) -> std::uint64_t {
    const std::shared_ptr<Core> core = weak.lock();
    if (!core) return access.value;
    const std::lock_guard lock(core->mutex);
    return body(*core, access);
  };
}

void install_hooks(const std::shared_ptr<Core>& core) {
  const std::weak_ptr<Core> weak = core;
  const auto write = locked_write(weak, [](Core& c, const RegisterAccess& a) { return c.register_write(a); });
  for (std::uint64_t offset = 0; offset < 0x40; offset += 4) core->bar.on_write(offset, write);
  for (std::uint64_t offset = kDoorbells; offset < kBarSize; offset += 4) core->bar.on_write(offset, write);
  for (const std::uint64_t offset : {kVersion, std::uint64_t{0x10}, std::uint64_t{0x18}, kNssr, kCsts}) {
    core->bar.on_read(offset, [weak](const RegisterAccess& access) {
      if (const std::shared_ptr<Core> c = weak.lock()) {
        const std::lock_guard lock(c->mutex);
        c->register_read(access);
      }
      return access.value;
    });
  }
  core->device.on_unmap([weak](std::uint64_t bus, std::uint64_t size) {
    if (const std::shared_ptr<Core> c = weak.lock()) {
      const std::lock_guard lock(c->mutex);
      c->unmapped(bus, size);
    }
  });
}
}  // namespace

NvmeModel::Core::Core(const NvmeModelOptions& given)
    : options(normalized(given)), device(options.device),
      bar(device.add_bar(0, kBarSize, WidthSet::only(Width::bits32) | WidthSet::only(Width::bits64))) {
  const std::uint64_t cap = (options.max_queue_entries - 1)              // MQES
                            | (std::uint64_t{1} << 16)                     // CQR: queues contiguous
                            | (std::uint64_t{options.timeout_500ms} << 24)  // TO
                            | (std::uint64_t{1} << 37);                    // CSS: the NVM command set
  bar.set64(kCap, cap);  // DSTRD, MPSMIN and MPSMAX 0: doorbells 4 bytes apart, 4 KiB pages
  bar.set32(kVersion, 0x00010400);
  for (const NvmeNamespace& shape : options.namespaces) {
    namespaces.push_back({shape, std::vector<std::byte>(shape.blocks << shape.block_shift)});
  }
}

NvmeModel::NvmeModel(const NvmeModelOptions& options) : core_(std::make_shared<Core>(options)) {
  install_hooks(core_);
}

NvmeModel::~NvmeModel() { core_->device.on_unmap({}); }

DeviceModel& NvmeModel::device() { return core_->device; }
RegisterModel& NvmeModel::bar0() { return core_->bar; }
std::unique_ptr<Device> NvmeModel::open() const { return core_->device.open(); }

void NvmeModel::set_completion_policy(const NvmeCompletionPolicy& policy) {
  const std::lock_guard lock(core_->mutex);
  core_->policy = policy;
  core_->rng.seed(policy.seed);
}

std::size_t NvmeModel::complete_pending() {
  const std::lock_guard lock(core_->mutex);
  std::vector<std::uint64_t> pooled;
  for (const Outstanding& command : core_->outstanding) {
    if (command.stage == Stage::pooled) pooled.push_back(command.sequence);
  }
  std::size_t completed = 0;
  for (const std::uint64_t sequence : pooled) completed += core_->execute(sequence, true) ? 1 : 0;
  return completed;
}

void NvmeModel::hold_next_io(unsigned count) {
  const std::lock_guard lock(core_->mutex);
  core_->hold_next = count;
}

void NvmeModel::hold_if(std::function<bool(const NvmeCommandInfo&)> predicate) {
  const std::lock_guard lock(core_->mutex);
  core_->hold_predicate = std::move(predicate);
}

std::vector<NvmeCommandInfo> NvmeModel::held() const {
  const std::lock_guard lock(core_->mutex);
  std::vector<NvmeCommandInfo> infos;
  for (const Outstanding& command : core_->outstanding) {
    if (command.stage == Stage::held) infos.push_back(command.info);
  }
  return infos;
}

std::size_t NvmeModel::release(std::size_t count) {
  const std::lock_guard lock(core_->mutex);
  std::vector<std::uint64_t> held;
  for (const Outstanding& command : core_->outstanding) {
    if (command.stage == Stage::held && held.size() < count) held.push_back(command.sequence);
  }
  std::size_t ran = 0;
  for (const std::uint64_t sequence : held) ran += core_->execute(sequence, true) ? 1 : 0;
  return ran;
}

std::vector<std::string> NvmeModel::violations() const {
  const std::lock_guard lock(core_->mutex);
  return core_->violations;
}

void NvmeModel::clear_violations() {
  const std::lock_guard lock(core_->mutex);
  core_->violations.clear();
}

std::vector<NvmeCompletionRecord> NvmeModel::completions() const {
  const std::lock_guard lock(core_->mutex);
  return core_->completions;
}

std::uint64_t NvmeModel::resets() const {
  const std::lock_guard lock(core_->mutex);
  return core_->resets;
}

std::uint64_t NvmeModel::dropped() const {
  const std::lock_guard lock(core_->mutex);
  return core_->dropped;
}

bool NvmeModel::ready() const {
  const std::lock_guard lock(core_->mutex);
  return core_->enabled;
}

std::size_t NvmeModel::io_submission_queues() const {
  const std::lock_guard lock(core_->mutex);
  return core_->submission_queues.size() - (core_->submission_queues.contains(0) ? 1 : 0);
}

Result<std::vector<std::byte>> NvmeModel::read_blocks(std::uint32_t namespace_id, std::uint64_t lba,
                                                      std::uint64_t count) const {
  const std::lock_guard lock(core_->mutex);
  const NamespaceData* space = core_->find_namespace(namespace_id);
  const std::string object = fmt::format("NVMe model namespace {}", namespace_id);
  if (space == nullptr) return std::unexpected(make_error(Errc::not_found, "read blocks", object, "not configured"));
  if (lba > space->shape.blocks || count > space->shape.blocks - lba) {
    return std::unexpected(make_error(Errc::out_of_range, "read blocks", object,
                                      fmt::format("blocks {}+{} past its {}", lba, count, space->shape.blocks)));
  }
  const auto begin = space->bytes.begin() + static_cast<std::ptrdiff_t>(lba << space->shape.block_shift);
  return std::vector<std::byte>(begin, begin + static_cast<std::ptrdiff_t>(count << space->shape.block_shift));
}

Result<void> NvmeModel::write_blocks(std::uint32_t namespace_id, std::uint64_t lba, std::span<const std::byte> data) {
  const std::lock_guard lock(core_->mutex);
  NamespaceData* space = core_->find_namespace(namespace_id);
  const std::string object = fmt::format("NVMe model namespace {}", namespace_id);
  if (space == nullptr) return std::unexpected(make_error(Errc::not_found, "write blocks", object, "not configured"));
  const std::uint64_t block = std::uint64_t{1} << space->shape.block_shift;
  if (data.size() % block != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "write blocks", object,
                                      fmt::format("{} bytes are not whole {}-byte blocks", data.size(), block)));
  }
  const std::uint64_t count = data.size() / block;
  if (lba > space->shape.blocks || count > space->shape.blocks - lba) {
    return std::unexpected(make_error(Errc::out_of_range, "write blocks", object,
                                      fmt::format("blocks {}+{} past its {}", lba, count, space->shape.blocks)));
  }
  std::copy(data.begin(), data.end(), space->bytes.begin() + static_cast<std::ptrdiff_t>(lba * block));
  return {};
}

}  // namespace pcie::testing
