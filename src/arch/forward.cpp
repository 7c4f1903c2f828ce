#include "arch/forward.h"

#include <stdexcept>

#include "arch/architectures.h"

namespace zeroskip {

ForwardFn ForwardFor(const ModelConfig& config) {
  const Architecture* a = FindArchitecture(config.hf_architecture);
  if (a == nullptr) {
    throw std::invalid_argument("unsupported architecture '" + config.hf_architecture + "'");
  }
  switch (a->forward) {
    case ForwardFamily::kLlama:
      return LlamaForward;
  }
  throw std::invalid_argument("no forward pass for '" + config.hf_architecture + "'");
}

}  // namespace zeroskip
