// Small POSIX file helpers that turn every failure into zeroskip::Error(path, reason). The ones
// front ends use too are public in zeroskip/files.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "zeroskip/files.h"

namespace zeroskip {

// Opens a regular file read-only and returns its descriptor and size; refuses anything else
// (directories, FIFOs, devices) without blocking on it.
int OpenRegularFile(const std::string& path, uint64_t* size);

// Owns a file descriptor opened read-only.
class InputFile {
 public:
  explicit InputFile(const std::string& path);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_; }
  // Reads exactly n bytes at offset (bounds-checked against the file size).
  void ReadAt(uint64_t offset, void* out, uint64_t n) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

bool FileExists(const std::string& path);

// Little-endian integers from raw bytes (file formats are little-endian whatever the host).
uint16_t LoadLe16(const uint8_t* p);
uint32_t LoadLe32(const uint8_t* p);
uint64_t LoadLe64(const uint8_t* p);
void StoreLe32(uint8_t* p, uint32_t v);
void StoreLe64(uint8_t* p, uint64_t v);

// a * b and a + b, throwing Error(path, what + " overflows") instead of wrapping.
uint64_t CheckedMul(uint64_t a, uint64_t b, const std::string& path, const std::string& what);
uint64_t CheckedAdd(uint64_t a, uint64_t b, const std::string& path, const std::string& what);

}  // namespace zeroskip
