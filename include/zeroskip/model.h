// A loaded model: the mapped .zsk file, its config, tokenizer and typed views of every weight.
//
// Loading validates that every tensor the architecture needs is present with the shape, dtype
// and layout the config implies, and that nothing unexpected is there. Views point into the
// read-only mapping (zero-copy). A Model is immutable and can be shared by many Sessions; it
// owns no per-sequence state and does no compute.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "zeroskip/config.h"
#include "zeroskip/format.h"
#include "zeroskip/tokenizer.h"
#include "zeroskip/weights.h"

namespace zeroskip {

struct LayerWeights {
  const float* attn_norm = nullptr;  // [hidden]
  WeightView q, k, v;                // [q_dim | kv_dim, hidden]
  WeightView o;                      // [hidden, q_dim]
  const float* ffn_norm = nullptr;   // [hidden]
  FfnWeights ffn;
};

class Model {
 public:
  static std::unique_ptr<Model> Load(const std::string& path);

  const ModelConfig& config() const { return file_->config(); }
  const ZskFile& file() const { return *file_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const WeightView& embeddings() const { return embeddings_; }  // [vocab, hidden]
  const LayerWeights& layer(int64_t i) const { return layers_[i]; }
  const float* output_norm() const { return output_norm_; }
  const WeightView& lm_head() const { return lm_head_; }  // embeddings when tied
  uint64_t parameter_count() const;

 private:
  std::unique_ptr<ZskFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  WeightView embeddings_, lm_head_;
  const float* output_norm_ = nullptr;
  std::vector<LayerWeights> layers_;
};

}  // namespace zeroskip
