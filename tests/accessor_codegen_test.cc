// The unchecked accessors promise one load or store instruction each (pcie/mmio.h): a
// device register must see exactly the access the driver wrote, never a split or a
// read-modify-write. This test disassembles its own probes (accessor_probes.cc) with
// objdump and fails on anything else.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "tests/cli_helpers.h"

namespace {

using pcie::cli::CommandResult;
using pcie::cli::lines_of;
using pcie::cli::make_scratch_dir;
using pcie::cli::run_command;

struct Instruction {
  std::string mnemonic;
  std::string operands;
};

// The instructions of `symbol` in this test binary, without padding and without the
// frame-pointer prologue/epilogue (push/mov/pop %rbp), which the build's
// -fno-omit-frame-pointer adds to every function and which belong to the probe, not to
// the accessor.
std::vector<Instruction> disassemble(const std::string& symbol) {
  static const std::string scratch = make_scratch_dir("pcie-codegen");
  // This binary's own path: /proc/self/exe in the shell that system() starts is the shell.
  static const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const CommandResult result =
      run_command("objdump -d --no-show-raw-insn -M att --disassemble=" + symbol + " '" + self + "'", scratch);
  std::vector<Instruction> instructions;
  bool inside = false;
  static const std::regex line(R"(^\s*[0-9a-f]+:\s+(\S+)\s*(.*?)\s*$)");
  for (const std::string& text : lines_of(result.out)) {
    if (text.find("<" + symbol + ">:") != std::string::npos) {
      inside = true;
      continue;
    }
    if (!inside) continue;
    std::smatch match;
    if (!std::regex_match(text, match, line)) continue;
    Instruction instruction{match[1], match[2]};
    const std::string& m = instruction.mnemonic;
    if (m == "endbr64" || m.starts_with("nop") || m == "int3" || m == "xchg" || m == "leave") continue;
    if ((m == "push" || m == "pop") && instruction.operands == "%rbp") continue;
    if (m == "mov" && instruction.operands == "%rsp,%rbp") continue;
    instructions.push_back(instruction);
  }
  return instructions;
}

// A memory operand is written "disp(base,index,scale)"; lea only computes the address.
bool touches_memory(const Instruction& instruction) {
  return instruction.mnemonic != "lea" && instruction.operands.find('(') != std::string::npos;
}

struct Probe {
  const char* symbol;
  bool load;
  std::regex register_of_width;  // the data register must be this wide
};

const std::regex k8(R"(%(al|bl|cl|dl|sil|dil|r\d+b)\b)");
const std::regex k16(R"(%(ax|bx|cx|dx|si|di|r\d+w)\b)");
const std::regex k32(R"(%(eax|ebx|ecx|edx|esi|edi|r\d+d)\b)");
const std::regex k64(R"(%(rax|rbx|rcx|rdx|rsi|rdi|r\d+)(,|$))");

class AccessorCodegen : public ::testing::TestWithParam<int> {};

const std::vector<Probe>& probes() {
  static const std::vector<Probe> all = {
      {"probe_read8", true, k32},  // movzbl: a one-byte load, zero-extended into %eax
      {"probe_read16", true, k32}, // movzwl
      {"probe_read32", true, k32},
      {"probe_read64", true, k64},
      {"probe_write8", false, k8},
      {"probe_write16", false, k16},
      {"probe_write32", false, k32},
      {"probe_write64", false, k64},
      {"probe_read_relaxed32", true, k32},
      {"probe_read_relaxed64", true, k64},
      {"probe_write_relaxed32", false, k32},
      {"probe_write_relaxed64", false, k64},
  };
  return all;
}

TEST_P(AccessorCodegen, CompilesToOneLoadOrStore) {
  const Probe& probe = probes()[static_cast<std::size_t>(GetParam())];
  const std::vector<Instruction> code = disassemble(probe.symbol);
  ASSERT_FALSE(code.empty()) << "objdump found no " << probe.symbol << " (is binutils installed?)";
  std::string listing;
  for (const Instruction& instruction : code) listing += "  " + instruction.mnemonic + " " + instruction.operands + "\n";
  SCOPED_TRACE(std::string(probe.symbol) + ":\n" + listing);
  ASSERT_EQ(code.back().mnemonic, "ret");
  // Address arithmetic (add, lea) may come first; exactly one instruction touches memory.
  std::vector<Instruction> accesses;
  for (const Instruction& instruction : code) {
    if (touches_memory(instruction)) accesses.push_back(instruction);
    EXPECT_FALSE(instruction.mnemonic.starts_with("lock") || instruction.mnemonic.ends_with("fence"))
        << "no fence or locked instruction belongs in an x86 accessor";
  }
  ASSERT_EQ(accesses.size(), 1u) << "expected exactly one load or store";
  EXPECT_LE(code.size(), 4u) << "more than address arithmetic, one access and ret";
  const Instruction& access = accesses.front();
  EXPECT_TRUE(access.mnemonic.starts_with("mov")) << access.mnemonic;
  ASSERT_TRUE(touches_memory(access));
  // AT&T order: source, destination. A load has the memory operand first.
  const std::size_t comma = access.operands.rfind(',');
  ASSERT_NE(comma, std::string::npos);
  const std::string source = access.operands.substr(0, comma);
  const std::string destination = access.operands.substr(comma + 1);
  if (probe.load) {
    EXPECT_NE(source.find('('), std::string::npos) << "not a load";
    EXPECT_TRUE(std::regex_search(destination, probe.register_of_width)) << "wrong width";
    const std::string symbol = probe.symbol;
    if (symbol == "probe_read8") {
      EXPECT_EQ(access.mnemonic, "movzbl");
    } else if (symbol == "probe_read16") {
      EXPECT_EQ(access.mnemonic, "movzwl");
    }
  } else {
    EXPECT_NE(destination.find('('), std::string::npos) << "not a store";
    EXPECT_TRUE(std::regex_search(source, probe.register_of_width)) << "wrong width";
  }
}

// A success costs no more than the flag that says so: value-initializing a Result<void>
// (every `return {};`) must not zero the Error it could have held (about 150 bytes, by
// `rep stosq`: 14 ns a call on AMD Zen 5, which made pcie::copy of 64 bytes 8x memcpy),
// and pcie::copy's inline path is memcpy and that flag.
TEST(ResultCodegen, SuccessZeroesNoErrorStorage) {
  for (const char* symbol : {"probe_result_success", "probe_host_copy"}) {
    const std::vector<Instruction> code = disassemble(symbol);
    ASSERT_FALSE(code.empty()) << "objdump found no " << symbol << " (is binutils installed?)";
    std::string listing;
    for (const Instruction& instruction : code) listing += "  " + instruction.mnemonic + " " + instruction.operands + "\n";
    SCOPED_TRACE(std::string(symbol) + ":\n" + listing);
    for (const Instruction& instruction : code) {
      EXPECT_FALSE(instruction.mnemonic.starts_with("rep")) << "a string store: the Error's storage zeroed";
    }
    // The flag's store and ret. (The copy's listing also holds its out-of-line error path.)
    if (std::string(symbol) == "probe_result_success") {
      EXPECT_LE(code.size(), 4u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryAccessor, AccessorCodegen, ::testing::Range(0, 12),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(probes()[static_cast<std::size_t>(info.param)].symbol);
                         });

}  // namespace
