// Replays fuzz inputs through a target's LLVMFuzzerTestOneInput without libFuzzer, so the normal
// (gcc) build runs the committed corpora as regression tests:
//
//     fuzz_replay_<target> DIR_OR_FILE...
//
// Every regular file under each directory (recursively, in sorted order) is one input. Exits 0
// when every input ran; a bug aborts (oracle), terminates (an exception other than
// zeroskip::Error escapes) or is reported by a sanitizer when the build has them. An argument
// that names nothing, or a directory with no inputs, is an error so a moved corpus cannot make
// the test pass vacuously.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

bool ReadFile(const fs::path& path, std::vector<uint8_t>& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
    return 2;
  }
  size_t total = 0;
  for (int i = 1; i < argc; ++i) {
    const fs::path arg = argv[i];
    std::vector<fs::path> inputs;
    std::error_code ec;
    if (fs::is_directory(arg, ec)) {
      for (fs::recursive_directory_iterator it(arg, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->is_regular_file()) inputs.push_back(it->path());
      }
      if (ec) {
        std::fprintf(stderr, "%s: cannot list: %s\n", argv[i], ec.message().c_str());
        return 2;
      }
      std::sort(inputs.begin(), inputs.end());
      if (inputs.empty()) {
        std::fprintf(stderr, "%s: no inputs\n", argv[i]);
        return 2;
      }
    } else if (fs::is_regular_file(arg, ec)) {
      inputs.push_back(arg);
    } else {
      std::fprintf(stderr, "%s: no such file or directory\n", argv[i]);
      return 2;
    }
    std::vector<uint8_t> bytes;
    for (const fs::path& input : inputs) {
      if (!ReadFile(input, bytes)) {
        std::fprintf(stderr, "%s: cannot read\n", input.c_str());
        return 2;
      }
      // Printed first, so the input that crashes is the last line of the log.
      std::fprintf(stderr, "replay %s (%zu bytes)\n", input.c_str(), bytes.size());
      // A fresh allocation of exactly `size` bytes (never null), as libFuzzer passes, so
      // sanitizers see any read past the input.
      std::unique_ptr<uint8_t[]> copy(new uint8_t[bytes.size()]);
      std::copy(bytes.begin(), bytes.end(), copy.get());
      LLVMFuzzerTestOneInput(copy.get(), bytes.size());
      ++total;
    }
  }
  std::fprintf(stderr, "replayed %zu inputs: ok\n", total);
  return 0;
}
