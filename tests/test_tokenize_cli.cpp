// `odmoe tokenize` against the `tokenizers` library: the built binary on the bundled model's
// tokenizer (its Hugging Face directory, its converted model.h5, its tokenizer.json) and on an
// NFC byte-level fixture, compared with tests/data/tokenizer/tokenize_cli_golden.json
// (tests/fixtures/make_tokenize_cli_golden.py): ids and pieces, --ids, --no-special,
// --decode; and its errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace odmoe {
namespace {

using nlohmann::json;

#ifdef ODMOE_CHILD_ENV
const std::string kOdmoe = std::string(ODMOE_CHILD_ENV) + " " + ODMOE_CLI_BIN;
#else
const std::string kOdmoe = ODMOE_CLI_BIN;
#endif
const std::string kSource = ODMOE_SOURCE_DIR;
const std::string kBundled = kSource + "/weights-tools/models/shakespeare-mixtral";

json golden() {
  return json::parse(test::read_file(test::data_dir() + "/tokenizer/tokenize_cli_golden.json"));
}

// What the command prints for a vocabulary entry (tokenize.cpp): control bytes as \xHH.
std::string printable(const std::string& piece) {
  std::string out;
  for (const char ch : piece) {
    const auto b = static_cast<unsigned char>(ch);
    char buf[8];
    std::snprintf(buf, sizeof buf, "\\x%02X", b);
    out += b < 0x20 || b == 0x7F ? std::string(buf) : ch == '\\' ? std::string("\\\\") : std::string(1, ch);
  }
  return out;
}

std::string id_list(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

test::CommandResult tokenize(const std::string& args) { return test::run_command(kOdmoe + " tokenize " + args); }

TEST(TokenizeCli, IdsPiecesAndDecodeMatchTheLibrary) {
  test::TempDir tmp;
  const json g = golden();
  ASSERT_GE(g["cases"].size(), 10u);
  int n = 0;
  for (const json& c : g["cases"]) {
    SCOPED_TRACE(c["tokenizer"].get<std::string>() + ": " + c["text"].dump());
    const std::string file = tmp.str("text" + std::to_string(n++) + ".txt");
    test::write_file(file, c["text"].get<std::string>());
    const std::string tok = "--tokenizer " + kSource + "/" + c["tokenizer"].get<std::string>();
    const auto ids = c["ids"].get<std::vector<int32_t>>();

    auto r = tokenize(tok + " --file " + file);
    ASSERT_EQ(r.status, 0) << r.output;
    std::string want;
    for (size_t i = 0; i < ids.size(); ++i)
      want += std::to_string(ids[i]) + "\t" + printable(c["pieces"][i].get<std::string>()) + "\n";
    EXPECT_EQ(r.output, want);

    r = tokenize(tok + " --ids --file " + file);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output, id_list(ids) + "\n");
    r = tokenize(tok + " --ids --no-special --file " + file);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output, id_list(c["ids_no_special"].get<std::vector<int32_t>>()) + "\n");

    if (ids.empty()) continue;
    r = tokenize(tok + " --decode " + id_list(ids));
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output, c["decoded"].get<std::string>() + "\n");
    r = tokenize(tok + " --no-special --decode " + id_list(ids));
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output, c["decoded_no_special"].get<std::string>() + "\n");
  }
}

// --model takes a Hugging Face directory or a converted one; --text as well as --file.
TEST(TokenizeCli, ModelDirectoriesAndText) {
  const json g = golden();
  const json& c = g["cases"][0];
  ASSERT_EQ(c["tokenizer"], "weights-tools/models/shakespeare-mixtral/tokenizer.json");
  const std::string want = id_list(c["ids"].get<std::vector<int32_t>>()) + "\n";
  const std::string text = c["text"].get<std::string>();  // plain ASCII, no quotes
  auto r = tokenize("--model " + kBundled + " --ids --text '" + text + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, want);
  test::TempDir tmp;
  const auto conv = test::run_command(std::string(ODMOE_WEIGHTS_BIN) + " convert " + kBundled + " " + tmp.str("m"));
  ASSERT_EQ(conv.status, 0) << conv.output;
  r = tokenize("--model " + tmp.str("m") + " --ids --text '" + text + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, want);
}

TEST(TokenizeCli, BadInputIsRefusedClearly) {
  test::TempDir tmp;
  const std::string tok = "--tokenizer " + kBundled + "/tokenizer.json";
  test::write_file(tmp.str("bad.txt"), "ok \xff then");
  test::write_file(tmp.str("notjson.json"), "{\"model\": ");
  struct Case {
    std::string args;
    int status;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"--text hi", 2, "give either --model DIR or --tokenizer FILE"},
      {tok + " --model " + kBundled + " --text hi", 2, "give either --model DIR or --tokenizer FILE"},
      {tok, 2, "give one of --text T, --file F or --decode IDS"},
      {tok + " --text a --decode 1", 2, "give one of"},
      {tok + " --decode 1,,2", 2, "'' is not a token id"},
      {tok + " --decode 1,-3", 2, "'-3' is not a token id"},
      {tok + " --decode 12x", 2, "'12x' is not a token id"},
      {tok + " --decode 1 --ids", 2, "--ids is for encoding"},
      {tok + " --decode 5000000", 1, "token id 5000000 is not in the vocabulary"},
      {tok + " --file " + tmp.str("bad.txt"), 1, "is not valid UTF-8 (bad byte at offset 3)"},
      {tok + " --file " + tmp.str("none.txt"), 1, "cannot read --file"},
      {"--tokenizer " + tmp.str("notjson.json") + " --text a", 1, "not valid JSON"},
      {"--tokenizer " + tmp.str("none.json") + " --text a", 1, "is not a file"},
      {"--model " + tmp.str("none") + " --text a", 1, "is not a directory"},
      {"--model " + tmp.str() + " --text a", 1, "holds no model.h5"},
  };
  for (const Case& c : cases) {
    const auto r = tokenize(c.args);
    EXPECT_EQ(r.status, c.status) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.says), std::string::npos) << c.args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace odmoe
