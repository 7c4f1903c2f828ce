// The one exception type zeroskip throws for bad input, bad files and failed I/O.
//
// It carries the file the problem is about and a one-line reason, so the CLI can print exactly
// `zeroskip: error: <path>: <reason>` and exit 1. It is not for programming errors (those are
// bugs, not user-facing messages).
#pragma once

#include <stdexcept>
#include <string>

namespace zeroskip {

class Error : public std::runtime_error {
 public:
  Error(std::string path, std::string reason)
      : std::runtime_error(path.empty() ? reason : path + ": " + reason),
        path_(std::move(path)),
        reason_(std::move(reason)) {}

  const std::string& path() const { return path_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string path_;
  std::string reason_;
};

}  // namespace zeroskip
