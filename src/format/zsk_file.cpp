#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "format/zsk_layout.h"
#include "text/tokenizer_check.h"
#include "zeroskip/error.h"
#include "zeroskip/format.h"

namespace zeroskip {
namespace {

using nlohmann::json;

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// The temporary file a writer is filling, for RemoveUnfinishedOutput (one writer at a time).
std::atomic<const char*> g_unfinished_tmp{nullptr};

std::string MetadataJson(const ModelConfig& config, const std::string& source_config_json) {
  json meta = {{"config", json::parse(ConfigToJson(config))},
               {"hf_config", source_config_json},
               {"tokenizer", "sentencepiece"}};
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
  file->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file->fd_ < 0) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(file->fd_, &st) != 0 || !S_ISREG(st.st_mode)) throw Error(path, "not a regular file");
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ == 0) throw Error(path, "file is empty");
  void* map = ::mmap(nullptr, file->size_, PROT_READ, MAP_SHARED, file->fd_, 0);
  if (map == MAP_FAILED) throw Error(path, std::string("cannot map: ") + std::strerror(errno));
  file->base_ = static_cast<const uint8_t*>(map);
  file->Parse();
  return file;
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
  // Here rather than only at model load, so `info` and `verify` refuse what `run` would.
  CheckTokenizerModel(tokenizer_model(), config_.vocab, path_, "the embedded tokenizer");
}

std::string_view ZskFile::tokenizer_model() const {
  return {reinterpret_cast<const char*>(base_) + tokenizer_offset_, tokenizer_size_};
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

void RemoveUnfinishedOutput() {
  if (const char* tmp = g_unfinished_tmp.exchange(nullptr)) ::unlink(tmp);
}

ZskWriter::ZskWriter(std::string path, const ModelConfig& config, std::string source_config_json,
                     std::string tokenizer_model, std::vector<TensorSpec> tensors)
    : path_(std::move(path)),
      tmp_path_(path_ + ".tmp"),
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
    t.nbytes = t.elements() * DTypeSize(t.dtype);
    t.offset = offset;
    offset = AlignUp(offset + t.nbytes, kTensorAlign);
    plan_.push_back(std::move(t));
  }
  file_size_ = offset;
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    throw Error(path_, "is a directory (give a file name for the output)");
  }
  // A stale temporary file from a crashed run is replaced; O_EXCL|O_NOFOLLOW then guarantee we
  // write a fresh regular file, never through a symlink someone planted there.
  ::unlink(tmp_path_.c_str());
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw Error(path_, std::string("cannot create output file: ") + std::strerror(errno));
  }
  g_unfinished_tmp.store(tmp_path_.c_str());
}

ZskWriter::~ZskWriter() {
  g_unfinished_tmp.store(nullptr);
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) ::unlink(tmp_path_.c_str());
}

void ZskWriter::WriteAt(uint64_t offset, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t put = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) throw Error(path_, std::string("write failed: ") + std::strerror(errno));
    p += put;
    offset += static_cast<uint64_t>(put);
    n -= static_cast<size_t>(put);
  }
}

void ZskWriter::WriteNext(std::span<const uint8_t> bytes) {
  if (next_ >= plan_.size() || bytes.size() != plan_[next_].nbytes) {
    throw Error(path_, "internal: tensor write does not match the plan");
  }
  TensorInfo& t = plan_[next_++];
  t.checksum = XXH64(bytes.data(), bytes.size(), 0);
  WriteAt(t.offset, bytes.data(), bytes.size());
}

void ZskWriter::Finish() {
  if (next_ != plan_.size()) throw Error(path_, "internal: not every planned tensor was written");
  std::string table(plan_.size() * kZskTensorRecordBytes, '\0');
  for (size_t i = 0; i < plan_.size(); ++i) {
    EncodeTensorRecord(plan_[i], reinterpret_cast<uint8_t*>(table.data()) +
                                     i * kZskTensorRecordBytes);
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

  if (::ftruncate(fd_, static_cast<off_t>(file_size_)) != 0) {
    throw Error(path_, std::string("cannot size output file: ") + std::strerror(errno));
  }
  WriteAt(0, header, kZskHeaderBytes);
  WriteAt(metadata_offset_, metadata_json_.data(), metadata_json_.size());
  WriteAt(tokenizer_offset_, tokenizer_model_.data(), tokenizer_model_.size());
  WriteAt(table_offset_, table.data(), table.size());
  if (::fsync(fd_) != 0) throw Error(path_, std::string("fsync failed: ") + std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  g_unfinished_tmp.store(nullptr);
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    throw Error(path_, std::string("cannot rename temporary file: ") + std::strerror(errno));
  }
  finished_ = true;
  // Make the rename itself durable.
  const auto slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace zeroskip
