// The server's scheduler through its own API (no HTTP): how many jobs the queue takes, the order
// it admits them in, a slot reused by the next job, and a job cancelled while it waits.
#include "serve/scheduler.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "test_util.h"

namespace zeroskip::serve {
namespace {

const std::string kModel = "llama_gqa_hd64_relu_f32";  // context 64

void WaitFinished(Job& job) {
  std::unique_lock<std::mutex> hold(job.lock);
  job.changed.wait(hold, [&] { return job.finished; });
}

// Records the order jobs are admitted in (Admit makes each job's constraint), and holds the
// scheduler's thread in the first admission until Release(): what waits behind it stays queued.
class AdmissionLog {
 public:
  JobRequest Request(int tag, int64_t max_tokens) {
    JobRequest r;
    r.prompt = {1, 20, 30, 40};
    r.max_tokens = max_tokens;
    r.stop_at_eos = false;
    r.logprobs = 0;
    r.sampler = {.temperature = 0.7f, .seed = 11};
    r.constraint = [this, tag]() -> std::shared_ptr<TokenConstraint> {
      std::unique_lock<std::mutex> hold(lock_);
      order_.push_back(tag);
      changed_.notify_all();
      changed_.wait(hold, [&] { return released_; });
      return nullptr;
    };
    return r;
  }
  void WaitAdmitted(size_t n) {
    std::unique_lock<std::mutex> hold(lock_);
    changed_.wait(hold, [&] { return order_.size() >= n; });
  }
  void Release() {
    std::lock_guard<std::mutex> hold(lock_);
    released_ = true;
    changed_.notify_all();
  }
  std::vector<int> order() {
    std::lock_guard<std::mutex> hold(lock_);
    return order_;
  }

 private:
  std::mutex lock_;
  std::condition_variable changed_;
  std::vector<int> order_;
  bool released_ = false;
};

// One slot and a queue of 2 take 3 jobs (one running, two waiting) and not 4, whether the 4 come
// in one request or the 4th after the 3; they are admitted first come first served; a job
// cancelled while it waits ends without a token; the one after it in the same slot generates
// what the first job, with the same request, generated in a fresh one (its logprobs equal to the
// last bit: nothing of the earlier job's session, sampler or position is left).
TEST(Scheduler, QueueBoundFifoAdmissionSlotReuseAndCancelWhileWaiting) {
  const Model& m = testing::LoadedModel(kModel);
  Engine engine(m, {.threads = 2});
  AdmissionLog log;
  Scheduler scheduler(engine, SessionOptions{}, /*slots=*/1, /*queue_limit=*/2);
  std::vector<JobRequest> four;
  for (int tag = 0; tag < 4; ++tag) four.push_back(log.Request(tag, 8));
  EXPECT_TRUE(scheduler.Submit(four).empty()) << "4 jobs for 1 slot and 2 places";
  EXPECT_EQ(scheduler.Status().queued, 0);

  const auto jobs = scheduler.Submit({log.Request(0, 8), log.Request(1, 5), log.Request(2, 8)});
  ASSERT_EQ(jobs.size(), 3u);
  log.WaitAdmitted(1);  // job 0 is in the slot (held there), 1 and 2 wait
  EXPECT_TRUE(scheduler.Submit({log.Request(3, 8)}).empty()) << "a 4th job while 3 are in";
  const SchedulerStatus status = scheduler.Status();
  EXPECT_EQ(status.busy, 1);
  EXPECT_EQ(status.queued, 2);
  jobs[1]->cancel = true;
  log.Release();
  for (const auto& job : jobs) WaitFinished(*job);

  EXPECT_EQ(log.order(), (std::vector<int>{0, 1, 2}));
  for (const auto& job : jobs) EXPECT_EQ(job->error, "");
  EXPECT_TRUE(jobs[1]->result.tokens.empty());
  const GenerateResult &first = jobs[0]->result, &reused = jobs[2]->result;
  ASSERT_EQ(first.tokens.size(), 8u);
  EXPECT_EQ(reused.tokens, first.tokens);
  ASSERT_EQ(reused.logprobs.size(), first.logprobs.size());
  for (size_t i = 0; i < first.logprobs.size(); ++i) {
    EXPECT_EQ(reused.logprobs[i].logprob, first.logprobs[i].logprob) << "token " << i;
  }
  EXPECT_EQ(scheduler.Status().busy, 0);
}

}  // namespace
}  // namespace zeroskip::serve
