#include "ffn/neuron_cache.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// Reads in flight at once: as many as this VM's disk queue takes (128 tags). At 7B under 5 GiB,
// decode ran 8% faster than at 64 (interleaved, docs/BENCHMARKS.md), which fio alone did not
// show reliably (this disk's speed swings within minutes).
constexpr unsigned kQueueDepth = 128;
// The frequency window, and how many cache slots a miss compares itself with.
constexpr uint64_t kWindowTokens = 8;
constexpr int kCandidates = 4;
// Scratch is this share of a layer's neurons (see neuron_cache.h).
constexpr int64_t kScratchShare = 4;
constexpr uint64_t kHugePage = uint64_t{2} << 20;  // x86-64's 2 MiB pages

}  // namespace

struct NeuronCache::Ring {
  io_uring ring{};
  bool ready = false;  // io_uring_queue_init succeeded: the ring must be torn down
  // The file and the pool registered with the kernel once, so a read neither looks up the
  // descriptor nor pins its buffer's pages (measured with fio here: 2.1 against 1.5 GB/s for
  // random 24 KiB reads at depth 64). The pool in pieces of at most 1 GiB, the most one
  // registered buffer may be; registering can fail (locked-memory limits): then plain reads.
  bool fixed = false;
  uint64_t slots_per_buffer = 0;
  ~Ring() {
    if (ready) io_uring_queue_exit(&ring);
  }
};

void NeuronCache::RegisterWithRing(Ring& ring) {
  constexpr uint64_t kMaxBuffer = uint64_t{1} << 30;
  ring.slots_per_buffer = std::max<uint64_t>(1, kMaxBuffer / layout_.stride);
  std::vector<iovec> buffers;
  for (uint64_t s = 0; s < slots_; s += ring.slots_per_buffer) {
    const uint64_t n = std::min(ring.slots_per_buffer, slots_ - s);
    buffers.push_back({pool_.get() + s * layout_.stride, n * layout_.stride});
  }
  if (io_uring_register_files(&ring.ring, &fd_, 1) != 0) return;
  if (io_uring_register_buffers(&ring.ring, buffers.data(),
                                static_cast<unsigned>(buffers.size())) != 0) {
    io_uring_unregister_files(&ring.ring);
    return;
  }
  ring.fixed = true;
}

void NeuronCache::FreeAligned::operator()(uint8_t* p) const { std::free(p); }

NeuronCache::NeuronCache(const NeuronLayout& layout, const std::string& path, int fd,
                         uint64_t slots, bool direct_io, bool io_uring)
    : layout_(layout),
      path_(path),
      slots_(slots),
      scratch_(static_cast<uint64_t>(std::max<int64_t>(1, layout.ffn / kScratchShare))) {
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
  // aligned_alloc wants a size that is a multiple of the alignment. Aligned to a huge page and
  // advised to use them before anything touches it: decode reads a slot's rows at random over the
  // pool, which in 4 KiB pages costs a TLB miss every page.
  const uint64_t pool_bytes = (slots * layout.stride + kHugePage - 1) / kHugePage * kHugePage;
  void* pool = std::aligned_alloc(kHugePage, pool_bytes);
  if (pool == nullptr) {
    ::close(fd_);
    throw std::bad_alloc();
  }
  ::madvise(pool, pool_bytes, MADV_HUGEPAGE);  // advice only: a kernel without THP ignores it
  pool_.reset(static_cast<uint8_t*>(pool));
  // A device whose logical block is larger than a bundle part's alignment refuses such reads with
  // O_DIRECT (EINVAL): find out with one, and read through the page cache there.
  if (direct && !DirectReadWorks()) {
    ::close(fd_);
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
    direct = false;
  }
  slot_of_.assign(static_cast<size_t>(layout.layers * layout.ffn), -1);
  key_of_.assign(slots, -1);
  frequency_.assign(static_cast<size_t>(layout.layers * layout.ffn), 0);
  has_.assign(slots, 0);
  used_in_.assign(slots, 0);
  std::string how = "pread";
  if (io_uring) {
    auto ring = std::make_unique<Ring>();
    const int error = io_uring_queue_init(kQueueDepth, &ring->ring, 0);
    ring->ready = error == 0;
    if (ring->ready) {
      RegisterWithRing(*ring);
      ring_ = std::move(ring);
      how = "io_uring";
    } else {
      how = std::string("pread (io_uring: ") + std::strerror(-error) + ")";
    }
  }
  io_description_ = how + (direct ? ", O_DIRECT" : ", page cache");
}

