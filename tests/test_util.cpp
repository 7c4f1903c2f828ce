#include "test_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>

#include "checkpoint_edit.h"
#include "format/file_io.h"
#include "format/safetensors.h"
#include "zeroskip/convert.h"
#include "zeroskip/error.h"

extern char** environ;

namespace zeroskip::testing {
namespace fs = std::filesystem;

std::vector<Isa> AllIsaValues() {
  std::vector<Isa> isas;
  for (const IsaInfo& info : AllIsas()) isas.push_back(info.isa);
  return isas;
}

std::vector<Isa> SimdIsas() {
  std::vector<Isa> isas = AllIsaValues();
  std::erase(isas, Isa::kScalar);
  return isas;
}

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
    std::string base = name;
    if (base.ends_with(kShadowSuffix)) {
      opt.shadow_gate = true;
      base.resize(base.size() - kShadowSuffix.size());
    }
    const size_t at = base.find('@');
    const std::string checkpoint = base.substr(0, at);
    if (at != std::string::npos) {
      opt.dtype = ParseDTypeName(base.substr(at + 1));
      if (!opt.dtype) throw std::invalid_argument("no dtype " + base.substr(at + 1));
    }
    const bool in_repo = checkpoint.find('/') != std::string::npos;
    opt.hf_dir = (in_repo ? SourceDir() : TestDataDir()) + "/" + checkpoint;
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

namespace {
// (-1)^sign · 2^(exponent - bias) · 1.mantissa, subnormals 0.mantissa · 2^(1 - bias), all-ones
// exponent: infinity or NaN.
float FromFields(uint32_t sign, uint32_t exponent, uint32_t mantissa, int mantissa_bits,
                 int exponent_bits) {
  const int bias = (1 << (exponent_bits - 1)) - 1;
  const uint32_t all_ones = (1u << exponent_bits) - 1;
  double magnitude;
  if (exponent == all_ones) {
    magnitude = mantissa ? std::numeric_limits<double>::quiet_NaN()
                         : std::numeric_limits<double>::infinity();
  } else if (exponent == 0) {
    magnitude = std::ldexp(double(mantissa), 1 - bias - mantissa_bits);
  } else {
    magnitude =
        std::ldexp(double(mantissa + (1u << mantissa_bits)), int(exponent) - bias - mantissa_bits);
  }
  return static_cast<float>(sign ? -magnitude : magnitude);
}

// Rounds |v| to a multiple of its binade's quantum 2^(e - mantissa_bits), e >= min_exponent
// (subnormals share the smallest binade's quantum); nearbyint rounds ties to even.
float RoundTo(float v, int mantissa_bits, int min_exponent, double max_finite) {
  if (std::isnan(v) || std::isinf(v) || v == 0.0f) return v;
  const double a = std::abs(double(v));
  int exponent;
  std::frexp(a, &exponent);  // a = m · 2^exponent, m in [0.5, 1)
  const int e = std::max(min_exponent, exponent - 1);
  const double quantum = std::ldexp(1.0, e - mantissa_bits);
  double r = std::nearbyint(a / quantum) * quantum;
  if (r > max_finite) r = std::numeric_limits<double>::infinity();
  return static_cast<float>(std::copysign(r, double(v)));
}
}  // namespace

float RoundToHalf(float v) { return RoundTo(v, 10, -14, 65504.0); }

float RoundToBf16(float v) {
  return RoundTo(v, 7, -126, std::ldexp(255.0, 127 - 7));  // 0x7f7f: (2 - 2^-7) · 2^127
}

float HalfBitsToFloat(uint16_t bits) {
  return FromFields(bits >> 15, (bits >> 10) & 0x1f, bits & 0x3ff, 10, 5);
}

float Bf16BitsToFloat(uint16_t bits) {
  return FromFields(bits >> 15, (bits >> 7) & 0xff, bits & 0x7f, 7, 8);
}

std::string ErrorText(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string VmFlagsOf(const void* p) {
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::istringstream smaps(ReadFile("/proc/self/smaps"));
  bool in_mapping = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &begin, &end) == 2) {  // a mapping starts
      in_mapping = begin <= at && at < end;
    } else if (in_mapping && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

uint64_t ResidentPagesOf(const void* p, size_t bytes) {
  const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in_memory((bytes + page - 1) / page);
  if (::mincore(const_cast<void*>(p), bytes, in_memory.data()) != 0) {
    ADD_FAILURE() << "mincore: " << std::strerror(errno);
    return 0;
  }
  return static_cast<uint64_t>(std::count_if(in_memory.begin(), in_memory.end(),
                                             [](unsigned char v) { return (v & 1) != 0; }));
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

ModelConfig TinyConfig() {
  ModelConfig c;
  c.hf_architecture = "LlamaForCausalLM";
  c.hidden = 8;
  c.ffn = 12;
  c.layers = 1;
  c.heads = 2;
  c.kv_heads = 1;
  c.head_dim = 4;
  c.vocab = 384;  // the test tokenizer's pieces: ZskFile::Open checks the embedded tokenizer
  c.context = 16;
  return c;
}

std::string StreamedText(const Tokenizer& tok, const std::vector<int>& ids) {
  Utf8Stream stream;
  std::string streamed;
  for (int id : ids) {
    const std::string out = stream.Push(tok.PieceBytes(id));
    EXPECT_TRUE(IsValidUtf8(out)) << "after id " << id;
    streamed += out;
  }
  return streamed + stream.Flush();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) lines.push_back(line);
  return lines;
}

std::string JoinIds(const std::vector<int>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
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

double MaxRelativeError(std::span<const float> got, const nlohmann::json& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(want[i].get<double>()));
    max_err = std::max(max_err, std::abs(got[i] - want[i].get<double>()));
  }
  return max_err / max_ref;
}

void ExpectNearReference(std::span<const float> got, const nlohmann::json& want,
                         const std::string& where, double tolerance) {
  ASSERT_EQ(got.size(), want.size()) << where;
  EXPECT_LE(MaxRelativeError(got, want), tolerance) << where << " (relative to max |logit|)";
}

void IsaTest::SetUp() {
  if (KernelsFor(GetParam()) == nullptr) {
    GTEST_SKIP() << "this CPU cannot run " << IsaName(GetParam()) << " kernels";
  }
}

void StoreAsBf16(const std::string& file, const std::vector<std::string>& names) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const SafetensorsTensor& t : ReadSafetensorsHeader(file).tensors) {
    ASSERT_EQ(t.dtype, DType::kF32) << t.name;
    std::string bytes(t.end - t.begin, '\0');
    InputFile(file).ReadAt(t.begin, bytes.data(), bytes.size());
    const bool bf16 = std::find(names.begin(), names.end(), t.name) != names.end();
    if (bf16) {
      std::string half(bytes.size() / 2, '\0');
      for (size_t i = 0; i < half.size(); i += 2) half.replace(i, 2, bytes, 2 * i + 2, 2);
      bytes = half;
    }
    header[t.name] = {{"dtype", bf16 ? "BF16" : "F32"},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  const std::string json = header.dump();
  std::string length(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(length.data(), &n, 8);  // little-endian host, as the format
  WriteFile(file, length + json + data);
}

}  // namespace zeroskip::testing
