#include <fmt/format.h>

#include "pcie/dma.h"

namespace pcie {

Result<std::size_t> device_pages(BusAddress base, std::size_t size, std::size_t offset, std::size_t length,
                                 std::uint64_t page_size, std::span<std::uint64_t> out) {
  const std::string object = fmt::format("bytes [{:#x}, +{:#x}) of a {:#x}-byte DMA buffer", offset, length, size);
  if (page_size < 512 || page_size > (1ull << 30) || (page_size & (page_size - 1)) != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "list device pages", object,
                                      fmt::format("page size {:#x} is not a power of two from 512 B to 1 GiB",
                                                  page_size)));
  }
  if (length == 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "list device pages", object, "the range is empty"));
  }
  if (offset > size || length > size - offset) {
    return std::unexpected(make_error(Errc::out_of_range, "list device pages", object, "not inside the buffer"));
  }
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  if (__builtin_add_overflow(base.value, offset, &first) || __builtin_add_overflow(first, length - 1, &last)) {
    return std::unexpected(make_error(Errc::out_of_range, "list device pages", object,
                                      fmt::format("bus address {:#x} + the range overflows 64 bits", base.value)));
  }
  const std::uint64_t mask = page_size - 1;
  const std::uint64_t count = ((last & ~mask) - (first & ~mask)) / page_size + 1;
  if (count > out.size()) {
    return std::unexpected(make_error(Errc::out_of_range, "list device pages", object,
                                      fmt::format("the range covers {} pages of {:#x} bytes, and room for {} was given",
                                                  count, page_size, out.size()),
                                      fmt::format("pass room for {} entries", count)));
  }
  out[0] = first;
  for (std::uint64_t page = 1; page < count; ++page) out[page] = (first & ~mask) + page * page_size;
  return static_cast<std::size_t>(count);
}

}  // namespace pcie
