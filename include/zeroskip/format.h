// The native single-file model format (.zsk): reader and writer. Spec: docs/FORMAT.md.
//
// The reader maps the file read-only and validates the header, metadata and tensor table
// (every offset and size bounds- and overflow-checked, a header checksum) in O(header): tensor
// data is not touched until used; `VerifyChecksums` reads it all. The writer is atomic: it
// writes a uniquely named `<out>.XXXXXX.tmp`, fsyncs and renames, and removes the temporary file
// on any failure.
// Neither knows about model architectures beyond the ModelConfig it stores.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "zeroskip/config.h"
#include "zeroskip/tokenizer.h"

namespace zeroskip {

// Values are part of the file format. q8, q4, q4k and q6k are quantized in blocks (see below).
enum class DType : uint32_t { kF32 = 0, kF16 = 1, kBF16 = 2, kQ8 = 3, kQ4 = 4, kQ4K = 5, kQ6K = 6 };

// The quantized types store each run of consecutive elements of a row as one block
// (docs/FORMAT.md): q8 and q4 blocks of kQuantBlock, q8 {f16 scale d, int8 q[32]}, value d * q;
// q4 {f16 scale d, 16 bytes of 4-bit q}, value d * (q - 8). q4k and q6k (llama.cpp's K-quants)
// are super-blocks of kSuperBlock: eight sub-blocks of 32 with 6-bit scales and mins (q4k), or
// sixteen groups of 16 with int8 scales (q6k). A quantized matrix's rows are whole blocks (cols a
// multiple of DTypeBlockElements). Float types are blocks of one element.
inline constexpr uint64_t kQuantBlock = 32;
inline constexpr uint64_t kSuperBlock = 256;

constexpr bool IsKQuant(DType dtype) { return dtype == DType::kQ4K || dtype == DType::kQ6K; }
constexpr bool IsQuantized(DType dtype) {
  return dtype == DType::kQ8 || dtype == DType::kQ4 || IsKQuant(dtype);
}
// Elements per block: kQuantBlock for q8 and q4, kSuperBlock for the K-quants, 1 for float types.
constexpr uint64_t DTypeBlockElements(DType dtype) {
  return IsKQuant(dtype) ? kSuperBlock : IsQuantized(dtype) ? kQuantBlock : 1;
}
// Bytes per block (0 for a code that is not a DType).
constexpr uint64_t DTypeBlockBytes(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kQ8:
      return 2 + kQuantBlock;
    case DType::kQ4:
      return 2 + kQuantBlock / 2;
    case DType::kQ4K:  // d, dmin, 12 bytes of 6-bit scales and mins, 4-bit q
      return 2 + 2 + 12 + kSuperBlock / 2;
    case DType::kQ6K:  // 4 low bits, 2 high bits, 16 int8 scales, d
      return kSuperBlock / 2 + kSuperBlock / 4 + kSuperBlock / 16 + 2;
  }
  return 0;
}
// Sub-block j's (0..7) 6-bit scale and min from a q4k block's 12 packed bytes (at byte 4 of the
// block): j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 their low 4 bits in byte j + 4,
// their top 2 bits in the top bits of bytes j - 4 and j.
constexpr void Q4KScaleMin(const uint8_t* packed, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = packed[j] & 63;
    *min = packed[j + 4] & 63;
  } else {
    *scale = (packed[j + 4] & 15) | (packed[j - 4] >> 6) << 4;
    *min = (packed[j + 4] >> 4) | (packed[j] >> 6) << 4;
  }
}
// Bytes of `elements` consecutive elements of one row; `elements` a multiple of the block.
constexpr uint64_t DTypeBytes(DType dtype, uint64_t elements) {
  return elements / DTypeBlockElements(dtype) * DTypeBlockBytes(dtype);
}

std::string_view DTypeName(DType dtype);  // "f32", "f16", "bf16", "q8", "q4", "q4k", "q6k"
std::optional<DType> ParseDTypeName(std::string_view name);

// How a matrix sits in the file relative to the Hugging Face tensor of the same role.
// kTransposed is used for the FFN down projection: HF stores it [hidden, ffn]; we store [ffn,
// hidden] so each FFN neuron is one contiguous row of all three FFN matrices.
enum class Layout : uint32_t { kRowMajor = 0, kTransposed = 1 };

inline constexpr char kZskMagic[8] = {'Z', 'S', 'K', 'M', 'O', 'D', 'E', 'L'};
inline constexpr uint32_t kZskVersion = 1;
inline constexpr uint64_t kZskHeaderBytes = 128;
inline constexpr uint64_t kZskTensorRecordBytes = 192;
inline constexpr uint64_t kZskMaxNameBytes = 95;  // plus a terminating NUL in a 96-byte field
inline constexpr uint64_t kZskMaxDims = 4;
inline constexpr uint64_t kTensorAlign = 64;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Layout layout = Layout::kRowMajor;
  std::vector<uint64_t> shape;  // as stored (row-major, last index fastest)
  uint64_t offset = 0;          // absolute file offset, multiple of kTensorAlign
  uint64_t nbytes = 0;
  uint64_t checksum = 0;  // xxh64 (seed 0) of the data

  uint64_t elements() const;
};

