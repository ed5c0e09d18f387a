#include "tools/pciectl/tree.h"

#include <fmt/format.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "tools/pciectl/device_names.h"

namespace pciectl {
namespace {

// Base class 06h: bridge devices (PCI Code and ID Assignment Spec 1.11, 1.7). lspci treats a
// type 1 or 2 header as a bridge only with this class.
constexpr std::uint8_t kBridgeBaseClass = 0x06;

struct Bus {
  std::uint32_t domain = 0;
  std::uint32_t number = 0;
  std::vector<std::size_t> devices;  // indices into the device list, in BDF order
};

struct Bridge {
  std::optional<std::size_t> device;  // nullopt: the host bridge, above every root bus
  std::uint32_t domain = 0;
  std::uint32_t secondary = 0;
  std::uint32_t subordinate = 0;
  std::vector<Bus> buses;  // in the order they were met
};

Bus* find_bus(Bridge& bridge, std::uint32_t domain, std::uint32_t number) {
  for (Bus& bus : bridge.buses) {
    if (bus.domain == domain && bus.number == number) return &bus;
  }
  return nullptr;
}

// A bus as drawn: the devices of it that are shown.
struct ShownBus {
  const Bus* bus;
  std::vector<std::size_t> devices;
};

class BusTree {
 public:
  BusTree(const std::vector<pcie::DeviceInfo>& devices, const std::vector<bool>& selected)
      : devices_(devices), bridge_of_(devices.size()), pruned_(!selected.empty()) {
    // The host bridge reaches every bus number; it is bridges_[0].
    bridges_.push_back(Bridge{std::nullopt, 0, 0, 0xffffffffu, {}});
    for (std::size_t i = 0; i < devices.size(); ++i) {
      const pcie::DeviceInfo& device = devices[i];
      if (device.base_class != kBridgeBaseClass || !device.bridge_buses) continue;
      bridge_of_[i] = bridges_.size();
      bridges_.push_back(Bridge{i, device.bdf.domain, device.bridge_buses->secondary,
                                device.bridge_buses->subordinate, {}});
    }
    // Every bridge has its secondary bus, even when nothing sits on it; the host's is 0000:00.
    for (Bridge& bridge : bridges_) {
      if (find_bus(bridge, bridge.domain, bridge.secondary) == nullptr) {
        bridge.buses.push_back(Bus{bridge.domain, bridge.secondary, {}});
      }
    }
    for (std::size_t i = 0; i < devices.size(); ++i) place(i);
    shown_.assign(devices.size(), !pruned_);
    if (pruned_) {
      std::vector<Visit> visits(devices.size(), Visit::not_yet);
      for (std::size_t i = 0; i < devices.size(); ++i) mark_shown(i, selected, visits);
    }
  }

  const pcie::DeviceInfo& device(std::size_t index) const { return devices_[index]; }
  std::optional<std::size_t> bridge_of(std::size_t device) const { return bridge_of_[device]; }
  const Bridge& bridge(std::size_t index) const { return bridges_[index]; }
  std::size_t bridge_count() const { return bridges_.size(); }

  // The buses of a bridge to draw. Without a selection, all of them (lspci draws empty
  // ones too). With one, those holding a shown device; a shown bridge with none keeps its
  // first bus, drawn empty.
  std::vector<ShownBus> shown_buses(std::size_t bridge_index) const {
    const Bridge& bridge = bridges_[bridge_index];
    std::vector<ShownBus> buses;
    for (const Bus& bus : bridge.buses) {
      ShownBus shown{&bus, {}};
      for (std::size_t device : bus.devices) {
        if (shown_[device]) shown.devices.push_back(device);
      }
      if (!pruned_ || !shown.devices.empty()) buses.push_back(std::move(shown));
    }
    if (buses.empty() && bridge.device && !bridge.buses.empty()) buses.push_back(ShownBus{&bridge.buses.front(), {}});
    return buses;
  }

 private:
  enum class Visit { not_yet, in_progress, done };

