// The native file: writer/reader round trip, atomicity, checksums, and the converter's output
// against the source safetensors (bit-identical when the dtype is kept, exactly rounded when
// narrowed, exactly widened when widened; the FFN down projection transposed). Expected values
// are widened and rounded by the independent oracle of test_util.h, not by ConvertMatrix.
#include "zeroskip/format.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "arch/architectures.h"
#include "checkpoint_edit.h"
#include "format/dtype.h"
#include "format/file_io.h"
#include "format/q4k_recipe.h"
#include "format/safetensors.h"
#include "format/zsk_layout.h"
#include "test_util.h"
#include "zeroskip/convert.h"
#include "zeroskip/engine.h"
#include "zeroskip/error.h"
#include "zeroskip/model.h"
#include "zeroskip/session.h"

namespace zeroskip {
namespace {

namespace fs = std::filesystem;

std::string TestTokenizer() {
  return testing::ReadFile(testing::SourceDir() + "/tests/data/tokenizer.model");
}

std::string WriteSmallFile(const std::string& path) {
  ZskWriter w(path, testing::TinyConfig(), "{\"verbatim\": true}", TestTokenizer(),
              {{"a", DType::kF32, Layout::kRowMajor, {3, 5}},
               {"b", DType::kBF16, Layout::kTransposed, {7}}});
  std::vector<uint8_t> a(60), b(14);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(200 - i);
  w.WriteNext(a);
  w.WriteNext(b);
  w.Finish();
  return path;
}

TEST(ZskFile, RoundTrips) {
  testing::TempDir dir;
  const auto file = ZskFile::Open(WriteSmallFile(dir / "m.zsk"));
  EXPECT_EQ(file->config().hidden, 8);
  EXPECT_EQ(file->source_config_json(), "{\"verbatim\": true}");
  EXPECT_EQ(file->tokenizer_model(), TestTokenizer());
  ASSERT_EQ(file->tensors().size(), 2u);
  const TensorInfo* b = file->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->layout, Layout::kTransposed);
  EXPECT_EQ(b->offset % kTensorAlign, 0u);
  EXPECT_EQ(static_cast<const uint8_t*>(file->data(*b))[0], 200);
  EXPECT_NO_THROW(file->VerifyChecksums());
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// The mapping asks for huge pages (VmFlags "hg" in /proc/self/smaps): weights then come into the
// page cache in 2 MiB folios mapped with one TLB entry each (docs/BENCHMARKS.md, issue 33).
TEST(ZskFile, MapsWithHugePages) {
  if (!fs::exists("/sys/kernel/mm/transparent_hugepage")) {
    GTEST_SKIP() << "this kernel has no transparent huge pages";
  }
  testing::TempDir dir;
  const auto file = ZskFile::Open(WriteSmallFile(dir / "m.zsk"));
  EXPECT_THAT(testing::VmFlagsOf(file->data(*file->Find("a"))), ::testing::HasSubstr(" hg"));
}

TEST(ZskFile, DetectsCorruptionTruncationAndBadMagic) {
  testing::TempDir dir;
  const std::string path = WriteSmallFile(dir / "m.zsk");
  std::string bytes = testing::ReadFile(path);
  const auto file = ZskFile::Open(path);
  const uint64_t data_at = file->Find("a")->offset;

  std::string corrupted = bytes;
  corrupted[data_at + 3] ^= 1;
  testing::WriteFile(dir / "c.zsk", corrupted);
  const auto c = ZskFile::Open(dir / "c.zsk");  // opening is O(header): data not read yet
  EXPECT_THROW(c->VerifyChecksums(), Error);

  testing::WriteFile(dir / "t.zsk", bytes.substr(0, bytes.size() - 1));
  EXPECT_THROW(ZskFile::Open(dir / "t.zsk"), Error);
  std::string magic = bytes;
  magic[0] = 'X';
  testing::WriteFile(dir / "b.zsk", magic);
  EXPECT_THROW(ZskFile::Open(dir / "b.zsk"), Error);
  std::string meta = bytes;
  meta[kZskHeaderBytes + 2] ^= 0x20;  // inside the metadata JSON: header checksum catches it
  testing::WriteFile(dir / "h.zsk", meta);
  EXPECT_THROW(ZskFile::Open(dir / "h.zsk"), Error);
}

// Two converts to one output: each writes its own temporary file, so whichever renames last
// leaves a whole file, never the other's half-written one.
TEST(ZskWriter, ConcurrentWritersOfOneOutputDoNotMix) {
  testing::TempDir dir;
  const std::vector<TensorSpec> specs = {{"a", DType::kF32, Layout::kRowMajor, {2}}};
  ZskWriter first(dir / "m.zsk", testing::TinyConfig(), "{\"writer\": 1}", TestTokenizer(), specs);
  ZskWriter second(dir / "m.zsk", testing::TinyConfig(), "{\"writer\": 2}", TestTokenizer(), specs);
  EXPECT_NE(first.tmp_path(), second.tmp_path());
  const std::vector<uint8_t> data(8, 1);
  first.WriteNext(data);
  second.WriteNext(data);
  first.Finish();
  EXPECT_EQ(ZskFile::Open(dir / "m.zsk")->source_config_json(), "{\"writer\": 1}");
  EXPECT_TRUE(fs::exists(second.tmp_path()));  // the first rename did not take the second's file
  second.Finish();
  EXPECT_EQ(ZskFile::Open(dir / "m.zsk")->source_config_json(), "{\"writer\": 2}");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(ZskWriter, RefusesOutputsThatAreNotRegularFiles) {
  testing::TempDir dir;
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  for (const std::string& out :
       {dir / "fifo", std::string("/dev/null"), dir.path(), std::string()}) {
    SCOPED_TRACE(out);
    EXPECT_THROW(CheckOutputPath(out), Error);
    EXPECT_THROW(ZskWriter(out, testing::TinyConfig(), "{}", "", {}), Error);
  }
  EXPECT_TRUE(fs::is_fifo(dir / "fifo"));
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
  EXPECT_NO_THROW(CheckOutputPath(dir / "new.zsk"));
  testing::WriteFile(dir / "old.zsk", "x");
  EXPECT_NO_THROW(CheckOutputPath(dir / "old.zsk"));
}

// Opening a FIFO for reading blocks until a writer appears; inputs must be refused at once.
TEST(InputFile, RefusesFifosWithoutBlocking) {
  testing::TempDir dir;
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  EXPECT_THROW(InputFile(dir / "fifo"), Error);
  EXPECT_THROW(ReadSmallFile(dir / "fifo", 100), Error);
  EXPECT_THROW(ZskFile::Open(dir / "fifo"), Error);
}

TEST(ZskWriter, AbandonedWriteLeavesNothing) {
  testing::TempDir dir;
  std::string tmp;
  {
    ZskWriter w(dir / "m.zsk", testing::TinyConfig(), "{}", "",
                {{"a", DType::kF32, Layout::kRowMajor, {2}}});
    tmp = w.tmp_path();
    EXPECT_TRUE(fs::exists(tmp));
    EXPECT_EQ(fs::path(tmp).parent_path(), fs::path(dir / "m.zsk").parent_path());
  }
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_FALSE(fs::exists(dir / "m.zsk"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 0);
  EXPECT_THROW(ZskWriter(dir / "missing/m.zsk", testing::TinyConfig(), "{}", "", {}), Error);
}

// n elements of `dtype` at `p`, widened (dequantized) to f32 by the test's own oracle.
std::vector<float> Widened(const uint8_t* p, DType dtype, uint64_t n) {
  std::vector<float> out(n);
  auto half = [](const uint8_t* b) {
    return testing::HalfBitsToFloat(static_cast<uint16_t>(b[0] | b[1] << 8));
  };
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t e = i % 256;
    if (dtype == DType::kQ4K) {
      // Blocks of 256: d, dmin, 12 bytes of 6-bit scales/mins, nibbles (docs/FORMAT.md).
      const uint8_t* block = p + (i / 256) * 144;
      const uint8_t* sm = block + 4;
      const uint64_t j = e / 32;
      const int sc = j < 4 ? sm[j] & 63 : (sm[j + 4] & 15) | (sm[j - 4] >> 6) << 4;
      const int m = j < 4 ? sm[j + 4] & 63 : (sm[j + 4] >> 4) | (sm[j] >> 6) << 4;
      const uint8_t byte = block[16 + 32 * (e / 64) + e % 32];
      const int level = e % 64 < 32 ? byte & 15 : byte >> 4;
      out[i] = half(block) * static_cast<float>(sc) * static_cast<float>(level) -
               half(block + 2) * static_cast<float>(m);
    } else if (dtype == DType::kQ6K) {
      // Blocks of 256: ql[128], qh[64], int8 scales[16], d (docs/FORMAT.md).
      const uint8_t* block = p + (i / 256) * 210;
      const uint64_t h = e / 128, k = e % 128 / 32, c = e % 32;
      const int low = block[64 * h + 32 * (k % 2) + c] >> (k < 2 ? 0 : 4) & 15;
      const int high = block[128 + 32 * h + c] >> 2 * k & 3;
      const auto sc = static_cast<int8_t>(block[192 + e / 16]);
      out[i] =
          half(block + 208) * static_cast<float>(sc) * static_cast<float>((low | high << 4) - 32);
    } else if (IsQuantized(dtype)) {
      // Blocks of 32: f16 scale, then q8 int8 levels; q4 byte j = level j | level j + 16 << 4.
      const uint8_t* block = p + (i / 32) * (dtype == DType::kQ8 ? 34 : 18);
      const float d = testing::HalfBitsToFloat(static_cast<uint16_t>(block[0] | block[1] << 8));
      const uint64_t j = i % 32;
      const int level = dtype == DType::kQ8 ? static_cast<int8_t>(block[2 + j])
                                            : ((block[2 + j % 16] >> (j < 16 ? 0 : 4)) & 15) - 8;
      out[i] = d * static_cast<float>(level);
    } else if (dtype == DType::kF32) {
      std::memcpy(&out[i], p + 4 * i, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, p + 2 * i, 2);
      out[i] =
          dtype == DType::kF16 ? testing::HalfBitsToFloat(bits) : testing::Bf16BitsToFloat(bits);
    }
  }
  return out;
}

// A tensor may not reach past the data, not even into bytes the file has for other reasons.
TEST(Safetensors, DataOffsetsMustStayInsideTheData) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  const uint64_t data_start = 8 + header.size();
  EXPECT_NO_THROW(ParseSafetensorsHeader(header, data_start + 16, "m.safetensors"));
  for (uint64_t data : {15, 12, 8, 0}) {
    try {
      ParseSafetensorsHeader(header, data_start + data, "m.safetensors");
      ADD_FAILURE() << "accepted " << data << " bytes of data";
    } catch (const Error& e) {
      EXPECT_EQ(e.reason(), "tensor 'a': data_offsets end 16 is past the end of the data (" +
                                std::to_string(data) + " bytes)");
    }
  }
}

// Reads a source tensor from the HF checkpoint, widened to f32.
std::vector<float> SourceTensor(const std::string& hf_dir, const std::string& name,
                                DType* dtype = nullptr) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(hf_dir)) {
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  }
  for (const auto& f : files) {
    for (const auto& t : ReadSafetensorsHeader(f).tensors) {
      if (t.name != name) continue;
      std::vector<uint8_t> raw(t.end - t.begin);
      InputFile(f).ReadAt(t.begin, raw.data(), raw.size());
      if (dtype) *dtype = t.dtype;
      return Widened(raw.data(), t.dtype, raw.size() / DTypeBytes(t.dtype, 1));
    }
  }
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

std::vector<float> StoredTensor(const ZskFile& file, const TensorInfo& t) {
  return Widened(static_cast<const uint8_t*>(file.data(t)), t.dtype, t.elements());
}

float Rounded(float v, DType to) {
  if (to == DType::kBF16) return testing::RoundToBf16(v);
  if (to == DType::kF16) return testing::RoundToHalf(v);
  return v;
}

// Rows of 32-value blocks quantized as docs/FORMAT.md specifies, then dequantized.
std::vector<float> QuantizedRows(const std::vector<float>& v, DType to) {
  std::vector<float> out(v.size());
  for (size_t b = 0; b < v.size(); b += 32) {
    float extreme = 0.0f;  // the first value of largest magnitude
    for (size_t i = b; i < b + 32; ++i) {
      if (std::abs(v[i]) > std::abs(extreme)) extreme = v[i];
    }
    const bool q8 = to == DType::kQ8;
    const float d = testing::RoundToHalf(q8 ? std::abs(extreme) / 127.0f : extreme / -8.0f);
    for (size_t i = b; i < b + 32; ++i) {
      const float level = d == 0.0f ? 0.0f
                                    : std::clamp(std::nearbyint(v[i] / d), q8 ? -127.0f : -8.0f,
                                                 q8 ? 127.0f : 7.0f);
      out[i] = d * level;
    }
  }
  return out;
}

// Whether --dtype q4k stores tensor `name` of a model of `layers` layers in q6k: attn_v of the
// layers in the first or last eighth, and of every third layer between them (llama.cpp's Q4_K_M
// rule; it also keeps their ffn_down in Q6_K), and attn_v and ffn_down of the first eighth of the
// layers, never fewer than one.
bool GetsMoreBitsUnderQ4K(const std::string& name, int64_t layers) {
  long layer = -1;
  char role[32] = {};
  if (std::sscanf(name.c_str(), "layers.%ld.%31s", &layer, role) != 2) return false;
  const std::string r = role;
  const bool first = layer < std::max<int64_t>(1, layers / 8);
  if (r == "ffn_down") return first;
  if (r != "attn_v") return false;
  return first || layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

// What convert stores a tensor as (docs/FORMAT.md, "Weight types").
DType StoredType(const TensorDef& def, DType source, std::optional<DType> requested,
                 int64_t layers) {
  if (def.always_f32) return DType::kF32;
  const DType want = requested.value_or(source);
  if (!IsQuantized(want)) return want;
  if (def.stored_shape().back() % 32 != 0) return DType::kBF16;
  const bool vocab = def.name == "tok_embeddings" || def.name == "output";
  if (want == DType::kQ4 && vocab) return DType::kQ8;
  const bool q6k = requested == DType::kQ4K && (vocab || GetsMoreBitsUnderQ4K(def.name, layers));
  const DType k = q6k ? DType::kQ6K : want;
  return IsKQuant(k) && def.stored_shape().back() % 256 != 0 ? DType::kQ8 : k;
}

// The K-quants' search is pinned on hand-made blocks (Quantize.KQuantBlocksByHand); on a whole
// checkpoint, each stored super-block's error against the source stays within what 4 or 6
// bits allow: relative RMS at most 1/8 (q4k) or 1/32 (q6k) of the block's.
void ExpectWithinKQuantError(const std::vector<float>& got, const std::vector<float>& want,
                             DType type, const std::string& name) {
  const double bound = type == DType::kQ4K ? 1.0 / 8 : 1.0 / 32;
  for (size_t b = 0; b < want.size(); b += 256) {
    double err = 0, sum = 0;
    for (size_t i = b; i < b + 256; ++i) {
      err += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
      sum += double(want[i]) * want[i];
    }
    ASSERT_LE(std::sqrt(err), bound * std::sqrt(sum)) << name << " block " << b / 256;
  }
}

class ConvertRoundTrip : public ::testing::TestWithParam<std::tuple<const char*, const char*>> {};

TEST_P(ConvertRoundTrip, TensorsAreExactOrExactlyRounded) {
  const auto [name, dtype_name] = GetParam();
  const std::string hf = testing::TestDataDir() + "/" + name;
  testing::TempDir dir;
  ConvertOptions opt;
  opt.hf_dir = hf;
  opt.out_path = dir / "m.zsk";
  if (std::string(dtype_name) != "keep") opt.dtype = ParseDTypeName(dtype_name);
  ConvertHfCheckpoint(opt);
  const auto file = ZskFile::Open(opt.out_path);
  file->VerifyChecksums();
  const TensorTable table = ArchitectureTensors(file->config());
  for (const TensorDef& def : table.stored()) {
    const TensorInfo* t = file->Find(def.name);
    ASSERT_NE(t, nullptr) << def.name;
    DType src_type = DType::kF32;
    const std::vector<float> src = SourceTensor(hf, def.hf_name, &src_type);
    const DType want_type = StoredType(def, src_type, opt.dtype, file->config().layers);
    EXPECT_EQ(t->dtype, want_type) << def.name;
    const std::vector<float> got = StoredTensor(*file, *t);
    ASSERT_EQ(got.size(), src.size());
    const uint64_t rows = def.hf_shape[0], cols = def.hf_shape.size() > 1 ? def.hf_shape[1] : 1;
    std::vector<float> want(src.size());  // as stored: [cols, rows] when transposed
    for (uint64_t r = 0; r < rows; ++r) {
      for (uint64_t c = 0; c < cols; ++c) {
        const uint64_t at = def.layout == Layout::kTransposed ? c * rows + r : r * cols + c;
        want[at] =
            IsQuantized(want_type) ? src[r * cols + c] : Rounded(src[r * cols + c], want_type);
      }
    }
    if (IsKQuant(want_type)) {
      ExpectWithinKQuantError(got, want, want_type, def.name);
      continue;
    }
    if (IsQuantized(want_type)) want = QuantizedRows(want, want_type);
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(got[i], want[i]) << def.name << " stored element " << i;
    }
  }
}

// A checkpoint whose FFN matrices differ in type converts without --dtype, each tensor in its
// own type and bf16 ones copied bit for bit; --dtype still converts them all. Catches the
// converter refusing a mix again, or converting a tensor to its layer's other type.
TEST(Convert, FfnMatricesOfOneLayerKeepTheirOwnDTypes) {
  testing::TempDir dir;
  fs::copy(testing::TestDataDir() + "/llama_gqa_hd64_relu_f32", dir / "hf");
  testing::StoreAsBf16(dir / "hf/model.safetensors", {"model.layers.1.mlp.up_proj.weight",
                                                      "model.layers.0.mlp.down_proj.weight"});
  ConvertOptions opt;
  opt.hf_dir = dir / "hf";
  opt.out_path = dir / "m.zsk";
  ConvertHfCheckpoint(opt);
  const auto file = ZskFile::Open(opt.out_path);
  EXPECT_EQ(file->Find("layers.1.ffn_up")->dtype, DType::kBF16);
  EXPECT_EQ(file->Find("layers.1.ffn_gate")->dtype, DType::kF32);
  EXPECT_EQ(file->Find("layers.1.ffn_down")->dtype, DType::kF32);
  EXPECT_EQ(file->Find("layers.0.ffn_down")->dtype, DType::kBF16);
  EXPECT_EQ(file->Find("layers.0.ffn_up")->dtype, DType::kF32);
  const SafetensorsFile source = ReadSafetensorsHeader(dir / "hf/model.safetensors");
  for (const SafetensorsTensor& t : source.tensors) {
    if (t.name != "model.layers.1.mlp.up_proj.weight") continue;
    std::string bytes(t.end - t.begin, '\0');
    InputFile(dir / "hf/model.safetensors").ReadAt(t.begin, bytes.data(), bytes.size());
    const TensorInfo& up = *file->Find("layers.1.ffn_up");
    ASSERT_EQ(up.nbytes, bytes.size());
    EXPECT_EQ(std::memcmp(file->data(up), bytes.data(), bytes.size()), 0);
  }
  Model::Load(opt.out_path);
  opt.out_path = dir / "q8.zsk";
  opt.dtype = DType::kQ8;
  ConvertHfCheckpoint(opt);
  for (const char* name : {"layers.0.ffn_down", "layers.1.ffn_up", "layers.1.ffn_gate"}) {
    EXPECT_EQ(ZskFile::Open(opt.out_path)->Find(name)->dtype, DType::kQ8) << name;
  }
}

// --tensor-type: a role names that tensor of every layer, a stored name one tensor, a later
// override wins over an earlier one and over --dtype's recipe (q4k on 2 layers: attn_v of both
// layers and layer 0's ffn_down in q6k), and an overridden tensor holds the same bytes as a
// whole-file conversion to its type. Catches an override ignored, applied to the wrong tensors,
// or applied in reverse order.
TEST(Convert, TensorTypesOverrideTheDTypeAndItsRecipe) {
  testing::TempDir dir;
  ConvertOptions opt;
  opt.hf_dir = testing::TestDataDir() + "/llama_gqa_hd64_relu_f32";  // hidden 256, 2 layers
  opt.out_path = dir / "mix.zsk";
  opt.dtype = DType::kQ4K;
  opt.tensor_types = {{"ffn_up", DType::kQ8},
                      {"layers.1.ffn_up", DType::kQ6K},
                      {"layers.1.attn_v", DType::kQ4K},
                      {"layers.0.ffn_down", DType::kQ4K},
                      {"output", DType::kBF16}};
  ConvertHfCheckpoint(opt);
  const auto mix = ZskFile::Open(opt.out_path);
  const std::map<std::string, DType> want = {
      {"layers.0.ffn_up", DType::kQ8},    {"layers.1.ffn_up", DType::kQ6K},
      {"layers.0.attn_v", DType::kQ6K},   {"layers.1.attn_v", DType::kQ4K},
      {"layers.0.ffn_down", DType::kQ4K}, {"layers.1.ffn_down", DType::kQ4K},
      {"output", DType::kBF16},           {"tok_embeddings", DType::kQ6K},
      {"layers.0.ffn_gate", DType::kQ4K}, {"layers.1.attn_norm", DType::kF32}};
  for (const auto& [name, type] : want) EXPECT_EQ(mix->Find(name)->dtype, type) << name;
  Model::Load(opt.out_path);
  for (const auto& [name, type] : std::map<std::string, DType>{
           {"layers.0.ffn_up", DType::kQ8}, {"layers.1.ffn_up", DType::kQ6K}}) {
    opt.out_path = dir / (std::string(DTypeName(type)) + ".zsk");
    opt.dtype = type;
    opt.tensor_types.clear();
    ConvertHfCheckpoint(opt);
    const auto whole = ZskFile::Open(opt.out_path);
    const TensorInfo &a = *mix->Find(name), &b = *whole->Find(name);
    ASSERT_EQ(a.nbytes, b.nbytes) << name;
    EXPECT_EQ(std::memcmp(mix->data(a), whole->data(b), a.nbytes), 0) << name;
  }
}

// An override the model cannot take is one error line before anything is written: a name that
// is no tensor, a norm, a type whose blocks do not divide the rows (hidden 192: no q4k rows).
TEST(Convert, TensorTypesThatCannotApplyAreRefused) {
  testing::TempDir dir;
  ConvertOptions opt;
  opt.out_path = dir / "m.zsk";
  const std::vector<std::tuple<std::string, std::pair<std::string, DType>, std::string>> cases = {
      {"llama_gqa_hd64_relu_f32", {"ffn_dwn", DType::kQ8}, "names no tensor of this model"},
      {"llama_gqa_hd64_relu_f32", {"layers.2.ffn_down", DType::kQ8}, "names no tensor"},
      {"llama_gqa_hd64_relu_f32", {"attn_norm", DType::kQ8}, "is a norm, always stored f32"},
      {"mistral_headdim_relu_f32",
       {"ffn_gate", DType::kQ4K},
       "layers.0.ffn_gate has rows of 192 values, not whole blocks of 256"}};
  for (const auto& [ckpt, override, message] : cases) {
    opt.hf_dir = testing::TestDataDir() + "/" + ckpt;
    opt.tensor_types = {override};
    try {
      ConvertHfCheckpoint(opt);
      ADD_FAILURE() << override.first << " was accepted";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(message)) << override.first;
      EXPECT_THAT(e.what(), ::testing::StartsWith("--tensor-type " + override.first + "="));
    }
    EXPECT_FALSE(fs::exists(opt.out_path)) << override.first;
  }
}

