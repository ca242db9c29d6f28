#include "odmoe/store/expert_store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "odmoe/core/checksum.h"
#include "odmoe/core/error.h"
#include "odmoe/weights/h5_file.h"

namespace odmoe {

namespace {
// Maps a whole file private and writable (copy-on-write, never written) so every RMA
// transport can register it, and reads it in now: pulls then measure RMA, not the disk.
void* map_file(const std::string& path, size_t* bytes, int* fd_out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ODMOE_CHECK(fd >= 0, kIo, "open", "cannot open expert shard " << path << ": " << std::strerror(errno),
              "every node that holds a shard needs the model directory (check --model and --placement)");
  const off_t size = ::lseek(fd, 0, SEEK_END);
  void* p = size > 0 ? ::mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_POPULATE, fd, 0)
                     : MAP_FAILED;
  const int err = errno;
  if (p == MAP_FAILED) ::close(fd);
  ODMOE_CHECK(p != MAP_FAILED, kIo, "mmap", "cannot map expert shard " << path << " (" << size << " bytes): " << std::strerror(err),
              "the node may lack memory for this placement; try --placement sharded");
  *bytes = static_cast<size_t>(size);
  *fd_out = fd;
  return p;
}

int64_t mtime_ns(const struct stat& st) { return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec; }

// SIGBUS: a mapped file shrank under a running job (truncated or rewritten in place), and a
// read of its mapping -- this rank's, or another rank's through shared memory -- faulted.
// The handler names the shard files whose size is no longer what it was at start-up, then
// hands the signal to the handler before it (MPI's, which prints a backtrace, or the
// default), so the rank still dies of it and the launcher brings the job down.
struct BusWatch {
  static constexpr int kMax = 256;
  char who[128] = {};  // "rank 2 on node-a"
  char path[kMax][512] = {};
  uint64_t size[kMax] = {};
  volatile sig_atomic_t n = 0;
  struct sigaction previous {};
};
BusWatch g_bus;
std::mutex g_bus_mu;

void put(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

void put_u64(uint64_t v) {
  char buf[24];
  int i = sizeof buf - 1;
  buf[i] = 0;
  do {
    buf[--i] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v && i > 0);
  put(buf + i);
}

void on_sigbus(int, siginfo_t*, void*) {
  put("odmoe: error [io/file-changed] ");
  put(g_bus.who);
  put(": bus error (SIGBUS) reading a mapped file: an expert shard was truncated or rewritten while the job ran\n");
  bool named = false;
  for (int i = 0; i < g_bus.n; ++i) {
    struct stat st {};
    const bool gone = ::stat(g_bus.path[i], &st) != 0;
    if (!gone && static_cast<uint64_t>(st.st_size) == g_bus.size[i]) continue;
    put("  ");
    put(g_bus.path[i]);
    if (gone) {
      put(" is gone");
    } else {
      put(" is now ");
      put_u64(static_cast<uint64_t>(st.st_size));
      put(" bytes");
    }
    put(", was ");
    put_u64(g_bus.size[i]);
    put(" bytes at start-up\n");
    named = true;
  }
  if (!named) put("  (every shard file has its start-up size again: it was rewritten)\n");
  put("  hint: a model must not be rewritten in place while a job uses it; odmoe-weights convert --overwrite "
      "replaces files whole, which running jobs survive\n");
  // Hand over to the previous disposition; the faulting read repeats and it acts.
  sigaction(SIGBUS, &g_bus.previous, nullptr);
  if (!(g_bus.previous.sa_flags & SA_SIGINFO) && g_bus.previous.sa_handler == SIG_IGN) signal(SIGBUS, SIG_DFL);
}

void watch_for_sigbus(const Comm& comm, const ModelFiles& files) {
  std::lock_guard<std::mutex> g(g_bus_mu);
  g_bus.n = 0;
  std::snprintf(g_bus.who, sizeof g_bus.who, "%s", comm.where(comm.rank()).c_str());
  int n = 0;
  for (int s = 0; s < files.n_shard() && n < BusWatch::kMax; ++s) {
    const std::string p = files.shard_path(s);
    struct stat st {};
    if (p.size() >= sizeof g_bus.path[0] || ::stat(p.c_str(), &st) != 0) continue;
    std::memcpy(g_bus.path[n], p.c_str(), p.size() + 1);
    g_bus.size[n] = static_cast<uint64_t>(st.st_size);
    ++n;
  }
  g_bus.n = n;
  struct sigaction current {};
  sigaction(SIGBUS, nullptr, &current);
  const bool ours = (current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_sigbus;
  if (ours) return;
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &g_bus.previous);
}

uint32_t crc_attr(hid_t file, const std::string& path) {
  h5::Handle d = h5::open_dataset(file, path);
  const auto v = h5::get_attr_int(d.get(), layout::kAttrChecksum);
  ODMOE_CHECK(v.has_value(), kHdf5, "no-checksum", path << " has no checksum attribute", "re-convert the model");
  return static_cast<uint32_t>(*v);
}
}  // namespace

StorePlacement parse_store_placement(const std::string& s) {
  if (s == "replicated") return StorePlacement::kReplicated;
  if (s == "sharded") return StorePlacement::kSharded;
  throw ArgumentError("--placement must be replicated or sharded, not '" + s + "'");
}

const char* store_placement_name(StorePlacement p) {
  return p == StorePlacement::kReplicated ? "replicated" : "sharded";
}

ExpertStore::ExpertStore(const Comm& comm, const ModelFiles& files, const StoreOptions& opts)
    : comm_(comm), n_layer_(files.config().n_layer), n_expert_(files.config().n_expert),
      max_get_bytes_(std::max<uint64_t>(opts.max_get_bytes, 1)) {
  const int n_shard = files.n_shard();
  // Store ranks: the lowest expert rank of every node.
  std::vector<int> seen_node;
  const int last_worker = opts.n_workers > 0 ? std::min(opts.n_workers, comm.size() - 1) : comm.size() - 1;
  for (int r = 1; r <= last_worker; ++r)
    if (opts.every_worker_stores || std::find(seen_node.begin(), seen_node.end(), comm.node_of(r)) == seen_node.end()) {
      seen_node.push_back(comm.node_of(r));
      store_ranks_.push_back(r);
    }
  ODMOE_CHECK(!store_ranks_.empty(), kMpi, "no-workers", "the job has no expert ranks", "launch with mpirun -np 2 or more");
  const int m = static_cast<int>(store_ranks_.size());
  ODMOE_CHECK(opts.replicas >= 1, kCli, "bad-option", "--replicas must be at least 1", "");
  const int r = opts.placement == StorePlacement::kReplicated ? m : std::min(opts.replicas, m);
  auto holds = [&](int rank, int shard) {
    const auto it = std::find(store_ranks_.begin(), store_ranks_.end(), rank);
    if (it == store_ranks_.end()) return false;
    const int idx = static_cast<int>(it - store_ranks_.begin());
    return ((idx - shard) % m + m) % m < r;
  };

  // Map the shards this rank holds and describe their experts.
  maps_.assign(static_cast<size_t>(n_shard), nullptr);
  map_bytes_.assign(static_cast<size_t>(n_shard), 0);
  ids_.assign(static_cast<size_t>(n_shard), Identity{});
  for (int s = 0; s < n_shard; ++s) shard_paths_.push_back(files.shard_path(s));
  watch_for_sigbus(comm, files);
  std::vector<ExpertRecord> mine;
  std::string local_error;
  try {
    for (int s = 0; s < n_shard; ++s) {
      if (!holds(comm.rank(), s)) continue;
      Identity& id = ids_[static_cast<size_t>(s)];
      maps_[static_cast<size_t>(s)] = map_file(files.shard_path(s), &map_bytes_[static_cast<size_t>(s)], &id.fd);
      bytes_held_ += map_bytes_[static_cast<size_t>(s)];
      struct stat st {};
      ODMOE_CHECK(::fstat(id.fd, &st) == 0, kIo, "stat", "cannot stat " << files.shard_path(s) << ": " << std::strerror(errno), "");
      id.dev = st.st_dev;
      id.ino = st.st_ino;
      id.size = static_cast<uint64_t>(st.st_size);
      id.mtime_ns = mtime_ns(st);
    }
    const ModelConfig& c = files.config();
    for (int l = 0; l < c.n_layer; ++l)
      for (int e = 0; e < c.n_expert; ++e) {
        const int s = layout::expert_shard_of(c, l, e, n_shard);
        if (!maps_[static_cast<size_t>(s)]) continue;
        const ExpertExtent x = files.expert_extent(l, e);
        ODMOE_CHECK(x.offset + x.bytes <= map_bytes_[static_cast<size_t>(s)], kIo, "truncated",
                    files.shard_path(s) << " ends before expert (" << l << ", " << e << ")",
                    "run odmoe-weights validate on the model");
        ExpertRecord rec;
        rec.layer = l;
        rec.expert = e;
        rec.shard = s;
        rec.dtype = static_cast<int32_t>(x.dtype);
        rec.offset = x.offset;
        rec.bytes = x.bytes;
        const auto specs = layout::expert_tensor_specs(c, l, e);
        for (int t = 0; t < 3; ++t) {
          rec.rel[t] = x.data[t].offset - x.offset;
          rec.len[t] = x.data[t].bytes;
          rec.crc[t] = crc_attr(files.shard_file(s), specs[static_cast<size_t>(t)].path);
          if (x.scales[t].bytes) {
            rec.rel[3 + t] = x.scales[t].offset - x.offset;
            rec.len[3 + t] = x.scales[t].bytes;
            rec.crc[3 + t] = crc_attr(files.shard_file(s), specs[static_cast<size_t>(t)].scale_path());
          }
        }
        mine.push_back(rec);
      }
  } catch (const Error& e) {
    local_error = e.to_string();
  }
  // Every rank learns whether any failed, so none waits on a window that will never exist.
  int failed = local_error.empty() ? 0 : 1;
  std::vector<int> all_failed(static_cast<size_t>(comm.size()));
  comm.allgather(&failed, sizeof(int), all_failed.data(), "every rank to open its expert shards");
  for (int q = 0; q < comm.size(); ++q)
    if (all_failed[static_cast<size_t>(q)]) {
      if (q == comm.rank()) ODMOE_THROW(kMpi, "store", local_error, "");
      ODMOE_THROW(kMpi, "store", comm.where(q) << " could not open its part of the expert store (its error is printed above)",
                  "");
    }

  // The directory: one allgather of every holder's records.
  std::vector<char> all;
  comm.allgatherv(mine.data(), static_cast<int>(mine.size() * sizeof(ExpertRecord)), &all,
                  "the expert directory from every store rank");
  dir_.resize(static_cast<size_t>(n_layer_) * static_cast<size_t>(n_expert_));
  {
    // allgatherv concatenates in rank order; recover the owner of each record from the counts.
    std::vector<int> counts(static_cast<size_t>(comm.size()));
    const int mine_n = static_cast<int>(mine.size());
    comm.allgather(&mine_n, sizeof(int), counts.data(), "the expert directory sizes");
    size_t at = 0;
    for (int q = 0; q < comm.size(); ++q)
      for (int i = 0; i < counts[static_cast<size_t>(q)]; ++i, ++at) {
        ExpertRecord rec;
        std::memcpy(&rec, all.data() + at * sizeof(ExpertRecord), sizeof(ExpertRecord));
        ExpertEntry& en = dir_[static_cast<size_t>(rec.layer * n_expert_ + rec.expert)];
        if (en.holders.empty()) en.rec = rec;
        ODMOE_CHECK(en.rec.offset == rec.offset && en.rec.bytes == rec.bytes && en.rec.crc[0] == rec.crc[0], kMpi,
                    "directory", "holders disagree about expert (" << rec.layer << ", " << rec.expert << "): "
                                 << comm.where(q) << " has a different shard file",
                    "every node must hold the same converted model");
        en.holders.push_back(q);
        max_bytes_ = std::max(max_bytes_, rec.bytes);
      }
  }
  for (int l = 0; l < n_layer_; ++l)
    for (int e = 0; e < n_expert_; ++e)
      ODMOE_CHECK(!dir_[static_cast<size_t>(l * n_expert_ + e)].holders.empty(), kMpi, "directory",
                  "no rank holds expert (" << l << ", " << e << ")", "");

  // One window per shard; holders expose their mapping, everyone else nothing.
  wins_.assign(static_cast<size_t>(n_shard), MPI_WIN_NULL);
  MPI_Info info;
  ODMOE_MPI_CHECK(MPI_Info_create(&info));
  ODMOE_MPI_CHECK(MPI_Info_set(info, "same_disp_unit", "true"));
  for (int s = 0; s < n_shard; ++s) {
    void* base = maps_[static_cast<size_t>(s)];
    const auto bytes = static_cast<MPI_Aint>(map_bytes_[static_cast<size_t>(s)]);
    ODMOE_MPI_CHECK(MPI_Win_create(base, bytes, 1, info, comm.comm(), &wins_[static_cast<size_t>(s)]));
    ODMOE_MPI_CHECK(MPI_Win_lock_all(MPI_MODE_NOCHECK, wins_[static_cast<size_t>(s)]));
  }
  ODMOE_MPI_CHECK(MPI_Info_free(&info));

  const bool want_progress = opts.progress_thread == 1 || (opts.progress_thread < 0 && comm.n_nodes() > 1);
  if (want_progress && is_holder()) {
    int provided = 0;
    ODMOE_MPI_CHECK(MPI_Query_thread(&provided));
    ODMOE_CHECK(provided == MPI_THREAD_MULTIPLE, kMpi, "threads",
                "the expert store's progress thread needs MPI_THREAD_MULTIPLE, which this MPI library did not provide",
                "use an MPI built with thread support, or run on one node");
    ODMOE_MPI_CHECK(MPI_Comm_dup(MPI_COMM_SELF, &progress_comm_));
    const int poll_us = std::max(1, opts.progress_poll_us);
    progress_ = std::thread([this, poll_us] {
      while (!stop_.load(std::memory_order_relaxed)) {
        int flag = 0;
        ODMOE_MPI_CHECK_NOTHROW(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, progress_comm_, &flag, MPI_STATUS_IGNORE));
        std::this_thread::sleep_for(std::chrono::microseconds(poll_us));
      }
    });
  }
}

