// The message protocol (comm/protocol.h) without MPI: every kind round-trips through its
// wire Message with every field intact, and a malformed message is a clear protocol error.
#include <gtest/gtest.h>

#include <cstring>

#include "odmoe/comm/protocol.h"
#include "odmoe/core/error.h"

namespace odmoe {
namespace {

// Encodes `m`, passes it through the bytes the transport would send (header, then payload),
// and decodes it again.
template <typename M>
M round_trip(const M& m) {
  const Message wire = m.encode();
  EXPECT_EQ(wire.header.op, M::kOp);
  std::vector<char> bytes(sizeof(MsgHeader) + wire.payload.size());
  std::memcpy(bytes.data(), &wire.header, sizeof(MsgHeader));
  if (!wire.payload.empty()) std::memcpy(bytes.data() + sizeof(MsgHeader), wire.payload.data(), wire.payload.size());
  Message got;
  got.source = 3;
  std::memcpy(&got.header, bytes.data(), sizeof(MsgHeader));
  got.payload.assign(bytes.begin() + sizeof(MsgHeader), bytes.end());
  return M::decode(got);
}

template <typename F>
std::string protocol_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), "protocol");
    return e.message();
  }
  ADD_FAILURE() << "no protocol error";
  return "";
}

TEST(Protocol, LoadDropMarkAndTheSequenceOnlyKinds) {
  const msg::Load l = round_trip(msg::Load{7, 42, 3, 1001});
  EXPECT_EQ(l.layer, 7);
  EXPECT_EQ(l.expert, 42);
  EXPECT_EQ(l.slot, 3);
  EXPECT_EQ(l.seq, 1001);
  const msg::Drop d = round_trip(msg::Drop{5, 99});
  EXPECT_EQ(d.slot, 5);
  EXPECT_EQ(d.seq, 99);
  EXPECT_EQ(round_trip(msg::Mark{-12345678901LL}).mark, -12345678901LL);
  EXPECT_EQ(round_trip(msg::Sync{17}).seq, 17);
  EXPECT_EQ(round_trip(msg::Ready{18}).seq, 18);
  EXPECT_EQ(round_trip(msg::Abort{19}).seq, 19);
  EXPECT_EQ(round_trip(msg::KeepAlive{20}).seq, 20);
  const msg::Clock c = round_trip(msg::Clock{21, 1234.5678});
  EXPECT_EQ(c.seq, 21);
  EXPECT_DOUBLE_EQ(c.time, 1234.5678);
  for (bool degraded : {false, true}) {
    const msg::Stop s = round_trip(msg::Stop{22, degraded});
    EXPECT_EQ(s.seq, 22);
    EXPECT_EQ(s.degraded, degraded);
  }
}

TEST(Protocol, ComputeAndResultCarryTheirRowsAndFlags) {
  for (bool last : {false, true})
    for (bool host : {false, true}) {
      msg::Compute c;
      c.layer = 2;
      c.expert = 9;
      c.slot = host ? -1 : 4;
      c.seq = 77;
      c.last = last;
      c.host = host;
      c.n_tokens = 3;
      for (int i = 0; i < 3 * 5; ++i) c.hidden.push_back(0.25f * static_cast<float>(i) - 1.0f);
      const msg::Compute g = round_trip(c);
      EXPECT_EQ(g.layer, 2);
      EXPECT_EQ(g.expert, 9);
      EXPECT_EQ(g.slot, c.slot);
      EXPECT_EQ(g.seq, 77);
      EXPECT_EQ(g.last, last);
      EXPECT_EQ(g.host, host);
      EXPECT_EQ(g.n_tokens, 3);
      EXPECT_EQ(g.hidden, c.hidden);
    }
  const msg::Result r = round_trip(msg::Result{2, 9, 77, 2, {1.5f, -2.5f, 3.0f, 4.0f}});
  EXPECT_EQ(r.layer, 2);
  EXPECT_EQ(r.expert, 9);
  EXPECT_EQ(r.seq, 77);
  EXPECT_EQ(r.n_tokens, 2);
  EXPECT_EQ(r.out, (std::vector<float>{1.5f, -2.5f, 3.0f, 4.0f}));
}

