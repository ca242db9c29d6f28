// What every rank of a distributed run shares: a private communicator, the host of every
// rank (for error messages), the transport of the protocol's messages (protocol.h), and waits that are always
// bounded: a dead or stuck peer becomes a clear error naming its rank and host, never a hang.
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "odmoe/comm/protocol.h"
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

// True once this process took part in a run that lost a rank and carried on without it
// (--on-worker-failure degrade). MPI without fault tolerance cannot finalize (or free
// windows) with a dead rank, so such a process ends without MPI_Finalize.
bool job_degraded();
void set_job_degraded();

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
  // Sends `m` (m.source is not sent): build it with a message struct's encode().
  void send(int dest, int tag, const Message& m);
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
