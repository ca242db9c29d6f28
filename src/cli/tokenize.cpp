// odmoe tokenize: a model's tokenizer on the command line, for when a prompt behaves oddly.
// Prints the ids of a text (one "id<TAB>piece" line per token, or one comma-separated line),
// or the text of a list of ids. Runs in one process without MPI (main dispatches to it before
// MPI_Init).
#include <boost/program_options.hpp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "odmoe/cli/cli.h"
#include "odmoe/core/error.h"
#include "odmoe/tokenizer/tokenizer.h"
#include "odmoe/weights/model_files.h"
#include "odmoe/weights/shard_layout.h"

namespace odmoe::cli {

namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;

constexpr const char* kTokenizeUsage =
    "usage: odmoe tokenize --model DIR | --tokenizer FILE  --text T | --file F  [--ids] [--no-special]\n"
    "       odmoe tokenize --model DIR | --tokenizer FILE  --decode 1,2,3 [--no-special]\n"
    "\n"
    "Encodes a text as the model does (its special tokens included unless --no-special) and prints\n"
    "one line per token: the id, a tab, and the vocabulary entry (control characters and tabs\n"
    "written as \\xHH, a backslash as \\\\); --ids prints the ids alone on one comma-separated line.\n"
    "--decode prints the text of the ids, special tokens included unless --no-special.\n"
    "--model is a converted model (odmoe-weights convert) or a Hugging Face checkpoint directory.\n";

std::string read_text_file(const std::string& path, const char* option) {
  std::ifstream in(path, std::ios::binary);
  ODMOE_CHECK(in.good() && !fs::is_directory(path), kIo, "open", "cannot read " << option << " " << path,
              "check the path");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Tokenizer load_tokenizer(const std::string& model_dir, const std::string& tokenizer_path) {
  if (!tokenizer_path.empty()) {
    ODMOE_CHECK(fs::is_regular_file(tokenizer_path), kIo, "open", "--tokenizer " << tokenizer_path << " is not a file",
                "give the path of a tokenizer.json");
    return Tokenizer::from_file(tokenizer_path);
  }
  ODMOE_CHECK(fs::is_directory(model_dir), kIo, "no-model", "--model " << model_dir << " is not a directory",
              "give a converted model directory or a Hugging Face checkpoint directory");
  const fs::path hf = fs::path(model_dir) / "tokenizer.json";
  if (fs::is_regular_file(hf) && !fs::exists(fs::path(model_dir) / layout::kModelFile)) return Tokenizer::from_file(hf.string());
  const ModelFiles files(model_dir);
  return Tokenizer::from_json(files.tokenizer_json());
}

// "1,2, 3" -> ids; every entry must be a non-negative 32-bit integer.
std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    const std::string t = b == std::string::npos ? "" : item.substr(b, e - b + 1);
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(t, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (t.empty() || used != t.size() || v < 0 || v > INT32_MAX)
      throw UsageError("--decode: '" + t + "' is not a token id (a comma-separated list of ids, e.g. 1,2,3)");
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) throw UsageError("--decode is empty: give ids such as 1,2,3");
  return ids;
}

// A vocabulary entry on one line: control characters, DEL and tabs as \xHH, '\' as "\\".
std::string printable(const std::string& piece) {
  std::string out;
  for (const char ch : piece) {
    const auto b = static_cast<unsigned char>(ch);
    if (b < 0x20 || b == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", b);
      out += buf;
    } else if (ch == '\\') {
      out += "\\\\";
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  po::options_description o("tokenize options");
  std::string model_dir, tokenizer_path, text, file, decode;
  bool ids_only = false, no_special = false;
  o.add_options()("model", po::value(&model_dir), "model directory: converted (model.h5) or Hugging Face (tokenizer.json)")(
      "tokenizer", po::value(&tokenizer_path), "a tokenizer.json file instead of --model")(
      "text", po::value(&text), "the text to encode (UTF-8)")("file", po::value(&file), "encode this file's text")(
      "decode", po::value(&decode), "print the text of these comma-separated ids")(
      "ids", po::bool_switch(&ids_only), "print only the ids, comma-separated on one line")(
      "no-special", po::bool_switch(&no_special),
      "encode without adding special tokens (BOS, templates); decode without special tokens");
  po::variables_map vm;
  if (!parse_options(argc, argv, o, po::positional_options_description(), kTokenizeUsage, &vm)) return 0;
  if (vm.count("model") == vm.count("tokenizer")) throw UsageError("give either --model DIR or --tokenizer FILE");
  const size_t n_inputs = vm.count("text") + vm.count("file") + vm.count("decode");
  if (n_inputs != 1) throw UsageError("give one of --text T, --file F or --decode IDS");
  if (vm.count("decode") && ids_only) throw UsageError("--ids is for encoding; --decode prints text");
  const std::optional<std::vector<int32_t>> to_decode =
      vm.count("decode") ? std::optional(parse_ids(decode)) : std::nullopt;
  if (vm.count("file")) text = read_text_file(file, "--file");

  const Tokenizer tok = load_tokenizer(model_dir, tokenizer_path);
  if (to_decode) {
    for (const int32_t id : *to_decode)
      ODMOE_CHECK(id <= tok.max_token_id() && !tok.id_to_token(id).empty(), kCli, "bad-token",
                  "--decode: token id " << id << " is not in the vocabulary (ids 0.." << tok.max_token_id() << ")",
                  "use ids this tokenizer produces");
    const std::string out = tok.decode(*to_decode, no_special);
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fputc('\n', stdout);
    return 0;
  }
  size_t bad = 0;
  ODMOE_CHECK(Tokenizer::is_valid_utf8(text, &bad), kCli, "bad-text",
              (vm.count("file") ? "--file " + file : std::string("--text")) << " is not valid UTF-8 (bad byte at offset "
                                                                          << bad << ")",
              "give UTF-8 text");
  const std::vector<int32_t> ids = tok.encode(text, !no_special);
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids_only) {
      out += (i ? "," : "") + std::to_string(ids[i]);
    } else {
      out += std::to_string(ids[i]) + "\t" + printable(tok.id_to_token(ids[i])) + "\n";
    }
  }
  if (ids_only) out += "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace odmoe::cli
