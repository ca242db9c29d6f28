// odmoe bench's report over its runs' records (each a JSON object of bench's "runs").
#pragma once

#include <nlohmann/json.hpp>

namespace odmoe::cli {

// Exact runs must agree with each other (tokens_match_reference); substituting runs are
// compared with them (token_agreement, tokens_before_divergence, the perplexity change).
void compare_tokens(nlohmann::json* results);

// Prints the table, each run beside the resident run of the same G and case (the perplexity
// on the first case's rows). Returns false when an exact run's tokens differ from the first
// exact run's.
bool print_bench_table(const nlohmann::json& results, int first_in_len, int first_out_len, double load_gbps);

}  // namespace odmoe::cli
