// The server's engine room: N slots (a session each, all on one Engine) and a bounded queue of
// generation jobs. One thread runs every forward pass: each turn it admits queued jobs into free
// slots, runs one prompt chunk of a slot that is reading its prompt, then one decode step of every
// generating slot together (Session::DecodeBatch: the weights are read once for all of them).
// HTTP threads submit jobs and read their text as it arrives; they never touch a session.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "zeroskip/generate.h"
#include "zeroskip/sampler.h"
#include "zeroskip/session.h"

namespace zeroskip::serve {

using Clock = std::chrono::steady_clock;

// What one request asks to generate (one choice of it: a request with n choices or several
// prompts submits a job per choice).
struct JobRequest {
  std::vector<int> prompt;  // token ids, BOS included
  SamplerOptions sampler;
  int64_t max_tokens = 0;
  bool stop_at_eos = true;
  bool drop_leading_space = false;
  std::vector<std::string> stop_strings;
  FfnMode ffn = FfnMode::kAuto;
  GateMode gate = GateMode::kAuto;
  ActivationOptions activation;
  int logprobs = -1;         // >= 0: each generated token's logprob and that many alternatives
  int prompt_logprobs = -1;  // >= 0: the same for each prompt token after the first
  // The index, in the same Submit, of a job with the same prompt and FFN settings whose prefill
  // this one copies instead of running its own (when both are in slots at once); -1: none.
  int shares_prompt_of = -1;
  // Makes each generation's token constraint (JSON mode: response_format); empty: none.
  std::function<std::shared_ptr<TokenConstraint>()> constraint;
  // Chat messages the server dropped to fit the context ("fit_context"), for the answer.
  int64_t dropped_messages = 0;
};

// A submitted request: the scheduler writes, the HTTP thread reads (under `lock`).
struct Job {
  explicit Job(JobRequest r) : request(std::move(r)) {}
  const JobRequest request;
  std::shared_ptr<Job> leader;  // request.shares_prompt_of's job
  Clock::time_point submitted = Clock::now();

  std::mutex lock;
  std::condition_variable changed;  // new text, or finished
  std::string text;                 // generated text not yet taken by the reader
  bool finished = false;
  std::string error;                // set when the job failed (then finished)
  bool stopped = false;             // it failed because Scheduler::Stop ended it
  GenerateResult result;            // complete once finished (text: all of it)
  // prompt[1..]'s log-probabilities when request.prompt_logprobs >= 0, complete once finished.
  std::vector<TokenLogProb> prompt_logprobs;
  Clock::time_point admitted, first_token, done;
  double prefill_seconds = 0;
  FfnLayerStats own_ffn;   // this job's tokens: their zeros
  FfnLayerStats pass_ffn;  // the passes it was part of: the rows they read for all their tokens

  std::atomic<bool> cancel{false};  // set by the reader: the client has gone

  // Waits until there is text or the job finished, at most `timeout`; takes the text.
  std::string Take(std::chrono::milliseconds timeout, bool* finished_out);
};

struct SchedulerStatus {
  int slots = 0, busy = 0;
  int64_t queued = 0;
  uint64_t decode_steps = 0, decoded_tokens = 0;  // since start: passes and tokens they ran
  // Since start, of the jobs that ended (counted before their reader hears of the end):
  uint64_t prompt_tokens = 0, generated_tokens = 0;
  FfnLayerStats ffn;  // their FFN statistics, every layer, prompt and decode
};

class Scheduler {
 public:
  // `base` holds each slot's context and KV type (and the FFN defaults requests start from); the
  // model's own context shortens to what every slot fits beside a memory budget
  // (Session::ContextThatFits). Throws Error if the slots' KV caches do not fit in memory.
  Scheduler(Engine& engine, const SessionOptions& base, int slots, int64_t queue_limit);
  ~Scheduler();  // Stop()

  int64_t context() const {  // every slot's
    return base_.context > 0 ? base_.context : engine_.model().config().context;
  }

  // Queues the jobs of one request, all or none: empty when the queue cannot take them all.
  // Throws Error if a request's FFN settings cannot run on this model (checked here, before any
  // reply is sent).
  std::vector<std::shared_ptr<Job>> Submit(std::vector<JobRequest> requests);
  // Fails every queued and running job ("the server is shutting down", `stopped`) and joins
  // the thread.
  void Stop();
  bool Stopping();
  SchedulerStatus Status();

  // Longest prompt chunk one turn runs: a long prompt delays the other slots' next token by
  // about one chunk's time, not its whole prefill.
  static constexpr int64_t kPrefillChunk = 128;

 private:
  struct Slot;
  void Loop();
  void Admit(Slot& slot, std::shared_ptr<Job> job);
  void PrefillChunk(Slot& slot);
  // The prompt of `slot` is in: slots waiting for it copy its session and start decoding.
  void SharePrompt(Slot& slot);
  void DecodeStep();
  void Finish(Slot& slot, const std::string& error = {}, bool stopped = false);
  // After a token: its text is already with the job; ends the slot if generation ended.
  void Advance(Slot& slot, int next);

  Engine& engine_;
  SessionOptions base_;
  // DecodeStep's lists, kept so a step allocates nothing once they have grown.
  std::vector<Slot*> step_slots_;
  std::vector<Session*> step_sessions_;
  std::vector<int> step_tokens_;
  std::vector<FfnLayerStats> step_layers_;
  int64_t queue_limit_;
  std::vector<std::unique_ptr<Slot>> slots_;

  std::mutex lock_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  int busy_ = 0;
  uint64_t decode_steps_ = 0, decoded_tokens_ = 0;
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  FfnLayerStats ffn_;
  std::thread thread_;
};

}  // namespace zeroskip::serve
