#include "format/neuron_file.h"

#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "arch/tensor_table.h"
#include "format/file_io.h"
#include "zeroskip/convert.h"
#include "zeroskip/error.h"
#include "zeroskip/files.h"

namespace zeroskip {
namespace {

constexpr char kMagic[8] = {'Z', 'S', 'K', 'N', 'E', 'U', 'R', 'N'};
constexpr uint32_t kVersion = 1;
// The header's fields end here; its checksum covers them, the rest of the block is zeros.
constexpr uint64_t kChecksumOffset = 80;
// Neurons written per call: a few MB at 7B, so the output is written in large pieces.
constexpr int64_t kWriteNeurons = 64;

uint64_t RoundUp(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// The three FFN tensors of a layer, in bundle order (gate, up, down).
std::array<const TensorInfo*, 3> FfnTensors(const ZskFile& model, int64_t layer) {
  std::array<const TensorInfo*, 3> t{};
  const char* roles[3] = {"ffn_gate", "ffn_up", "ffn_down"};
  for (int k = 0; k < 3; ++k) {
    t[k] = model.Find(LayerTensorName(layer, roles[k]));
    if (t[k] == nullptr) {
      throw Error(model.path(), std::string("has no '") + LayerTensorName(layer, roles[k]) +
                                    "' (a neuron file bundles the gated FFN's rows)");
    }
  }
  return t;
}

std::array<uint8_t, kNeuronHeaderBytes> EncodeHeader(const NeuronLayout& l) {
  std::array<uint8_t, kNeuronHeaderBytes> h{};
  std::memcpy(h.data(), kMagic, sizeof(kMagic));
  StoreLe32(h.data() + 8, kVersion);
  StoreLe64(h.data() + 16, static_cast<uint64_t>(l.layers));
  StoreLe64(h.data() + 24, static_cast<uint64_t>(l.ffn));
  StoreLe64(h.data() + 32, static_cast<uint64_t>(l.hidden));
  StoreLe32(h.data() + 40, static_cast<uint32_t>(l.gate));
  StoreLe32(h.data() + 44, static_cast<uint32_t>(l.up));
  StoreLe32(h.data() + 48, static_cast<uint32_t>(l.down));
  StoreLe64(h.data() + 56, l.stride);
  StoreLe64(h.data() + 64, kNeuronHeaderBytes);  // where the first bundle starts
  StoreLe64(h.data() + 72, l.source_digest);
  StoreLe64(h.data() + kChecksumOffset, XXH64(h.data(), kChecksumOffset, 0));
  return h;
}

}  // namespace

std::string NeuronFilePath(const std::string& model_path) { return model_path + ".neurons"; }

NeuronLayout PlanNeuronFile(const ZskFile& model) {
  const ModelConfig& c = model.config();
  if (!c.gated_ffn) {
    throw Error(model.path(), "has an ungated FFN; a neuron file bundles a gated FFN's rows");
  }
  NeuronLayout l;
  l.layers = c.layers;
  l.ffn = c.ffn;
  l.hidden = c.hidden;
  std::vector<uint8_t> checksums;
  for (int64_t i = 0; i < c.layers; ++i) {
    const auto t = FfnTensors(model, i);
    for (int k = 0; k < 3; ++k) {
      const std::vector<uint64_t> shape = {static_cast<uint64_t>(c.ffn),
                                           static_cast<uint64_t>(c.hidden)};
      if (t[k]->shape != shape) {
        throw Error(model.path(), "tensor '" + t[k]->name + "' is not [ffn, hidden]");
      }
      if (IsQuantized(t[k]->dtype)) {
        throw Error(model.path(), "tensor '" + t[k]->name + "' is " +
                                      std::string(DTypeName(t[k]->dtype)) +
                                      "; a neuron file bundles f32, f16 and bf16 FFN rows only");
      }
      DType* dtype = k == 0 ? &l.gate : k == 1 ? &l.up : &l.down;
      if (i == 0) {
        *dtype = t[k]->dtype;
      } else if (*dtype != t[k]->dtype) {
        throw Error(model.path(), "tensor '" + t[k]->name + "' has another type than layer 0's " +
                                      "(a neuron file has one type per FFN matrix)");
      }
      uint8_t sum[8];
      StoreLe64(sum, t[k]->checksum);
      checksums.insert(checksums.end(), sum, sum + 8);
    }
  }
  l.gate_bytes = DTypeBytes(l.gate, c.hidden);
  l.up_bytes = DTypeBytes(l.up, c.hidden);
  l.down_bytes = DTypeBytes(l.down, c.hidden);
  l.gate_read = RoundUp(l.gate_bytes, kBundleAlign);
  l.up_down_read = RoundUp(l.up_bytes + l.down_bytes, kBundleAlign);
  l.stride = l.gate_read + l.up_down_read;
  // The down row must start on an element of its type (an f32 row after an odd number of 16-bit
  // elements would not); the others start on a multiple of kBundleAlign.
  if (l.up_bytes % DTypeBytes(l.down, 1) != 0) {
    throw Error(model.path(), "its FFN rows cannot be bundled at element boundaries");
  }
  l.source_digest = XXH64(checksums.data(), checksums.size(), 0);
  return l;
}

void AssembleBundle(const NeuronLayout& l, const uint8_t* gate_row, const uint8_t* up_row,
                    const uint8_t* down_row, uint8_t* bundle) {
  std::memcpy(bundle, gate_row, l.gate_bytes);
  std::memset(bundle + l.gate_bytes, 0, l.gate_read - l.gate_bytes);
  uint8_t* up_down = bundle + l.gate_read;
  std::memcpy(up_down, up_row, l.up_bytes);
  std::memcpy(up_down + l.up_bytes, down_row, l.down_bytes);
  std::memset(up_down + l.up_bytes + l.down_bytes, 0, l.up_down_read - l.up_bytes - l.down_bytes);
}

void WriteNeuronFile(const ZskFile& model, const NeuronFileOptions& options) {
  const NeuronLayout l = PlanNeuronFile(model);
  AtomicOutput out(options.out_path);
  out.Resize(l.FileBytes());
  const auto header = EncodeHeader(l);
  out.WriteAt(0, header.data(), header.size());
  std::vector<uint8_t> chunk(static_cast<size_t>(kWriteNeurons * l.stride));
  const uint64_t row_bytes[3] = {l.gate_bytes, l.up_bytes, l.down_bytes};
  XXH64_state_t* states[3] = {XXH64_createState(), XXH64_createState(), XXH64_createState()};
  struct FreeStates {
    XXH64_state_t** s;
    ~FreeStates() {
      for (int k = 0; k < 3; ++k) XXH64_freeState(s[k]);
    }
  } free_states{states};
  for (int k = 0; k < 3; ++k) {
    if (states[k] == nullptr) throw std::bad_alloc();
  }
  for (int64_t layer = 0; layer < l.layers; ++layer) {
    const auto t = FfnTensors(model, layer);
    for (int k = 0; k < 3; ++k) XXH64_reset(states[k], 0);
    for (int64_t n0 = 0; n0 < l.ffn; n0 += kWriteNeurons) {
      const int64_t n = std::min(kWriteNeurons, l.ffn - n0);
      for (int64_t i = 0; i < n; ++i) {
        const uint8_t* rows[3];
        for (int k = 0; k < 3; ++k) {
          rows[k] = static_cast<const uint8_t*>(model.data(*t[k])) + (n0 + i) * row_bytes[k];
          XXH64_update(states[k], rows[k], row_bytes[k]);
        }
        AssembleBundle(l, rows[0], rows[1], rows[2], chunk.data() + i * l.stride);
      }
      out.WriteAt(l.BundleOffset(layer, n0), chunk.data(), static_cast<size_t>(n * l.stride));
    }
    // The bundles copy the .zsk's bytes: damage there must not pass into a file read for years.
    for (int k = 0; k < 3; ++k) {
      if (XXH64_digest(states[k]) != t[k]->checksum) {
        throw Error(model.path(),
                    "tensor '" + t[k]->name + "': checksum mismatch (data corrupted)");
      }
    }
    if (options.progress) options.progress(layer + 1, l.layers);
  }
  out.Sync();
  if (options.before_commit) options.before_commit(l.FileBytes());
  out.Commit();
}

NeuronLayout ReadNeuronFileHeader(const std::string& path, int fd, uint64_t size,
                                  const ZskFile& model) {
  uint8_t h[kChecksumOffset + 8];
  if (size < sizeof(h)) throw Error(path, "is not a neuron file (too short for its header)");
  for (uint64_t at = 0; at < sizeof(h);) {
    const ssize_t got = ::pread(fd, h + at, sizeof(h) - at, static_cast<off_t>(at));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) throw Error(path, "cannot read the header");
    at += static_cast<uint64_t>(got);
  }
  if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) {
    throw Error(path, "is not a neuron file (bad magic)");
  }
  if (LoadLe32(h + 8) != kVersion) {
    throw Error(path, "neuron file version " + std::to_string(LoadLe32(h + 8)) +
                          " (this build reads version " + std::to_string(kVersion) + ")");
  }
  if (XXH64(h, kChecksumOffset, 0) != LoadLe64(h + kChecksumOffset)) {
    throw Error(path, "header checksum mismatch (the file is damaged)");
  }
  const NeuronLayout want = PlanNeuronFile(model);
  const auto expected = EncodeHeader(want);
  if (std::memcmp(h, expected.data(), sizeof(h)) != 0) {
    throw Error(path, "was written for another model than " + model.path() +
                          " (its FFN shapes, types or checksums differ)");
  }
  if (size != want.FileBytes()) {
    throw Error(path, "is " + std::to_string(size) + " bytes but its header implies " +
                          std::to_string(want.FileBytes()));
  }
  return want;
}

}  // namespace zeroskip
