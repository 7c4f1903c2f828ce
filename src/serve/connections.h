// The connection layer of `zeroskip serve`: cpp-httplib's Server with one thread per open
// connection up to a cap, and read deadlines that the connection's own stream enforces.
//
// A connection costs a thread, never a worker that generation or /health waits for: the slots
// are bounded by the Scheduler, not by HTTP threads, so /health answers while every slot is busy
// and hundreds of idle clients are connected. Past the cap a connection gets a canned 503 from
// the accepting thread and is closed. Each read waits only until the deadline of the part of the
// request being read (idle between requests, the request line and headers, the body), so a
// client trickling bytes is cut when that part's total time is up, whatever the pace. This file
// knows nothing of the API: the routes and their answers are server.cpp's.
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace zeroskip::serve {

struct ConnectionLimits {
  int64_t max_connections = 512;
  std::chrono::milliseconds idle{5000};      // no request in progress: fresh or kept alive
  std::chrono::milliseconds headers{10000};  // request line and headers, from their first byte
  std::chrono::milliseconds body{60000};     // the body, from the end of the headers
  std::chrono::milliseconds write{5000};     // one write waiting for the client to read
  std::string refusal;  // the whole HTTP response a connection over the cap gets
};

struct ConnectionStats {
  int64_t open = 0;        // connections with a thread now
  uint64_t accepted = 0;   // since start, given a thread
  uint64_t refused = 0;    // since start, answered with `refusal` (over the cap)
  uint64_t timed_out = 0;  // since start, cut at a header or body deadline
};

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(ConnectionLimits limits);
  ~HttpServer() override;

  // Stops the server: connections not answering a request are closed now, those answering one
  // get up to `drain` to finish it (the scheduler has failed every job by then, so each
  // answer is quick), then the listener closes and whatever is still open is shut down. Run's
  // listen_after_bind() returns once every connection's thread has ended.
  void Shutdown(std::chrono::milliseconds drain);
  ConnectionStats Stats();
  // Called as each answer is about to be written, with its final status.
  void OnAnswer(std::function<void(const httplib::Request&, const httplib::Response&)> fn);

  // For a handler: the socket of the connection whose request this thread answers (-1 outside
  // one), and the mark that the request's body has been read, which lifts its read deadline.
  static int CurrentSocket();
  static void BodyRead();

 private:
  class Stream;
  class Threads;
  struct Connection;
  enum class Phase { kIdle, kHeaders, kBody, kAnswering };

  bool process_and_close_socket(socket_t sock) override;
  void Serve(Connection& c);
  void Refuse(socket_t sock) const;
  // Under lock_: a phase change, and the deadline it brings.
  void Enter(Connection& c, Phase phase);
  // A read deadline passed: the connection is closed without an answer.
  void Cut(Connection& c);
  // The connection's threads (httplib's TaskQueue calls these from its accepting thread).
  void Spawn(std::function<void()> fn);
  void JoinAll();
  void ReapLocked();

  static thread_local Connection* current_;  // the connection this thread serves
  static thread_local bool refusing_;        // the accepting thread answers one over the cap

  const ConnectionLimits limits_;
  std::function<void(const httplib::Request&, const httplib::Response&)> on_answer_;
  std::mutex lock_;
  std::condition_variable changed_;  // a thread ended, or a request was answered
  std::list<std::thread> threads_;
  std::vector<std::list<std::thread>::iterator> finished_;  // threads to join
  std::list<Connection*> connections_;
  int64_t answering_ = 0;  // connections in Phase::kAnswering
  bool stopping_ = false;  // Shutdown began: no connection serves a second request
  bool closed_ = false;    // Shutdown closed every connection: a new one is not served
  ConnectionStats stats_;
};

}  // namespace zeroskip::serve
