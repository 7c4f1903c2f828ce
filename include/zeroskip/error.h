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
  // Control bytes (names and strings come from hostile files) are escaped as \xNN, so the
  // message is always a single line.
  Error(std::string path, std::string reason)
      : std::runtime_error(OneLine(path.empty() ? reason : path + ": " + reason)),
        path_(std::move(path)),
        reason_(std::move(reason)) {}

  const std::string& path() const { return path_; }
  const std::string& reason() const { return reason_; }

 private:
  static std::string OneLine(const std::string& text) {
    std::string out;
    for (const char c : text) {
      const auto b = static_cast<unsigned char>(c);
      if (b < 0x20 || b == 0x7f) {
        static const char kHex[] = "0123456789abcdef";
        out += {'\\', 'x', kHex[b >> 4], kHex[b & 15]};
      } else {
        out += c;
      }
    }
    return out;
  }

  std::string path_;
  std::string reason_;
};

}  // namespace zeroskip
