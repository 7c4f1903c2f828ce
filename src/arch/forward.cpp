#include "arch/forward.h"

#include <stdexcept>

#include "arch/architectures.h"

namespace zeroskip {

ForwardFn ForwardFor(const ModelConfig& config) {
  switch (ArchitectureOf(config).forward) {
    case ForwardFamily::kLlama:
      return LlamaForward;
  }
  throw std::invalid_argument("no forward pass for '" + config.hf_architecture + "'");
}

}  // namespace zeroskip
