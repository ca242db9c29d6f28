// `odmoe logits`: the logits of a sequence of token ids, as JSON.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "odmoe/core/error.h"
#include "odmoe/core/json_file.h"

namespace odmoe::cli {

int cmd_logits(int argc, char** argv) {
  po::options_description o("logits options");
  std::string ids_s, out;
  EngineArgs ea;
  ea.add(o);
  o.add_options()("token-ids", po::value(&ids_s)->required(), "comma-separated token ids, e.g. 1,2,3")(
      "out", po::value(&out), "write the JSON here instead of stdout");
  po::variables_map vm;
  if (!parse(argc, argv, o, "usage: [mpirun -np N] odmoe logits --model DIR --token-ids 1,2,3 [--out FILE]", &vm))
    return 0;
  ea.finalize();
  std::vector<int32_t> ids;
  std::stringstream ss(ids_s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty()) throw UsageError("--token-ids: '" + item + "' is not an integer");
    ODMOE_CHECK(v >= 0 && v <= INT32_MAX, kCli, "bad-token", "--token-ids: " << v << " is not a valid token id", "");
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) throw UsageError("--token-ids is empty");
  return Engine::run(ea.eo, [&](Engine& eng) {
  const int vocab = eng.model().config().vocab_size;
  for (int32_t id : ids)
    ODMOE_CHECK(id < vocab, kCli, "bad-token", "token id " << id << " is outside the vocabulary [0, " << vocab << ")",
                "use ids the model's tokenizer produces");
  std::vector<float> logits;
  eng.model().forward(ids.data(), ids.size(), true, &logits);
  eng.finish(ea.trace);
  nlohmann::json j;
  j["token_ids"] = ids;
  j["logits"] = nlohmann::json::array();
  for (size_t t = 0; t < ids.size(); ++t)
    j["logits"].push_back(std::vector<float>(logits.begin() + static_cast<long>(t * vocab),
                                             logits.begin() + static_cast<long>((t + 1) * vocab)));
  if (out.empty()) {
    std::cout << j.dump() << "\n";
  } else {
    write_json_file(out, j, -1, "--out");
  }
  return 0;
  });
}

}  // namespace odmoe::cli
