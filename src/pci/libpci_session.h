// A pci_access owned by RAII, for what the library still asks of libpci: names from
// pci.ids and udev's hwdb, and the lspci filter syntax. libpci reports errors through a
// callback that must not return (its default prints and calls exit(1)); the library never
// exits, so the callback longjmps back to the guarded call instead, and the guarded call
// returns an Error. Private to the library.
#pragma once

// libpci 3.9's header has no extern "C" guard of its own.
extern "C" {
#include <pci/pci.h>
}

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/error.h"

namespace pcie::detail {

class LibpciSession {
 public:
  // pci_alloc + sysfs method + sysfs.path + optional pci.ids path + pci_init.
  static Result<LibpciSession> open(const std::string& pci_root, const std::string& ids_path);

  LibpciSession(LibpciSession&&) noexcept = default;
  LibpciSession& operator=(LibpciSession&&) noexcept = delete;
  // pci_cleanup.
  ~LibpciSession() = default;

  // For pci_filter_init; libpci reads no device through it (discovery reads sysfs itself).
  pci_access* access() const { return access_.get(); }
  // pci_lookup_name with PCI_LOOKUP_NO_NUMBERS: empty when unknown.
  std::string lookup_name(int flags, int arg1, int arg2 = 0, int arg3 = 0, int arg4 = 0);
  // Whether lookup_name asks udev's hwdb before pci.ids (lspci's order); off by default.
  void set_names_from_hwdb(bool on) { names_from_hwdb_ = on; }
  // Warnings libpci printed through its warning callback, oldest first.
  const std::vector<std::string>& warnings() const { return *warnings_; }
  // Why names are missing, when libpci could not load its ID list (pci.ids); it says
  // nothing itself and answers every lookup with "unknown".
  const std::optional<std::string>& names_unavailable() const { return names_unavailable_; }
  // Why the hwdb was given up for pci.ids, when it was asked for and failed other than by
  // being absent.
  const std::optional<std::string>& hwdb_unavailable() const { return hwdb_unavailable_; }

 private:
  struct Deleter {
    void operator()(pci_access* access) const;
  };
  LibpciSession(std::unique_ptr<pci_access, Deleter> access,
                std::unique_ptr<std::vector<std::string>> warnings)
      : access_(std::move(access)), warnings_(std::move(warnings)) {}

  std::unique_ptr<pci_access, Deleter> access_;
  std::unique_ptr<std::vector<std::string>> warnings_;
  // Loads the ID list once, noting why it could not be loaded.
  void load_names();
  static std::optional<std::string> why_no_hwdb();
  void probe_hwdb();
  bool hwdb_probed_ = false;
  bool names_loaded_ = false;
  bool names_from_hwdb_ = false;
  std::optional<std::string> names_unavailable_;
  std::optional<std::string> hwdb_unavailable_;
};

}  // namespace pcie::detail