ExpertStore::~ExpertStore() {
  stop_ = true;
  if (progress_.joinable()) progress_.join();
  for (Identity& id : ids_)
    if (id.fd >= 0) ::close(id.fd);
  if (!closed_) return;  // windows still registered: the process is being brought down
  for (size_t s = 0; s < maps_.size(); ++s)
    if (maps_[s]) ::munmap(maps_[s], map_bytes_[s]);
}

void ExpertStore::close() {
  if (closed_) return;
  stop_ = true;
  if (progress_.joinable()) progress_.join();
  if (progress_comm_ != MPI_COMM_NULL) ODMOE_MPI_CHECK_NOTHROW(MPI_Comm_free(&progress_comm_));
  comm_.barrier("the end of the run (expert store shutdown)");
  for (MPI_Win& w : wins_) {
    ODMOE_MPI_CHECK_NOTHROW(MPI_Win_unlock_all(w));
    ODMOE_MPI_CHECK_NOTHROW(MPI_Win_free(&w));
  }
  closed_ = true;
}

const ExpertEntry& ExpertStore::entry(int layer, int expert) const {
  ODMOE_CHECK(layer >= 0 && layer < n_layer_ && expert >= 0 && expert < n_expert_, kCore, "range",
              "expert (" << layer << ", " << expert << ") out of range", "");
  return dir_[static_cast<size_t>(layer * n_expert_ + expert)];
}

