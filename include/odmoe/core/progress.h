// A one-line progress bar on stdout, drawn only when stdout is a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace odmoe {

class ProgressBar {
 public:
  ProgressBar(std::string label, uint64_t total, bool enabled);
  ~ProgressBar();
  void advance(uint64_t n);  // redraws at most ~10 times a second
  void finish();

 private:
  void draw(bool force);
  std::string label_;
  uint64_t total_, done_ = 0;
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

bool stdout_is_terminal();

}  // namespace odmoe