// A read-only, memory-mapped .zsk file.
class ZskFile {
 public:
  static std::unique_ptr<ZskFile> Open(const std::string& path);
  ~ZskFile();
  ZskFile(const ZskFile&) = delete;
  ZskFile& operator=(const ZskFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }
  uint32_t version() const { return version_; }
  const ModelConfig& config() const { return config_; }
  const std::string& metadata_json() const { return metadata_json_; }
  const std::string& source_config_json() const { return source_config_json_; }
  // The tokenizer section: a serialized sentencepiece ModelProto, or for an architecture with
  // byte-level BPE (OPT) its packed vocab.json and merges.txt.
  std::string_view tokenizer_model() const;
  // The tokenizer it holds (BOS and EOS are a byte-level BPE's special pieces).
  std::unique_ptr<Tokenizer> LoadTokenizer() const;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  const TensorInfo* Find(std::string_view name) const;
  const void* data(const TensorInfo& t) const { return base_ + t.offset; }

  // Maps every page of the file now, as a loader that reads the file would: the first forward
  // pass then does not take a page fault per 4 KiB of weights (measured: ~30 ms per GB here).
  // `skip`: the tensors to leave unmapped (read on demand, or from elsewhere).
  void Prefault(const std::function<bool(const TensorInfo&)>& skip = {}) const;
  // Unmaps the whole pages of [data, data + bytes) and drops them from the page cache (advice:
  // a file system that keeps them, tmpfs for one, keeps them), so a pass that read weights it
  // will not read again does not hold them against a memory limit.
  void Release(const void* data, uint64_t bytes) const;
  // Recomputes every tensor checksum; throws Error naming the first tensor that mismatches.
  void VerifyChecksums(const std::function<void(size_t done, size_t total)>& progress = {}) const;

 private:
  ZskFile() = default;
  void Parse();

  std::string path_;
  int fd_ = -1;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t tokenizer_offset_ = 0, tokenizer_size_ = 0;
  ModelConfig config_;
  std::string metadata_json_;
  std::string source_config_json_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors_
};

// Describes one tensor before it is written; the writer assigns offsets.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  Layout layout = Layout::kRowMajor;
  std::vector<uint64_t> shape;
};

// Removes the temporary file of a ZskWriter that has not finished. Async-signal-safe: the CLI
// calls it from its signal handlers so an interrupted convert leaves nothing behind.
void RemoveUnfinishedOutput();
// The signals whose handler must call RemoveUnfinishedOutput (every catchable signal that ends
// the process by default); the writer holds them back while it registers its temporary file.
const std::vector<int>& OutputCleanupSignals();

// Throws unless `path` can be written as a new model file: not empty, and either absent or an
// existing regular file (never a directory, device node, FIFO or symbolic link).
void CheckOutputPath(const std::string& path);

// Streams tensors into a unique temporary file beside `path` in the order they were planned,
// then `Finish` writes the table and header, fsyncs and renames to `path`. Destroying an
// unfinished writer removes the temporary file, so a failure leaves nothing behind.
class AtomicOutput;

class ZskWriter {
 public:
  ZskWriter(std::string path, const ModelConfig& config, std::string source_config_json,
            std::string tokenizer_model, std::vector<TensorSpec> tensors);
  ~ZskWriter();
  ZskWriter(const ZskWriter&) = delete;
  ZskWriter& operator=(const ZskWriter&) = delete;

  const std::vector<TensorInfo>& plan() const { return plan_; }
  const std::string& tmp_path() const;
  uint64_t file_size() const { return file_size_; }

  // Writes the data of the next planned tensor; `bytes.size()` must equal its nbytes.
  void WriteNext(std::span<const uint8_t> bytes);
  // Writes the table and header and makes the file durable; then `before_commit` (if any) runs,
  // and only if it returns is the file renamed to `path`: a front end reports the result there,
  // so a failed report leaves no file behind.
  void Finish(const std::function<void()>& before_commit = {});

 private:
  std::string path_;
  std::unique_ptr<AtomicOutput> out_;
  size_t next_ = 0;
  std::string metadata_json_, tokenizer_model_;
  std::vector<TensorInfo> plan_;
  uint64_t metadata_offset_ = 0, tokenizer_offset_ = 0, table_offset_ = 0, data_offset_ = 0;
  uint64_t file_size_ = 0;
};

}  // namespace zeroskip
