#include "odmoe/comm/comm.h"

#include <cstdio>
#include <cstdlib>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "odmoe/core/error.h"

namespace odmoe {

void mpi_failed(const char* call, int rc, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) std::snprintf(text, sizeof text, "error code %d", rc);
  detail::throw_error(Subsystem::kMpi, "call", std::string(call) + " failed: " + text, "", file, line);
}

void mpi_report(const char* call, int rc, const char* file, int line) noexcept {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) std::snprintf(text, sizeof text, "error code %d", rc);
  std::fprintf(stderr, "[odmoe] warning: %s failed during clean-up: %s (%s:%d)\n", call, text, file, line);
}

void mpi_init(int* argc, char*** argv) {
  int provided = 0;
  ODMOE_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  ODMOE_CHECK(provided == MPI_THREAD_MULTIPLE, kMpi, "threads",
              "this MPI library gives thread level " << provided << ", not MPI_THREAD_MULTIPLE",
              "use an MPI built with thread support (Open MPI >= 3 is)");
  int rank = -1;
  ODMOE_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  set_error_rank(rank);
}

void mpi_finalize() {
  int started = 0, ended = 0;
  ODMOE_MPI_CHECK_NOTHROW(MPI_Initialized(&started));
  ODMOE_MPI_CHECK_NOTHROW(MPI_Finalized(&ended));
  if (!started || ended) return;
  set_error_rank(-1);
  ODMOE_MPI_CHECK_NOTHROW(MPI_Finalize());
}

bool mpi_launched() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "PMI_FD", "PMIX_RANK"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

namespace {
// MPI started when a launcher started this process; false for a job of one.
bool mpi_started_if_launched() {
  int started = 0;
  ODMOE_MPI_CHECK(MPI_Initialized(&started));
  if (!started && mpi_launched()) {
    mpi_init(nullptr, nullptr);
    started = 1;
  }
  return started != 0;
}
}  // namespace

int mpi_world_size() {
  int size = 1;
  if (mpi_started_if_launched()) ODMOE_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  return size;
}

int mpi_world_rank() {
  int rank = 0;
  if (mpi_started_if_launched()) ODMOE_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  return rank;
}

namespace {
[[noreturn]] void timeout_error(const std::string& what, double secs) {
  ODMOE_THROW(kMpi, "timeout", "timed out after " << secs << " s waiting for " << what,
              "the rank named may have died or be stuck; check its output. A slow cluster may need a larger --timeout");
}
}  // namespace

Comm::Comm(double timeout_s) : timeout_s_(timeout_s) {
  ODMOE_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
  ODMOE_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  ODMOE_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  constexpr int kHostLen = 256;
  char name[kHostLen] = {};
  int len = 0;
  ODMOE_MPI_CHECK(MPI_Get_processor_name(name, &len));
  std::vector<char> all(static_cast<size_t>(kHostLen) * static_cast<size_t>(size_));
  allgather(name, kHostLen, all.data(), "every rank's host name at start-up");
  for (int r = 0; r < size_; ++r) hosts_.emplace_back(&all[static_cast<size_t>(r) * kHostLen]);
  // Node of each rank: the lowest world rank of its shared-memory communicator.
  MPI_Comm node_comm = MPI_COMM_NULL;
  ODMOE_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_comm));
  int leader = rank_;
  ODMOE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &leader, 1, MPI_INT, MPI_MIN, node_comm));
  ODMOE_MPI_CHECK(MPI_Comm_free(&node_comm));
  std::vector<int> leaders(static_cast<size_t>(size_));
  allgather(&leader, sizeof(int), leaders.data(), "every rank's node at start-up");
  std::vector<int> distinct = leaders;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  n_nodes_ = static_cast<int>(distinct.size());
  for (int l : leaders)
    node_of_.push_back(static_cast<int>(std::lower_bound(distinct.begin(), distinct.end(), l) - distinct.begin()));
}

Comm::~Comm() {
  if (comm_ != MPI_COMM_NULL) ODMOE_MPI_CHECK_NOTHROW(MPI_Comm_free(&comm_));
}

std::string Comm::where(int rank) const {
  if (rank < 0 || rank >= size_) return "any rank";
  return "rank " + std::to_string(rank) + " on " + hosts_[static_cast<size_t>(rank)];
}

void Comm::wait(MPI_Request* req, int peer, const std::string& what, const std::function<void()>& idle) const {
  const double deadline = now_s() + timeout_s_;
  Backoff backoff;
  for (;;) {
    int done = 0;
    ODMOE_MPI_CHECK(MPI_Test(req, &done, MPI_STATUS_IGNORE));
    if (done) return;
    if (now_s() > deadline) timeout_error(what + (peer >= 0 ? " (" + where(peer) + ")" : ""), timeout_s_);
    if (idle) idle();
    backoff.pause();
  }
}

