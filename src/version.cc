#include "pcie/version.h"

namespace pcie {

const char* library_version() noexcept { return PCIE_VERSION; }

}  // namespace pcie