// The layers whose attn_v (and ffn_down) llama-quantize's Q4_K_M stores in Q6_K: 8 layers as it
// quantized the synthetic checkpoint of docs/BENCHMARKS.md ("K-quants"), the others worked out
// by hand from use_more_bits (32: Llama-2-7B). Catches any clause of the rule changed.
TEST(Convert, Q4KGivesTheLayersOfLlamaCppsQ4KMMoreBits) {
  const std::map<int64_t, std::vector<int64_t>> want = {
      {1, {0}},
      {2, {1}},
      {4, {2, 3}},
      {8, {0, 3, 6, 7}},
      {16, {0, 1, 4, 7, 10, 13, 14, 15}},
      {32, {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}}};
  for (const auto& [layers, more] : want) {
    std::vector<int64_t> got;
    for (int64_t l = 0; l < layers; ++l) {
      if (Q4KMoreBits(l, layers)) got.push_back(l);
    }
    EXPECT_EQ(got, more) << layers << " layers";
  }
}

// The layers whose attn_v and ffn_down --dtype q4k stores in q6k whatever use_more_bits says:
// the first eighth, never none. Catches the floor of one dropped (4 layers would get none).
TEST(Convert, Q4KGivesTheFirstEighthOfTheLayersMoreBits) {
  for (const auto& [layers, first] : std::map<int64_t, int64_t>{
           {1, 1}, {4, 1}, {8, 1}, {15, 1}, {16, 2}, {22, 2}, {32, 4}, {80, 10}}) {
    for (int64_t l = 0; l < layers; ++l) {
      EXPECT_EQ(Q4KFirstLayers(l, layers), l < first) << "layer " << l << " of " << layers;
    }
  }
}

