// pciectl's physical-address commands: `iomem` (the kernel's resource tree, with the device
// and the claimer of each range) and `mem read|write|dump` through /dev/mem, in the manner
// of devmem2; and the register dump they share with `dump`.
#pragma once

#include <string>

#include "pcie/region.h"

namespace pciectl {

// Prints `length_text` bytes (default 256, or to the end) of `region` from `start`, one
// `width` access at a time, 16 bytes a line, each line labelled with its offset plus
// `label_base` (a physical address for /dev/mem windows). Returns an exit code.
int dump_region(const pcie::Region& region, pcie::Width width, std::uint64_t start, const std::string& length_text,
                std::uint64_t label_base = 0);

// `pciectl iomem [ADDRESS]`: the tree, or the ranges holding ADDRESS and who owns it.
int run_iomem(const std::string& iomem_path, const std::string& address_text);

struct MemOptions {
  std::string action;  // read, write or dump
  std::string address, value, length;
  unsigned width_bits = 32;
  std::string dev_mem = "/dev/mem";
  std::string iomem = "/proc/iomem";
};
int run_mem(const MemOptions& options);

}  // namespace pciectl