bool NeuronCache::DirectReadWorks() const {
  uint8_t* buffer = pool_.get() + kBundleAlign;  // aligned to a part, not more
  for (;;) {
    const ssize_t got =
        ::pread(fd_, buffer, kBundleAlign, static_cast<off_t>(kNeuronHeaderBytes - kBundleAlign));
    if (got < 0 && errno == EINTR) continue;
    return got == static_cast<ssize_t>(kBundleAlign);
  }
}

NeuronCache::~NeuronCache() {
  ring_.reset();
  if (fd_ >= 0) ::close(fd_);
}

void NeuronCache::StartLayer() {
  ++step_;
  next_scratch_ = 0;
  // Every kWindowTokens tokens (a token is `layers` steps), the window moves on.
  if (step_ % (kWindowTokens * static_cast<uint64_t>(layout_.layers)) == 0) {
    for (uint8_t& f : frequency_) f >>= 1;
  }
}

int64_t NeuronCache::LeastFrequentSlot() {
  if (slots_ == scratch_) return -1;  // a layer of one neuron in a pool of one slot: no cache
  int64_t victim = -1;
  for (int c = 0; c < kCandidates; ++c) {
    // xorshift64: a random cache slot.
    probe_ ^= probe_ << 13;
    probe_ ^= probe_ >> 7;
    probe_ ^= probe_ << 17;
    const uint64_t s = scratch_ + probe_ % (slots_ - scratch_);
    if (used_in_[s] == step_) continue;  // this layer step uses it
    if (key_of_[s] < 0) return static_cast<int64_t>(s);
    if (victim < 0 || frequency_[static_cast<size_t>(key_of_[s])] <
                          frequency_[static_cast<size_t>(key_of_[victim])]) {
      victim = static_cast<int64_t>(s);
    }
  }
  return victim;
}

int64_t NeuronCache::AdmittingSlot(int64_t key) {
  const int64_t victim = LeastFrequentSlot();
  const bool admitted =
      victim >= 0 && (key_of_[victim] < 0 || frequency_[static_cast<size_t>(key_of_[victim])] <
                                                 frequency_[static_cast<size_t>(key)]);
  return admitted ? victim : -1;
}

int64_t NeuronCache::SpareSlot() {
  for (int round = 0; round < kCandidates; ++round) {
    const int64_t sampled = LeastFrequentSlot();
    if (sampled >= 0) return sampled;
  }
  // Every sampled slot is in use by this step. Some slot is not: a step asks for at most ffn
  // neurons, and the pool has at least ffn slots.
  for (uint64_t n = 0; n < slots_; ++n) {
    sweep_ = (sweep_ + 1) % slots_;
    if (used_in_[sweep_] != step_) return static_cast<int64_t>(sweep_);
  }
  throw std::logic_error("NeuronCache: a layer step asked for more neurons than the pool holds");
}

int32_t NeuronCache::TakeSlot(int64_t key) {
  int64_t s = AdmittingSlot(key);
  if (s < 0) {
    // Scratch slots this step already uses (hits on neurons left there before) are skipped.
    while (next_scratch_ < scratch_ && used_in_[next_scratch_] == step_) ++next_scratch_;
    s = next_scratch_ < scratch_ ? static_cast<int64_t>(next_scratch_++) : SpareSlot();
  }
  if (key_of_[s] >= 0) slot_of_[static_cast<size_t>(key_of_[s])] = -1;
  return static_cast<int32_t>(s);
}

