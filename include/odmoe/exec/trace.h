// Trace events for `--trace`: Chrome/Perfetto trace-event JSON ("X" complete events), one
// process per rank and one thread per stream (compute, loads, messages), on main's clock.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace odmoe {

enum TraceStream : int { kStreamCompute = 0, kStreamLoad = 1, kStreamWait = 2, kStreamStep = 3 };

class TraceRecorder {
 public:
  explicit TraceRecorder(bool enabled) : enabled_(enabled) {}
  bool enabled() const { return enabled_; }
  // t0, t1: seconds on this rank's steady clock.
  void add(std::string name, const char* cat, int stream, double t0, double t1, nlohmann::json args = {});
  // Events as compact JSON arrays [name, cat, stream, t0, t1, args] (what a worker sends to main).
  nlohmann::json to_json() const;
  // Converts events (from to_json) of rank `pid` to trace-event objects: time shifted by
  // -clock_offset (the rank's clock minus main's) and made relative to `origin` (main's clock).
  static void append_events(const nlohmann::json& events, int pid, double clock_offset, double origin,
                            nlohmann::json* out);
  // Metadata naming a rank's process and its streams.
  static void append_names(int pid, const std::string& process_name, nlohmann::json* out);

 private:
  bool enabled_;
  struct Event {
    std::string name;
    const char* cat;
    int stream;
    double t0, t1;
    nlohmann::json args;
  };
  std::vector<Event> events_;
};

}  // namespace odmoe
