// The KL divergence base file (docs/FORMAT.md, "KL divergence base file"): its writer and its
// reader, which trusts no byte of it.
#include <unistd.h>
#include <xxhash.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "format/file_io.h"
#include "zeroskip/error.h"
#include "zeroskip/kl_divergence.h"

namespace zeroskip {
namespace {

static_assert(std::endian::native == std::endian::little, "rows are stored as host f32");

constexpr char kMagic[8] = {'Z', 'S', 'K', 'L', 'B', 'A', 'S', 'E'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kHeaderBytes = 40;
constexpr uint64_t kChecksumBytes = 8;
// Far above any real model and context, and small enough that no size computed from them
// overflows before the checked arithmetic sees it.
constexpr uint64_t kMaxVocab = uint64_t{1} << 24;
constexpr uint64_t kMaxContext = uint64_t{1} << 22;
constexpr size_t kHashChunk = size_t{1} << 20;

uint64_t RowBytes(const KlBaseInfo& info) { return 4 * static_cast<uint64_t>(info.vocab); }

uint64_t RowsOffset(const KlBaseInfo& info) {
  return kHeaderBytes + 4 * static_cast<uint64_t>(info.text_ids.size());
}

// XXH64 of bytes [0, n) of an open file, read in chunks.
uint64_t HashPrefix(int fd, uint64_t n, const std::string& path) {
  XXH64_state_t* state = XXH64_createState();
  if (!state) throw std::bad_alloc();
  XXH64_reset(state, 0);
  std::vector<uint8_t> buffer(kHashChunk);
  for (uint64_t at = 0; at < n;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kHashChunk, n - at));
    const ssize_t got = ::pread(fd, buffer.data(), want, static_cast<off_t>(at));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      XXH64_freeState(state);
      throw Error(path, std::string("read failed: ") + (got < 0 ? std::strerror(errno) : "EOF"));
    }
    XXH64_update(state, buffer.data(), static_cast<size_t>(got));
    at += static_cast<uint64_t>(got);
  }
  const uint64_t hash = XXH64_digest(state);
  XXH64_freeState(state);
  return hash;
}

}  // namespace

struct KlBaseWriter::Impl {
  AtomicOutput out;
  KlBaseInfo info;
  uint64_t end = 0;  // bytes written so far

  Impl(std::string path, KlBaseInfo i) : out(std::move(path)), info(std::move(i)) {}
};

KlBaseWriter::KlBaseWriter(std::string path, KlBaseInfo info) {
  if (info.vocab < 2 || static_cast<uint64_t>(info.vocab) > kMaxVocab || info.context < 1 ||
      static_cast<uint64_t>(info.context) > kMaxContext) {
    throw std::invalid_argument("KlBaseWriter: vocab or context out of range");
  }
  info.positions = 0;
  impl_ = std::make_unique<Impl>(std::move(path), std::move(info));
  const std::vector<int>& ids = impl_->info.text_ids;
  std::vector<uint8_t> bytes(4 * ids.size());
  for (size_t i = 0; i < ids.size(); ++i) StoreLe32(&bytes[4 * i], static_cast<uint32_t>(ids[i]));
  impl_->out.WriteAt(kHeaderBytes, bytes.data(), bytes.size());
  impl_->end = RowsOffset(impl_->info);
}

KlBaseWriter::~KlBaseWriter() = default;

void KlBaseWriter::Add(std::span<const float> log_probs) {
  if (log_probs.size() != static_cast<size_t>(impl_->info.vocab)) {
    throw std::invalid_argument("KlBaseWriter::Add: a row of the wrong size");
  }
  impl_->out.WriteAt(impl_->end, log_probs.data(), log_probs.size_bytes());
  impl_->end += log_probs.size_bytes();
  ++impl_->info.positions;
}

uint64_t KlBaseWriter::bytes() const { return impl_->end; }

void KlBaseWriter::Commit() {
  const KlBaseInfo& info = impl_->info;
  uint8_t h[kHeaderBytes];
  std::memcpy(h, kMagic, sizeof(kMagic));
  StoreLe32(h + 8, kVersion);
  StoreLe32(h + 12, static_cast<uint32_t>(info.vocab));
  StoreLe32(h + 16, static_cast<uint32_t>(info.context));
  StoreLe32(h + 20, static_cast<uint32_t>(static_cast<int32_t>(info.bos_id)));
  StoreLe64(h + 24, info.text_ids.size());
  StoreLe64(h + 32, info.positions);
  impl_->out.WriteAt(0, h, sizeof(h));
  uint8_t checksum[kChecksumBytes];
  StoreLe64(checksum, HashPrefix(impl_->out.fd(), impl_->end, impl_->out.tmp_path()));
  impl_->out.WriteAt(impl_->end, checksum, sizeof(checksum));
  impl_->end += sizeof(checksum);
  impl_->out.Commit();
}

struct KlBaseReader::Impl {
  InputFile file;
  KlBaseInfo info;
  std::vector<float> row;

  explicit Impl(const std::string& path) : file(path) {}
};

