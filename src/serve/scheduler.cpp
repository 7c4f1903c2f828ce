#include "serve/scheduler.h"

#include <algorithm>
#include <utility>

#include "zeroskip/error.h"

namespace zeroskip::serve {

std::string Job::Take(std::chrono::milliseconds timeout, bool* finished_out) {
  std::unique_lock<std::mutex> hold(lock);
  changed.wait_for(hold, timeout, [&] { return finished || !text.empty(); });
  *finished_out = finished;
  return std::exchange(text, {});
}

struct Scheduler::Slot {
  Slot(Engine& engine, const SessionOptions& options) : session(engine, options) {}
  Session session;
  std::shared_ptr<Job> job;  // null: free
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<Generation> generation;
  size_t prefilled = 0;   // prompt tokens run so far
  bool decoding = false;  // the prompt is in; `next` is the token to run
  bool waiting = false;   // for the leader's prompt (SharePrompt), not reading its own
  int next = -1;
  int64_t steps = 0;      // decode steps run
};

Scheduler::Scheduler(Engine& engine, const SessionOptions& base, int slots, int64_t queue_limit)
    : engine_(engine), base_(base), queue_limit_(queue_limit) {
  // Beside a memory budget, every slot the same share of what it leaves (not the first the most).
  if (const int64_t fits = Session::ContextThatFits(engine, base, slots); fits > 0) {
    base_.context = fits;
  }
  for (int i = 0; i < slots; ++i) slots_.push_back(std::make_unique<Slot>(engine, base_));
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() { Stop(); }

std::vector<std::shared_ptr<Job>> Scheduler::Submit(std::vector<JobRequest> requests) {
  std::vector<std::shared_ptr<Job>> jobs;
  for (JobRequest& r : requests) {
    Session::CheckFfn(engine_.model(), r.ffn, r.gate, r.activation);
    const int leader = r.shares_prompt_of;
    jobs.push_back(std::make_shared<Job>(std::move(r)));
    if (leader >= 0 && leader + 1 < static_cast<int>(jobs.size()))
      jobs.back()->leader = jobs[leader];
  }
  {
    std::lock_guard<std::mutex> hold(lock_);
    const int64_t free_slots = static_cast<int64_t>(slots_.size()) - busy_;
    if (stopping_ ||
        static_cast<int64_t>(queue_.size() + jobs.size()) > queue_limit_ + free_slots) {
      return {};
    }
    queue_.insert(queue_.end(), jobs.begin(), jobs.end());
  }
  wake_.notify_all();
  return jobs;
}

SchedulerStatus Scheduler::Status() {
  std::lock_guard<std::mutex> hold(lock_);
  return {static_cast<int>(slots_.size()),
          busy_,
          static_cast<int64_t>(queue_.size()),
          decode_steps_,
          decoded_tokens_,
          prompt_tokens_,
          generated_tokens_,
          ffn_};
}

bool Scheduler::Stopping() {
  std::lock_guard<std::mutex> hold(lock_);
  return stopping_;
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> hold(lock_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  const std::string reason = "the server is shutting down";
  for (auto& slot : slots_) {
    if (!slot->job) continue;
    if (slot->generation) slot->generation->Cancel();
    Finish(*slot, reason, /*stopped=*/true);
  }
  std::lock_guard<std::mutex> hold(lock_);
  for (auto& job : queue_) {
    std::lock_guard<std::mutex> job_hold(job->lock);
    job->error = reason;
    job->stopped = true;
    job->finished = true;
    job->changed.notify_all();
  }
  queue_.clear();
}

void Scheduler::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> hold(lock_);
      wake_.wait(hold, [&] { return stopping_ || !queue_.empty() || busy_ > 0; });
      if (stopping_) return;
      for (auto& slot : slots_) {
        if (slot->job || queue_.empty()) continue;
        std::shared_ptr<Job> job = std::move(queue_.front());
        queue_.pop_front();
        ++busy_;
        hold.unlock();
        Admit(*slot, std::move(job));
        hold.lock();
      }
    }
    Slot* reading = nullptr;  // the slot admitted first among those reading their prompt
    for (auto& slot : slots_) {
      if (!slot->job) continue;
      if (slot->job->cancel.load()) {
        slot->generation->Cancel();
        Finish(*slot);
      } else if (!slot->decoding && !slot->waiting &&
                 (!reading || slot->job->admitted < reading->job->admitted)) {
        reading = slot.get();
      }
    }
    if (reading != nullptr) PrefillChunk(*reading);
    DecodeStep();
  }
}

void Scheduler::Admit(Slot& slot, std::shared_ptr<Job> job) {
  slot.job = std::move(job);
  slot.prefilled = 0;
  slot.decoding = false;
  slot.steps = 0;
  // Copy the leader's prompt if it is still reading it; otherwise read our own.
  slot.waiting = false;
  for (auto& other : slots_) {
    if (slot.job->leader && other->job == slot.job->leader && !other->decoding) {
      slot.waiting = true;
    }
  }
  Job& j = *slot.job;
  j.admitted = Clock::now();
  const JobRequest& r = j.request;
  try {
    slot.session.Reset();
    slot.session.SetFfn(r.ffn, r.gate, r.activation);
  } catch (const Error& e) {
    Finish(slot, e.what());
    return;
  }
  slot.session.ResetFfnStats();
  slot.sampler = std::make_unique<Sampler>(r.sampler, engine_.model().config().vocab);
  GenerateConfig config;
  config.max_tokens = r.max_tokens;
  config.stop_at_eos = r.stop_at_eos;
  config.drop_leading_space = r.drop_leading_space;
  config.stop_strings = r.stop_strings;
  config.logprobs = r.logprobs;
  if (r.constraint) config.constraint = r.constraint();
  config.on_token = [&j](int, std::string_view text) {
    std::lock_guard<std::mutex> hold(j.lock);
    if (j.first_token == Clock::time_point{}) j.first_token = Clock::now();
    j.text += text;
    j.changed.notify_all();
    return true;
  };
  slot.generation = std::make_unique<Generation>(engine_.model(), *slot.sampler, r.prompt, config);
  // Nothing to generate (max_tokens 0) and no prompt to score.
  if (slot.generation->finished() && r.prompt_logprobs < 0) Finish(slot);
}

