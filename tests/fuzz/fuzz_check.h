// Shared by the fuzz targets: what counts as a finding besides a crash or a sanitizer report.
//
// Each target catches exactly the exception types its parser documents (odmoe::Error); any
// other exception escapes LLVMFuzzerTestOneInput, which libFuzzer (and the replay main)
// reports as a crash. ODMOE_FUZZ_REQUIRE turns a broken promise of the API (an invariant the
// header documents) into an abort, which is a finding too.
#pragma once

#include <cstdio>
#include <cstdlib>

#define ODMOE_FUZZ_REQUIRE(COND, WHAT)                                                           \
  do {                                                                                            \
    if (!(COND)) {                                                                                \
      std::fprintf(stderr, "fuzz finding: %s (%s:%d: %s)\n", WHAT, __FILE__, __LINE__, #COND);   \
      std::abort();                                                                               \
    }                                                                                             \
  } while (0)