int64_t NeuronCache::Warm(int64_t layer, const int32_t* counts, const uint8_t* gate,
                          const uint8_t* up, const uint8_t* down_t) {
  const int64_t ffn = layout_.ffn;
  const auto scratch = static_cast<int64_t>(scratch_);
  const auto share = (static_cast<int64_t>(slots_) - scratch) / layout_.layers;
  warm_order_.clear();
  for (int64_t i = 0; i < ffn; ++i) {
    if (counts[i] > 0) warm_order_.push_back(static_cast<int32_t>(i));
  }
  const auto take = std::min<int64_t>(share, static_cast<int64_t>(warm_order_.size()));
  std::partial_sort(
      warm_order_.begin(), warm_order_.begin() + take, warm_order_.end(),
      [&](int32_t a, int32_t b) { return counts[a] != counts[b] ? counts[a] > counts[b] : a < b; });
  int64_t copied = 0;
  uint64_t free_slot = scratch_;  // free cache slots are taken first, in order
  for (int64_t k = 0; k < take; ++k) {
    const int32_t i = warm_order_[k];
    const int64_t key = layer * ffn + i;
    uint8_t& frequency = frequency_[static_cast<size_t>(key)];
    frequency = static_cast<uint8_t>(std::max<int32_t>(frequency, std::min(counts[i], 255)));
    const int32_t held = slot_of_[static_cast<size_t>(key)];
    if (held >= scratch && has_[held] == kBundle) continue;  // cached whole already
    // A cache slot holding part of the bundle gets the rest; else a free one, or one admission
    // grants.
    while (free_slot < slots_ && key_of_[free_slot] >= 0) ++free_slot;
    const int64_t s = held >= scratch      ? held
                      : free_slot < slots_ ? static_cast<int64_t>(free_slot)
                                           : AdmittingSlot(key);
    if (s < 0) continue;
    if (s != held) {
      if (key_of_[s] >= 0) slot_of_[static_cast<size_t>(key_of_[s])] = -1;
      if (held >= 0) key_of_[held] = -1;  // a scratch slot: the cache's copy supersedes it
      key_of_[s] = key;
      slot_of_[static_cast<size_t>(key)] = static_cast<int32_t>(s);
    }
    has_[s] = kBundle;
    AssembleBundle(layout_, gate + i * layout_.gate_bytes, up + i * layout_.up_bytes,
                   down_t + i * layout_.down_bytes, pool_.get() + s * layout_.stride);
    ++copied;
  }
  stats_.warmed += static_cast<uint64_t>(copied);
  return copied;
}

void NeuronCache::Fetch(int64_t layer, const int32_t* neurons, const Part* parts, int64_t n,
                        int32_t* slots) {
  Request(layer, neurons, parts, n, slots);
  Wait();
}

void NeuronCache::Request(int64_t layer, const int32_t* neurons, const Part* parts, int64_t n,
                          int32_t* slots) {
  for (int64_t k = 0; k < n; ++k) {
    const int64_t key = layer * layout_.ffn + neurons[k];
    uint8_t& frequency = frequency_[static_cast<size_t>(key)];
    if (frequency < 255) ++frequency;
    int32_t s = slot_of_[static_cast<size_t>(key)];
    const uint8_t missing = parts[k] & ~(s >= 0 ? has_[s] : 0);
    if (missing == 0) {
      ++stats_.hits;
    } else {
      ++stats_.misses;
      if (s < 0) {
        s = TakeSlot(key);
        key_of_[s] = key;
        slot_of_[static_cast<size_t>(key)] = s;
        has_[s] = 0;
      }
      has_[s] |= missing;
      // The gate part, then up and down: one range whichever of them is missing.
      const uint64_t at = (missing & kGate) ? 0 : layout_.gate_read;
      const uint64_t end = layout_.gate_read + ((missing & kUpDown) ? layout_.up_down_read : 0);
      uint8_t* slot = pool_.get() + s * layout_.stride;
      reads_.push_back({layout_.BundleOffset(layer, neurons[k]) + at, slot + at, end - at});
      stats_.bytes_read += end - at;
    }
    used_in_[s] = step_;
    slots[k] = s;
  }
  if (ring_) PumpRing(false);
}