std::string Hex(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) out += {digits[p[i] >> 4], digits[p[i] & 15]};
  return out;
}

// Blocks worked out by hand (and by tools/reference/quant.py, which agrees): scale, levels with
// ties rounding to even, the clip of q4's far side, zero blocks, the f16 overflow of a scale.
TEST(Quantize, BlocksByHand) {
  float v[32] = {127, -126.4f, 0.5f, 1.5f, 2.5f, -3.5f, 0.49f, -0.51f};  // the rest 0
  uint8_t out[34];
  // q8: d = f16(127 / 127) = 1.0 (0x3c00), q = rint(v): 127, -126, 0, 2, 2, -4, 0, -1.
  EXPECT_FALSE(QuantizeBlock(v, DType::kQ8, out));
  EXPECT_EQ(Hex(out, 10), "003c7f82000202fc00ff");
  EXPECT_EQ(Hex(out + 10, 24), std::string(48, '0'));
  float back[32];
  DequantizeBlock(out, DType::kQ8, back);
  EXPECT_EQ(back[1], -126.0f);
  EXPECT_EQ(back[5], -4.0f);
  // q4: the largest magnitude 127 goes to level -8: d = f16(127 / -8) = -15.875 (0xcbf0);
  // -126.4 / -15.875 = 7.96 clips to 7; 0.5 / -15.875 rounds to 0. Byte j = (q_j + 8) |
  // (q_j+16 + 8) << 4: byte 0 = 0 | 8 << 4, byte 1 = 15 | 8 << 4, the rest 0x88.
  EXPECT_FALSE(QuantizeBlock(v, DType::kQ4, out));
  EXPECT_EQ(Hex(out, 18), "f0cb808f" + std::string(28, '8'));
  DequantizeBlock(out, DType::kQ4, back);
  EXPECT_EQ(back[0], 127.0f);
  EXPECT_EQ(back[1], -111.125f);  // 7 * -15.875
  EXPECT_EQ(back[31], 0.0f);
  // Equal magnitudes: the first one sets q4's sign. -4 first: d = 0.5, +4 clips to level 7.
  float pm[32] = {-4, 4};
  EXPECT_FALSE(QuantizeBlock(pm, DType::kQ4, out));
  EXPECT_EQ(Hex(out, 4), "0038808f");  // 0.5 = 0x3800; bytes 0 | 8 << 4, 15 | 8 << 4
  DequantizeBlock(out, DType::kQ4, back);
  EXPECT_EQ(back[0], -4.0f);
  EXPECT_EQ(back[1], 3.5f);
  // All zero: scale 0 (q4: 0 / -8 = -0, 0x8000), levels 0 (q4 stores 8).
  const float zero[32] = {};
  EXPECT_FALSE(QuantizeBlock(zero, DType::kQ8, out));
  EXPECT_EQ(Hex(out, 34), std::string(68, '0'));
  EXPECT_FALSE(QuantizeBlock(zero, DType::kQ4, out));
  EXPECT_EQ(Hex(out, 18), "0080" + std::string(32, '8'));
  // 127 * 65520 rounds the q8 scale past f16's largest finite value.
  float huge[32] = {127.0f * 65520.0f};
  EXPECT_TRUE(QuantizeBlock(huge, DType::kQ8, out));
  huge[0] = 127.0f * 65504.0f;
  EXPECT_FALSE(QuantizeBlock(huge, DType::kQ8, out));
}