  // As lspci 3.9 places a device: on a root bus met before, else below the last bridge (in
  // BDF order) whose bus range holds its bus, else on a new root bus.
  void place(std::size_t index) {
    const pcie::Bdf& bdf = devices_[index].bdf;
    Bus* bus = find_bus(bridges_[0], bdf.domain, bdf.bus);
    if (bus == nullptr) {
      Bridge* owner = &bridges_[0];
      for (std::size_t k = bridges_.size(); k-- > 1;) {
        const Bridge& candidate = bridges_[k];
        if (candidate.domain == bdf.domain && candidate.secondary <= bdf.bus && bdf.bus <= candidate.subordinate) {
          owner = &bridges_[k];
          break;
        }
      }
      bus = find_bus(*owner, bdf.domain, bdf.bus);
      if (bus == nullptr) {
        owner->buses.push_back(Bus{bdf.domain, bdf.bus, {}});
        bus = &owner->buses.back();
      }
    }
    bus->devices.push_back(index);
  }

  // A device is shown when selected, or when it is a bridge with a shown device below it.
  // Bus numbers may loop (untrusted config space): a bridge met again below itself adds
  // nothing.
  bool mark_shown(std::size_t index, const std::vector<bool>& selected, std::vector<Visit>& visits) {
    if (visits[index] == Visit::done) return shown_[index];
    if (visits[index] == Visit::in_progress) return false;
    visits[index] = Visit::in_progress;
    bool shown = index < selected.size() && selected[index];
    if (const auto bridge = bridge_of_[index]) {
      for (const Bus& bus : bridges_[*bridge].buses) {
        for (std::size_t below : bus.devices) shown = mark_shown(below, selected, visits) || shown;
      }
    }
    visits[index] = Visit::done;
    shown_[index] = shown;
    return shown;
  }

  const std::vector<pcie::DeviceInfo>& devices_;
  std::vector<Bridge> bridges_;
  std::vector<std::optional<std::size_t>> bridge_of_;
  std::vector<bool> shown_;
  bool pruned_;
};

// lspci draws into one line buffer: each piece is written at a position (cutting off what
// was beyond it), and after a line is printed every character of it turns into '|' (where
// it was '+' or '|') or a space, which draws the branches still open on the next line.
class TreePrinter {
 public:
  TreePrinter(const BusTree& tree, bool with_names)
      : tree_(tree), with_names_(with_names), on_path_(tree.bridge_count(), false) {}

  std::string take() { return std::move(out_); }

  void show_bridge(std::size_t bridge_index, std::size_t at) {
    at = put(at, "-");
    const std::vector<ShownBus> buses = tree_.shown_buses(bridge_index);
    if (buses.empty()) return;  // a selection that matched nothing
    if (buses.size() == 1) {
      if (!tree_.bridge(bridge_index).device) {
        at = put(at, fmt::format("[{:04x}:{:02x}]-", buses[0].bus->domain, buses[0].bus->number));
      }
      show_bus(buses[0], at);
      return;
    }
    for (std::size_t k = 0; k < buses.size(); ++k) {
      const char* branch = k + 1 < buses.size() ? "+-" : "\\-";
      show_bus(buses[k], put(at, fmt::format("{}[{:04x}:{:02x}]-", branch, buses[k].bus->domain, buses[k].bus->number)));
    }
  }

 private:
  void show_bus(const ShownBus& bus, std::size_t at) {
    if (bus.devices.empty()) {
      print(at);
    } else if (bus.devices.size() == 1) {
      show_device(bus.devices[0], put(at, "--"));
    } else {
      for (std::size_t k = 0; k < bus.devices.size(); ++k) {
        show_device(bus.devices[k], put(at, k + 1 < bus.devices.size() ? "+-" : "\\-"));
      }
    }
  }

  void show_device(std::size_t index, std::size_t at) {
    const pcie::DeviceInfo& device = tree_.device(index);
    at = put(at, fmt::format("{:02x}.{:x}", device.bdf.device, device.bdf.function));
    if (const auto bridge_index = tree_.bridge_of(index); bridge_index && !on_path_[*bridge_index]) {
      const Bridge& bridge = tree_.bridge(*bridge_index);
      at = put(at, bridge.secondary == bridge.subordinate
                       ? fmt::format("-[{:02x}]-", bridge.secondary)
                       : fmt::format("-[{:02x}-{:02x}]-", bridge.secondary, bridge.subordinate));
      on_path_[*bridge_index] = true;
      show_bridge(*bridge_index, at);
      on_path_[*bridge_index] = false;
      return;
    }
    if (with_names_) at = put(at, "  " + render_vendor_and_device(device));
    print(at);
  }

