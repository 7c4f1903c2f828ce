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
  // OPT: LayerNorm biases and the attention projections' biases ([hidden] each), else null.
  const float* attn_norm_bias = nullptr;
  const float* ffn_norm_bias = nullptr;
  const float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;
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
  // OPT: learned positions [context + 2, hidden]; project_in [hidden, embed_dim] and project_out
  // [embed_dim, hidden] (data null unless embed_dim != hidden); the final norm's bias (or null).
  const WeightView& positions() const { return positions_; }
  const WeightView& project_in() const { return project_in_; }
  const WeightView& project_out() const { return project_out_; }
  const float* output_norm_bias() const { return output_norm_bias_; }
  uint64_t parameter_count() const;

 private:
  std::unique_ptr<ZskFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  WeightView embeddings_, lm_head_, positions_, project_in_, project_out_;
  const float* output_norm_ = nullptr;
  const float* output_norm_bias_ = nullptr;
  std::vector<LayerWeights> layers_;
};

}  // namespace zeroskip
