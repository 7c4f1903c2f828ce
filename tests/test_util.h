// Shared helpers for the tests: where the generated checkpoints are, converting them once per
// process, temporary directories and running the CLI binary.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "zeroskip/model.h"

namespace zeroskip::testing {

std::string SourceDir();   // repository root
std::string TestDataDir(); // generated HF checkpoints (ctest fixture)
std::string CliBinary();

// A fresh directory removed with everything in it when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The .zsk of checkpoint `name` (converted on first use, cached for the process): a generated
// test checkpoint, or a repository path such as "models/relu-ft" when the name has a '/'.
const std::string& ConvertedModel(const std::string& name);
const Model& LoadedModel(const std::string& name);

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};
// Runs the zeroskip binary with `args` (no shell involved).
CliResult RunCli(const std::vector<std::string>& args);

std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& bytes);
std::vector<std::string> Lines(const std::string& text);

}  // namespace zeroskip::testing
