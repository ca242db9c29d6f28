// odmoe-weights: convert, inspect, validate and synthesise model directories.
//
//   odmoe-weights convert HF_DIR OUT_DIR [--dtype f32|bf16|f16|int8|int4] [--shards N]
//                                        [--shadow int8|int4|f16|none] [--overwrite]
//   odmoe-weights inspect MODEL_DIR [--tensors]
//   odmoe-weights validate MODEL_DIR [--no-checksums]
//   odmoe-weights synth --arch mixtral-8x7b|qwen3-30b-a3b|olmoe-1b-7b|CONFIG.json [--layers N] OUT_DIR
//
// Exit status: 0 success, 1 error (a message names what is wrong), 2 bad command line.
#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "odmoe/cli/cli.h"
#include "odmoe/core/error.h"
#include "odmoe/core/mapped_file.h"
#include "odmoe/core/progress.h"
#include "odmoe/weights/hf_checkpoint.h"
#include "odmoe/weights/model_files.h"
#include "odmoe/weights/model_writer.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace odmoe;

namespace {

constexpr const char* kUsage =
    "usage: odmoe-weights COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  convert HF_DIR OUT_DIR   convert a Hugging Face checkpoint (safetensors) to the odmoe format\n"
    "  inspect MODEL_DIR        print layout, sizes, dtypes and config\n"
    "  validate MODEL_DIR       check version, shapes, byte ranges and checksums (exit 1 if invalid)\n"
    "  synth --arch NAME OUT_DIR  random weights with a real model's shapes, for benchmarks\n"
    "\n"
    "`odmoe-weights COMMAND --help` describes each command's options.\n";

using cli::UsageError;

DType dtype_option(const std::string& s, const char* opt) {
  const auto d = parse_dtype(s);
  if (!d) throw UsageError(std::string(opt) + " must be one of f32, bf16, f16, int8, int4 (got '" + s + "')");
  return *d;
}

bool parse(int argc, char** argv, po::options_description& opts, const po::positional_options_description& pos,
           po::variables_map* vm, const char* usage) {
  return cli::parse_options(argc, argv, opts, pos, usage, vm);
}

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

std::string human_count(uint64_t n) {
  char buf[32];
  if (n >= 1000000000ull) std::snprintf(buf, sizeof buf, "%.2f B", static_cast<double>(n) / 1e9);
  else if (n >= 1000000ull) std::snprintf(buf, sizeof buf, "%.2f M", static_cast<double>(n) / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1f K", static_cast<double>(n) / 1e3);
  return buf;
}

void print_write_stats(const WriteStats& st, const std::string& out) {
  const double secs = std::max(st.seconds, 1e-9);
  std::printf("wrote %s: %zu files, %s stored, %s parameters in %.2f s (%.1f M parameters/s, %.1f MB/s written)\n",
              out.c_str(), st.files.size(), human_bytes(st.bytes_written).c_str(), human_count(st.params).c_str(),
              st.seconds, static_cast<double>(st.params) / 1e6 / secs, static_cast<double>(st.bytes_written) / 1e6 / secs);
}

int cmd_convert(int argc, char** argv) {
  po::options_description o("convert options");
  std::string in, out, dtype_s, shadow_s;
  int shards = 1;
  o.add_options()("hf-dir", po::value(&in)->required(), "Hugging Face checkpoint directory")(
      "out-dir", po::value(&out)->required(), "output model directory")(
      "dtype", po::value(&dtype_s), "weight dtype: f32|bf16|f16|int8|int4 (default: the checkpoint's)")(
      "shards", po::value(&shards)->default_value(1), "number of expert shard files")(
      "shadow", po::value(&shadow_s)->default_value("none"), "also write shadow.h5 in int8|int4|f16, or none")(
      "overwrite", po::bool_switch(), "replace a model already in OUT_DIR")(
      "no-progress", po::bool_switch(), "never draw a progress bar");
  po::positional_options_description pos;
  pos.add("hf-dir", 1).add("out-dir", 1);
  po::variables_map vm;
  if (!parse(argc, argv, o, pos, &vm, "usage: odmoe-weights convert HF_DIR OUT_DIR [options]")) return 0;

  HfCheckpoint ckpt(in);
  WriteOptions w;
  if (!dtype_s.empty()) {
    w.dtype = dtype_option(dtype_s, "--dtype");
  } else {
    const std::string& sd = ckpt.config().source_dtype;
    w.dtype = sd == "float32" ? DType::kF32 : sd == "float16" ? DType::kF16 : DType::kBF16;
  }
  if (shadow_s != "none") {
    w.shadow_dtype = dtype_option(shadow_s, "--shadow");
    if (*w.shadow_dtype != DType::kInt8 && *w.shadow_dtype != DType::kInt4 && *w.shadow_dtype != DType::kF16)
      throw UsageError("--shadow must be int8, int4, f16 or none");
  }
  w.n_shard = shards;
  w.overwrite = vm["overwrite"].as<bool>();
  w.progress = stdout_is_terminal() && !vm["no-progress"].as<bool>();
  std::printf("converting %s (%s, %s of safetensors) to %s in %s, %d expert shard(s)%s%s\n", in.c_str(),
              arch_hf_name(ckpt.config().arch), human_bytes(ckpt.total_bytes()).c_str(), out.c_str(),
              dtype_name(w.dtype), w.n_shard, w.shadow_dtype ? ", shadow " : "",
              w.shadow_dtype ? dtype_name(*w.shadow_dtype) : "");
  ModelSource src{ckpt.config(), ckpt.config_json(), ckpt.tokenizer_json(), ckpt.tokenizer_config_json(),
                  ckpt.generation_config_json(),
                  [&ckpt](const layout::TensorSpec& s, std::vector<float>* v) { ckpt.read(s, v); }};
  // Held-out prompts beside the checkpoint become the model's default --prompts.
  if (std::ifstream pf(in + "/heldout-prompts.jsonl", std::ios::binary); pf) {
    std::ostringstream text;
    text << pf.rdbuf();
    src.prompts_jsonl = text.str();
  }
  print_write_stats(write_model_dir(src, out, w), out);
  return 0;
}

int cmd_synth(int argc, char** argv) {
  po::options_description o("synth options");
  std::string arch, out, dtype_s;
  int layers = 0, shards = 1;
  uint64_t seed = 1234;
  std::string arch_help = "built-in model (";
  for (const auto& n : synth_arch_names()) arch_help += n + " ";
  arch_help += ") or a Hugging Face config.json";
  o.add_options()("arch", po::value(&arch)->required(), arch_help.c_str())(
      "out-dir", po::value(&out)->required(), "output model directory")(
      "layers", po::value(&layers)->default_value(0), "keep only the first N layers (0: all)")(
      "dtype", po::value(&dtype_s)->default_value("bf16"), "weight dtype: f32|bf16|f16|int8|int4")(
      "shards", po::value(&shards)->default_value(1), "number of expert shard files")(
      "seed", po::value(&seed)->default_value(1234), "random seed")(
      "overwrite", po::bool_switch(), "replace a model already in OUT_DIR")(
      "no-progress", po::bool_switch(), "never draw a progress bar");
  po::positional_options_description pos;
  pos.add("out-dir", 1);
  po::variables_map vm;
  if (!parse(argc, argv, o, pos, &vm, "usage: odmoe-weights synth --arch NAME|CONFIG.json [--layers N] OUT_DIR"))
    return 0;
  if (layers < 0) throw UsageError("--layers must be >= 0");
  std::string cfg_json;
  if (auto builtin = synth_arch_config_json(arch)) {
    cfg_json = *builtin;
  } else {
    ODMOE_CHECK(fs::exists(arch), kCli, "bad-arch", "--arch '" << arch << "' is neither a built-in model nor a file",
                "use one of: mixtral-8x7b, qwen3-30b-a3b, olmoe-1b-7b, or a path to a config.json");
    std::ifstream f(arch);
    std::stringstream ss;
    ss << f.rdbuf();
    cfg_json = ss.str();
  }
  WriteOptions w;
  w.dtype = dtype_option(dtype_s, "--dtype");
  w.n_shard = shards;
  w.overwrite = vm["overwrite"].as<bool>();
  w.progress = stdout_is_terminal() && !vm["no-progress"].as<bool>();
  w.progress_label = "synth";
  const ModelSource src = synth_source(cfg_json, layers, seed);
  std::printf("synthesising %s (%s) in %s\n", arch.c_str(), src.config.to_string().c_str(), dtype_name(w.dtype));
  print_write_stats(write_model_dir(src, out, w), out);
  return 0;
}

int cmd_validate(int argc, char** argv) {
  po::options_description o("validate options");
  std::string dir;
  o.add_options()("model-dir", po::value(&dir)->required(), "model directory")(
      "no-checksums", po::bool_switch(), "skip reading the data (structure only)");
  po::positional_options_description pos;
  pos.add("model-dir", 1);
  po::variables_map vm;
  if (!parse(argc, argv, o, pos, &vm, "usage: odmoe-weights validate MODEL_DIR")) return 0;
  ValidateOptions v;
  v.checksums = !vm["no-checksums"].as<bool>();
  const auto problems = validate_model_dir(dir, v);
  if (problems.empty()) {
    std::printf("%s: valid (format version %d%s)\n", dir.c_str(), layout::kFormatVersion,
                v.checksums ? ", all checksums match" : ", checksums not read");
    return 0;
  }
  std::fprintf(stderr, "%s: INVALID, %zu problem(s):\n", dir.c_str(), problems.size());
  for (const auto& p : problems) std::fprintf(stderr, "  - %s\n", p.c_str());
  std::fprintf(stderr, "HINT: re-run `odmoe-weights convert` into a fresh directory\n");
  return 1;
}

int cmd_inspect(int argc, char** argv) {
  po::options_description o("inspect options");
  std::string dir;
  o.add_options()("model-dir", po::value(&dir)->required(), "model directory")(
      "tensors", po::bool_switch(), "list every dense tensor and expert 0 of layer 0 with its offset");
  po::positional_options_description pos;
  pos.add("model-dir", 1);
  po::variables_map vm;
  if (!parse(argc, argv, o, pos, &vm, "usage: odmoe-weights inspect MODEL_DIR [--tensors]")) return 0;
  ModelFiles mf(dir);
  const ModelConfig& c = mf.config();
  std::printf("model      %s\n", dir.c_str());
  std::printf("format     version %d, model_uid %016llx\n", layout::kFormatVersion,
              static_cast<unsigned long long>(mf.header().model_uid));
  std::printf("arch       %s\n", arch_hf_name(c.arch));
  std::printf("config     %s\n", c.to_string().c_str());
  std::printf("params     %s total, %s active per token\n", human_count(c.total_params()).c_str(),
              human_count(c.active_params()).c_str());
  std::printf("dtype      %s (norms, biases, routers: f32)\n", dtype_name(mf.header().weight_dtype));
  std::printf("tokenizer  tokenizer.json, %zu bytes\n", mf.tokenizer_json().size());
  std::printf("files\n");
  std::printf("  %-28s %12s\n", layout::kModelFile, human_bytes(file_size(mf.model_path())).c_str());
  uint64_t expert_bytes = 0;
  for (int i = 0; i < mf.n_shard(); ++i) {
    const uint64_t b = fs::exists(mf.shard_path(i)) ? file_size(mf.shard_path(i)) : 0;
    expert_bytes += b;
    std::printf("  %-28s %12s\n", layout::expert_shard_file(i, mf.n_shard()).c_str(),
                b ? human_bytes(b).c_str() : "MISSING");
  }
  if (mf.has_shadow())
    std::printf("  %-28s %12s  (%s)\n", layout::kShadowFile, human_bytes(file_size(mf.shadow_path())).c_str(),
                dtype_name(read_file_header(mf.shadow_file(), mf.shadow_path()).weight_dtype));
  const ExpertExtent x = mf.expert_extent(0, 0);
  std::printf("experts    %d layers x %d experts, top-%d; one expert = %s in one byte range (4096-aligned)\n",
              c.n_layer, c.n_expert, c.n_expert_used, human_bytes(x.bytes).c_str());
  std::printf("           all experts %s; per token %s of expert weights (top-%d x %d layers)\n",
              human_bytes(expert_bytes).c_str(),
              human_bytes(x.bytes * static_cast<uint64_t>(c.n_expert_used) * c.n_layer).c_str(), c.n_expert_used,
              c.n_layer);
  if (vm["tensors"].as<bool>()) {
    std::printf("dense tensors (model.h5)\n");
    for (const auto& s : layout::dense_tensor_specs(c)) {
      std::string shape;
      for (size_t d : s.shape) shape += (shape.empty() ? "" : " x ") + std::to_string(d);
      std::printf("  %-36s %-14s %s\n", s.path.c_str(), shape.c_str(),
                  dtype_name(layout::stored_dtype(s, mf.header().weight_dtype)));
    }
    std::printf("expert (0, 0) in %s: range [%llu, +%llu)\n",
                layout::expert_shard_file(x.shard_idx, mf.n_shard()).c_str(),
                static_cast<unsigned long long>(x.offset), static_cast<unsigned long long>(x.bytes));
    const char* names[3] = {"gate", "up", "down"};
    for (int t = 0; t < 3; ++t)
      std::printf("  %-5s offset %-12llu %llu bytes%s\n", names[t], static_cast<unsigned long long>(x.data[t].offset),
                  static_cast<unsigned long long>(x.data[t].bytes), x.scales[t].bytes ? " + scales" : "");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::dispatch("odmoe-weights", argc, argv,
                       {{"convert", cmd_convert}, {"synth", cmd_synth}, {"validate", cmd_validate}, {"inspect", cmd_inspect}},
                       kUsage);
}
