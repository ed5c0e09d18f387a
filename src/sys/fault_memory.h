// The system calls of the removal guard (src/removal/): some run inside a SIGBUS/SIGSEGV
// handler, so those return a plain errno and allocate nothing (mmap and sigaction are
// system calls, safe there; building an Error is not).
#pragma once

#include <signal.h>

#include <cstddef>
#include <cstdint>

#include "pcie/error.h"

namespace pcie::sys {

// A memfd of `length` bytes that all read 0xff, for replacing device mappings: its
// descriptor (close-on-exec), or minus the errno of memfd_create/ftruncate/mmap.
// Signal-safe (system calls and a memset), so that the guard can make a new one where a
// program's descriptor sweep closed the first.
int make_all_ones_memfd(std::size_t length) noexcept;

// The device and inode of open descriptor `fd` in `device`/`inode`: 0, or the errno of
// fstat (EBADF for a closed descriptor). Signal-safe.
int identity_of_fd(int fd, std::uint64_t* device, std::uint64_t* inode) noexcept;

// Replaces [address, address + length) by inaccessible anonymous memory (mmap MAP_FIXED,
// PROT_NONE): whatever was mapped there is gone at once. 0 or an errno. Signal-safe.
int replace_with_inaccessible(void* address, std::size_t length) noexcept;

// Maps the first `length` bytes of `memfd` privately at `address` (MAP_FIXED), readable
// and writable: writes land in private copies. 0 or an errno. Signal-safe.
int map_private_fixed(int memfd, void* address, std::size_t length) noexcept;

// The action now set for `signal_number` (sigaction(2) reading only). Fails with the errno.
Result<struct sigaction> current_action(int signal_number);

// Sets `handler` (SA_SIGINFO | SA_ONSTACK, every signal blocked while it runs, so that a
// handler of an asynchronous signal cannot run in the middle of it on the same thread) for
// `signal_number` and returns
// the action it replaced. Fails with the errno of sigaction(2).
Result<struct sigaction> install_fault_handler(int signal_number, void (*handler)(int, siginfo_t*, void*));

// Sets `signal_number` back to its default action. Signal-safe.
void restore_default_action(int signal_number) noexcept;
// sigaction(2) putting back a disposition that install_fault_handler() returned.
void restore_handler(int signal_number, const struct sigaction& previous) noexcept;

}  // namespace pcie::sys
