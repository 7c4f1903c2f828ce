// Rotary position embeddings in the Hugging Face "rotate-half" convention:
// angle(p, i) = p * theta^(-2i / head_dim) for i < head_dim / 2, applied to the pairs
// (x[i], x[i + head_dim / 2]).
#pragma once

#include <cstdint>
#include <vector>

namespace zeroskip {

class RopeTable {
 public:
  RopeTable() = default;
  // Tables for positions [0, context).
  RopeTable(int64_t context, int64_t head_dim, float theta);

  // Rotates `heads` heads in each of n rows of v ([n, heads, head_dim]); row r is at position
  // pos0 + r, which must be inside the table.
  void Apply(float* v, int64_t n, int64_t heads, int64_t pos0) const;

 private:
  int64_t half_ = 0;
  std::vector<float> cos_;  // [context, head_dim / 2]
  std::vector<float> sin_;  // [context, head_dim / 2]
};

}  // namespace zeroskip
