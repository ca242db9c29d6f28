// What every rank of a distributed run shares: a private communicator, the host of every
// rank (for error messages), the protocol's message format, and waits that are always
// bounded: a dead or stuck peer becomes a clear error naming its rank and host, never a hang.
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "odmoe/core/clock.h"

// Every MPI call's return code is checked: ODMOE_MPI_CHECK(MPI_Isend(...)) throws odmoe::Error
// (kMpi, "call") naming the call and MPI's own message. (The world communicator's handler is
// MPI_ERRORS_ARE_FATAL by default; the private communicator returns codes, see Comm.)
#define ODMOE_MPI_CHECK(CALL)                                              \
  do {                                                                     \
    const int odmoe_mpi_rc_ = (CALL);                                      \
    if (odmoe_mpi_rc_ != MPI_SUCCESS) ::odmoe::mpi_failed(#CALL, odmoe_mpi_rc_, __FILE__, __LINE__); \
  } while (0)

// In destructors and clean-up paths, where throwing would end the process: a failed call is
// reported on stderr and the clean-up goes on.
#define ODMOE_MPI_CHECK_NOTHROW(CALL)                                                 \
  do {                                                                                \
    const int odmoe_mpi_rc_ = (CALL);                                                 \
    if (odmoe_mpi_rc_ != MPI_SUCCESS) ::odmoe::mpi_report(#CALL, odmoe_mpi_rc_, __FILE__, __LINE__); \
  } while (0)

namespace odmoe {

void mpi_report(const char* call, int rc, const char* file, int line) noexcept;

// Throws the odmoe::Error of a failed MPI call (ODMOE_MPI_CHECK).
[[noreturn]] void mpi_failed(const char* call, int rc, const char* file, int line);

// Starts MPI for this process (MPI_THREAD_MULTIPLE: the expert store's progress thread calls
// MPI beside the rank's main thread) and makes errors name this rank; mpi_finalize ends it.
void mpi_init(int* argc, char*** argv);
// Ends MPI if this process started it (and it is not ended yet); otherwise nothing.
void mpi_finalize();

// Whether a launcher started this process as one rank of a job: mpirun/mpiexec of Open MPI
// (OMPI_COMM_WORLD_SIZE), MPICH's Hydra or srun with PMI (PMI_RANK, PMI_SIZE, PMI_FD), a PMIx
// launcher: prterun, srun --mpi=pmix (PMIX_RANK). A process started otherwise is a job of one.
bool mpi_launched();
// MPI_COMM_WORLD's size and this process's rank in it. The first call starts MPI (mpi_init)
// when a launcher started the process; otherwise MPI is never started (its start-up costs a
// third of a second) and they are 1 and 0.
int mpi_world_size();
int mpi_world_rank();

// Protocol operations. Main sends commands (tag kTagCmd), workers reply (tag kTagReply).
enum class Op : int32_t {
  kLoad = 1,   // main -> worker: pull expert (layer, expert) into `slot`
  kCompute,    // main -> worker: run the expert in `slot` on n_tokens hidden states (payload);
               //   flags & kFlagLast: evict the slot afterwards; flags & kFlagHost: no slot,
               //   compute from this store rank's own mapped copy (--miss-policy cpu)
  kDrop,       // main -> worker: the expert in `slot` is not needed; free the slot
  kSync,       // main -> worker: finish every pull in flight, then answer kReady
  kClock,      // main <-> worker: clock offset estimate (payload-free ping-pong)
  kStop,       // main -> worker: answer kStats and leave the loop
  kResult,     // worker -> main: expert output for a kCompute (payload [n_tokens, n_embd])
  kReady,      // worker -> main: answer to kSync
  kStats,      // worker -> main: its statistics and trace events, JSON text (payload)
  // With --predictor-rank (tags kTagCmd from main, kTagPredict to main):
  kShadowBegin,  // main -> predictor rank: step `seq` begins at position `slot`, n_tokens tokens (payload int32)
  kKvRows,       // main -> predictor rank: layer `layer`, rows [slot, slot + n_tokens): K then V (payload f32)
  kPredict,      // predictor rank -> main: step `seq`, layer `layer`: n_tokens expert ids (payload int32)
  kMark,         // main -> worker: record memory mark `seq` (resident set now and its peak); no answer
  kReschedule,   // main -> worker (--on-worker-failure degrade, after kSync): a new schedule over the
                 //   surviving ranks, payload int32 {workers, groups, lookahead, extra, this rank's index}
  kAbort,        // main -> worker (--on-worker-failure degrade): main failed; exit now, status 1
  kKeepAlive,    // main -> worker: nothing to do; sent to a rank main has sent nothing for a while, so
                 //   that its bounded wait for main measures main's liveness, not its own idleness
};
const char* op_name(Op op);

inline constexpr int kTagCmd = 11;
inline constexpr int kTagReply = 12;
inline constexpr int kTagPredict = 13;  // predictor rank -> main: kPredict, and kStats at the end
inline constexpr int32_t kFlagLast = 1;
// COMPUTE on a store rank from its own mapped copy of the expert, no slot (--miss-policy cpu).
inline constexpr int32_t kFlagHost = 2;
// STOP after a rank failed (--on-worker-failure degrade): the job cannot finalize MPI.
inline constexpr int32_t kFlagDegraded = 4;

// True once this process took part in a run that lost a rank and carried on without it
// (--on-worker-failure degrade). MPI without fault tolerance cannot finalize (or free
// windows) with a dead rank, so such a process ends without MPI_Finalize.
bool job_degraded();
void set_job_degraded();

struct MsgHeader {
  Op op = Op::kStop;
  int32_t layer = -1, expert = -1, slot = -1, n_tokens = 0, flags = 0;
  int64_t seq = 0;  // main's number for the command; a kResult carries its kCompute's
  double time = 0;  // sender's clock (kClock)
};

struct Message {
  int source = -1;
  MsgHeader header;
  std::vector<char> payload;
};

class Comm {
 public:
  // Collective over MPI_COMM_WORLD: duplicates it and gathers every rank's host name.
  explicit Comm(double timeout_s);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  MPI_Comm comm() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  double timeout() const { return timeout_s_; }
  void set_timeout(double s) { timeout_s_ = s; }
  const std::string& host(int rank) const { return hosts_[static_cast<size_t>(rank)]; }
  std::string where(int rank) const;  // "rank 3 on node-a"
  // Ranks sharing this rank's node (MPI_COMM_TYPE_SHARED), and the node index of every rank.
  int node_of(int rank) const { return node_of_[static_cast<size_t>(rank)]; }
  int n_nodes() const { return n_nodes_; }

  // Waits for `req` for at most the timeout; `idle` runs between polls. Throws odmoe::Error
  // (kMpi, "timeout") naming `peer` and `what`.
  void wait(MPI_Request* req, int peer, const std::string& what, const std::function<void()>& idle = {}) const;
  // Receives the next message with `tag` from `source` (or MPI_ANY_SOURCE), waiting at
  // most `timeout_s` (<= 0: the comm's timeout). `describe_wait` names what was awaited and
  // from whom, for the error.
  Message recv(int source, int tag, const std::function<std::string()>& describe_wait,
               const std::function<void()>& idle = {}, double timeout_s = 0) const;
  // Bounded collective wrappers (nonblocking collective + bounded wait).
  void barrier(const std::string& what) const;
  void allgather(const void* send, int bytes_each, void* recv, const std::string& what) const;
  void allgatherv(const void* send, int bytes, std::vector<char>* recv, const std::string& what) const;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, n_nodes_ = 1;
  double timeout_s_;
  std::vector<std::string> hosts_;
  std::vector<int> node_of_;
};

// Nonblocking sends whose buffers live until the send completes.
class Outbox {
 public:
  explicit Outbox(const Comm& comm) : comm_(comm) {}
  ~Outbox();
  void send(int dest, int tag, const MsgHeader& h, const void* payload = nullptr, size_t bytes = 0);
  void reap();                          // frees completed sends
  void drain(const std::string& what);  // waits (bounded) for every send
  // Gives up on the sends to `dest` (a rank that died): they are never waited for; their
  // buffers are kept, since MPI may still read them.
  void abandon(int dest);
  size_t in_flight() const { return pending_.size(); }
  double last_send_s(int dest) const;  // now_s() of the latest send to `dest` (0: none yet)

 private:
  struct Pending {
    MPI_Request req;
    int dest;
    std::vector<char> buf;
  };
  const Comm& comm_;
  std::deque<Pending> pending_;
  std::vector<std::vector<char>> abandoned_;  // buffers of sends to dead ranks
  std::vector<double> last_send_s_;            // per rank
};

}  // namespace odmoe