int ExpertStore::source_of(int layer, int expert) const { return source_of(layer, expert, -1); }

int ExpertStore::source_of(int layer, int expert, int node) const {
  const ExpertEntry& en = entry(layer, expert);
  if (node < 0) node = comm_.node_of(comm_.rank());
  for (int h : en.holders)
    if (comm_.node_of(h) == node) return h;
  return en.holders[static_cast<size_t>(comm_.rank()) % en.holders.size()];
}

const uint8_t* ExpertStore::local_data(int layer, int expert) const {
  const ExpertRecord& rec = entry(layer, expert).rec;
  const void* base = maps_[static_cast<size_t>(rec.shard)];
  return base ? static_cast<const uint8_t*>(base) + rec.offset : nullptr;
}

void ExpertStore::post_get(int layer, int expert, void* dst, std::vector<MPI_Request>* reqs) const {
  const ExpertEntry& en = entry(layer, expert);
  const int src = source_of(layer, expert);
  MPI_Win win = wins_[static_cast<size_t>(en.rec.shard)];
  auto* out = static_cast<uint8_t*>(dst);
  for (uint64_t done = 0; done < en.rec.bytes; done += max_get_bytes_) {
    const uint64_t n = std::min(max_get_bytes_, en.rec.bytes - done);
    MPI_Request req;
    ODMOE_MPI_CHECK(MPI_Rget(out + done, static_cast<int>(n), MPI_BYTE, src, static_cast<MPI_Aint>(en.rec.offset + done),
             static_cast<int>(n), MPI_BYTE, win, &req));
    reqs->push_back(req);
  }
}