  std::size_t put(std::size_t at, std::string_view text) {
    line_.resize(at, ' ');
    line_ += text;
    return line_.size();
  }

  void print(std::size_t at) {
    line_.resize(at, ' ');
    out_ += line_;
    out_ += '\n';
    for (char& c : line_) c = (c == '+' || c == '|') ? '|' : ' ';
  }

  const BusTree& tree_;
  bool with_names_;
  std::vector<bool> on_path_;  // bridges being drawn: bus numbers that loop stop here
  std::string line_;
  std::string out_;
};

nlohmann::ordered_json device_json(const BusTree& tree, std::size_t index, std::vector<bool>& on_path);

nlohmann::ordered_json buses_json(const BusTree& tree, std::size_t bridge_index, std::vector<bool>& on_path) {
  nlohmann::ordered_json buses = nlohmann::ordered_json::array();
  for (const ShownBus& bus : tree.shown_buses(bridge_index)) {
    nlohmann::ordered_json entry;
    entry["domain"] = bus.bus->domain;
    entry["bus"] = bus.bus->number;
    entry["devices"] = nlohmann::ordered_json::array();
    for (std::size_t device : bus.devices) entry["devices"].push_back(device_json(tree, device, on_path));
    buses.push_back(std::move(entry));
  }
  return buses;
}

nlohmann::ordered_json device_json(const BusTree& tree, std::size_t index, std::vector<bool>& on_path) {
  const pcie::DeviceInfo& device = tree.device(index);
  nlohmann::ordered_json json;
  json["bdf"] = device.bdf.to_string();
  json["vendor_id"] = fmt::format("{:04x}", device.vendor_id);
  json["device_id"] = fmt::format("{:04x}", device.device_id);
  json["name"] = render_vendor_and_device(device);
  if (const auto bridge_index = tree.bridge_of(index)) {
    const Bridge& bridge = tree.bridge(*bridge_index);
    json["secondary_bus"] = bridge.secondary;
    json["subordinate_bus"] = bridge.subordinate;
    if (on_path[*bridge_index]) {
      json["buses"] = nlohmann::ordered_json::array();
      json["loop"] = true;  // its bus numbers lead back to itself
    } else {
      on_path[*bridge_index] = true;
      json["buses"] = buses_json(tree, *bridge_index, on_path);
      on_path[*bridge_index] = false;
    }
  }
  return json;
}

}  // namespace

std::string render_tree(const std::vector<pcie::DeviceInfo>& devices, const std::vector<bool>& selected,
                        bool with_names) {
  const BusTree tree(devices, selected);
  TreePrinter printer(tree, with_names);
  printer.show_bridge(0, 0);
  return printer.take();
}

std::vector<pcie::Bdf> devices_outside_the_tree(const std::vector<pcie::DeviceInfo>& devices) {
  const BusTree tree(devices, {});
  std::vector<bool> reached(devices.size(), false);
  std::vector<bool> entered(tree.bridge_count(), false);
  // A walk from the root buses that enters each bridge once.
  std::vector<std::size_t> bridges_to_walk{0};
  entered[0] = true;
  while (!bridges_to_walk.empty()) {
    const std::size_t bridge_index = bridges_to_walk.back();
    bridges_to_walk.pop_back();
    for (const Bus& bus : tree.bridge(bridge_index).buses) {
      for (std::size_t device : bus.devices) {
        reached[device] = true;
        const auto below = tree.bridge_of(device);
        if (below && !entered[*below]) {
          entered[*below] = true;
          bridges_to_walk.push_back(*below);
        }
      }
    }
  }
  std::vector<pcie::Bdf> outside;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    if (!reached[i]) outside.push_back(devices[i].bdf);
  }
  return outside;
}

nlohmann::ordered_json tree_to_json(const std::vector<pcie::DeviceInfo>& devices, const std::vector<bool>& selected) {
  const BusTree tree(devices, selected);
  std::vector<bool> on_path(tree.bridge_count(), false);
  return buses_json(tree, 0, on_path);
}

}  // namespace pciectl