// K-quant blocks made by hand, with the values llama.cpp's own numpy dequantizer (gguf-py,
// gguf.quants.dequantize) gives for them; tools/reference/test_quant.py pins the same.
std::vector<uint8_t> HandQ4KBlock() {
  std::vector<uint8_t> b = {0x00, 0x3c, 0x00, 0x38, 0x41, 0x82, 0xC3, 0x04,
                            0x85, 0x46, 0xC7, 0x08, 0x21, 0x43, 0x65, 0x87};
  for (int i = 0; i < 128; ++i) b.push_back(static_cast<uint8_t>((i * 37 + 11) % 256));
  return b;
}

std::vector<uint8_t> HandQ6KBlock() {
  std::vector<uint8_t> b;
  for (int i = 0; i < 128; ++i) b.push_back(static_cast<uint8_t>((i * 29 + 7) % 256));
  for (int i = 0; i < 64; ++i) b.push_back(static_cast<uint8_t>((i * 53 + 3) % 256));
  for (int s : {-128, -3, 5, 127, 1, -1, 64, -64, 2, 3, -7, 11, -13, 17, 100, -100}) {
    b.push_back(static_cast<uint8_t>(s));
  }
  b.push_back(0x00);
  b.push_back(0x2e);  // d = 0.09375
  return b;
}

