// CRC-32C (Castagnoli), the checksum stored on every dataset of the weight format.
// Uses the SSE4.2 crc32 instruction when the CPU has it (chosen at run time), a
// slice-by-8 table otherwise; both give the same value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace odmoe {

// Extends `crc` (start with 0) over [data, data + n).
uint32_t crc32c(uint32_t crc, const void* data, size_t n);

}  // namespace odmoe
