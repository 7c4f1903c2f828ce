// The neurons of a model decoded with less memory than it needs (docs/FORMAT.md, "Neuron file"):
// a pool of slots, each holding one neuron's bundle (up row, down row, gate row) read from the
// model's neuron file when a token's gate activates it and no slot holds it.
//
// Reads go out together, a layer's misses as the step finds them: io_uring keeps up to kQueueDepth
// in flight (a virtual disk serves random 16 KiB reads ~5x faster at depth 32 than one by one),
// with O_DIRECT unless asked not to, so the page cache does not hold a second copy of what the pool
// holds; where io_uring is unavailable (a container's seccomp filter), pread one at a time.
// (One request for the reads of neighbouring bundles was measured at 7B and gained nothing:
// docs/BENCHMARKS.md.)
//
// Which slot a miss takes: the pool's first ffn / 4 slots are scratch, the rest the cache. Every
// request counts toward its neuron's frequency, halved every kWindowTokens tokens (the frequency
// over a recent window). A miss goes to the cache if a slot there is free or holds a neuron less
// frequent than it (the least frequent of kCandidates random slots that the current layer step
// does not use); else to the next scratch slot, which the layer's next step reuses. Hot neurons
// thus stay and one-off ones pass through scratch without evicting them. (A sweep over the pool
// instead, CLOCK, was measured to hit 0% at 7B: a token's layers ask for more neurons than the
// pool holds, in the same order every token, so the sweep always evicted the next layer's.) A
// layer step asks for at most ffn neurons, but scratch for all of them would take a fifth of the
// cache at 7B under a 5 GiB budget, and there no step had more misses the cache did not admit
// than ffn / 4 (docs/BENCHMARKS.md). A step that does takes the least frequent sampled cache
// slots it does not use, or else any slot it does not use (the pool has at least ffn).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/neuron_file.h"

namespace zeroskip {

class NeuronCache {
 public:
  // `fd` is the checked neuron file (ReadNeuronFileHeader): the cache opens `path` again for its
  // reads (with O_DIRECT when `direct_io`) and refuses a file that is not the same one.
  // slots >= layout.ffn.
  NeuronCache(const NeuronLayout& layout, const std::string& path, int fd, uint64_t slots,
              bool direct_io, bool io_uring);
  ~NeuronCache();
  NeuronCache(const NeuronCache&) = delete;
  NeuronCache& operator=(const NeuronCache&) = delete;

  // The parts of a bundle a fetch reads, as bits (a slot keeps what it has read of its neuron).
  // Both parts of a neuron are one read (they are adjacent in the file).
  enum Part : uint8_t { kGate = 1, kUpDown = 2, kBundle = kGate | kUpDown };
  // Starts a layer's decode step: the slots its fetches use stay until the next StartLayer.
  void StartLayer();
  // Makes parts[k] of the bundle of neurons[k] of `layer` resident, k in [0, n), and writes
  // each one's slot to slots[k]: Request, then Wait. The neurons of all fetches since StartLayer
  // must be at most the layout's ffn (a layer's gate rows, then its active rows, a subset of them).
  void Fetch(int64_t layer, const int32_t* neurons, const Part* parts, int64_t n, int32_t* slots);
  // Fetch in two halves, so the caller can compute while the disk reads: Request writes the slots
  // and starts the reads (as many as the queue takes; a later Request or Wait starts the rest);
  // the slots hold their parts once Wait returns. Wait throws Error naming the file if a read
  // failed (the step's slots are then forgotten: a later step reads them again). A neuron is
  // requested at most once between two Waits.
  void Request(int64_t layer, const int32_t* neurons, const Part* parts, int64_t n, int32_t* slots);
  void Wait();