TEST(Quantize, KQuantBlocksDequantizeAsGgml) {
  const int picks[] = {0, 31, 32, 63, 64, 100, 130, 160, 200, 224, 255};
  // e.g. q4k element 130: sub-block 4, scale 17 and min 34 (their top bits packed in bytes 0
  // and 4), low nibble 5 of byte 16 + 66: 1.0 * 17 * 5 - 0.5 * 34 = 68.
  const float q4k[] = {8.5f, 3.5f, -3.0f, 13.0f, 29.5f, 8.0f, 68.0f, 130.0f, 132.0f, 94.0f, 38.0f};
  const float q6k[] = {-276.0f,  -2.8125f,  -11.71875f, 309.5625f, -3.0f,  102.0f,
                       -2.8125f, 16.40625f, 36.5625f,   131.25f,   243.75f};
  float v[256];
  DequantizeBlock(HandQ4KBlock().data(), DType::kQ4K, v);
  for (size_t k = 0; k < std::size(picks); ++k) EXPECT_EQ(v[picks[k]], q4k[k]) << picks[k];
  DequantizeBlock(HandQ6KBlock().data(), DType::kQ6K, v);
  for (size_t k = 0; k < std::size(picks); ++k) EXPECT_EQ(v[picks[k]], q6k[k]) << picks[k];
}

