#include "format/file_io.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "zeroskip/error.h"
#include "zeroskip/format.h"

namespace zeroskip {

int OpenRegularFile(const std::string& path, uint64_t* size) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever, before
  // fstat could tell us it is not a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path, "not a regular file");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    ::close(fd);
    throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  }
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

InputFile::InputFile(const std::string& path) : path_(path) { fd_ = OpenRegularFile(path, &size_); }

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void InputFile::ReadAt(uint64_t offset, void* out, uint64_t n) const {
  if (offset > size_ || n > size_ - offset) {
    throw Error(path_, "read of " + std::to_string(n) + " bytes at offset " +
                           std::to_string(offset) + " is past the end of the file (" +
                           std::to_string(size_) + " bytes)");
  }
  auto* dst = static_cast<uint8_t*>(out);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, dst, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) throw Error(path_, std::string("read failed: ") + std::strerror(errno));
    dst += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<uint64_t>(got);
  }
}

namespace {

// The temporary file being written, for RemoveUnfinishedOutput (one writer at a time).
std::atomic<const char*> g_unfinished_tmp{nullptr};

// "write failed: File too large" does not say why: it is the process's file size limit.
std::string WriteError(int error) {
  std::string reason = std::strerror(error);
  if (error == EFBIG) reason += " (the file size limit, ulimit -f)";
  return reason;
}

// Holds back the signals whose handler calls RemoveUnfinishedOutput while a temporary file and
// its registration change together: a signal in between would leave the file behind.
class HoldSignals {
 public:
  HoldSignals() {
    sigset_t fatal;
    sigemptyset(&fatal);
    for (const int sig : OutputCleanupSignals()) sigaddset(&fatal, sig);
    pthread_sigmask(SIG_BLOCK, &fatal, &previous_);
  }
  ~HoldSignals() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }

 private:
  sigset_t previous_;
};

}  // namespace

const std::vector<int>& OutputCleanupSignals() {
  // Every signal whose default action ends the process and that a handler can catch: from a
  // terminal or a supervisor (INT, TERM, HUP, QUIT), from timers and users (ALRM, USR1, ...),
  // and the real-time ones. The faults (SEGV, BUS: a mapped input truncated underneath us; ABRT)
  // too, except under AddressSanitizer, whose own handler must report them.
  static const std::vector<int> signals = [] {
    std::vector<int> s = {SIGINT,  SIGTERM, SIGHUP, SIGQUIT, SIGALRM,   SIGUSR1, SIGUSR2, SIGVTALRM,
                          SIGPROF, SIGIO,   SIGPWR, SIGXCPU, SIGSTKFLT, SIGTRAP, SIGSYS};
#if !defined(__SANITIZE_ADDRESS__)
    s.insert(s.end(), {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT});
#endif
    for (int sig = SIGRTMIN; sig <= SIGRTMAX; ++sig) s.push_back(sig);
    return s;
  }();
  return signals;
}

void RemoveUnfinishedOutput() {
  if (const char* tmp = g_unfinished_tmp.exchange(nullptr)) ::unlink(tmp);
}

void CheckOutputPath(const std::string& path) {
  if (path.empty()) throw Error("", "the output path is empty");
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;  // a new file
  // The final rename replaces a link itself, not what it points to: `-o /dev/stdout` as root
  // would put a model where the system's /dev/stdout link was.
  if (S_ISLNK(st.st_mode)) {
    throw Error(path, "is a symbolic link (refusing to replace it; give the path it points to)");
  }
  if (S_ISDIR(st.st_mode)) throw Error(path, "is a directory (give a file name for the output)");
  // Renaming over a device node or FIFO would replace it (as root: /dev/null) with a model.
  if (!S_ISREG(st.st_mode)) {
    throw Error(path, "exists and is not a regular file (refusing to replace it)");
  }
}

AtomicOutput::AtomicOutput(std::string path) : path_(std::move(path)) {
  CheckOutputPath(path_);
  // mkostemps: O_CREAT|O_EXCL, so never through a symlink someone planted, and a name no other
  // writer of the same path uses; beside the output, so the final rename is atomic.
  tmp_path_ = path_ + ".XXXXXX.tmp";
  int error = 0;
  {
    HoldSignals hold;
    fd_ = ::mkostemps(tmp_path_.data(), 4, O_CLOEXEC);
    error = errno;
    if (fd_ >= 0) g_unfinished_tmp.store(tmp_path_.c_str());
  }
  if (fd_ < 0) {
    throw Error(path_, std::string("cannot create output file: ") + std::strerror(error));
  }
  ::fchmod(fd_, 0644);  // mkstemp creates 0600; outputs are as readable as any other file
}

AtomicOutput::~AtomicOutput() {
  if (committed_) return;
  if (fd_ >= 0) ::close(fd_);
  HoldSignals hold;
  ::unlink(tmp_path_.c_str());
  g_unfinished_tmp.store(nullptr);
}

void AtomicOutput::WriteAt(uint64_t offset, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t put = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) throw Error(path_, "write failed: " + WriteError(errno));
    p += put;
    offset += static_cast<uint64_t>(put);
    n -= static_cast<size_t>(put);
  }
}

void AtomicOutput::Sync() {
  if (::fsync(fd_) != 0) throw Error(path_, "fsync failed: " + WriteError(errno));
}

void AtomicOutput::Resize(uint64_t size) {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
    throw Error(path_, "cannot size output file: " + WriteError(errno));
  }
}

void AtomicOutput::Commit() {
  Sync();
  ::close(fd_);
  fd_ = -1;
  {
    HoldSignals hold;
    if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
      const int error = errno;
      throw Error(path_, std::string("cannot rename temporary file: ") + std::strerror(error));
    }
    g_unfinished_tmp.store(nullptr);
    committed_ = true;
  }
  // Make the rename itself durable.
  const auto slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string ReadSmallFile(const std::string& path, uint64_t max_bytes) {
  InputFile file(path);
  if (file.size() > max_bytes) {
    throw Error(path, "file is too large (" + std::to_string(file.size()) + " bytes, limit " +
                          std::to_string(max_bytes) + ")");
  }
  std::string text(file.size(), '\0');
  file.ReadAt(0, text.data(), text.size());
  return text;
}

uint16_t LoadLe16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }

uint32_t LoadLe32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t LoadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void StoreLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void StoreLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

uint64_t CheckedMul(uint64_t a, uint64_t b, const std::string& path, const std::string& what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw Error(path, what + " overflows 64 bits");
  return r;
}

uint64_t CheckedAdd(uint64_t a, uint64_t b, const std::string& path, const std::string& what) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw Error(path, what + " overflows 64 bits");
  return r;
}

}  // namespace zeroskip
