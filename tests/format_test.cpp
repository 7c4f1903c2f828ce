// The native file: writer/reader round trip, atomicity, checksums, and the converter's output
// against the source safetensors (bit-identical when the dtype is kept, exactly rounded when
// narrowed, exactly widened when widened; the FFN down projection transposed). Expected values
// are widened and rounded by the independent oracle of test_util.h, not by ConvertMatrix.
#include "zeroskip/format.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "format/file_io.h"
#include "format/safetensors.h"
#include "arch/architectures.h"
#include "test_util.h"
#include "zeroskip/convert.h"
#include "zeroskip/error.h"

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

// n elements of `dtype` at `p`, widened to f32 by the test's own oracle.
std::vector<float> Widened(const uint8_t* p, DType dtype, uint64_t n) {
  std::vector<float> out(n);
  for (uint64_t i = 0; i < n; ++i) {
    if (dtype == DType::kF32) {
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
      return Widened(raw.data(), t.dtype, raw.size() / DTypeSize(t.dtype));
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
    const DType want_type = def.always_f32 ? DType::kF32 : opt.dtype.value_or(src_type);
    EXPECT_EQ(t->dtype, want_type) << def.name;
    const std::vector<float> got = StoredTensor(*file, *t);
    ASSERT_EQ(got.size(), src.size());
    const uint64_t rows = def.hf_shape[0], cols = def.hf_shape.size() > 1 ? def.hf_shape[1] : 1;
    for (uint64_t r = 0; r < rows; ++r) {
      for (uint64_t c = 0; c < cols; ++c) {
        const float want = Rounded(src[r * cols + c], want_type);
        const float stored =
            def.layout == Layout::kTransposed ? got[c * rows + r] : got[r * cols + c];
        ASSERT_EQ(stored, want) << def.name << " [" << r << ", " << c << "]";
      }
    }
  }
}

// Rewrites the single-file f32 checkpoint `file` with tensor `name` stored as bf16 (truncated).
void StoreAsBf16(const std::string& file, const std::string& name) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const SafetensorsTensor& t : ReadSafetensorsHeader(file).tensors) {
    ASSERT_EQ(t.dtype, DType::kF32) << t.name;
    std::string bytes(t.end - t.begin, '\0');
    InputFile(file).ReadAt(t.begin, bytes.data(), bytes.size());
    if (t.name == name) {
      std::string bf16(bytes.size() / 2, '\0');
      for (size_t i = 0; i < bf16.size(); i += 2) bf16.replace(i, 2, bytes, 2 * i + 2, 2);
      bytes = bf16;
    }
    header[t.name] = {{"dtype", t.name == name ? "BF16" : "F32"},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  const std::string json = header.dump();
  std::string length(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(length.data(), &n, 8);  // little-endian host, as the format
  testing::WriteFile(file, length + json + data);
}

// The sparse kernels read a layer's three FFN matrices with one weight type: a checkpoint that
// mixes them converts only with --dtype, and the error names the layer.
TEST(Convert, FfnMatricesOfOneLayerMustShareADType) {
  testing::TempDir dir;
  fs::copy(testing::TestDataDir() + "/llama_gqa_hd64_relu_f32", dir / "hf");
  StoreAsBf16(dir / "hf/model.safetensors", "model.layers.1.mlp.up_proj.weight");
  ConvertOptions opt;
  opt.hf_dir = dir / "hf";
  opt.out_path = dir / "m.zsk";
  try {
    ConvertHfCheckpoint(opt);
    ADD_FAILURE() << "mixed FFN dtypes accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.path(), dir / "hf/model.safetensors");
    EXPECT_EQ(e.reason(),
              "layer 1: gate_proj, up_proj and down_proj have different dtypes (pass --dtype to "
              "convert them to one)");
  }
  EXPECT_FALSE(fs::exists(opt.out_path));
  opt.dtype = DType::kBF16;
  ConvertHfCheckpoint(opt);
  EXPECT_EQ(ZskFile::Open(opt.out_path)->Find("layers.1.ffn_up")->dtype, DType::kBF16);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, ConvertRoundTrip,
                         ::testing::Combine(::testing::Values("llama_gqa_hd64_relu_f32",
                                                              "llama_mha_hd64_relu_bf16",
                                                              "llama_gqa_hd64_relu_f16_sharded",
                                                              "llama_mqa_hd128_silu_tied_f32"),
                                            ::testing::Values("keep", "f32", "bf16", "f16")));

}  // namespace
}  // namespace zeroskip