TEST(Quantize, KQuantBlocksByHand) {
  // q4k: sub-block j holds x = L - 8, L = (i + j) % 16: scale 1 and min 8 fit exactly, so
  // d = f16(1/63) = 0x2410, dmin = f16(8/63) = 0x3010, every 6-bit scale and min 63 (bytes
  // 0-7 0xff: 63 | top bits of 63 << 6; bytes 8-11 0xff: low nibbles of 63 and 63).
  float v[256], back[256];
  int levels[256];
  for (int i = 0; i < 256; ++i) {
    levels[i] = (i % 32 + i / 32) % 16;
    v[i] = static_cast<float>(levels[i] - 8);
  }
  uint8_t out[210];
  EXPECT_FALSE(QuantizeBlock(v, DType::kQ4K, out));
  EXPECT_EQ(Hex(out, 16), "10241030" + std::string(24, 'f'));
  EXPECT_EQ(out[16], 0x10);       // elements 0 (low nibble) and 32 (high nibble)
  EXPECT_EQ(out[16 + 32], 0x32);  // elements 64 and 96
  DequantizeBlock(out, DType::kQ4K, back);
  const float ds = 0.015869140625f * 63, dm = 0.126953125f * 63;
  for (int i = 0; i < 256; ++i) EXPECT_EQ(back[i], ds * static_cast<float>(levels[i]) - dm) << i;
  // q6k: each group of 16 holds 0.5 * l, l = -32 first: scale 0.5 fits exactly, so
  // d = f16(0.5 / -128) = 0x9c00, every scale -128, q = l + 32.
  for (int i = 0; i < 256; ++i) {
    levels[i] = i % 16 == 0 ? -32 : (i * 7) % 64 - 32;
    v[i] = 0.5f * static_cast<float>(levels[i]);
  }
  EXPECT_FALSE(QuantizeBlock(v, DType::kQ6K, out));
  std::string scales_and_d;
  for (int g = 0; g < 16; ++g) scales_and_d += "80";
  EXPECT_EQ(Hex(out + 192, 18), scales_and_d + "009c");
  auto q = [&](int i) { return levels[i] + 32; };
  EXPECT_EQ(out[0], (q(0) & 15) | (q(64) & 15) << 4);
  EXPECT_EQ(out[32], (q(32) & 15) | (q(96) & 15) << 4);
  EXPECT_EQ(out[128], q(0) >> 4 | q(32) >> 4 << 2 | q(64) >> 4 << 4 | q(96) >> 4 << 6);
  DequantizeBlock(out, DType::kQ6K, back);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(back[i], v[i]) << i;
  // All zero, and a scale past f16.
  const float zero[256] = {};
  EXPECT_FALSE(QuantizeBlock(zero, DType::kQ6K, out));
  EXPECT_EQ(Hex(out, 210), std::string(420, '0'));
  EXPECT_FALSE(QuantizeBlock(zero, DType::kQ4K, out));
  DequantizeBlock(out, DType::kQ4K, back);
  for (float x : back) EXPECT_EQ(x, 0.0f);
  float huge[256];
  std::fill(std::begin(huge), std::end(huge), 1e9f);
  EXPECT_TRUE(QuantizeBlock(huge, DType::kQ4K, out));
  EXPECT_TRUE(QuantizeBlock(huge, DType::kQ6K, out));
}

