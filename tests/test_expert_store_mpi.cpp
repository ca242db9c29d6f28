// The RMA expert store, run under `mpirun -np 4`: every rank pulls every expert of
// value-encoded (int4, int8) and bf16 shards, with many gets in flight at once, from its own
// window and from other ranks', and each pulled byte range must equal the file's bytes and
// match the datasets' checksums. All ranks run the same tests in the same order (the store
// is collective); a failure on any rank fails the job.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>

#include "odmoe/comm/comm.h"
#include "odmoe/store/expert_store.h"
#include "odmoe/weights/model_files.h"
#include "odmoe/weights/model_writer.h"

namespace odmoe {
namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// A small Mixtral-shaped model, written by rank 0 into a directory every rank sees.
std::string model_dir(const std::string& dtype) {
  static std::string base;
  if (base.empty()) {
    char buf[256] = {};
    if (world_rank() == 0) {
      const auto p = std::filesystem::temp_directory_path() / ("odmoe-store-test-" + std::to_string(getpid()));
      std::snprintf(buf, sizeof buf, "%s", p.c_str());
    }
    MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
    base = buf;
  }
  const std::string dir = base + "/" + dtype;
  if (world_rank() == 0 && !std::filesystem::exists(dir)) {
    const std::string cfg = R"({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 300,
      "hidden_size": 96, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
      "num_key_value_heads": 2, "num_local_experts": 6, "num_experts_per_tok": 2, "max_position_embeddings": 64,
      "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false})";
    WriteOptions wo;
    wo.dtype = *parse_dtype(dtype);
    wo.n_shard = 3;
    write_model_dir(synth_source(cfg, 0, 7), dir, wo);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

struct StoreCase {
  const char* dtype;
  StorePlacement placement;
  int replicas;
  bool every_worker;
  uint64_t max_get;
};

class StorePulls : public ::testing::TestWithParam<StoreCase> {};

TEST_P(StorePulls, AreBitExactWithManyGetsInFlight) {
  const StoreCase& c = GetParam();
  const std::string dir = model_dir(c.dtype);
  Comm comm(30.0);
  ModelFiles files(dir);
  StoreOptions so;
  so.placement = c.placement;
  so.replicas = c.replicas;
  so.every_worker_stores = c.every_worker;
  so.max_get_bytes = c.max_get;
  ExpertStore store(comm, files, so);
  const ModelConfig& cfg = files.config();
  const int m = static_cast<int>(store.store_ranks().size());
  EXPECT_EQ(m, c.every_worker ? comm.size() - 1 : 1);

  // Post every expert's gets before waiting for any.
  struct Pull {
    int l, e;
    std::unique_ptr<uint8_t[]> buf;
    std::vector<MPI_Request> reqs;
  };
  std::vector<Pull> pulls;
  int from_self = 0, from_others = 0;
  for (int l = 0; l < cfg.n_layer; ++l)
    for (int e = 0; e < cfg.n_expert; ++e) {
      const ExpertEntry& en = store.entry(l, e);
      const size_t want_holders = c.placement == StorePlacement::kReplicated ? static_cast<size_t>(m)
                                                                             : static_cast<size_t>(std::min(c.replicas, m));
      EXPECT_EQ(en.holders.size(), want_holders);
      Pull p{l, e, std::make_unique<uint8_t[]>(en.rec.bytes), {}};
      std::memset(p.buf.get(), 0xA5, en.rec.bytes);
      store.post_get(l, e, p.buf.get(), &p.reqs);
      EXPECT_EQ(p.reqs.size(), (en.rec.bytes + c.max_get - 1) / c.max_get);
      (store.source_of(l, e) == comm.rank() ? from_self : from_others) += 1;
      pulls.push_back(std::move(p));
    }
  size_t in_flight = 0;
  for (const Pull& p : pulls) in_flight += p.reqs.size();
  EXPECT_GE(in_flight, 18u);
  for (Pull& p : pulls)
    for (MPI_Request& r : p.reqs) comm.wait(&r, store.source_of(p.l, p.e), "a test pull");

  for (const Pull& p : pulls) {
    const ExpertRecord& rec = store.entry(p.l, p.e).rec;
    EXPECT_EQ(store.verify(p.l, p.e, p.buf.get()), "");
    // The very bytes of the shard file.
    std::vector<uint8_t> file(rec.bytes);
    const int fd = ::open(files.shard_path(rec.shard).c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pread(fd, file.data(), rec.bytes, static_cast<off_t>(rec.offset)), static_cast<ssize_t>(rec.bytes));
    ::close(fd);
    ASSERT_EQ(std::memcmp(file.data(), p.buf.get(), rec.bytes), 0) << "expert (" << p.l << ", " << p.e << ")";
  }
  // Pulls crossed ranks where the placement spreads the store.
  int counts[2] = {from_self, from_others}, all[2] = {0, 0};
  MPI_Allreduce(counts, all, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_GT(all[1], 0);
  if (c.every_worker) {
    EXPECT_GT(all[0], 0);
  }
  // Corruption is noticed.
  pulls[0].buf[store.entry(pulls[0].l, pulls[0].e).rec.rel[1]] ^= 1;
  EXPECT_NE(store.verify(pulls[0].l, pulls[0].e, pulls[0].buf.get()).find("up"), std::string::npos);
  store.close();
}

INSTANTIATE_TEST_SUITE_P(
    Placements, StorePulls,
    ::testing::Values(StoreCase{"int4", StorePlacement::kReplicated, 1, false, uint64_t{1} << 26},
                      StoreCase{"int4", StorePlacement::kSharded, 1, true, 4096},
                      StoreCase{"int8", StorePlacement::kSharded, 2, true, 8192},
                      StoreCase{"int8", StorePlacement::kReplicated, 1, true, uint64_t{1} << 26},
                      StoreCase{"bf16", StorePlacement::kSharded, 1, true, 12288}));

}  // namespace
}  // namespace odmoe

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {  // one rank prints the progress; every rank's failures still print
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) {
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::temp_directory_path() / ("odmoe-store-test-" + std::to_string(getpid())), ec);
  }
  MPI_Finalize();
  return worst;
}
