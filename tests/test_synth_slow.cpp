// `synth` at the real Mixtral-8x7B shapes. Writes ~0.8 GB, so it has the label `slow`.
#include <gtest/gtest.h>

#include "odmoe/weights/model_files.h"
#include "test_util.h"

namespace odmoe {
namespace {

const std::string kBin = ODMOE_WEIGHTS_BIN;

// The real Mixtral-8x7B shapes: 14336 x 4096 experts. Writes ~0.8 GB (int4), so labelled slow.
TEST(WeightsCliSlow, SynthMixtral8x7bOneLayer) {
  test::TempDir tmp;
  auto r = test::run_command(kBin + " synth --arch mixtral-8x7b --layers 1 --dtype int4 " + tmp.str("mx"));
  ASSERT_EQ(r.status, 0) << r.output;
  r = test::run_command(kBin + " inspect --tensors " + tmp.str("mx"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("layers=1 embd=4096 heads=32/8 head_dim=128 experts=8 top2 ff=14336"), std::string::npos)
      << r.output;
  ModelFiles mf(tmp.str("mx"));
  const auto specs = layout::expert_tensor_specs(mf.config(), 0, 7);
  EXPECT_EQ(mf.read_tensor(specs[0]).rows, 14336u);
  EXPECT_EQ(mf.read_tensor(specs[0]).cols, 4096u);
  EXPECT_EQ(mf.read_tensor(specs[2]).rows, 4096u);
  EXPECT_EQ(mf.read_tensor(specs[2]).cols, 14336u);
  EXPECT_EQ(test::run_command(kBin + " validate " + tmp.str("mx")).status, 0);
}

}  // namespace
}  // namespace odmoe
