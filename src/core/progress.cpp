#include "odmoe/core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace odmoe {

bool stdout_is_terminal() { return isatty(STDOUT_FILENO) == 1; }

ProgressBar::ProgressBar(std::string label, uint64_t total, bool enabled)
    : label_(std::move(label)),
      total_(total > 0 ? total : 1),
      enabled_(enabled),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (enabled_ && !finished_) std::printf("\n");
}

void ProgressBar::advance(uint64_t n) {
  done_ += n;
  draw(false);
}

void ProgressBar::finish() {
  done_ = total_;
  draw(true);
  if (enabled_) std::printf("\n");
  finished_ = true;
}

void ProgressBar::draw(bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double frac = static_cast<double>(done_) / static_cast<double>(total_);
  constexpr int kWidth = 30;
  const int fill = static_cast<int>(frac * kWidth);
  const double secs = std::chrono::duration<double>(now - start_).count();
  std::printf("\r%s [%.*s%*s] %5.1f%%  %.0fs", label_.c_str(), fill, "##############################",
              kWidth - fill, "", 100.0 * frac, secs);
  std::fflush(stdout);
}

}  // namespace odmoe
