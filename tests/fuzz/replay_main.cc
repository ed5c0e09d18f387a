// Replays a fuzz target's checked-in corpus (tests/fuzz/corpus/<target>/) under GoogleTest,
// one test case per input, in every build configuration: the inputs that once found a
// defect, and the seeds, must keep passing. The target aborts on a violated invariant,
// which fails the test binary. Flags: --corpus=DIR.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

class ReplayOne : public ::testing::Test {
 public:
  explicit ReplayOne(std::filesystem::path input) : input_(std::move(input)) {}
  void TestBody() override {
    std::ifstream in(input_, std::ios::binary);
    ASSERT_TRUE(in) << input_;
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()), 0);
  }

 private:
  std::filesystem::path input_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::string corpus;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument.starts_with("--corpus=")) corpus = argument.substr(9);
  }
  std::vector<std::filesystem::path> inputs;
  for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
    if (entry.is_regular_file()) inputs.push_back(entry.path());
  }
  std::sort(inputs.begin(), inputs.end());
  if (inputs.empty()) {
    std::fprintf(stderr, "no corpus in '%s' (run with --corpus=DIR)\n", corpus.c_str());
    return 1;
  }
  for (const auto& input : inputs) {
    ::testing::RegisterTest("Corpus", input.filename().c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [input]() -> ::testing::Test* { return new ReplayOne(input); });
  }
  return RUN_ALL_TESTS();
}
