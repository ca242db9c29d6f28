// The decoder of tokenizer.json (token strings -> text), built as a chain of streaming steps.
//
// The library decodes a whole list at once: each step maps a list of strings to a list of
// strings and the last list is concatenated. Here every step consumes its input one piece at
// a time and passes on only what later input cannot change, holding back the rest (an
// incomplete UTF-8 sequence, an open run of <0xXX> tokens, characters a Strip may remove).
// Tokenizer::decode runs the chain over all ids and then finishes it, and StreamDecoder runs
// the same chain id by id, so their outputs agree by construction.
//
// After Fuse or ByteLevel the library's list holds a single string; a step there ("fused
// input") sees that string in fragments. Steps that can work on fragments (Fuse, Strip,
// Metaspace, one-character Replace) do; the others collect the whole string and apply the
// library's rule when the chain is finished.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "odmoe/tokenizer/tokenizer.h"

namespace odmoe::tokenizer_detail {

class StepState;

// Receives the output of one step: the next step's input, or the final text.
struct Emitter {
  DecoderState* state;
  size_t next_step;
  void operator()(std::string piece) const;
};

class StepState {
 public:
  virtual ~StepState() = default;
  virtual void push(std::string piece, const Emitter& emit) = 0;
  virtual void finish(const Emitter& emit) = 0;
};

class DecoderStep {
 public:
  virtual ~DecoderStep() = default;
  virtual std::unique_ptr<StepState> start(bool fused_input) const = 0;
  virtual bool fuses() const { return false; }  // whether the output is a single string
  // The library's rule applied to a list holding one string (for fused input).
  virtual std::string apply_single(const std::string& token) const = 0;
  virtual std::string describe() const = 0;
};

class DecoderChain {
 public:
  // `decoder` is the "decoder" value of tokenizer.json, nullptr when absent or null (the
  // library then joins the tokens with spaces).
  static DecoderChain from_json(const nlohmann::json* decoder);

  size_t n_steps() const { return steps_.size(); }
  const DecoderStep& step(size_t k) const { return *steps_[k]; }
  bool fused_input(size_t k) const { return fused_in_[k]; }
  std::string describe() const;

 private:
  std::vector<std::unique_ptr<DecoderStep>> steps_;
  std::vector<bool> fused_in_;
  std::string description_;
};

class DecoderState {
 public:
  explicit DecoderState(const DecoderChain& chain);
  void push(std::string token);  // a whole token string
  void finish();
  // The text emitted since the last call.
  std::string take_output() { return std::exchange(out_, std::string()); }

 private:
  friend struct Emitter;
  void deliver(size_t step, std::string piece);
  std::vector<std::unique_ptr<StepState>> states_;
  std::string out_;
};

}  // namespace odmoe::tokenizer_detail
