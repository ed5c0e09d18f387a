#include <fmt/format.h>

#include "pcie/mmio.h"

namespace pcie {

Error MmioView::removed_error(std::uint64_t offset, std::size_t bytes) const {
  return make_error(Errc::device_removed, "poll", fmt::format("{} offset 0x{:x}", name_, offset),
                    fmt::format("the {}-bit register reads all ones: the device is gone or in reset (a read it cannot "
                                "answer completes as all ones)",
                                bytes * 8),
                    "check that the device is still present (lspci) and not in reset; reopen it once it is back");
}

}  // namespace pcie
