#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "arch/architectures.h"
#include "format/file_io.h"
#include "format/zsk_layout.h"
#include "text/tokenizer_check.h"
#include "zeroskip/error.h"
#include "zeroskip/format.h"

namespace zeroskip {
namespace {

using nlohmann::json;

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

std::string_view TokenizerKind(const ModelConfig& config) {
  return FindArchitecture(config.hf_architecture)->byte_level_bpe ? "gpt2_bpe" : "sentencepiece";
}

std::string MetadataJson(const ModelConfig& config, const std::string& source_config_json) {
  json meta = {{"config", json::parse(ConfigToJson(config))},
               {"hf_config", source_config_json},
               {"tokenizer", TokenizerKind(config)}};
  return meta.dump();
}

}  // namespace

uint64_t TensorInfo::elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // validated not to overflow when read or planned
  return n;
}

// ---------------------------------------------------------------- reader

std::unique_ptr<ZskFile> ZskFile::Open(const std::string& path) {
  std::unique_ptr<ZskFile> file(new ZskFile());
  file->path_ = path;
  file->fd_ = OpenRegularFile(path, &file->size_);
  if (file->size_ == 0) throw Error(path, "file is empty");
  void* map = ::mmap(nullptr, file->size_, PROT_READ, MAP_SHARED, file->fd_, 0);
  if (map == MAP_FAILED) throw Error(path, std::string("cannot map: ") + std::strerror(errno));
  file->base_ = static_cast<const uint8_t*>(map);
  // Weights are read whole, row after row: huge pages let the page cache read them in 2 MiB
  // folios and map them with one TLB entry each (at 7B, decode under a memory budget ran 1.4x
  // faster: docs/BENCHMARKS.md, issue 33). Advice only: a kernel without THP ignores it.
  ::madvise(map, file->size_, MADV_HUGEPAGE);
  file->Parse();
  return file;
}

void ZskFile::Prefault(const std::function<bool(const TensorInfo&)>& skip) const {
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const auto populate = [&](uint64_t begin, uint64_t end) {
    begin = begin / page * page;
    end = std::min(size_, (end + page - 1) / page * page);
    if (begin >= end) return;
    // MADV_POPULATE_READ (Linux 5.14) maps the pages in one call; elsewhere, read a byte per page.
    if (::madvise(const_cast<uint8_t*>(base_ + begin), end - begin, MADV_POPULATE_READ) == 0)
      return;
    volatile uint8_t sink = 0;
    for (uint64_t i = begin; i < end; i += page) sink = sink + base_[i];
  };
  if (!skip) {
    populate(0, size_);
    return;
  }
  for (const TensorInfo& t : tensors_) {
    if (!skip(t)) populate(t.offset, t.offset + t.nbytes);
  }
}

void ZskFile::Release(const void* data, uint64_t bytes) const {
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const auto offset = static_cast<uint64_t>(static_cast<const uint8_t*>(data) - base_);
  // Whole pages only: a page shared with the neighbouring tensor stays.
  const uint64_t begin = (offset + page - 1) / page * page;
  const uint64_t end = std::min(size_, offset + bytes) / page * page;
  if (begin >= end) return;
  // The page cache drops only pages no process maps: unmap them from this one first.
  ::madvise(const_cast<uint8_t*>(base_ + begin), end - begin, MADV_DONTNEED);
  ::posix_fadvise(fd_, static_cast<off_t>(begin), static_cast<off_t>(end - begin),
                  POSIX_FADV_DONTNEED);
}

ZskFile::~ZskFile() {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
  if (fd_ >= 0) ::close(fd_);
}

void ZskFile::Parse() {
  const ZskHeader h = DecodeZskHeader(base_, size_, path_);
  if (ZskHeaderChecksum(base_, h) != h.header_checksum) {
    throw Error(path_, "header checksum mismatch (metadata, tokenizer or tensor table damaged)");
  }
  version_ = h.version;
  metadata_json_.assign(reinterpret_cast<const char*>(base_) + h.metadata_offset, h.metadata_size);
  const json meta = json::parse(metadata_json_, nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object() || !meta.contains("config") || !meta["config"].is_object()) {
    throw Error(path_, "metadata is not a JSON object with a config");
  }
  config_ = ConfigFromJson(meta["config"].dump(), path_);
  if (meta.contains("hf_config") && meta["hf_config"].is_string()) {
    source_config_json_ = meta["hf_config"].get<std::string>();
  }
  tokenizer_offset_ = h.tokenizer_offset;
  tokenizer_size_ = h.tokenizer_size;
  tensors_ = DecodeTensorTable(base_, h, path_);
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  // The architecture decides the tokenizer; files written before the field hold sentencepiece.
  const std::string_view kind = TokenizerKind(config_);
  if (meta.contains("tokenizer") && meta["tokenizer"] != kind) {
    throw Error(path_, "metadata: tokenizer " + meta["tokenizer"].dump() + " but " +
                           config_.hf_architecture + " needs \"" + std::string(kind) + "\"");
  }
  // Here rather than only at model load, so `info` and `verify` refuse what `run` would.
  if (kind == "gpt2_bpe") {
    if (LoadTokenizer()->vocab_size() > config_.vocab) {
      throw Error(path_, "the embedded tokenizer has more pieces than vocab_size");
    }
  } else {
    CheckTokenizerModel(tokenizer_model(), config_.vocab, path_, "the embedded tokenizer");
  }
}

