// Time as every layer reads it: the steady clock, and a polite way to poll.
#pragma once

namespace odmoe {

// Seconds on the steady clock (CLOCK_MONOTONIC: shared by the processes of one machine).
double now_s();

// Polling with backoff: spins briefly, then sleeps up to ~200 us between polls, so idle
// ranks do not starve computing ones when ranks outnumber cores.
class Backoff {
 public:
  void pause();
  void reset() { n_ = 0; }

 private:
  int n_ = 0;
};

}  // namespace odmoe
