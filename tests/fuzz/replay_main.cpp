// A main() for the fuzz targets where libFuzzer is not available (any compiler): runs every
// file given on the command line, or every file of every directory given, through
// LLVMFuzzerTestOneInput once. The committed corpora (seeds and regression inputs of past
// findings) run this way on every build, so a fixed bug stays fixed even without clang.
// A finding is a crash, an abort or a sanitizer report, exactly as under libFuzzer.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const fs::path p(argv[i]);
    if (fs::is_directory(p)) {
      for (const auto& ent : fs::directory_iterator(p))
        if (ent.is_regular_file()) inputs.push_back(ent.path());
    } else if (fs::is_regular_file(p)) {
      inputs.push_back(p);
    } else {
      std::fprintf(stderr, "replay: %s is neither a file nor a directory\n", argv[i]);
      return 2;
    }
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR|FILE...  (runs each input through the fuzz target once)\n", argv[0]);
    return 2;
  }
  std::sort(inputs.begin(), inputs.end());
  for (const fs::path& p : inputs) {
    std::ifstream in(p, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) {
      std::fprintf(stderr, "replay: cannot read %s\n", p.c_str());
      return 2;
    }
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", p.filename().c_str(), bytes.size());
    // A copy the size of the input, so an overread is as visible to a sanitizer as under libFuzzer.
    // (Never a null pointer, even for an empty input, as under libFuzzer.)
    std::vector<uint8_t> copy(std::max<size_t>(bytes.size(), 1));
    if (!bytes.empty()) std::memcpy(copy.data(), bytes.data(), bytes.size());
    LLVMFuzzerTestOneInput(copy.data(), bytes.size());
  }
  std::printf("replay: %zu inputs ran, no finding\n", inputs.size());
  return 0;
}
