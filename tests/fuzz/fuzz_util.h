// Shared helpers for the fuzz targets (libFuzzer entry points, also linked into the gcc replay
// runner). Header-only so each target is one translation unit plus this file.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

// An oracle violation is a bug exactly like a sanitizer report: print it and abort, which
// libFuzzer records as a crash and the replay test as a failure.
#define FUZZ_CHECK(cond)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: fuzz oracle failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

namespace zeroskip::fuzz {

// One anonymous in-memory file per process, rewritten for every input, so file-based readers
// (ZskFile::Open, ReadSafetensorsHeader) see exactly the fuzzed bytes without touching disk.
class MemFile {
 public:
  MemFile() {
    fd_ = ::memfd_create("zeroskip-fuzz", MFD_CLOEXEC);
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  // Replaces the contents with `data`, then extends the file (sparse, zero-filled) to `size`
  // bytes if that is larger.
  const std::string& Set(const void* data, size_t n, uint64_t size = 0) {
    if (::ftruncate(fd_, 0) != 0) Die("ftruncate");
    const auto* p = static_cast<const uint8_t*>(data);
    size_t done = 0;
    while (done < n) {
      const ssize_t put = ::pwrite(fd_, p + done, n - done, static_cast<off_t>(done));
      if (put <= 0) Die("pwrite");
      done += static_cast<size_t>(put);
    }
    if (size > n && ::ftruncate(fd_, static_cast<off_t>(size)) != 0) Die("ftruncate");
    return path_;
  }

 private:
  static void Die(const char* what) {
    std::perror(what);
    std::abort();
  }
  int fd_ = -1;
  std::string path_;
};

inline uint64_t LoadLE64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

inline void StoreLE64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace zeroskip::fuzz
