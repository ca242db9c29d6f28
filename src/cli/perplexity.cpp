// `odmoe perplexity`: the model's perplexity on a text file.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"
#include "odmoe/core/clock.h"
#include "odmoe/runtime/perplexity.h"
#include "odmoe/tokenizer/tokenizer.h"

namespace odmoe::cli {

int cmd_perplexity(int argc, char** argv) {
  po::options_description o("perplexity options");
  std::string text_path, json_path;
  int context = 256;
  bool token_by_token = false;
  EngineArgs ea;
  ea.add(o);
  o.add_options()("text", po::value(&text_path)->required(), "UTF-8 text file")(
      "token-by-token", po::bool_switch(&token_by_token),
      "score each window one token per forward step, as decoding runs (what decode-only behaviour such as "
      "--substitute changes)")(
      "context", po::value(&context)->default_value(256), "tokens per window (non-overlapping windows)")(
      "json", po::value(&json_path), "also write the result as JSON");
  po::variables_map vm;
  if (!parse(argc, argv, o, "usage: [mpirun -np N] odmoe perplexity --model DIR --text FILE [--context N]", &vm))
    return 0;
  ea.finalize();
  const std::string& model_dir = ea.eo.model_dir;
  if (context < 2) throw UsageError("--context must be at least 2");
  std::ifstream in(text_path, std::ios::binary);
  ODMOE_CHECK(in.good(), kIo, "open", "cannot read --text " << text_path, "check the path");
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  size_t bad = 0;
  ODMOE_CHECK(Tokenizer::is_valid_utf8(text, &bad), kCli, "bad-text",
              text_path << " is not valid UTF-8 (bad byte at offset " << bad << ")", "");
  ea.eo.n_ctx = std::max(ea.eo.n_ctx, context);
  return Engine::run(ea.eo, [&](Engine& eng) {
  ODMOE_CHECK(context <= eng.model().n_ctx(), kCli, "bad-option",
              "--context " << context << " exceeds the model's context of " << eng.model().n_ctx(), "");
  const Tokenizer tok = Tokenizer::from_json(eng.files().tokenizer_json());
  const std::vector<int32_t> ids = tok.encode(text, false);
  ODMOE_CHECK(ids.size() >= 2, kCli, "bad-text", text_path << " holds fewer than 2 tokens", "");
  const double t0 = now_s();
  const PerplexityResult r = evaluate_perplexity(eng.model(), ids, context, token_by_token);
  const double secs = now_s() - t0, mean = r.nll_per_token;
  const size_t n_scored = r.tokens_scored;
  const nlohmann::json run = eng.finish(ea.trace);  // stops the expert ranks
  std::printf("perplexity %.4f  (%.4f nats/token over %zu predicted tokens, windows of %d, %s weights, %.1f s)\n",
              std::exp(mean), mean, n_scored, context, dtype_name(eng.files().header().weight_dtype), secs);
  if (!json_path.empty()) {
    nlohmann::json j{{"model", model_dir},
                     {"text", text_path},
                     {"weight_dtype", dtype_name(eng.files().header().weight_dtype)},
                     {"context", context},
                     {"token_by_token", token_by_token},
                     {"engine", eng.describe()},
                     {"tokens_scored", n_scored},
                     {"nll_per_token", mean},
                     {"perplexity", std::exp(mean)},
                     {"seconds", secs}};
    for (const auto& [key, value] : run.items()) j[key] = value;
    write_json_file(json_path, j, 2, "--json");
  }
  return 0;
  });
}

}  // namespace odmoe::cli
