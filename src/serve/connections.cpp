#include "serve/connections.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <system_error>

namespace zeroskip::serve {

namespace {

using Clock = std::chrono::steady_clock;

// Requests one connection may carry before the server closes it.
constexpr size_t kRequestsPerConnection = 1000;

bool Endpoint(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  sockaddr* a = reinterpret_cast<sockaddr*>(&address);
  if ((peer ? getpeername(fd, a, &length) : getsockname(fd, a, &length)) != 0) return false;
  char host[NI_MAXHOST], service[NI_MAXSERV];
  if (getnameinfo(a, length, host, sizeof(host), service, sizeof(service),
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return false;
  }
  ip = host;
  port = std::atoi(service);
  return true;
}

}  // namespace

struct HttpServer::Connection {
  Connection(HttpServer& s, int socket) : server(s), fd(socket) {}
  HttpServer& server;
  const int fd;
  // Written under the server's lock_ (Shutdown reads them), read by the connection's thread.
  Phase phase = Phase::kIdle;
  Clock::time_point deadline = Clock::time_point::max();  // of the phase; max: none
  bool close = false;                                     // the answer said "Connection: close"
  bool cut = false;  // a read deadline passed: nothing more is read or written
};

thread_local HttpServer::Connection* HttpServer::current_ = nullptr;
thread_local bool HttpServer::refusing_ = false;

// A connection's bytes: reads wait until the phase's deadline, writes until `limits.write`.
class HttpServer::Stream final : public httplib::Stream {
 public:
  explicit Stream(Connection& c) : c_(c) {}

  bool is_readable() const override {
    return off_ < len_ || (!c_.cut && Wait(POLLIN, c_.deadline));
  }
  bool is_writable() const override {
    return !c_.cut && Wait(POLLOUT, Clock::now() + c_.server.limits_.write);
  }