  // After a prompt's batched pass over `layer`, whose FFN rows it has just read into memory
  // (gate, up and down_t: the layer's matrices as the .zsk stores them): the neurons active for
  // the most of its tokens (counts[i] of them for neuron i) take cache slots, at most the layer's
  // share of the cache, with their bundles assembled from those rows (the file's bytes), and their
  // frequency starts at that count, so decode finds them without a read. Free slots go first;
  // once none is left, a neuron admission refuses (the sampled slots hold more frequent ones) is
  // left out. Returns the bundles copied.
  int64_t Warm(int64_t layer, const int32_t* counts, const uint8_t* gate, const uint8_t* up,
               const uint8_t* down_t);

  // Slot s's bundle starts at pool() + s * layout().stride.
  const uint8_t* pool() const { return pool_.get(); }
  const NeuronLayout& layout() const { return layout_; }
  uint64_t slots() const { return slots_; }
  // How reads are made, e.g. "io_uring, O_DIRECT" or "pread (io_uring: ...), page cache".
  const std::string& io_description() const { return io_description_; }

  struct Stats {
    uint64_t hits = 0, misses = 0, bytes_read = 0;
    uint64_t warmed = 0;  // bundles Warm copied
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Read {
    uint64_t offset;
    uint8_t* buffer;
    uint64_t bytes;
  };
  struct Ring;
  void RegisterWithRing(Ring& ring);
  // The cache slot (not scratch) the neuron `key` would take: a free one or the least frequent of
  // kCandidates sampled, if less frequent than `key`; -1 if none.
  int64_t AdmittingSlot(int64_t key);
  // The least frequent (or a free) of kCandidates random cache slots this step does not use; -1
  // if it uses all of them.
  int64_t LeastFrequentSlot();
  // A slot for the neuron `key` that missed: from the cache if it is admitted, else scratch, else
  // (scratch used up) SpareSlot.
  int32_t TakeSlot(int64_t key);
  // A slot this step does not use: LeastFrequentSlot's, else the next one a sweep finds.
  int64_t SpareSlot();
  bool DirectReadWorks() const;
  void ReadWithPread();
  // Submits queued reads while the ring has room and collects those done; with `finish`, until
  // every read is done or failed (failure_). A ring that cannot submit is dropped.
  void PumpRing(bool finish);
  // Collects the ring's completed reads: a short one goes back on the list for the rest, a failed
  // one sets failure_. Returns how many.
  unsigned Reap();
  // Waits for the reads the kernel has taken, then closes the ring: the rest, and every read
  // after, by pread.
  void DropRing(const std::string& why);

  NeuronLayout layout_;
  std::string path_;
  int fd_ = -1;
  uint64_t slots_;
  uint64_t scratch_;  // slots [0, scratch_) are scratch, the rest the cache
  struct FreeAligned {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t[], FreeAligned> pool_;
  std::vector<int32_t> slot_of_;   // [layers * ffn] the neuron's slot, or -1
  std::vector<int64_t> key_of_;    // [slots] layer * ffn + neuron held, or -1
  std::vector<uint8_t> frequency_;  // [layers * ffn] requests in the recent window
  std::vector<uint8_t> has_;        // [slots] the Part bits read
  std::vector<uint64_t> used_in_;  // [slots] the layer step that last used it
  uint64_t step_ = 0;              // layer steps so far (StartLayer)
  uint64_t next_scratch_ = 0;      // this layer step's next scratch slot
  uint64_t sweep_ = 0;             // SpareSlot's last slot
  uint64_t probe_ = 0x9E3779B97F4A7C15ull;  // TakeSlot's random state (fixed: runs repeat)
  std::vector<Read> reads_;  // the misses since the last Wait: [0, next_) submitted, in_flight_ of
                             // them not done yet
  size_t next_ = 0;
  unsigned in_flight_ = 0;
  std::string failure_;                     // the first read that failed since the last Wait
  std::vector<int32_t> warm_order_;         // Warm's neurons, most often active first
  std::unique_ptr<Ring> ring_;  // null: pread
  std::string io_description_;
  Stats stats_;
};

}  // namespace zeroskip
