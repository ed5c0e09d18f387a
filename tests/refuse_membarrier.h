// Makes every later membarrier(2) call of this process (all its threads, and threads it
// starts) fail with ENOSYS, as an old kernel or a sandbox that refuses the call would: a
// seccomp filter, which cannot be removed again. Returns false, having printed why, when
// the filter could not be installed or membarrier still answers.
#pragma once

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace pcie::sandboxing {

inline bool refuse_membarrier() {
  sock_filter program[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_membarrier, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog filter{static_cast<unsigned short>(sizeof(program) / sizeof(program[0])), program};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return std::perror("PR_SET_NO_NEW_PRIVS"), false;
  // SECCOMP_FILTER_FLAG_TSYNC: the process's other threads too.
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &filter) != 0) {
    return std::perror("seccomp"), false;
  }
  errno = 0;
  const long answer = syscall(SYS_membarrier, 0 /* MEMBARRIER_CMD_QUERY */, 0, 0);
  if (answer != -1 || errno != ENOSYS) {
    std::fprintf(stderr, "membarrier still answers (%ld, %s)\n", answer, std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace pcie::sandboxing
