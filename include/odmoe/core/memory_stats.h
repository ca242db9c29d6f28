// Process memory figures for the statistics every command reports.
#pragma once

#include <cstdint>

namespace odmoe {

uint64_t peak_rss_bytes();     // high-water mark of the resident set (getrusage)
uint64_t current_rss_bytes();  // resident set now (/proc/self/statm), 0 if unknown

}  // namespace odmoe
