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
  int next = -1;
  int64_t steps = 0;      // decode steps run
};

Scheduler::Scheduler(Engine& engine, const SessionOptions& base, int slots, int64_t queue_limit)
    : engine_(engine), base_(base), queue_limit_(queue_limit) {
  for (int i = 0; i < slots; ++i) slots_.push_back(std::make_unique<Slot>(engine, base));
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() { Stop(); }

std::shared_ptr<Job> Scheduler::Submit(JobRequest request) {
  Session::CheckFfn(engine_.model(), request.ffn, request.gate, request.activation);
  auto job = std::make_shared<Job>(std::move(request));
  {
    std::lock_guard<std::mutex> hold(lock_);
    const int64_t free_slots = static_cast<int64_t>(slots_.size()) - busy_;
    if (stopping_ || static_cast<int64_t>(queue_.size()) >= queue_limit_ + free_slots) {
      return nullptr;
    }
    queue_.push_back(job);
  }
  wake_.notify_all();
  return job;
}

SchedulerStatus Scheduler::Status() {
  std::lock_guard<std::mutex> hold(lock_);
  return {static_cast<int>(slots_.size()), busy_, static_cast<int64_t>(queue_.size()),
          decode_steps_, decoded_tokens_};
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
    Finish(*slot, reason);
  }
  std::lock_guard<std::mutex> hold(lock_);
  for (auto& job : queue_) {
    std::lock_guard<std::mutex> job_hold(job->lock);
    job->error = reason;
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
      } else if (!slot->decoding && (!reading || slot->job->admitted < reading->job->admitted)) {
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
  if (r.constraint) config.constraint = r.constraint();
  config.on_token = [&j](int, std::string_view text) {
    std::lock_guard<std::mutex> hold(j.lock);
    if (j.first_token == Clock::time_point{}) j.first_token = Clock::now();
    j.text += text;
    j.changed.notify_all();
    return true;
  };
  slot.generation = std::make_unique<Generation>(engine_.model(), *slot.sampler, r.prompt, config);
  if (slot.generation->finished()) Finish(slot);  // nothing to generate (max_tokens 0)
}

void Scheduler::PrefillChunk(Slot& slot) {
  const std::vector<int>& prompt = slot.job->request.prompt;
  const size_t n = std::min<size_t>(kPrefillChunk, prompt.size() - slot.prefilled);
  const auto t0 = Clock::now();
  try {
    slot.session.Forward(std::span<const int>(prompt).subspan(slot.prefilled, n));
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
  slot.decoding = true;
  Advance(slot, slot.generation->Next(slot.session.logits(),
                                      slot.session.position() >= slot.session.context()));
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

void Scheduler::Finish(Slot& slot, const std::string& error) {
  Job& j = *slot.job;
  {
    std::lock_guard<std::mutex> hold(j.lock);
    if (slot.generation) {
      j.result = std::move(slot.generation->result());
      j.result.decode_steps = slot.steps;
    }
    j.error = error;
    j.own_ffn = slot.session.ffn_total();
    j.done = Clock::now();
    j.finished = true;
    j.changed.notify_all();
  }
  slot.job.reset();
  slot.generation.reset();
  slot.sampler.reset();
  slot.decoding = false;
  std::lock_guard<std::mutex> hold(lock_);
  --busy_;
}

}  // namespace zeroskip::serve
