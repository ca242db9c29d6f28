// The commands of `odmoe`, one file each, and what they share. Only the programs' code
// includes this (and Boost.Program_options).
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <vector>

#include "engine_args.h"
#include "odmoe/cli/cli.h"
#include "odmoe/runtime/engine.h"
#include "odmoe/tokenizer/tokenizer.h"
#include "odmoe/weights/model_files.h"

namespace odmoe::cli {

int cmd_generate(int argc, char** argv);        // generate.cpp
int cmd_logits(int argc, char** argv);          // logits.cpp
int cmd_perplexity(int argc, char** argv);      // perplexity.cpp
int cmd_eval_predictor(int argc, char** argv);  // eval_predictor.cpp
int cmd_bench(int argc, char** argv);           // bench.cpp: the paper's protocol over a list of configurations
int cmd_simulate(int argc, char** argv);        // simulate.cpp: the schedule simulator
int cmd_tokenize(int argc, char** argv);        // tokenize.cpp: ids of a text, text of ids (no MPI)

// parse_options with no positional arguments; false when --help was printed.
inline bool parse(int argc, char** argv, po::options_description& opts, const char* usage, po::variables_map* vm) {
  return parse_options(argc, argv, opts, po::positional_options_description(), usage, vm);
}

// The ids that end a generation: the model's eos_token_id(s), else the tokenizer's EOS.
inline std::vector<int32_t> eos_ids(const ModelFiles& files, const Tokenizer& tok) {
  std::vector<int32_t> ids(files.config().eos_token_ids.begin(), files.config().eos_token_ids.end());
  if (ids.empty() && tok.eos_id()) ids.push_back(*tok.eos_id());
  return ids;
}

}  // namespace odmoe::cli
