#include "format/safetensors.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "format/file_io.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

using nlohmann::json;

DType ParseSafetensorsDType(const std::string& name, const std::string& path,
                            const std::string& tensor) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  static const char* const kKnownUnsupported[] = {
      "F64", "I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64", "BOOL", "F8_E4M3", "F8_E5M2"};
  for (const char* known : kKnownUnsupported) {
    if (name == known) {
      throw Error(
          path, "tensor '" + tensor + "': dtype " + name + " is not supported (F32, F16 or BF16)");
    }
  }
  throw Error(path, "tensor '" + tensor + "': unknown dtype '" + name + "'");
}

}  // namespace

SafetensorsFile ParseSafetensorsHeader(std::string_view header_json, uint64_t file_size,
                                       const std::string& path) {
  const json j = json::parse(header_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(path, "safetensors header is not valid JSON");
  if (!j.is_object()) throw Error(path, "safetensors header is not a JSON object");
  const uint64_t data_start = 8 + header_json.size();
  if (data_start > file_size) throw Error(path, "safetensors header runs past the end of the file");
  const uint64_t data_size = file_size - data_start;

  SafetensorsFile file{path, {}};
  for (const auto& [name, info] : j.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) throw Error(path, "__metadata__ must be an object");
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!info.is_object()) throw Error(path, where + ": entry is not an object");
    if (!info.contains("dtype") || !info["dtype"].is_string()) {
      throw Error(path, where + ": missing dtype");
    }
    if (!info.contains("shape") || !info["shape"].is_array()) {
      throw Error(path, where + ": missing shape");
    }
    if (!info.contains("data_offsets") || !info["data_offsets"].is_array() ||
        info["data_offsets"].size() != 2) {
      throw Error(path, where + ": data_offsets must be [begin, end]");
    }
    SafetensorsTensor t;
    t.name = name;
    t.dtype = ParseSafetensorsDType(info["dtype"].get<std::string>(), path, name);
    uint64_t elements = 1;
    if (info["shape"].size() > kZskMaxDims) {
      throw Error(path, where + ": more than " + std::to_string(kZskMaxDims) + " dimensions");
    }
    for (const json& d : info["shape"]) {
      if (!d.is_number_unsigned()) {
        throw Error(path, where + ": shape entries must be integers >= 0");
      }
      t.shape.push_back(d.get<uint64_t>());
      elements = CheckedMul(elements, t.shape.back(), path, where + ": element count");
    }
    for (const json& o : info["data_offsets"]) {
      if (!o.is_number_unsigned()) {
        throw Error(path, where + ": data_offsets must be integers >= 0");
      }
    }
    const uint64_t begin = info["data_offsets"][0].get<uint64_t>();
    const uint64_t end = info["data_offsets"][1].get<uint64_t>();
    if (begin > end) throw Error(path, where + ": data_offsets begin after end");
    if (end > data_size) {
      throw Error(path, where + ": data_offsets end " + std::to_string(end) +
                            " is past the end of the data (" + std::to_string(data_size) +
                            " bytes)");
    }
    const uint64_t expected =
        CheckedMul(elements, DTypeBytes(t.dtype, 1), path, where + ": byte size");
    if (end - begin != expected) {
      throw Error(path, where + ": holds " + std::to_string(end - begin) + " bytes but dtype x " +
                            "shape needs " + std::to_string(expected));
    }
    t.begin = data_start + begin;
    t.end = data_start + end;
    file.tensors.push_back(std::move(t));
  }
  std::sort(file.tensors.begin(), file.tensors.end(),
            [](const auto& a, const auto& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < file.tensors.size(); ++i) {
    const auto& prev = file.tensors[i - 1];
    const auto& cur = file.tensors[i];
    if (cur.begin < prev.end) {
      throw Error(path, "tensors '" + prev.name + "' and '" + cur.name + "' overlap");
    }
  }
  return file;
}