Message Comm::recv(int source, int tag, const std::function<std::string()>& describe_wait,
                   const std::function<void()>& idle, double timeout_s) const {
  const double limit = timeout_s > 0 ? timeout_s : timeout_s_;
  const double deadline = now_s() + limit;
  Backoff backoff;
  for (;;) {
    int found = 0;
    MPI_Message msg;
    MPI_Status st;
    ODMOE_MPI_CHECK(MPI_Improbe(source, tag, comm_, &found, &msg, &st));
    if (found) {
      int bytes = 0;
      ODMOE_MPI_CHECK(MPI_Get_count(&st, MPI_BYTE, &bytes));
      ODMOE_CHECK(bytes >= static_cast<int>(sizeof(MsgHeader)), kMpi, "protocol",
                  "a " << bytes << "-byte message from " << where(st.MPI_SOURCE) << " is shorter than a header",
                  "all ranks must run the same odmoe build");
      std::vector<char> buf(static_cast<size_t>(bytes));
      ODMOE_MPI_CHECK(MPI_Mrecv(buf.data(), bytes, MPI_BYTE, &msg, MPI_STATUS_IGNORE));
      Message m;
      m.source = st.MPI_SOURCE;
      std::memcpy(&m.header, buf.data(), sizeof(MsgHeader));
      m.payload.assign(buf.begin() + sizeof(MsgHeader), buf.end());
      return m;
    }
    if (now_s() > deadline) timeout_error(describe_wait(), limit);
    if (idle) idle();
    backoff.pause();
  }
}

void Comm::barrier(const std::string& what) const {
  MPI_Request req;
  ODMOE_MPI_CHECK(MPI_Ibarrier(comm_, &req));
  wait(&req, -1, "every rank to reach " + what);
}

void Comm::allgather(const void* send, int bytes_each, void* recv, const std::string& what) const {
  MPI_Request req;
  ODMOE_MPI_CHECK(MPI_Iallgather(send, bytes_each, MPI_BYTE, recv, bytes_each, MPI_BYTE, comm_, &req));
  wait(&req, -1, what);
}

void Comm::allgatherv(const void* send, int bytes, std::vector<char>* recv, const std::string& what) const {
  std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
  allgather(&bytes, sizeof(int), counts.data(), what + " (sizes)");
  int total = 0;
  for (int r = 0; r < size_; ++r) {
    displs[static_cast<size_t>(r)] = total;
    total += counts[static_cast<size_t>(r)];
  }
  recv->resize(static_cast<size_t>(total));
  MPI_Request req;
  ODMOE_MPI_CHECK(MPI_Iallgatherv(send, bytes, MPI_BYTE, recv->data(), counts.data(), displs.data(), MPI_BYTE, comm_, &req));
  wait(&req, -1, what);
}

Outbox::~Outbox() {
  // Sends still in flight at destruction belong to a run that is failing; the process is
  // about to be brought down, so cancel rather than wait.
  for (Pending& p : pending_) {
    ODMOE_MPI_CHECK_NOTHROW(MPI_Cancel(&p.req));
    ODMOE_MPI_CHECK_NOTHROW(MPI_Request_free(&p.req));
  }
}

void Outbox::send(int dest, int tag, const Message& m) {
  Pending p;
  p.dest = dest;
  p.buf.resize(sizeof(MsgHeader) + m.payload.size());
  std::memcpy(p.buf.data(), &m.header, sizeof(MsgHeader));
  if (!m.payload.empty()) std::memcpy(p.buf.data() + sizeof(MsgHeader), m.payload.data(), m.payload.size());
  ODMOE_CHECK(p.buf.size() <= static_cast<size_t>(INT32_MAX), kMpi, "too-large",
              "a " << p.buf.size() << "-byte message exceeds MPI's count limit", "use a smaller --prefill-batch");
  ODMOE_MPI_CHECK(MPI_Isend(p.buf.data(), static_cast<int>(p.buf.size()), MPI_BYTE, dest, tag, comm_.comm(), &p.req));
  pending_.push_back(std::move(p));
  if (last_send_s_.size() <= static_cast<size_t>(dest)) last_send_s_.resize(static_cast<size_t>(dest) + 1, 0.0);
  last_send_s_[static_cast<size_t>(dest)] = now_s();
  reap();
}

double Outbox::last_send_s(int dest) const {
  return dest >= 0 && static_cast<size_t>(dest) < last_send_s_.size() ? last_send_s_[static_cast<size_t>(dest)] : 0.0;
}

void Outbox::reap() {
  for (auto it = pending_.begin(); it != pending_.end();) {
    int done = 0;
    ODMOE_MPI_CHECK(MPI_Test(&it->req, &done, MPI_STATUS_IGNORE));
    it = done ? pending_.erase(it) : it + 1;
  }
}

void Outbox::abandon(int dest) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->dest != dest) {
      ++it;
      continue;
    }
    ODMOE_MPI_CHECK_NOTHROW(MPI_Request_free(&it->req));
    abandoned_.push_back(std::move(it->buf));
    it = pending_.erase(it);
  }
}

namespace {
std::atomic<bool> g_degraded{false};
}  // namespace

bool job_degraded() { return g_degraded.load(); }
void set_job_degraded() { g_degraded.store(true); }

void Outbox::drain(const std::string& what) {
  while (!pending_.empty()) {
    comm_.wait(&pending_.front().req, pending_.front().dest, what);
    pending_.pop_front();
  }
}

}  // namespace odmoe
