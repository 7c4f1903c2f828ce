#include "ffn/neuron_cache.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// Reads in flight at once: past the depth where this VM's disk stops getting faster (32).
constexpr unsigned kQueueDepth = 64;
constexpr uint8_t kMaxCount = 3;

}  // namespace

struct NeuronCache::Ring {
  io_uring ring{};
  ~Ring() { io_uring_queue_exit(&ring); }
};

void NeuronCache::FreeAligned::operator()(uint8_t* p) const { std::free(p); }

NeuronCache::NeuronCache(const NeuronLayout& layout, const std::string& path, int fd,
                         uint64_t slots, bool direct_io, bool io_uring)
    : layout_(layout), path_(path), slots_(slots) {
  if (slots < static_cast<uint64_t>(layout.ffn)) {
    throw std::invalid_argument("NeuronCache: fewer slots than one layer's neurons");
  }
  // Its own descriptor, so O_DIRECT is this cache's alone; the same file the header came from.
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (direct_io ? O_DIRECT : 0));
  bool direct = direct_io;
  if (fd_ < 0 && direct_io && errno == EINVAL) {  // a file system without O_DIRECT (tmpfs)
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    direct = false;
  }
  if (fd_ < 0) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat checked, opened;
  if (::fstat(fd, &checked) != 0 || ::fstat(fd_, &opened) != 0 || checked.st_dev != opened.st_dev ||
      checked.st_ino != opened.st_ino) {
    ::close(fd_);
    throw Error(path, "was replaced while the model loaded");
  }
  void* pool = std::aligned_alloc(kBundleAlign, slots * layout.stride);
  if (pool == nullptr) {
    ::close(fd_);
    throw std::bad_alloc();
  }
  pool_.reset(static_cast<uint8_t*>(pool));
  slot_of_.assign(static_cast<size_t>(layout.layers * layout.ffn), -1);
  key_of_.assign(slots, -1);
  count_.assign(slots, 0);
  has_gate_.assign(slots, 0);
  used_in_.assign(slots, 0);
  std::string how = "pread";
  if (io_uring) {
    auto ring = std::make_unique<Ring>();
    const int error = io_uring_queue_init(kQueueDepth, &ring->ring, 0);
    if (error == 0) {
      ring_ = std::move(ring);
      how = "io_uring";
    } else {
      ring.release();  // nothing to tear down: init failed
      how = std::string("pread (io_uring: ") + std::strerror(-error) + ")";
    }
  }
  io_description_ = how + (direct ? ", O_DIRECT" : ", page cache");
}

NeuronCache::~NeuronCache() {
  ring_.reset();
  if (fd_ >= 0) ::close(fd_);
}

int32_t NeuronCache::TakeSlot() {
  for (;;) {
    const uint64_t s = hand_;
    hand_ = hand_ + 1 == slots_ ? 0 : hand_ + 1;
    if (used_in_[s] == call_) continue;  // this layer needs it
    if (count_[s] > 0) {
      --count_[s];
      continue;
    }
    if (key_of_[s] >= 0) slot_of_[static_cast<size_t>(key_of_[s])] = -1;
    return static_cast<int32_t>(s);
  }
}

void NeuronCache::Fetch(int64_t layer, const int32_t* neurons, int64_t n, bool with_gate,
                        int32_t* slots) {
  ++call_;
  reads_.clear();
  const uint64_t read_bytes = with_gate ? layout_.stride : layout_.up_down_read;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t key = layer * layout_.ffn + neurons[k];
    int32_t s = slot_of_[static_cast<size_t>(key)];
    if (s >= 0 && (has_gate_[s] || !with_gate)) {
      ++stats_.hits;
      if (count_[s] < kMaxCount) ++count_[s];
    } else {
      ++stats_.misses;
      if (s < 0) {
        s = TakeSlot();
        key_of_[s] = key;
        slot_of_[static_cast<size_t>(key)] = s;
        count_[s] = 1;
      }
      has_gate_[s] = with_gate;
      reads_.push_back(
          {layout_.BundleOffset(layer, neurons[k]), pool_.get() + s * layout_.stride, read_bytes});
      stats_.bytes_read += read_bytes;
    }
    used_in_[s] = call_;
    slots[k] = s;
  }
  ReadAll();
}

void NeuronCache::ReadAll() {
  try {
    ring_ ? ReadWithUring() : ReadWithPread();
  } catch (...) {
    // The slots taken for this call hold no bundle: forget them, so a later call reads again.
    for (uint64_t s = 0; s < slots_; ++s) {
      if (used_in_[s] == call_ && key_of_[s] >= 0) {
        slot_of_[static_cast<size_t>(key_of_[s])] = -1;
        key_of_[s] = -1;
      }
    }
    throw;
  }
}

void NeuronCache::ReadWithPread() {
  for (Read& r : reads_) {
    while (r.bytes > 0) {
      const ssize_t got = ::pread(fd_, r.buffer, r.bytes, static_cast<off_t>(r.offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        throw Error(path_, std::string("read failed: ") + (got < 0 ? std::strerror(errno) : "EOF"));
      }
      r.offset += static_cast<uint64_t>(got);
      r.buffer += got;
      r.bytes -= static_cast<uint64_t>(got);
    }
  }
}

void NeuronCache::ReadWithUring() {
  io_uring& ring = ring_->ring;
  // Reads not yet submitted are reads_[next..]; one cut short goes back on the list.
  size_t next = 0, in_flight = 0;
  std::string failure;  // the first read that failed: reported once the others are collected
  while (next < reads_.size() || in_flight > 0) {
    while (next < reads_.size() && in_flight < kQueueDepth) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      if (sqe == nullptr) break;
      const Read& r = reads_[next];
      io_uring_prep_read(sqe, fd_, r.buffer, static_cast<unsigned>(r.bytes), r.offset);
      io_uring_sqe_set_data(sqe, reinterpret_cast<void*>(static_cast<uintptr_t>(next)));
      ++next;
      ++in_flight;
    }
    const int submitted = io_uring_submit_and_wait(&ring, 1);
    if (submitted < 0 && submitted != -EINTR) {
      throw Error(path_, std::string("read failed: ") + std::strerror(-submitted));
    }
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      Read& r = reads_[reinterpret_cast<uintptr_t>(io_uring_cqe_get_data(cqe))];
      const int res = cqe->res;
      if (res == -EINTR || res == -EAGAIN) {
        reads_.push_back(r);
      } else if (res <= 0) {
        if (failure.empty()) failure = res < 0 ? std::strerror(-res) : "EOF";
      } else if (static_cast<uint64_t>(res) < r.bytes) {
        reads_.push_back({r.offset + res, r.buffer + res, r.bytes - res});
      }
    }
    io_uring_cq_advance(&ring, seen);
    in_flight -= seen;
    if (!failure.empty() && in_flight == 0) throw Error(path_, "read failed: " + failure);
    if (!failure.empty()) next = reads_.size();  // submit no more; collect what is in flight
  }
}

}  // namespace zeroskip
