// Code compiled for a wider instruction set may run only after the CPU check says the CPU
// has it (pcie/copy.h, src/copy/kernels.h). The copy kernels are compiled with
// `#pragma GCC target("avx2")` and the like; anything else in those files that runs before
// the check (a descriptor built by a function, a COMDAT helper the linker shares with
// other files) faults with SIGILL on an older CPU. This test disassembles whole binaries
// (itself and pciectl) and fails when any function other than the kernel loops contains
// an instruction beyond x86-64's baseline (SSE2): VEX or EVEX encoded (AVX, AVX2,
// AVX-512, BMI), SSE3 to SSE4.2, or MOVDIR64B.
//
// Flags: --pciectl=PATH.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "pcie/copy.h"
#include "tests/cli_helpers.h"

namespace {

using pcie::cli::g_pciectl;
using pcie::cli::make_scratch_dir;
using pcie::cli::run_command;

// Legacy-encoded instructions above SSE2 (Intel SDM vol. 2: SSE3, SSSE3, SSE4.1, SSE4.2),
// and the direct stores. pinsrw/pextrw with register operands are SSE2 and allowed.
const std::set<std::string>& wider_mnemonics() {
  static const std::set<std::string> names = {
      // SSE3
      "addsubpd", "addsubps", "haddpd", "haddps", "hsubpd", "hsubps", "lddqu", "movddup", "movshdup", "movsldup",
      // SSSE3
      "pabsb", "pabsd", "pabsw", "palignr", "phaddd", "phaddsw", "phaddw", "phsubd", "phsubsw", "phsubw",
      "pmaddubsw", "pmulhrsw", "pshufb", "psignb", "psignd", "psignw",
      // SSE4.1
      "blendpd", "blendps", "blendvpd", "blendvps", "dppd", "dpps", "extractps", "insertps", "movntdqa", "mpsadbw",
      "packusdw", "pblendvb", "pblendw", "pcmpeqq", "pextrb", "pextrd", "pextrq", "phminposuw", "pinsrb", "pinsrd",
      "pinsrq", "pmaxsb", "pmaxsd", "pmaxud", "pmaxuw", "pminsb", "pminsd", "pminud", "pminuw", "pmovsxbd",
      "pmovsxbq", "pmovsxbw", "pmovsxdq", "pmovsxwd", "pmovsxwq", "pmovzxbd", "pmovzxbq", "pmovzxbw", "pmovzxdq",
      "pmovzxwd", "pmovzxwq", "pmuldq", "pmulld", "ptest", "roundpd", "roundps", "roundsd", "roundss",
      // SSE4.2, POPCNT, LZCNT, ADX, MOVBE
      "pcmpestri", "pcmpestrm", "pcmpistri", "pcmpistrm", "pcmpgtq", "crc32", "popcnt", "lzcnt", "adcx", "adox",
      "movbe",
      // Direct stores
      "movdir64b", "movdiri"};
  return names;
}

struct Function {
  std::string name;                      // demangled
  std::vector<std::string> wider;        // instructions beyond the baseline, as listed
};

// Raw instruction bytes, e.g. "c5 fd 6f 06": VEX (c4/c5) or EVEX (62) after any legacy
// prefixes (66 f2 f3 2e 36 3e 26 64 65 f0 67) and a REX byte. In 64-bit mode these
// opcodes mean nothing else.
bool vex_or_evex(const std::string& bytes) {
  std::istringstream in(bytes);
  for (std::string byte; in >> byte;) {
    static const std::set<std::string> legacy = {"66", "f2", "f3", "2e", "36", "3e", "26", "64", "65", "f0", "67"};
    if (legacy.contains(byte)) continue;
    if (byte.size() == 2 && byte[0] == '4') continue;  // REX
    return byte == "c4" || byte == "c5" || byte == "62";
  }
  return false;
}

// Every function of `binary` that contains instructions beyond x86-64's baseline.
std::vector<Function> functions_beyond_baseline(const std::string& binary, std::size_t& functions_seen) {
  static const std::string scratch = make_scratch_dir("pcie-isa");
  const auto result = run_command("objdump -d -C -w -M att '" + binary + "'", scratch);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  static const std::regex header(R"(^[0-9a-f]+ <(.*)>:$)");
  // "  4011d6:	c5 fd 6f 06          	vmovdqa (%rsi),%ymm0"
  static const std::regex line(R"(^\s*[0-9a-f]+:\t([0-9a-f ]+)\t(\S+)\s*(.*)$)");
  std::vector<Function> found;
  Function current;
  functions_seen = 0;
  auto finish = [&] {
    if (!current.wider.empty()) found.push_back(current);
    current = Function{};
  };
  std::istringstream lines(result.out);
  for (std::string text; std::getline(lines, text);) {
    std::smatch match;
    if (std::regex_match(text, match, header)) {
      finish();
      current.name = match[1];
      ++functions_seen;
      continue;
    }
    if (!std::regex_match(text, match, line)) continue;
    const std::string bytes = match[1];
    std::string mnemonic = match[2];
    const std::string operands = match[3];
    for (const char* prefix : {"rep ", "lock "}) {
      if (mnemonic == std::string(prefix).substr(0, std::string(prefix).size() - 1)) mnemonic = operands;
    }
    if (vex_or_evex(bytes) || wider_mnemonics().contains(mnemonic) || operands.find("%ymm") != std::string::npos ||
        operands.find("%zmm") != std::string::npos) {
      if (current.wider.size() < 3) current.wider.push_back(mnemonic + " " + operands);
    }
  }
  finish();
  return found;
}

// The kernel loops and the helpers they inline (or, at -O1, call): reached only through the
// kernel table after the CPU check (src/copy/kernel_choice.cc), and the host copy loops
// (src/copy/host_loops.h), reached only through the host copy plan, which names them only
// for a CPU whose AVX2/AVX-512 the same check found usable (src/copy/host_plan.cc).
bool is_kernel_loop(const std::string& name) {
  static const std::regex loop(
      R"(^([a-z ]+ )?pcie::copy_detail::\(anonymous namespace\)::(run_span|walk_span|move_blocks|move_fitting|move_one|)"
      R"(store_vector|load_vector|stream_vector|stream_load_vector|store_register|load_register|widest_fit|)"
      R"(direct_stores|VectorOps<.*>::move|DirectStores::move|copy_host_vectors|HostVector<.*>::)"
      R"((load|store|store_unaligned|stream))\b)");
  return std::regex_search(name, loop);
}

void expect_only_kernel_loops_are_wider(const std::string& binary) {
  std::size_t functions = 0;
  const std::vector<Function> wider = functions_beyond_baseline(binary, functions);
  ASSERT_GT(functions, 100u) << "objdump listed too few functions in " << binary;
  std::size_t kernel_loops = 0;
  for (const Function& function : wider) {
    if (is_kernel_loop(function.name)) {
      ++kernel_loops;
      continue;
    }
    std::string listing;
    for (const std::string& instruction : function.wider) listing += "\n    " + instruction;
    ADD_FAILURE() << binary << ": " << function.name << " is not a kernel loop but contains" << listing;
  }
  // The test must see the kernels it exempts, or it proves nothing.
  EXPECT_GE(kernel_loops, 4u) << "no AVX/SSE4.1 kernel loops found in " << binary;
}

TEST(InstructionSet, OnlyKernelLoopsUseInstructionsBeyondSse2InThisBinary) {
  // Referencing the copy path links every kernel object into this binary.
  ASSERT_TRUE(pcie::copy_kernel_supported(pcie::CopyKernel::registers));
  expect_only_kernel_loops_are_wider(std::filesystem::read_symlink("/proc/self/exe").string());
}

TEST(InstructionSet, OnlyKernelLoopsUseInstructionsBeyondSse2InPciectl) {
  ASSERT_FALSE(g_pciectl.empty()) << "run with --pciectl=PATH";
  expect_only_kernel_loops_are_wider(g_pciectl);
}

// The classifier itself, on instructions GCC emitted in the descriptor functions that once
// faulted on CPUs without AVX2 (issue: SIGILL on qemu64/Nehalem).
TEST(InstructionSet, ClassifierRecognisesWiderEncodings) {
  EXPECT_TRUE(vex_or_evex("c4 e3 f9 22 c1 01"));     // vpinsrq
  EXPECT_TRUE(vex_or_evex("c5 fd 6f 06"));           // vmovdqa (%rsi),%ymm0
  EXPECT_TRUE(vex_or_evex("62 f1 7e 48 6f 06"));     // vmovdqu64 (%rsi),%zmm0
  EXPECT_TRUE(vex_or_evex("67 c5 f8 77"));           // a prefix before VEX
  EXPECT_FALSE(vex_or_evex("66 48 0f 3a 22 c1 01")); // pinsrq: legacy SSE4.1, caught by name
  EXPECT_FALSE(vex_or_evex("48 89 c7"));             // mov %rax,%rdi
  EXPECT_FALSE(vex_or_evex("66 0f 6f 06"));          // movdqa: SSE2
  EXPECT_TRUE(wider_mnemonics().contains("pinsrq"));
  EXPECT_FALSE(wider_mnemonics().contains("movdqa"));
  EXPECT_TRUE(is_kernel_loop("void pcie::copy_detail::(anonymous namespace)::run_span<pcie::copy_detail::(anonymous "
                             "namespace)::VectorOps<32ul, (pcie::copy_detail::(anonymous namespace)::VectorMove)0> "
                             ">(pcie::copy_detail::SpanJob const&)"));
  EXPECT_FALSE(is_kernel_loop("pcie::copy_detail::avx2_kernel()"));
  EXPECT_FALSE(is_kernel_loop("pcie::copy_detail::(anonymous namespace)::vector_kernel<32ul, true>()"));
}

}  // namespace

int main(int argc, char** argv) { return pcie::cli::run_all_tests(argc, argv); }