  ssize_t read(char* ptr, size_t size) override {
    if (off_ == len_) {
      if (c_.cut) return -1;
      if (!Wait(POLLIN, c_.deadline)) {
        c_.server.Cut(c_);
        return -1;
      }
      ssize_t n;
      do {
        n = recv(c_.fd, buffer_, sizeof(buffer_), 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      off_ = 0;
      len_ = static_cast<size_t>(n);
      if (c_.phase == Phase::kIdle) {  // a request begins: its headers have their deadline
        std::lock_guard<std::mutex> hold(c_.server.lock_);
        c_.server.Enter(c_, Phase::kHeaders);
      }
    }
    const size_t n = std::min(size, len_ - off_);
    std::memcpy(ptr, buffer_ + off_, n);
    off_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    const Clock::time_point deadline = Clock::now() + c_.server.limits_.write;
    while (!c_.cut && Wait(POLLOUT, deadline)) {
      const ssize_t n = send(c_.fd, ptr, size, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) return n;
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
    }
    return -1;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Endpoint(c_.fd, true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Endpoint(c_.fd, false, ip, port);
  }
  socket_t socket() const override { return c_.fd; }

 private:
  // Whether the socket has `events` (or an error or hang-up, which the next call reports)
  // before `deadline`.
  bool Wait(short events, Clock::time_point deadline) const {
    for (;;) {
      int timeout = -1;
      if (deadline != Clock::time_point::max()) {
        const auto left =
            std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        timeout = static_cast<int>(std::min<int64_t>(left, INT_MAX));
      }
      pollfd p{c_.fd, events, 0};
      const int ready = poll(&p, 1, timeout);
      if (ready > 0) return true;
      if (ready < 0 && errno != EINTR) return false;
    }
  }

  Connection& c_;
  char buffer_[16384];
  size_t off_ = 0, len_ = 0;  // unread bytes: buffer_[off_, len_)
};

class HttpServer::Threads final : public httplib::TaskQueue {
 public:
  explicit Threads(HttpServer& server) : server_(server) {}
  void enqueue(std::function<void()> fn) override { server_.Spawn(std::move(fn)); }
  void shutdown() override { server_.JoinAll(); }

 private:
  HttpServer& server_;
};

HttpServer::HttpServer(ConnectionLimits limits) : limits_(std::move(limits)) {
  new_task_queue = [this] { return new Threads(*this); };
  // What the Keep-Alive header of an answer announces.
  set_keep_alive_timeout(std::chrono::ceil<std::chrono::seconds>(limits_.idle).count());
  set_keep_alive_max_count(kRequestsPerConnection);
  set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    bool stopping;
    {
      std::lock_guard<std::mutex> hold(lock_);
      stopping = stopping_;
    }
    // An answer that leaves the body unread says "Connection: close" (server.cpp); httplib would
    // read on and parse the body as the next request.
    if (stopping || res.get_header_value("Connection") == "close") {
      res.headers.erase("Keep-Alive");
      if (!res.has_header("Connection")) res.set_header("Connection", "close");
      if (current_ != nullptr) current_->close = true;
    }
    // A request cut at its deadline gets no answer, whatever httplib goes on to try.
    if (on_answer_ && !(current_ != nullptr && current_->cut)) on_answer_(req, res);
  });
}

HttpServer::~HttpServer() { JoinAll(); }

void HttpServer::OnAnswer(
    std::function<void(const httplib::Request&, const httplib::Response&)> fn) {
  on_answer_ = std::move(fn);
}

ConnectionStats HttpServer::Stats() {
  std::lock_guard<std::mutex> hold(lock_);
  return stats_;
}

int HttpServer::CurrentSocket() { return current_ != nullptr ? current_->fd : -1; }

void HttpServer::BodyRead() {
  if (current_ == nullptr) return;
  std::lock_guard<std::mutex> hold(current_->server.lock_);
  current_->server.Enter(*current_, Phase::kAnswering);
}

void HttpServer::Enter(Connection& c, Phase phase) {
  if (c.phase == Phase::kAnswering) {
    --answering_;
    changed_.notify_all();
  }
  if (phase == Phase::kAnswering) ++answering_;
  c.phase = phase;
  const Clock::time_point now = Clock::now();
  switch (phase) {
    case Phase::kIdle:
      c.deadline = now + limits_.idle;
      break;
    case Phase::kHeaders:
      c.deadline = now + limits_.headers;
      break;
    case Phase::kBody:
      c.deadline = now + limits_.body;
      break;
    case Phase::kAnswering:
      c.deadline = Clock::time_point::max();
      break;
  }
}

void HttpServer::Cut(Connection& c) {
  c.cut = true;
  std::lock_guard<std::mutex> hold(lock_);
  // An idle connection reaching its deadline is the keep-alive timeout, not a cut request.
  if (c.phase == Phase::kHeaders || c.phase == Phase::kBody) ++stats_.timed_out;
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  if (refusing_) {
    Refuse(sock);
    return true;
  }
  Connection c(*this, sock);
  std::list<Connection*>::iterator entry;
  {
    std::lock_guard<std::mutex> hold(lock_);
    entry = connections_.insert(connections_.end(), &c);
  }
  current_ = &c;
  Serve(c);
  current_ = nullptr;
  {
    std::lock_guard<std::mutex> hold(lock_);
    Enter(c, Phase::kIdle);  // leaves kAnswering: a draining Shutdown counts it done
    connections_.erase(entry);
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return true;
}

void HttpServer::Serve(Connection& c) {
  Stream stream(c);
  const auto headers_read = [this, &c](httplib::Request&) {
    std::lock_guard<std::mutex> hold(lock_);
    Enter(c, Phase::kBody);
  };
  for (size_t served = 0;; ++served) {
    {
      std::lock_guard<std::mutex> hold(lock_);
      if (closed_ || (stopping_ && served > 0)) return;
      Enter(c, Phase::kIdle);
    }
    bool closed = false;
    const bool last = served + 1 >= kRequestsPerConnection;
    if (!process_request(stream, last, closed, headers_read) || closed || last || c.close ||
        c.cut) {
      return;
    }
  }
}

void HttpServer::Refuse(socket_t sock) const {
  // On the accepting thread: nothing here may block.
  (void)!send(sock, limits_.refusal.data(), limits_.refusal.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(sock, SHUT_WR);
  // What the client has sent already: closing with it unread would reset the connection, and
  // the reset can overtake the answer.
  char sink[4096];
  for (int i = 0; i < 16 && recv(sock, sink, sizeof(sink), MSG_DONTWAIT) > 0; ++i) {
  }
  ::close(sock);
}

void HttpServer::Spawn(std::function<void()> fn) {
  std::unique_lock<std::mutex> hold(lock_);
  ReapLocked();
  if (!closed_ && stats_.open < limits_.max_connections) {
    const auto it = threads_.emplace(threads_.end());
    try {
      *it = std::thread([this, it, fn] {
        fn();
        std::lock_guard<std::mutex> done(lock_);
        --stats_.open;
        finished_.push_back(it);
        changed_.notify_all();
      });
      ++stats_.open;
      ++stats_.accepted;
      return;
    } catch (const std::system_error&) {  // no thread to be had: refused as over the cap
      threads_.erase(it);
    }
  }
  ++stats_.refused;
  hold.unlock();
  refusing_ = true;
  fn();
  refusing_ = false;
}

void HttpServer::JoinAll() {
  std::unique_lock<std::mutex> hold(lock_);
  changed_.wait(hold, [&] { return stats_.open == 0; });
  ReapLocked();
}

void HttpServer::ReapLocked() {
  // A finished thread has left lock_ for good: joining it here cannot wait for us.
  for (const auto it : finished_) {
    it->join();
    threads_.erase(it);
  }
  finished_.clear();
}

void HttpServer::Shutdown(std::chrono::milliseconds drain) {
  {
    std::unique_lock<std::mutex> hold(lock_);
    stopping_ = true;
    for (Connection* c : connections_) {
      if (c->phase != Phase::kAnswering) ::shutdown(c->fd, SHUT_RDWR);
    }
    changed_.wait_for(hold, drain, [&] { return answering_ == 0; });
  }
  stop();  // the listener: accepting ends
  std::lock_guard<std::mutex> hold(lock_);
  closed_ = true;
  for (Connection* c : connections_) ::shutdown(c->fd, SHUT_RDWR);
}

}  // namespace zeroskip::serve
