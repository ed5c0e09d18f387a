// The system calls of the removal guard (src/removal/): some run inside a SIGBUS/SIGSEGV
// handler, so those return a plain errno and allocate nothing (mmap and sigaction are
// system calls, safe there; building an Error is not).
#pragma once

#include <signal.h>

#include <cstddef>

#include "pcie/error.h"
#include "pcie/sys/unique_fd.h"

namespace pcie::sys {

// A memfd of `length` bytes that all read 0xff, for replacing device mappings.
Result<UniqueFd> make_all_ones_memfd(std::size_t length);

// Replaces [address, address + length) by inaccessible anonymous memory (mmap MAP_FIXED,
// PROT_NONE): whatever was mapped there is gone at once. 0 or an errno. Signal-safe.
int replace_with_inaccessible(void* address, std::size_t length) noexcept;

// Maps the first `length` bytes of `memfd` privately at `address` (MAP_FIXED), readable
// and writable: writes land in private copies. 0 or an errno. Signal-safe.
int map_private_fixed(int memfd, void* address, std::size_t length) noexcept;

// sigaction(2) for `signal_number` with `handler` (SA_SIGINFO | SA_ONSTACK), saving the
// previous action in `previous`.
Result<void> install_fault_handler(int signal_number, void (*handler)(int, siginfo_t*, void*),
                                   struct sigaction* previous);

// Sets `signal_number` back to its default action. Signal-safe.
void restore_default_action(int signal_number) noexcept;
// sigaction(2) putting back a disposition that install_fault_handler() returned.
void restore_handler(int signal_number, const struct sigaction& previous) noexcept;

}  // namespace pcie::sys