namespace {

SafetensorsFile ReadHeader(const InputFile& file) {
  const std::string& path = file.path();
  if (file.size() < 8) throw Error(path, "file is truncated (no safetensors header length)");
  uint8_t prefix[8];
  file.ReadAt(0, prefix, 8);
  const uint64_t n = LoadLe64(prefix);
  if (n > file.size() - 8) {
    throw Error(path, "safetensors header length " + std::to_string(n) +
                          " is larger than the file (" + std::to_string(file.size()) + " bytes)");
  }
  if (n > kMaxSafetensorsHeaderBytes) {
    throw Error(path, "safetensors header is larger than 100 MiB");
  }
  std::string header(n, '\0');
  file.ReadAt(8, header.data(), n);
  return ParseSafetensorsHeader(header, file.size(), path);
}

constexpr uint64_t kMaxIndexBytes = 64u << 20;

std::vector<std::string> ShardNames(const std::string& index_path) {
  const json index = json::parse(ReadSmallFile(index_path, kMaxIndexBytes), nullptr, false);
  if (index.is_discarded() || !index.is_object()) throw Error(index_path, "is not valid JSON");
  if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
    throw Error(index_path, "missing weight_map");
  }
  std::set<std::string> names;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) throw Error(index_path, "weight_map['" + tensor + "'] is not a string");
    const std::string name = file.get<std::string>();
    // Shards are plain files beside the index: no directories, no escaping the checkpoint.
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
      throw Error(index_path, "invalid shard file name '" + name + "'");
    }
    names.insert(name);
  }
  if (names.empty()) throw Error(index_path, "weight_map is empty");
  return {names.begin(), names.end()};
}

// Where a tensor's bytes are.
struct Location {
  size_t shard = 0;
  uint64_t begin = 0;  // absolute file offset
};

class SafetensorsCheckpoint : public CheckpointReader {
 public:
  explicit SafetensorsCheckpoint(const std::string& dir) {
    const std::string index_path = dir + "/model.safetensors.index.json";
    std::vector<std::string> shard_paths;
    if (FileExists(index_path)) {
      for (const auto& name : ShardNames(index_path)) shard_paths.push_back(dir + "/" + name);
      path_ = index_path;
      indexed_ = true;
    } else {
      const std::string single = dir + "/model.safetensors";
      if (!FileExists(single)) {
        throw Error(dir, "no model.safetensors or model.safetensors.index.json");
      }
      shard_paths.push_back(single);
      path_ = single;
    }
    // Sorted by name, as tensors() promises.
    std::map<std::string, std::pair<CheckpointTensor, Location>> by_name;
    for (size_t s = 0; s < shard_paths.size(); ++s) {
      shards_.push_back(std::make_unique<InputFile>(shard_paths[s]));
      for (auto& t : ReadHeader(*shards_[s]).tensors) {
        CheckpointTensor tensor{t.name, t.dtype, std::move(t.shape), t.end - t.begin,
                                shard_paths[s]};
        if (!by_name.emplace(t.name, std::pair(std::move(tensor), Location{s, t.begin})).second) {
          throw Error(shard_paths[s], "tensor '" + t.name + "' appears in more than one shard");
        }
      }
    }
    for (auto& [name, entry] : by_name) {
      tensors_.push_back(std::move(entry.first));
      locations_.push_back(entry.second);
    }
  }

  const std::string& path() const override { return path_; }

  std::vector<std::string> files() const override {
    std::vector<std::string> files;
    if (indexed_) files.push_back(path_);
    for (const auto& shard : shards_) files.push_back(shard->path());
    return files;
  }

  const std::vector<CheckpointTensor>& tensors() const override { return tensors_; }

  void Read(const CheckpointTensor& tensor, void* out) const override {
    const CheckpointTensor* t = Find(tensor.name);
    if (t == nullptr) throw std::invalid_argument("no tensor '" + tensor.name + "' to read");
    const Location& at = locations_[t - tensors_.data()];
    shards_[at.shard]->ReadAt(at.begin, out, tensor.nbytes);
  }

 private:
  std::string path_;
  bool indexed_ = false;  // path_ is model.safetensors.index.json
  std::vector<std::unique_ptr<InputFile>> shards_;
  std::vector<CheckpointTensor> tensors_;
  std::vector<Location> locations_;  // parallel to tensors_
};

}  // namespace

SafetensorsFile ReadSafetensorsHeader(const std::string& path) {
  return ReadHeader(InputFile(path));
}

std::unique_ptr<CheckpointReader> OpenSafetensorsCheckpoint(const std::string& dir) {
  return std::make_unique<SafetensorsCheckpoint>(dir);
}

}  // namespace zeroskip
