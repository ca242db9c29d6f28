// The expert store: expert shards memory-mapped on their holder ranks and exposed through
// MPI RMA windows (one per shard file), plus a directory (expert -> holder ranks, byte
// range, dtype, per-tensor offsets and checksums) built with one allgather. Expert ranks
// pull an expert with passive-target MPI_Rget inside one lock_all epoch that lasts the
// whole run.
//
// Holders: on every node the lowest-ranked expert rank is that node's store rank (or, with
// every_worker_stores, every expert rank is a store rank).
//  * replicated: every store rank maps every shard, so pulls stay on the node;
//  * sharded --replicas r: shard i is mapped by store ranks i, i+1, .., i+r-1 (mod the
//    number of store ranks), so a model larger than one node's memory still runs and pulls
//    cross the network. A puller prefers a holder on its own node.
// Across nodes a get over UCX only advances when the target calls into MPI, so store ranks
// run a progress thread while the job spans more than one node.
#pragma once

#include <mpi.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "odmoe/comm/comm.h"
#include "odmoe/weights/model_files.h"

namespace odmoe {

enum class StorePlacement { kReplicated, kSharded };
StorePlacement parse_store_placement(const std::string& s);  // throws ArgumentError
const char* store_placement_name(StorePlacement p);

struct StoreOptions {
  StorePlacement placement = StorePlacement::kReplicated;
  int replicas = 1;              // sharded only
  int progress_thread = -1;      // -1: when the job spans several nodes; 0: never; 1: always
  int progress_poll_us = 50;     // sleep between the progress thread's polls
  bool every_worker_stores = false;  // every expert rank is a store rank, not one per node
  int n_workers = 0;                 // expert ranks are 1..n_workers (0: every rank but main)
  uint64_t max_get_bytes = uint64_t{1} << 26;  // one MPI_Rget moves at most this much
};

// Where one expert lies: the same on every holder (they map the same file).
struct ExpertRecord {
  int32_t layer = -1, expert = -1, shard = -1, dtype = 0;
  uint64_t offset = 0, bytes = 0;  // byte range in the shard file
  uint64_t rel[6] = {}, len[6] = {};  // gate, up, down data, then their scales: offset from `offset`, bytes
  uint32_t crc[6] = {};               // crc32c of each part (the datasets' checksum attributes)
};

struct ExpertEntry {
  ExpertRecord rec;
  std::vector<int> holders;  // ranks, ascending
};

class ExpertStore {
 public:
  // Collective over every rank of `comm`. `files` must be open on every rank (model.h5 at
  // least); only holders read their shards.
  ExpertStore(const Comm& comm, const ModelFiles& files, const StoreOptions& opts);
  // Frees the windows (collective) when close() was not called: only on the error path,
  // where the process is brought down anyway, so it only stops the progress thread.
  ~ExpertStore();
  ExpertStore(const ExpertStore&) = delete;
  ExpertStore& operator=(const ExpertStore&) = delete;

  // Collective: ends the epochs, frees the windows, stops the progress thread.
  void close();

  const ExpertEntry& entry(int layer, int expert) const;
  uint64_t max_expert_bytes() const { return max_bytes_; }
  uint64_t bytes_held() const { return bytes_held_; }  // mapped by this rank
  bool is_holder() const { return bytes_held_ > 0; }
  bool progress_thread_running() const { return progress_.joinable(); }
  const std::vector<int>& store_ranks() const { return store_ranks_; }

  // The holder to pull (layer, expert) from for a rank on `node` (-1: this rank's node):
  // one on that node if any, else one chosen by rank so pullers spread over the replicas.
  int source_of(int layer, int expert, int node) const;
  // This rank's own mapped copy of (layer, expert) (rec.bytes from the record's offset), or
  // null when this rank does not hold it.
  const uint8_t* local_data(int layer, int expert) const;
  // The holder this rank pulls (layer, expert) from: one on its own node if any, else one
  // chosen by rank so pullers spread over the replicas.
  int source_of(int layer, int expert) const;
  // Posts the gets of expert (layer, expert) into `dst` (at least rec.bytes, any alignment
  // the dtype needs); appends requests to `reqs`. Large experts go as several gets.
  void post_get(int layer, int expert, void* dst, std::vector<MPI_Request>* reqs) const;
  // Checks a pulled expert against the directory's checksums; returns a description of
  // the first mismatch, or "" when every part matches.
  std::string verify(int layer, int expert, const void* data) const;
  // The shard file an expert is stored in (its base name).
  std::string shard_name(int layer, int expert) const;

  // Whether the shard files this rank maps are still the ones it mapped, checked at most
  // once per `period_s` (0: now). A file changed in place (size or modification time) throws an
  // Error naming it: the mapping now serves other bytes, or would fault where it shrank. A
  // file deleted or replaced by another (a re-conversion renames new files into place) is
  // reported once on stderr and the job goes on with the copy it mapped.
  void check_files(double period_s = 1.0);

 private:
  const Comm& comm_;
  int n_layer_, n_expert_;
  std::vector<ExpertEntry> dir_;  // [layer * n_expert + expert]
  std::vector<int> store_ranks_;
  uint64_t max_get_bytes_;
  std::vector<void*> maps_;       // per shard: this rank's mapping, or null
  struct Identity {
    int fd = -1;  // kept open: fstat shows changes to the mapped file itself
    uint64_t dev = 0, ino = 0, size = 0;
    int64_t mtime_ns = 0;
    bool reported_gone = false;
  };
  std::vector<std::string> shard_paths_;
  std::vector<Identity> ids_;     // per shard: the mapped file as it was at start-up
  double next_check_s_ = 0;
  std::vector<size_t> map_bytes_;
  std::vector<MPI_Win> wins_;     // per shard
  uint64_t max_bytes_ = 0, bytes_held_ = 0;
  bool closed_ = false;
  std::atomic<bool> stop_{false};
  std::thread progress_;
  MPI_Comm progress_comm_ = MPI_COMM_NULL;
};

}  // namespace odmoe
