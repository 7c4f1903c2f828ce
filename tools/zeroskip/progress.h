// A one-line progress display on stderr for long work (convert, verify, perplexity, score):
// done/total, rate and time left, redrawn in place at most ten times a second. Only on a
// terminal: redirected stderr stays exactly the error and stats lines.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>

namespace zeroskip::cli {

class Progress {
 public:
  enum class Unit { kBytes, kTensors, kLayers, kTokens };
  Progress(const char* label, Unit unit)
      : label_(label), unit_(unit), enabled_(isatty(STDERR_FILENO)), start_(Clock::now()) {}
  ~Progress() { Done(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Ends the line, so what is printed next starts on its own.
  void Done() {
    if (drawn_) std::fputc('\n', stderr);
    drawn_ = false;
    enabled_ = false;
  }

  void Update(uint64_t done, uint64_t total) {
    if (!enabled_ || total == 0) return;
    const auto now = Clock::now();
    if (drawn_ && done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? done / seconds : 0;
    const int width = 24, filled = static_cast<int>(width * done / total);
    std::fprintf(stderr, "\r%s [%.*s%*s] %5.1f%% ", label_, filled, "########################",
                 width - filled, "", 100.0 * done / total);
    switch (unit_) {
      case Unit::kBytes:
        std::fprintf(stderr, "%.2f/%.2f GB, %.2f GB/s", done / 1e9, total / 1e9, rate / 1e9);
        break;
      case Unit::kTensors:
        std::fprintf(stderr, "%llu/%llu tensors", static_cast<unsigned long long>(done),
                     static_cast<unsigned long long>(total));
        break;
      case Unit::kLayers:
        std::fprintf(stderr, "%llu/%llu layers", static_cast<unsigned long long>(done),
                     static_cast<unsigned long long>(total));
        break;
      case Unit::kTokens:
        std::fprintf(stderr, "%llu/%llu tokens, %.1f tok/s", static_cast<unsigned long long>(done),
                     static_cast<unsigned long long>(total), rate);
        break;
    }
    if (rate > 0 && done < total) {
      const auto left = static_cast<long long>((total - done) / rate);
      std::fprintf(stderr, ", ETA %lld:%02lld   ", left / 60, left % 60);
    } else {
      std::fprintf(stderr, "%14s", "");
    }
    drawn_ = true;
  }

 private:
  using Clock = std::chrono::steady_clock;
  const char* label_;
  Unit unit_;
  bool enabled_;
  bool drawn_ = false;
  Clock::time_point start_, last_;
};

}  // namespace zeroskip::cli
