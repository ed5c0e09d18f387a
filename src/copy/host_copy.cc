// Host-to-host copies through the copy kernels (copy_host's checked slow path).
#include <fmt/format.h>

#include <cstring>

#include "pcie/barriers.h"
#include "pcie/copy.h"
#include "src/copy/host_plan.h"
#include "src/copy/kernel_choice.h"
#include "src/copy/parallel.h"

namespace pcie {

using copy_detail::cap_widths;
using copy_detail::functions_of;
using copy_detail::kernel_widths;
using copy_detail::run_job;
using copy_detail::SpanJob;
using copy_detail::valid_max_access;

namespace detail {

void copy_host_planned(void* destination, const void* source, std::size_t length) noexcept {
  copy_detail::copy_by_plan(copy_detail::host_copy_plan(), static_cast<std::byte*>(destination),
                            static_cast<const std::byte*>(source), length);
}

Result<void> overlapping_copy_failure(const void* destination, const void* source, std::size_t length) {
  return std::unexpected(make_error(Errc::invalid_argument, "copy",
                                    fmt::format("{} bytes from {} to {}", length, source, destination),
                                    "the ranges overlap", "use memmove for overlapping ranges"));
}

Result<void> copy_host_slow(void* destination, const void* source, std::size_t length, const CopyOptions& options) {
  const std::string object = fmt::format("{} bytes from {} to {}", length, source, destination);
  if (!valid_max_access(options.max_access_bytes)) {
    return std::unexpected(make_error(Errc::invalid_argument, "copy", object,
                                      "max_access_bytes is not a power of two from 1 to 64"));
  }
  if (length == 0) return {};
  if (destination == nullptr || source == nullptr) {
    return std::unexpected(make_error(Errc::invalid_argument, "copy", object, "null buffer"));
  }
  const CopyKernel kernel = options.kernel;
  if (!copy_kernel_supported(kernel)) {
    return std::unexpected(make_error(Errc::not_supported, "copy", object,
                                      fmt::format("this CPU has no {} instructions", to_string(kernel)),
                                      "use CopyKernel::automatic"));
  }
  const auto to = reinterpret_cast<std::uintptr_t>(destination);
  auto* from = static_cast<std::byte*>(const_cast<void*>(source));
  if (kernel == CopyKernel::libc) {
    const SpanJob job{to, from, length, 0};
    run_job([](const SpanJob& part) { std::memcpy(reinterpret_cast<void*>(part.device), part.host, part.length); },
            job, options);
    return {};
  }
  if (options.kernel == CopyKernel::automatic) {  // with workers: each part by the plan
    const SpanJob job{to, from, length, 0};
    run_job([](const SpanJob& part) { copy_host_planned(reinterpret_cast<void*>(part.device), part.host, part.length); },
            job, options);
    return {};
  }
  const SpanJob job{to, from, length, cap_widths(kernel_widths(kernel), options.max_access_bytes)};
  run_job(functions_of(kernel).host_copy, job, options);
  barrier_before_doorbell();  // non-temporal stores are weakly ordered
  return {};
}

}  // namespace detail

std::string host_copy_plan_description() { return copy_detail::host_copy_plan().description; }

}  // namespace pcie
