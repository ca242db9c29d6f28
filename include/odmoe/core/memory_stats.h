// Process memory figures for the statistics every command reports.
#pragma once

#include <cstdint>

namespace odmoe {

// High-water mark of the resident set since start or the last reset_peak_rss() (VmHWM in
// /proc/self/status; getrusage's maximum where that is unreadable).
uint64_t peak_rss_bytes();
uint64_t current_rss_bytes();  // resident set now (/proc/self/statm), 0 if unknown
// Starts a new high-water mark at the current resident set (Linux >= 4.0: "5" written to
// /proc/self/clear_refs), so one process can report the peak of each of several runs.
// False where the kernel does not allow it (the peak then stays the process's).
bool reset_peak_rss();

}  // namespace odmoe