KlBaseReader::KlBaseReader(const std::string& path) : impl_(std::make_unique<Impl>(path)) {
  const InputFile& file = impl_->file;
  const auto refuse = [&](const std::string& reason) { return Error(path, reason); };
  if (file.size() < kHeaderBytes + kChecksumBytes) {
    throw refuse("is not a KL divergence base file (" + std::to_string(file.size()) +
                 " bytes, too short)");
  }
  uint8_t h[kHeaderBytes];
  file.ReadAt(0, h, sizeof(h));
  if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) {
    throw refuse("is not a KL divergence base file (no ZSKLBASE magic)");
  }
  if (const uint32_t version = LoadLe32(h + 8); version != kVersion) {
    throw refuse("KL divergence base file version " + std::to_string(version) +
                 " is not supported (this build reads version " + std::to_string(kVersion) + ")");
  }
  const uint64_t vocab = LoadLe32(h + 12), context = LoadLe32(h + 16);
  const int32_t bos = static_cast<int32_t>(LoadLe32(h + 20));
  const uint64_t n_ids = LoadLe64(h + 24), positions = LoadLe64(h + 32);
  if (vocab < 2 || vocab > kMaxVocab) {
    throw refuse("vocabulary size " + std::to_string(vocab) + " is out of range");
  }
  if (context < 1 || context > kMaxContext) {
    throw refuse("context " + std::to_string(context) + " is out of range");
  }
  if (bos < -1 || static_cast<uint64_t>(std::max(bos, 0)) >= vocab) {
    throw refuse("BOS id " + std::to_string(bos) + " is out of range");
  }
  // Each text token is predicted at most once.
  if (positions > n_ids) {
    throw refuse(std::to_string(positions) + " positions for a text of " + std::to_string(n_ids) +
                 " tokens");
  }
  // The size the header implies, checked before anything is allocated from it.
  const uint64_t ids_bytes = CheckedMul(n_ids, 4, path, "the token ids' size");
  const uint64_t rows_bytes =
      CheckedMul(positions, CheckedMul(vocab, 4, path, "a row's size"), path, "the rows' size");
  const uint64_t want =
      CheckedAdd(CheckedAdd(kHeaderBytes + kChecksumBytes, ids_bytes, path, "the file size"),
                 rows_bytes, path, "the file size");
  if (file.size() != want) {
    throw refuse("is " + std::to_string(file.size()) + " bytes but its header describes " +
                 std::to_string(want) + (file.size() < want ? " (truncated)" : ""));
  }
  uint8_t stored[kChecksumBytes];
  file.ReadAt(want - kChecksumBytes, stored, sizeof(stored));
  if (HashPrefix(file.fd(), want - kChecksumBytes, path) != LoadLe64(stored)) {
    throw refuse("checksum mismatch (the file is damaged)");
  }
  KlBaseInfo& info = impl_->info;
  info.vocab = static_cast<int64_t>(vocab);
  info.context = static_cast<int64_t>(context);
  info.bos_id = bos;
  info.positions = positions;
  std::vector<uint8_t> ids(ids_bytes);
  file.ReadAt(kHeaderBytes, ids.data(), ids.size());
  info.text_ids.resize(n_ids);
  for (uint64_t i = 0; i < n_ids; ++i) {
    info.text_ids[i] = static_cast<int>(LoadLe32(&ids[4 * i]));
    if (static_cast<uint64_t>(LoadLe32(&ids[4 * i])) >= vocab) {
      throw refuse("token " + std::to_string(i) + " is out of the vocabulary");
    }
  }
  impl_->row.resize(vocab);
}

KlBaseReader::~KlBaseReader() = default;

const KlBaseInfo& KlBaseReader::info() const { return impl_->info; }

void KlBaseReader::CheckSameRun(const KlBaseInfo& run) const {
  const KlBaseInfo& base = impl_->info;
  const std::string& path = impl_->file.path();
  if (run.vocab != base.vocab) {
    throw Error(path, "was written for a vocabulary of " + std::to_string(base.vocab) +
                          " tokens; this model has " + std::to_string(run.vocab));
  }
  if (run.bos_id != base.bos_id) {
    const auto bos = [](int64_t id) { return id < 0 ? std::string("none") : std::to_string(id); };
    throw Error(path, "was written for a model with BOS " + bos(base.bos_id) +
                          "; this model has BOS " + bos(run.bos_id));
  }
  if (run.context != base.context) {
    throw Error(path, "was written with a context of " + std::to_string(base.context) +
                          " tokens per window; this run's is " + std::to_string(run.context));
  }
  if (run.text_ids != base.text_ids) {
    size_t i = 0;
    while (i < run.text_ids.size() && i < base.text_ids.size() &&
           run.text_ids[i] == base.text_ids[i]) {
      ++i;
    }
    throw Error(path, "was written for another text (" + std::to_string(base.text_ids.size()) +
                          " tokens, this one has " + std::to_string(run.text_ids.size()) +
                          "; the first difference is at token " + std::to_string(i) + ")");
  }
}

std::span<const float> KlBaseReader::Row(uint64_t i) {
  const KlBaseInfo& info = impl_->info;
  if (i >= info.positions) throw std::out_of_range("KlBaseReader::Row past the last position");
  impl_->file.ReadAt(RowsOffset(info) + i * RowBytes(info), impl_->row.data(), RowBytes(info));
  for (const float v : impl_->row) {
    if (!(v <= 0) || std::isinf(v)) {
      throw Error(impl_->file.path(),
                  "position " + std::to_string(i) + " holds a value that is not a log-probability");
    }
  }
  return impl_->row;
}

}  // namespace zeroskip