std::string_view ZskFile::tokenizer_model() const {
  return {reinterpret_cast<const char*>(base_) + tokenizer_offset_, tokenizer_size_};
}

std::unique_ptr<Tokenizer> ZskFile::LoadTokenizer() const {
  if (TokenizerKind(config_) == "sentencepiece") {
    return std::make_unique<Tokenizer>(tokenizer_model(), path_);
  }
  std::vector<int> special;
  for (int64_t id : {config_.bos_id, config_.eos_id}) {
    if (id >= 0) special.push_back(static_cast<int>(id));
  }
  return Tokenizer::FromPackedBpe(tokenizer_model(), special, path_);
}

const TensorInfo* ZskFile::Find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void ZskFile::VerifyChecksums(const std::function<void(size_t, size_t)>& progress) const {
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorInfo& t = tensors_[i];
    if (XXH64(base_ + t.offset, t.nbytes, 0) != t.checksum) {
      throw Error(path_, "tensor '" + t.name + "': checksum mismatch (data corrupted)");
    }
    if (progress) progress(i + 1, tensors_.size());
  }
}

// ---------------------------------------------------------------- writer

ZskWriter::ZskWriter(std::string path, const ModelConfig& config, std::string source_config_json,
                     std::string tokenizer_model, std::vector<TensorSpec> tensors)
    : path_(std::move(path)),
      metadata_json_(MetadataJson(config, source_config_json)),
      tokenizer_model_(std::move(tokenizer_model)) {
  metadata_offset_ = kZskHeaderBytes;
  tokenizer_offset_ = metadata_offset_ + metadata_json_.size();
  table_offset_ = AlignUp(tokenizer_offset_ + tokenizer_model_.size(), 8);
  data_offset_ = AlignUp(table_offset_ + tensors.size() * kZskTensorRecordBytes, kTensorAlign);
  uint64_t offset = data_offset_;
  for (auto& spec : tensors) {
    if (spec.name.empty() || spec.name.size() > kZskMaxNameBytes) {
      throw Error(path_, "tensor name '" + spec.name + "' does not fit the format");
    }
    TensorInfo t;
    t.name = std::move(spec.name);
    t.dtype = spec.dtype;
    t.layout = spec.layout;
    t.shape = std::move(spec.shape);
    if (IsQuantized(t.dtype) &&
        (t.shape.empty() || t.shape.back() % DTypeBlockElements(t.dtype) != 0)) {
      throw Error(path_, "tensor '" + t.name + "': rows are not whole " +
                             std::string(DTypeName(t.dtype)) + " blocks");
    }
    t.nbytes = DTypeBytes(t.dtype, t.elements());
    t.offset = offset;
    offset = AlignUp(offset + t.nbytes, kTensorAlign);
    plan_.push_back(std::move(t));
  }
  file_size_ = offset;
  out_ = std::make_unique<AtomicOutput>(path_);
}

ZskWriter::~ZskWriter() = default;

const std::string& ZskWriter::tmp_path() const { return out_->tmp_path(); }

void ZskWriter::WriteNext(std::span<const uint8_t> bytes) {
  if (next_ >= plan_.size() || bytes.size() != plan_[next_].nbytes) {
    throw Error(path_, "internal: tensor write does not match the plan");
  }
  TensorInfo& t = plan_[next_++];
  t.checksum = XXH64(bytes.data(), bytes.size(), 0);
  out_->WriteAt(t.offset, bytes.data(), bytes.size());
}

void ZskWriter::Finish(const std::function<void()>& before_commit) {
  if (next_ != plan_.size()) throw Error(path_, "internal: not every planned tensor was written");
  std::string table(plan_.size() * kZskTensorRecordBytes, '\0');
  for (size_t i = 0; i < plan_.size(); ++i) {
    EncodeTensorRecord(plan_[i],
                       reinterpret_cast<uint8_t*>(table.data()) + i * kZskTensorRecordBytes);
  }
  ZskHeader h;
  h.version = kZskVersion;
  h.file_size = file_size_;
  h.metadata_offset = metadata_offset_;
  h.metadata_size = metadata_json_.size();
  h.tokenizer_offset = tokenizer_offset_;
  h.tokenizer_size = tokenizer_model_.size();
  h.table_offset = table_offset_;
  h.tensor_count = plan_.size();
  h.data_offset = data_offset_;
  uint8_t header[kZskHeaderBytes];
  EncodeZskHeader(h, header);
  h.header_checksum = ZskHeaderChecksum(header, metadata_json_, tokenizer_model_, table);
  EncodeZskHeader(h, header);

  out_->Resize(file_size_);
  out_->WriteAt(0, header, kZskHeaderBytes);
  out_->WriteAt(metadata_offset_, metadata_json_.data(), metadata_json_.size());
  out_->WriteAt(tokenizer_offset_, tokenizer_model_.data(), tokenizer_model_.size());
  out_->WriteAt(table_offset_, table.data(), table.size());
  out_->Sync();
  if (before_commit) before_commit();
  out_->Commit();
}

}  // namespace zeroskip
