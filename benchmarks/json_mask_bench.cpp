// JSON mode's cost per token: the time to mask a model's vocabulary at typical points of a reply
// (docs/SERVER.md, "JSON mode"). Prints the median of many masks per point; not a test.
//
//     build/zeroskip_json_mask_bench MODEL.zsk
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "zeroskip/error.h"
#include "zeroskip/json_constraint.h"
#include "zeroskip/model.h"
#include "zeroskip/tokenizer.h"

int main(int argc, char** argv) {
  using namespace zeroskip;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL.zsk\n", argv[0]);
    return 2;
  }
  try {
    const auto model = Model::Load(argv[1]);
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    const auto vocab = JsonVocabulary::FromTokenizer(model->tokenizer(), model->config().vocab,
                                                     model->config().eos_id);
    const double build_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::printf("vocabulary %lld pieces, trie built in %.2f ms\n",
                static_cast<long long>(vocab->size()), build_ms);
    const char* points[] = {"", "{\"name\": ", "{\"name\": \"Romeo of", "{\"a\": [1, 2"};
    std::vector<JsonMatcher> scratch;
    std::vector<uint8_t> allowed;
    for (const char* text : points) {
      JsonMatcher m(JsonGrammar::AnyObject());
      m.Push(text);
      std::vector<double> us;
      for (int i = 0; i < 300; ++i) {
        const auto a = Clock::now();
        vocab->Allowed(m, &scratch, &allowed);
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
      }
      std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
      const auto n = std::count(allowed.begin(), allowed.end(), uint8_t{1});
      std::printf("%6lld tokens allowed, mask %8.1f us (median of %zu) after '%s'\n",
                  static_cast<long long>(n), us[us.size() / 2], us.size(), text);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "zeroskip_json_mask_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
