#include "odmoe/core/clock.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace odmoe {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

void Backoff::pause() {
  ++n_;
  if (n_ < 64) return;
  if (n_ < 256) {
    std::this_thread::yield();
    return;
  }
  const int us = std::min(200, 10 * (n_ - 255));
  std::this_thread::sleep_for(std::chrono::microseconds(us));
}

}  // namespace odmoe