TEST(Protocol, PredictorRankKinds) {
  const msg::ShadowBegin b = round_trip(msg::ShadowBegin{12, 34, {5, 6, 7}});
  EXPECT_EQ(b.step, 12);
  EXPECT_EQ(b.pos, 34);
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{5, 6, 7}));
  const msg::KvRows kv = round_trip(msg::KvRows{3, 40, 1, {1, 2, 3, 4}});  // K [1, 2], V [1, 2]
  EXPECT_EQ(kv.layer, 3);
  EXPECT_EQ(kv.pos, 40);
  EXPECT_EQ(kv.n_tokens, 1);
  EXPECT_EQ(kv.rows, (std::vector<float>{1, 2, 3, 4}));
  const msg::Predict p = round_trip(msg::Predict{8, 5, {63, 0, 17}});
  EXPECT_EQ(p.step, 8);
  EXPECT_EQ(p.layer, 5);
  EXPECT_EQ(p.experts, (std::vector<int32_t>{63, 0, 17}));
  EXPECT_TRUE(round_trip(msg::Predict{9, 0, {}}).experts.empty());
  const msg::Stats s = round_trip(msg::Stats{R"({"rank": 2, "role": "worker"})"});
  EXPECT_EQ(s.json, R"({"rank": 2, "role": "worker"})");
}

TEST(Protocol, Reschedule) {
  const msg::Reschedule r = round_trip(msg::Reschedule{55, 3, 1, 2, 4, 2});
  EXPECT_EQ(r.seq, 55);
  EXPECT_EQ(r.workers, 3);
  EXPECT_EQ(r.groups, 1);
  EXPECT_EQ(r.lookahead, 2);
  EXPECT_EQ(r.extra, 4);
  EXPECT_EQ(r.index, 2);
}

TEST(Protocol, EveryOpHasAName) {
  for (int op = static_cast<int>(Op::kLoad); op <= static_cast<int>(Op::kKeepAlive); ++op)
    EXPECT_STRNE(op_name(static_cast<Op>(op)), "?") << op;
  EXPECT_STREQ(op_name(static_cast<Op>(999)), "?");
}

TEST(Protocol, MalformedMessagesAreProtocolErrors) {
  // The wrong kind.
  EXPECT_NE(protocol_error([] { msg::Load::decode(msg::Drop{1, 2}.encode()); }).find("expected LOAD, got DROP"),
            std::string::npos);
  // A payload shorter than the header says.
  Message c = msg::Compute{1, 2, 3, 4, false, false, 2, {1, 2, 3, 4}}.encode();
  c.payload.resize(c.payload.size() - 2);
  protocol_error([&] { msg::Compute::decode(c); });
  Message p = msg::Predict{1, 2, {1, 2, 3}}.encode();
  p.header.n_tokens = 4;
  protocol_error([&] { msg::Predict::decode(p); });
  Message n = msg::Result{1, 2, 3, 1, {1}}.encode();
  n.header.n_tokens = -1;
  protocol_error([&] { msg::Result::decode(n); });
  Message r = msg::Reschedule{1, 2, 1, 1, 0, 1}.encode();
  r.payload.pop_back();
  protocol_error([&] { msg::Reschedule::decode(r); });
  // A step with no tokens, rows of K without V.
  Message b = msg::ShadowBegin{1, 0, {}}.encode();
  protocol_error([&] { msg::ShadowBegin::decode(b); });
  Message kv = msg::KvRows{0, 0, 2, {1, 2, 3}}.encode();
  protocol_error([&] { msg::KvRows::decode(kv); });
  // Bytes where none belong.
  Message l = msg::Load{1, 2, 3, 4}.encode();
  l.payload.push_back('x');
  protocol_error([&] { msg::Load::decode(l); });
}

}  // namespace
}  // namespace odmoe
