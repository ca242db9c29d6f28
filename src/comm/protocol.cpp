// The wire form of each message kind (protocol.h): which header field carries which named
// field, and the payload's layout. decode() checks the kind and that the payload is as long
// as the header says, so a malformed message is a clear protocol error, never a bad read.
#include "odmoe/comm/protocol.h"

#include <cstring>

#include "odmoe/core/error.h"

namespace odmoe {

const char* op_name(Op op) {
  switch (op) {
    case Op::kLoad: return "LOAD";
    case Op::kCompute: return "COMPUTE";
    case Op::kDrop: return "DROP";
    case Op::kSync: return "SYNC";
    case Op::kClock: return "CLOCK";
    case Op::kStop: return "STOP";
    case Op::kResult: return "RESULT";
    case Op::kReady: return "READY";
    case Op::kStats: return "STATS";
    case Op::kShadowBegin: return "SHADOW_BEGIN";
    case Op::kKvRows: return "KV_ROWS";
    case Op::kPredict: return "PREDICT";
    case Op::kMark: return "MARK";
    case Op::kReschedule: return "RESCHEDULE";
    case Op::kAbort: return "ABORT";
    case Op::kKeepAlive: return "KEEP_ALIVE";
  }
  return "?";
}

namespace msg {

namespace {

// Header flags.
constexpr int32_t kFlagLast = 1;      // Compute: evict the slot afterwards
constexpr int32_t kFlagHost = 2;      // Compute: from the store rank's own mapped copy, no slot
constexpr int32_t kFlagDegraded = 4;  // Stop: a rank failed

Message with_op(Op op) {
  Message m;
  m.header.op = op;
  return m;
}

std::string from_rank(const Message& m) {
  return m.source >= 0 ? " from rank " + std::to_string(m.source) : std::string();
}

// The header of `m` must say `op`.
void expect(const Message& m, Op op) {
  ODMOE_CHECK(m.header.op == op, kMpi, "protocol",
              "expected " << op_name(op) << ", got " << op_name(m.header.op) << from_rank(m),
              "all ranks must run the same odmoe build");
}

void expect_bytes(const Message& m, size_t bytes, const char* what) {
  ODMOE_CHECK(m.payload.size() == bytes, kMpi, "protocol",
              op_name(m.header.op) << from_rank(m) << " has " << m.payload.size() << " payload bytes; " << what
                                   << " take " << bytes,
              "all ranks must run the same odmoe build");
}

// The kinds that carry only main's number for the command.
Message seq_only(Op op, int64_t seq) {
  Message m = with_op(op);
  m.header.seq = seq;
  return m;
}

int64_t seq_of(const Message& m, Op op) {
  expect(m, op);
  return m.header.seq;
}

int32_t count(const Message& m) {
  ODMOE_CHECK(m.header.n_tokens >= 0, kMpi, "protocol",
              op_name(m.header.op) << from_rank(m) << " has a negative count " << m.header.n_tokens, "");
  return m.header.n_tokens;
}

template <typename T>
void put(Message* m, const std::vector<T>& v) {
  m->payload.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(m->payload.data(), v.data(), m->payload.size());
}

// The payload as `n` values of T (its length checked first).
template <typename T>
std::vector<T> take(const Message& m, size_t n, const char* what) {
  expect_bytes(m, n * sizeof(T), what);
  std::vector<T> v(n);
  if (n) std::memcpy(v.data(), m.payload.data(), m.payload.size());
  return v;
}

// The payload as f32 values, a whole number of rows of `n_rows` each (the row width,
// n_embd, is the receiver's to check).
std::vector<float> take_rows(const Message& m, size_t n_rows) {
  ODMOE_CHECK(m.payload.size() % sizeof(float) == 0 && (n_rows == 0 ? m.payload.empty()
                                                         : m.payload.size() / sizeof(float) % n_rows == 0),
              kMpi, "protocol",
              op_name(m.header.op) << from_rank(m) << " has " << m.payload.size() << " payload bytes, not "
                                   << n_rows << " rows of f32",
              "all ranks must run the same odmoe build");
  return take<float>(m, m.payload.size() / sizeof(float), "its rows");
}

}  // namespace

Message Load::encode() const {
  Message m = with_op(kOp);
  m.header.layer = layer;
  m.header.expert = expert;
  m.header.slot = slot;
  m.header.seq = seq;
  return m;
}

Load Load::decode(const Message& m) {
  expect(m, kOp);
  expect_bytes(m, 0, "LOAD's fields");
  return {m.header.layer, m.header.expert, m.header.slot, m.header.seq};
}

Message Compute::encode() const {
  Message m = with_op(kOp);
  m.header.layer = layer;
  m.header.expert = expert;
  m.header.slot = slot;
  m.header.seq = seq;
  m.header.n_tokens = n_tokens;
  m.header.flags = (last ? kFlagLast : 0) | (host ? kFlagHost : 0);
  put(&m, hidden);
  return m;
}

Compute Compute::decode(const Message& m) {
  expect(m, kOp);
  Compute c;
  c.layer = m.header.layer;
  c.expert = m.header.expert;
  c.slot = m.header.slot;
  c.seq = m.header.seq;
  c.last = (m.header.flags & kFlagLast) != 0;
  c.host = (m.header.flags & kFlagHost) != 0;
  c.n_tokens = count(m);
  c.hidden = take_rows(m, static_cast<size_t>(c.n_tokens));
  return c;
}

Message Drop::encode() const {
  Message m = with_op(kOp);
  m.header.slot = slot;
  m.header.seq = seq;
  return m;
}

Drop Drop::decode(const Message& m) {
  expect(m, kOp);
  expect_bytes(m, 0, "DROP's fields");
  return {m.header.slot, m.header.seq};
}

Message Sync::encode() const { return seq_only(kOp, seq); }
Sync Sync::decode(const Message& m) { return {seq_of(m, kOp)}; }

Message Ready::encode() const { return seq_only(kOp, seq); }
Ready Ready::decode(const Message& m) { return {seq_of(m, kOp)}; }

Message Clock::encode() const {
  Message m = with_op(kOp);
  m.header.seq = seq;
  m.header.time = time;
  return m;
}

Clock Clock::decode(const Message& m) {
  expect(m, kOp);
  return {m.header.seq, m.header.time};
}

Message Stop::encode() const {
  Message m = with_op(kOp);
  m.header.seq = seq;
  m.header.flags = degraded ? kFlagDegraded : 0;
  return m;
}

Stop Stop::decode(const Message& m) {
  expect(m, kOp);
  return {m.header.seq, (m.header.flags & kFlagDegraded) != 0};
}

Message Result::encode() const {
  Message m = with_op(kOp);
  m.header.layer = layer;
  m.header.expert = expert;
  m.header.seq = seq;
  m.header.n_tokens = n_tokens;
  put(&m, out);
  return m;
}

Result Result::decode(const Message& m) {
  expect(m, kOp);
  Result r;
  r.layer = m.header.layer;
  r.expert = m.header.expert;
  r.seq = m.header.seq;
  r.n_tokens = count(m);
  r.out = take_rows(m, static_cast<size_t>(r.n_tokens));
  return r;
}

Message Stats::encode() const {
  Message m = with_op(kOp);
  m.payload.assign(json.begin(), json.end());
  return m;
}

Stats Stats::decode(const Message& m) {
  expect(m, kOp);
  return {std::string(m.payload.begin(), m.payload.end())};
}

Message ShadowBegin::encode() const {
  Message m = with_op(kOp);
  m.header.seq = step;
  m.header.slot = pos;
  m.header.n_tokens = static_cast<int32_t>(tokens.size());
  put(&m, tokens);
  return m;
}

ShadowBegin ShadowBegin::decode(const Message& m) {
  expect(m, kOp);
  ODMOE_CHECK(m.header.n_tokens > 0 && m.header.slot >= 0, kMpi, "protocol",
              "SHADOW_BEGIN" << from_rank(m) << " with " << m.header.n_tokens << " tokens at position " << m.header.slot,
              "");
  ShadowBegin b;
  b.step = m.header.seq;
  b.pos = m.header.slot;
  b.tokens = take<int32_t>(m, static_cast<size_t>(m.header.n_tokens), "its tokens");
  return b;
}

Message KvRows::encode() const {
  Message m = with_op(kOp);
  m.header.layer = layer;
  m.header.slot = pos;
  m.header.n_tokens = n_tokens;
  put(&m, rows);
  return m;
}

KvRows KvRows::decode(const Message& m) {
  expect(m, kOp);
  KvRows r;
  r.layer = m.header.layer;
  r.pos = m.header.slot;
  r.n_tokens = count(m);
  ODMOE_CHECK(r.pos >= 0, kMpi, "protocol", "KV_ROWS" << from_rank(m) << " at position " << r.pos, "");
  r.rows = take_rows(m, 2 * static_cast<size_t>(r.n_tokens));
  return r;
}

Message Predict::encode() const {
  Message m = with_op(kOp);
  m.header.seq = step;
  m.header.layer = layer;
  m.header.n_tokens = static_cast<int32_t>(experts.size());
  put(&m, experts);
  return m;
}

Predict Predict::decode(const Message& m) {
  expect(m, kOp);
  Predict p;
  p.step = m.header.seq;
  p.layer = m.header.layer;
  p.experts = take<int32_t>(m, static_cast<size_t>(count(m)), "its experts");
  return p;
}

Message Mark::encode() const {
  Message m = with_op(kOp);
  m.header.seq = mark;
  return m;
}

Mark Mark::decode(const Message& m) {
  expect(m, kOp);
  return {m.header.seq};
}

Message Reschedule::encode() const {
  Message m = with_op(kOp);
  m.header.seq = seq;
  put(&m, std::vector<int32_t>{workers, groups, lookahead, extra, index});
  return m;
}

Reschedule Reschedule::decode(const Message& m) {
  expect(m, kOp);
  const std::vector<int32_t> v = take<int32_t>(m, 5, "its workers, groups, lookahead, extra and index");
  return {m.header.seq, v[0], v[1], v[2], v[3], v[4]};
}

Message Abort::encode() const { return seq_only(kOp, seq); }
Abort Abort::decode(const Message& m) { return {seq_of(m, kOp)}; }

Message KeepAlive::encode() const { return seq_only(kOp, seq); }
KeepAlive KeepAlive::decode(const Message& m) { return {seq_of(m, kOp)}; }

}  // namespace msg
}  // namespace odmoe
