#include "test_util.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "zeroskip/convert.h"

extern char** environ;

namespace zeroskip::testing {
namespace fs = std::filesystem;

std::string SourceDir() { return ZEROSKIP_SOURCE_DIR; }
std::string TestDataDir() { return ZEROSKIP_TESTDATA; }
std::string CliBinary() { return ZEROSKIP_BIN; }

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "zeroskip-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}
TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

const std::string& ConvertedModel(const std::string& name) {
  static TempDir dir;
  static std::map<std::string, std::string> done;
  auto it = done.find(name);
  if (it == done.end()) {
    ConvertOptions opt;
    const bool in_repo = name.find('/') != std::string::npos;
    opt.hf_dir = (in_repo ? SourceDir() : TestDataDir()) + "/" + name;
    std::string file = name;
    std::replace(file.begin(), file.end(), '/', '_');
    opt.out_path = dir / (file + ".zsk");
    ConvertHfCheckpoint(opt);
    it = done.emplace(name, opt.out_path).first;
  }
  return it->second;
}

const Model& LoadedModel(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Model>> models;
  auto& m = models[name];
  if (!m) m = Model::Load(ConvertedModel(name));
  return *m;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) lines.push_back(line);
  return lines;
}

CliResult RunCli(const std::vector<std::string>& args) {
  TempDir io;
  const std::string out_path = io / "out", err_path = io / "err";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  std::vector<std::string> argv_store = {CliBinary()};
  argv_store.insert(argv_store.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_store) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  CliResult r;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) == 0) {
    int status = 0;
    waitpid(pid, &status, 0);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  posix_spawn_file_actions_destroy(&actions);
  r.out = ReadFile(out_path);
  r.err = ReadFile(err_path);
  return r;
}

}  // namespace zeroskip::testing
