// Converting a test checkpoint (tests/data/hf/<name>) into a model directory, in-process.
#pragma once

#include <optional>
#include <string>

#include "odmoe/weights/hf_checkpoint.h"
#include "odmoe/weights/model_writer.h"
#include "test_util.h"

namespace odmoe::test {

inline void convert_fixture(const std::string& fixture, const std::string& out, DType dtype, int shards = 1,
                            std::optional<DType> shadow = std::nullopt) {
  HfCheckpoint ckpt(data_dir() + "/hf/" + fixture);
  WriteOptions w;
  w.dtype = dtype;
  w.n_shard = shards;
  w.shadow_dtype = shadow;
  ModelSource src{ckpt.config(), ckpt.config_json(), ckpt.tokenizer_json(), ckpt.tokenizer_config_json(),
                  ckpt.generation_config_json(),
                  [&ckpt](const layout::TensorSpec& s, std::vector<float>* v) { ckpt.read(s, v); }};
  write_model_dir(src, out, w);
}

}  // namespace odmoe::test
