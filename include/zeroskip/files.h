// Files a front end reads and writes besides models: small text inputs, and outputs written
// atomically (never seen half-written). Every failure is a zeroskip::Error naming the path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace zeroskip {

// A new file written under a unique temporary name beside `path` and renamed onto it by Commit,
// so readers never see half a file and two writers of one path never mix. Destroyed uncommitted
// (an exception), or killed by a signal the CLI handles, it removes the temporary file.
class AtomicOutput {
 public:
  explicit AtomicOutput(std::string path);  // refuses paths CheckOutputPath refuses
  ~AtomicOutput();
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  const std::string& tmp_path() const { return tmp_path_; }
  // Writes exactly n bytes at offset.
  void WriteAt(uint64_t offset, const void* data, size_t n);
  // Sets the file's size (EFBIG, the file size limit, is an error like any other).
  void Resize(uint64_t size);
  // Makes what was written durable (fsync) without committing it.
  void Sync();
  // Makes the file durable (fsync) and renames it to path().
  void Commit();

 private:
  std::string path_, tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// Reads a whole small file (config, tokenizer, index); refuses files above max_bytes.
std::string ReadSmallFile(const std::string& path, uint64_t max_bytes);

}  // namespace zeroskip
