// The message protocol between the ranks of a distributed run: one struct per kind of
// message, with named fields, and its encode()/decode() to and from the wire Message (a
// fixed header and a payload). Only this header and protocol.cpp know which header field
// carries what; the ranks build and read messages through these structs. No MPI here: the
// transport (comm.h) moves Messages, and the unit tests round-trip every kind without it.
//
// Who sends what (main is rank 0; tags say which loop reads it):
//   main -> expert rank (kTagCmd):   Load, Compute, Drop, Sync, Clock, Stop, Mark,
//                                    Reschedule, Abort, KeepAlive
//   expert rank -> main (kTagReply): Result, Ready, Clock, Stats
//   main -> predictor rank (kTagCmd): ShadowBegin, KvRows, Stop
//   predictor rank -> main (kTagPredict): Predict, Stats
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace odmoe {

// Protocol operations: the kind of a message (its header's `op`).
enum class Op : int32_t {
  kLoad = 1,     // msg::Load
  kCompute,      // msg::Compute
  kDrop,         // msg::Drop
  kSync,         // msg::Sync
  kClock,        // msg::Clock (both ways)
  kStop,         // msg::Stop
  kResult,       // msg::Result
  kReady,        // msg::Ready
  kStats,        // msg::Stats
  kShadowBegin,  // msg::ShadowBegin
  kKvRows,       // msg::KvRows
  kPredict,      // msg::Predict
  kMark,         // msg::Mark
  kReschedule,   // msg::Reschedule
  kAbort,        // msg::Abort
  kKeepAlive,    // msg::KeepAlive
};
const char* op_name(Op op);  // "LOAD", ...; "?" for a value that is no Op

inline constexpr int kTagCmd = 11;
inline constexpr int kTagReply = 12;
inline constexpr int kTagPredict = 13;  // predictor rank -> main: Predict, and Stats at the end

// The wire header: the same fixed bytes for every kind (all ranks run the same build).
// Which field means what is each message struct's business (protocol.cpp).
struct MsgHeader {
  Op op = Op::kStop;
  int32_t layer = -1, expert = -1, slot = -1, n_tokens = 0, flags = 0;
  int64_t seq = 0;
  double time = 0;
};

struct Message {
  int source = -1;  // the sender's rank (set by the transport on receipt)
  MsgHeader header;
  std::vector<char> payload;
};

namespace msg {

// main -> expert rank: pull expert (layer, expert) into `slot`.
struct Load {
  static constexpr Op kOp = Op::kLoad;
  int32_t layer = -1, expert = -1, slot = -1;
  int64_t seq = 0;  // main's number for the command
  Message encode() const;
  static Load decode(const Message& m);
};

// main -> expert rank: run expert (layer, expert), held in `slot`, on n_tokens hidden states.
struct Compute {
  static constexpr Op kOp = Op::kCompute;
  int32_t layer = -1, expert = -1, slot = -1;  // slot -1 with `host`
  int64_t seq = 0;
  bool last = false;  // evict the slot afterwards (the expert's last chunk, on demand)
  bool host = false;  // no slot: compute from this store rank's own mapped copy (--miss-policy cpu)
  int32_t n_tokens = 0;
  std::vector<float> hidden;  // f32 [n_tokens, n_embd]
  Message encode() const;
  static Compute decode(const Message& m);
};

// main -> expert rank: the expert in `slot` is not needed; free the slot.
struct Drop {
  static constexpr Op kOp = Op::kDrop;
  int32_t slot = -1;
  int64_t seq = 0;
  Message encode() const;
  static Drop decode(const Message& m);
};

// main -> expert rank: finish every pull in flight, then answer Ready.
struct Sync {
  static constexpr Op kOp = Op::kSync;
  int64_t seq = 0;
  Message encode() const;
  static Sync decode(const Message& m);
};

// expert rank -> main: the answer to the Sync numbered `seq`.
struct Ready {
  static constexpr Op kOp = Op::kReady;
  int64_t seq = 0;
  Message encode() const;
  static Ready decode(const Message& m);
};

// main <-> expert rank: clock offset estimate (and a sign of life after a timeout). Main's
// ping carries time 0; the answer carries the expert rank's clock (now_s()) when it answered.
struct Clock {
  static constexpr Op kOp = Op::kClock;
  int64_t seq = 0;
  double time = 0;
  Message encode() const;
  static Clock decode(const Message& m);
};

// main -> expert rank or predictor rank: answer Stats and leave the loop.
struct Stop {
  static constexpr Op kOp = Op::kStop;
  int64_t seq = 0;
  bool degraded = false;  // a rank failed (--on-worker-failure degrade): the job cannot finalize MPI
  Message encode() const;
  static Stop decode(const Message& m);
};

// expert rank -> main: the output of the Compute numbered `seq`.
struct Result {
  static constexpr Op kOp = Op::kResult;
  int32_t layer = -1, expert = -1;
  int64_t seq = 0;  // the Compute's
  int32_t n_tokens = 0;
  std::vector<float> out;  // f32 [n_tokens, n_embd]
  Message encode() const;
  static Result decode(const Message& m);
};

// expert rank or predictor rank -> main: its statistics (and trace events), JSON text.
struct Stats {
  static constexpr Op kOp = Op::kStats;
  std::string json;
  Message encode() const;
  static Stats decode(const Message& m);
};

// main -> predictor rank: forward step `step` begins at position `pos` with `tokens`.
struct ShadowBegin {
  static constexpr Op kOp = Op::kShadowBegin;
  int64_t step = 0;
  int32_t pos = 0;
  std::vector<int32_t> tokens;  // int32 [n_tokens], at least one
  Message encode() const;
  static ShadowBegin decode(const Message& m);
};

// main -> predictor rank: the full model's new KV rows of `layer`, positions
// [pos, pos + n_tokens).
struct KvRows {
  static constexpr Op kOp = Op::kKvRows;
  int32_t layer = -1, pos = 0, n_tokens = 0;
  std::vector<float> rows;  // f32 [2, n_tokens, kv_dim]: K rows, then V rows
  Message encode() const;
  static KvRows decode(const Message& m);
};

// predictor rank -> main: the experts predicted for (step, layer).
struct Predict {
  static constexpr Op kOp = Op::kPredict;
  int64_t step = 0;
  int32_t layer = -1;
  std::vector<int32_t> experts;  // int32 [n], best first
  Message encode() const;
  static Predict decode(const Message& m);
};

// main -> expert rank: record memory mark `mark` (resident set now and its peak); no answer.
struct Mark {
  static constexpr Op kOp = Op::kMark;
  int64_t mark = 0;
  Message encode() const;
  static Mark decode(const Message& m);
};

// main -> expert rank (--on-worker-failure degrade, after Sync): a new schedule over the
// surviving ranks.
struct Reschedule {
  static constexpr Op kOp = Op::kReschedule;
  int64_t seq = 0;
  int32_t workers = 0, groups = 0, lookahead = 1, extra = 0;
  int32_t index = 0;  // the receiving rank's index among the survivors (1-based)
  Message encode() const;
  static Reschedule decode(const Message& m);
};

// main -> expert rank (--on-worker-failure degrade): main failed; exit now, status 1.
struct Abort {
  static constexpr Op kOp = Op::kAbort;
  int64_t seq = 0;
  Message encode() const;
  static Abort decode(const Message& m);
};

// main -> expert rank: nothing to do; sent to a rank main has sent nothing for a while, so
// that its bounded wait for main measures main's liveness, not its own idleness.
struct KeepAlive {
  static constexpr Op kOp = Op::kKeepAlive;
  int64_t seq = 0;
  Message encode() const;
  static KeepAlive decode(const Message& m);
};

}  // namespace msg
}  // namespace odmoe