void Scheduler::PrefillChunk(Slot& slot) {
  const std::vector<int>& prompt = slot.job->request.prompt;
  const size_t n = std::min<size_t>(kPrefillChunk, prompt.size() - slot.prefilled);
  const auto t0 = Clock::now();
  const int top = slot.job->request.prompt_logprobs;
  try {
    const auto logits =
        slot.session.Forward(std::span<const int>(prompt).subspan(slot.prefilled, n), top >= 0);
    // Row i predicts prompt[prefilled + i + 1]; the last row of the prompt predicts what follows.
    const size_t vocab = logits.size() / (top >= 0 ? n : 1);
    for (size_t i = 0; top >= 0 && slot.prefilled + i + 1 < prompt.size() && i < n; ++i) {
      slot.job->prompt_logprobs.push_back(
          ScoreToken(logits.subspan(i * vocab, vocab), prompt[slot.prefilled + i + 1], top));
    }
  } catch (const Error& e) {
    Finish(slot, e.what());
    return;
  }
  {
    std::lock_guard<std::mutex> hold(slot.job->lock);
    slot.job->prefill_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  slot.prefilled += n;
  if (slot.prefilled < prompt.size()) return;
  SharePrompt(slot);
  slot.decoding = true;
  Advance(slot, slot.generation->Next(slot.session.logits(),
                                      slot.session.position() >= slot.session.context()));
}

void Scheduler::SharePrompt(Slot& slot) {
  for (auto& other : slots_) {
    if (!other->waiting || other->job->leader != slot.job) continue;
    other->waiting = false;
    other->session.CopyFrom(slot.session);
    other->prefilled = other->job->request.prompt.size();
    other->job->prompt_logprobs = slot.job->prompt_logprobs;
    other->decoding = true;
    Advance(*other, other->generation->Next(other->session.logits(),
                                            other->session.position() >= other->session.context()));
  }
}

void Scheduler::DecodeStep() {
  std::vector<Slot*>& members = step_slots_;
  members.clear();
  step_sessions_.clear();
  step_tokens_.clear();
  for (auto& slot : slots_) {
    if (!slot->job || !slot->decoding) continue;
    members.push_back(slot.get());
    step_sessions_.push_back(&slot->session);
    step_tokens_.push_back(slot->next);
  }
  if (members.empty()) return;
  std::vector<FfnLayerStats>& layers = step_layers_;
  std::fill(layers.begin(), layers.end(), FfnLayerStats{});
  try {
    Session::DecodeBatch(step_sessions_, step_tokens_, &layers);
  } catch (const Error& e) {
    for (Slot* slot : members) Finish(*slot, e.what());
    return;
  }
  FfnLayerStats pass;
  for (const FfnLayerStats& l : layers) pass.Add(l);
  {
    std::lock_guard<std::mutex> hold(lock_);
    ++decode_steps_;
    decoded_tokens_ += members.size();
  }
  for (Slot* slot : members) {
    ++slot->steps;
    {
      std::lock_guard<std::mutex> hold(slot->job->lock);
      slot->job->pass_ffn.Add(pass);
    }
    Advance(*slot, slot->generation->Next(slot->session.logits(),
                                          slot->session.position() >= slot->session.context()));
  }
}

void Scheduler::Advance(Slot& slot, int next) {
  if (next < 0) {
    Finish(slot);
  } else {
    slot.next = next;
  }
}

void Scheduler::Finish(Slot& slot, const std::string& error, bool stopped) {
  Job& j = *slot.job;
  GenerateResult result;
  if (slot.generation) {
    result = std::move(slot.generation->result());
    result.decode_steps = slot.steps;
  }
  const FfnLayerStats own_ffn = slot.session.ffn_total();
  {
    // Before the reader hears: an answer the client has seen is in Status() already.
    std::lock_guard<std::mutex> hold(lock_);
    --busy_;
    prompt_tokens_ += result.prompt_tokens;
    generated_tokens_ += result.tokens.size();
    ffn_.Add(own_ffn);
  }
  {
    std::lock_guard<std::mutex> hold(j.lock);
    j.result = std::move(result);
    j.error = error;
    j.stopped = stopped;
    j.own_ffn = own_ffn;
    j.done = Clock::now();
    j.finished = true;
    j.changed.notify_all();
  }
  // Whoever waited for this prompt reads its own.
  for (auto& other : slots_) {
    if (other->waiting && other->job->leader == slot.job) other->waiting = false;
  }
  slot.job.reset();
  slot.generation.reset();
  slot.sampler.reset();
  slot.decoding = false;
  slot.waiting = false;
}

}  // namespace zeroskip::serve