// One-layer HF checkpoint of `c` with random weights (and the test tokenizer), written by hand.
void WriteHfCheckpoint(const std::string& dir, const ModelConfig& c) {
  fs::create_directories(dir);
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"hidden_size", c.hidden},
                           {"intermediate_size", c.ffn},
                           {"num_hidden_layers", c.layers},
                           {"num_attention_heads", c.heads},
                           {"num_key_value_heads", c.kv_heads},
                           {"head_dim", c.head_dim},
                           {"vocab_size", c.vocab},
                           {"hidden_act", "relu"},
                           {"max_position_embeddings", c.context},
                           {"tie_word_embeddings", false}};
  testing::WriteFile(dir + "/config.json", config.dump());
  testing::WriteFile(dir + "/tokenizer.model", TestTokenizer());
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  std::mt19937 rng(7);
  const TensorTable table = ArchitectureTensors(c);
  for (const TensorDef& def : table.stored()) {
    uint64_t n = 1;
    for (uint64_t d : def.hf_shape) n *= d;
    std::vector<float> v(n);
    for (auto& e : v) e = def.always_f32 ? 1.0f : std::normal_distribution<float>(0, 0.2f)(rng);
    header[def.hf_name] = {{"dtype", "F32"},
                           {"shape", def.hf_shape},
                           {"data_offsets", {data.size(), data.size() + 4 * n}}};
    data.append(reinterpret_cast<const char*>(v.data()), 4 * n);
  }
  const std::string json = header.dump();
  std::string length(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(length.data(), &n, 8);  // little-endian host, as the format
  testing::WriteFile(dir + "/model.safetensors", length + json + data);
}