void NeuronCache::Wait() {
  try {
    if (ring_) PumpRing(true);
    if (!ring_ && failure_.empty()) ReadWithPread();  // every read, or those a dropped ring left
    if (!failure_.empty()) throw Error(path_, "read failed: " + failure_);
  } catch (...) {
    // What this step was reading is unknown: forget its slots, so a later call reads again.
    for (uint64_t s = 0; s < slots_; ++s) {
      if (used_in_[s] == step_ && key_of_[s] >= 0) {
        slot_of_[static_cast<size_t>(key_of_[s])] = -1;
        key_of_[s] = -1;
        has_[s] = 0;
      }
    }
    reads_.clear();
    next_ = 0;
    in_flight_ = 0;
    failure_.clear();
    throw;
  }
  reads_.clear();
  next_ = 0;
}

void NeuronCache::ReadWithPread() {
  for (size_t k = next_; k < reads_.size(); ++k) {
    Read& r = reads_[k];
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

void NeuronCache::PumpRing(bool finish) {
  io_uring& ring = ring_->ring;
  for (;;) {
    while (failure_.empty() && next_ < reads_.size() && in_flight_ < kQueueDepth) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      if (sqe == nullptr) break;
      const Read& r = reads_[next_];
      if (ring_->fixed) {
        const auto slot = static_cast<uint64_t>(r.buffer - pool_.get()) / layout_.stride;
        io_uring_prep_read_fixed(sqe, 0, r.buffer, static_cast<unsigned>(r.bytes), r.offset,
                                 static_cast<int>(slot / ring_->slots_per_buffer));
        sqe->flags |= IOSQE_FIXED_FILE;
      } else {
        io_uring_prep_read(sqe, fd_, r.buffer, static_cast<unsigned>(r.bytes), r.offset);
      }
      io_uring_sqe_set_data(sqe, reinterpret_cast<void*>(static_cast<uintptr_t>(next_)));
      ++next_;
      ++in_flight_;
    }
    if (in_flight_ == 0) return;
    const int submitted = finish ? io_uring_submit_and_wait(&ring, 1) : io_uring_submit(&ring);
    if (submitted < 0 && submitted != -EINTR) {
      DropRing(std::strerror(-submitted));
      return;
    }
    const unsigned seen = Reap();
    // Without `finish`, only what is done already: the caller goes on computing.
    if (!finish && (seen == 0 || next_ == reads_.size())) return;
  }
}

unsigned NeuronCache::Reap() {
  io_uring& ring = ring_->ring;
  unsigned head, seen = 0;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&ring, head, cqe) {
    ++seen;
    const Read r = reads_[reinterpret_cast<uintptr_t>(io_uring_cqe_get_data(cqe))];
    const int res = cqe->res;
    if (res == -EINTR || res == -EAGAIN) {
      reads_.push_back(r);
    } else if (res <= 0) {
      if (failure_.empty()) failure_ = res < 0 ? std::strerror(-res) : "EOF";
    } else if (static_cast<uint64_t>(res) < r.bytes) {
      reads_.push_back({r.offset + res, r.buffer + res, r.bytes - res});
    }
  }
  io_uring_cq_advance(&ring, seen);
  in_flight_ -= seen;
  return seen;
}

void NeuronCache::DropRing(const std::string& why) {
  io_uring& ring = ring_->ring;
  // Reads prepared but not submitted are the last ones prepared (the ring takes them in order):
  // they go with the ring, and pread reads them. Those the kernel took may still write into the
  // pool, and a slot must not change under a later step: wait for each of them.
  const unsigned unsubmitted = io_uring_sq_ready(&ring);
  next_ -= unsubmitted;
  in_flight_ -= unsubmitted;
  while (in_flight_ > 0) {
    io_uring_cqe* cqe = nullptr;
    const int error = io_uring_wait_cqe(&ring, &cqe);
    if (error == -EINTR) continue;
    if (error != 0) {
      if (failure_.empty()) failure_ = std::strerror(-error);
      break;
    }
    Reap();
  }
  ring_.reset();
  in_flight_ = 0;
  io_description_ =
      "pread (io_uring: " + why + ")" + io_description_.substr(io_description_.find(','));
}

}  // namespace zeroskip
