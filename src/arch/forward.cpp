#include "arch/forward.h"

#include <stdexcept>

#include "arch/architectures.h"
#include "ops/norm.h"

namespace zeroskip {

int64_t ForwardPass::rows() const {
  int64_t n = 0;
  for (const SequenceRows& part : sequences) n += part.rows;
  return n;
}

void RunFfn(const ForwardPass& pass, int64_t layer, const FfnWeights& w, const float* x,
            float* y) {
  const SequenceRows& first = pass.sequences.front();
  FfnLayerStats call;
  pass.ws.ffn.Forward(first.seq->ffn, layer, w, x, pass.rows(), y, first.position, &call);
  // A batch reads an offloaded FFN through the file's mapping: drop it before the next layer, or
  // a prompt would push the resident weights out of a memory limit to make room for it.
  if (pass.rows() > 1) pass.model.ReleaseOffloadedFfn(layer);
  if (pass.batch_stats != nullptr) (*pass.batch_stats)[layer].Add(call);
  if (pass.sequences.size() == 1) {
    (*first.ffn_stats)[layer].Add(call);
    return;
  }
  int64_t row = 0;
  for (const SequenceRows& part : pass.sequences) {
    (*part.ffn_stats)[layer].Add(pass.ws.ffn.RowStats(first.seq->ffn, row, part.rows));
    row += part.rows;
  }
}

void RunLmHead(const ForwardPass& pass, const float* x, bool all_logits) {
  const Model& model = pass.model;
  Workspace& ws = pass.ws;
  const ModelConfig& c = model.config();
  const int64_t h = c.hidden;
  if (all_logits) {
    RmsNorm(x, pass.rows(), h, model.output_norm(), c.rms_eps, ws.xn.data());
    ws.matmul.Linear(model.lm_head(), ws.xn.data(), pass.rows(), ws.logits.data());
    return;
  }
  // Only each sequence's last row: all a decoder needs.
  int64_t row = 0, m = 0;
  for (const SequenceRows& part : pass.sequences) {
    row += part.rows;
    RmsNorm(x + (row - 1) * h, 1, h, model.output_norm(), c.rms_eps, ws.xn.data() + m++ * h);
  }
  ws.matmul.Linear(model.lm_head(), ws.xn.data(), m, ws.logits.data());
}

ForwardFn ForwardFor(const ModelConfig& config) {
  switch (ArchitectureOf(config).forward) {
    case ForwardFamily::kLlama:
      return LlamaForward;
    case ForwardFamily::kOpt:
      return OptForward;
  }
  throw std::invalid_argument("no forward pass for '" + config.hf_architecture + "'");
}

}  // namespace zeroskip