// Matrices whose stored rows are not whole blocks stay bf16 (an odd head_dim makes attn_q/k/v
// [q_dim | kv_dim, 64] quantized but attn_output [64, 24] bf16; an odd hidden size leaves the
// whole FFN bf16, one type for its three matrices); q4 keeps the vocabulary matrices q8. Such
// a mixed file loads and runs.
TEST(Convert, QuantizedTypesOnlyForWholeBlockRows) {
  struct Shape {
    int64_t hidden, ffn, head_dim;
  };
  for (const Shape shape : {Shape{64, 40, 12}, Shape{48, 40, 16}}) {
    for (DType dtype : {DType::kQ8, DType::kQ4}) {
      testing::TempDir dir;
      ModelConfig c = testing::TinyConfig();
      c.hidden = shape.hidden;
      c.ffn = shape.ffn;
      c.head_dim = shape.head_dim;
      WriteHfCheckpoint(dir / "hf", c);
      ConvertOptions opt;
      opt.hf_dir = dir / "hf";
      opt.out_path = dir / "m.zsk";
      opt.dtype = dtype;
      ConvertHfCheckpoint(opt);
      const auto file = ZskFile::Open(opt.out_path);
      for (const TensorInfo& t : file->tensors()) {
        DType want = dtype;
        if (t.shape.size() == 1) {
          want = DType::kF32;
        } else if (t.shape[1] % 32 != 0) {
          want = DType::kBF16;
        } else if (dtype == DType::kQ4 && (t.name == "tok_embeddings" || t.name == "output")) {
          want = DType::kQ8;
        }
        EXPECT_EQ(t.dtype, want) << t.name << " " << DTypeName(dtype) << " hidden " << c.hidden;
      }
      const auto model = Model::Load(opt.out_path);
      Engine engine(*model, {.threads = 2});
      Session session(engine, {});
      const std::vector<int> ids = {1, 281, 342};
      for (float v : session.Forward(ids)) ASSERT_TRUE(std::isfinite(v));
    }
  }
}

// The reader refuses quantized tensors whose rows are not whole blocks or whose byte size
// disagrees with blocks x block bytes (the table is otherwise well formed).
TEST(ZskFile, RefusesQuantizedRowsThatAreNotWholeBlocks) {
  testing::TempDir dir;
  auto write = [&](DType dtype, std::vector<uint64_t> shape) {
    ZskWriter w(dir / "m.zsk", testing::TinyConfig(), "{}", TestTokenizer(),
                {{"a", dtype, Layout::kRowMajor, shape}});
    w.WriteNext(std::vector<uint8_t>(w.plan()[0].nbytes, 0));
    w.Finish();
  };
  write(DType::kQ8, {3, 64});
  const auto file = ZskFile::Open(dir / "m.zsk");
  EXPECT_EQ(file->Find("a")->nbytes, 3u * 2 * 34);
  write(DType::kQ4, {2, 32});
  EXPECT_EQ(ZskFile::Open(dir / "m.zsk")->Find("a")->nbytes, 2u * 18);
  EXPECT_THROW(write(DType::kQ8, {3, 40}), Error);  // the writer refuses it too
  // Edit a valid record (and reseal the header checksum): a 40-column shape, then a byte size
  // one block short.
  write(DType::kQ8, {3, 64});
  const std::string bytes = testing::ReadFile(dir / "m.zsk");
  auto reason = [&](uint64_t field, uint64_t value) {
    std::string image = bytes;
    auto* base = reinterpret_cast<uint8_t*>(image.data());
    const ZskHeader h = DecodeZskHeader(base, image.size(), "m.zsk");
    std::memcpy(base + h.table_offset + field, &value, 8);  // little-endian host, as the format
    const uint64_t sum = ZskHeaderChecksum(base, h);
    std::memcpy(base + kZskChecksumFieldOffset, &sum, 8);
    testing::WriteFile(dir / "e.zsk", image);
    try {
      ZskFile::Open(dir / "e.zsk");
    } catch (const Error& e) {
      return e.reason();
    }
    return std::string();
  };
  EXPECT_EQ(reason(120, 40), "tensor 'a': rows of 40 elements are not whole q8 blocks of 32");
  EXPECT_EQ(reason(152, 5 * 34), "tensor 'a': byte size 170 does not match dtype x shape");
  EXPECT_EQ(reason(152, 6 * 34), "");
}

INSTANTIATE_TEST_SUITE_P(
    Checkpoints, ConvertRoundTrip,
    ::testing::Combine(::testing::Values("llama_gqa_hd64_relu_f32", "llama_mha_hd64_relu_bf16",
                                         "llama_gqa_hd64_relu_f16_sharded",
                                         "llama_mqa_hd128_silu_tied_f32"),
                       ::testing::Values("keep", "f32", "bf16", "f16", "q8", "q4", "q4k", "q6k")));

}  // namespace
}  // namespace zeroskip