std::string ExpertStore::shard_name(int layer, int expert) const {
  const std::string& p = shard_paths_[static_cast<size_t>(entry(layer, expert).rec.shard)];
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

void ExpertStore::check_files(double period_s) {
  const double now = now_s();
  if (period_s > 0 && now < next_check_s_) return;
  next_check_s_ = now + period_s;
  for (size_t s = 0; s < ids_.size(); ++s) {
    Identity& id = ids_[s];
    if (id.fd < 0) continue;
    struct stat st {};
    ODMOE_CHECK(::fstat(id.fd, &st) == 0, kIo, "stat", "cannot stat " << shard_paths_[s] << ": " << std::strerror(errno), "");
    ODMOE_CHECK(static_cast<uint64_t>(st.st_size) == id.size && mtime_ns(st) == id.mtime_ns, kIo, "file-changed",
                "expert shard " << shard_paths_[s] << " was changed after the job started (" << id.size << " -> " << st.st_size
                                << " bytes" << (mtime_ns(st) != id.mtime_ns ? ", modified" : "")
                                << "): the experts it serves are no longer the ones the job started with",
                "a model must not be rewritten in place while a job uses it; odmoe-weights convert --overwrite replaces "
                "files whole, which running jobs survive");
    struct stat now_st {};
    const bool present = ::stat(shard_paths_[s].c_str(), &now_st) == 0;
    if (!id.reported_gone && (!present || now_st.st_ino != id.ino || now_st.st_dev != id.dev)) {
      id.reported_gone = true;
      std::fprintf(stderr,
                   "odmoe: warning: %s: expert shard %s was %s after the job started; this job goes on serving the "
                   "copy it mapped\n",
                   comm_.where(comm_.rank()).c_str(), shard_paths_[s].c_str(), present ? "replaced" : "deleted");
    }
  }
}

std::string ExpertStore::verify(int layer, int expert, const void* data) const {
  static const char* kPart[6] = {"gate", "up", "down", "gate scales", "up scales", "down scales"};
  const ExpertRecord& rec = entry(layer, expert).rec;
  for (int t = 0; t < 6; ++t) {
    if (!rec.len[t]) continue;
    const uint32_t got = crc32c(0, static_cast<const uint8_t*>(data) + rec.rel[t], rec.len[t]);
    if (got != rec.crc[t])
      return std::string("expert (") + std::to_string(layer) + ", " + std::to_string(expert) + ") " + kPart[t] +
             ": crc32c " + std::to_string(got) + ", expected " + std::to_string(rec.crc[t]);
  }
  return "";
}

}  // namespace odmoe
