#include "odmoe/exec/trace.h"

namespace odmoe {

void TraceRecorder::add(std::string name, const char* cat, int stream, double t0, double t1, nlohmann::json args) {
  if (!enabled_) return;
  events_.push_back({std::move(name), cat, stream, t0, t1, std::move(args)});
}

nlohmann::json TraceRecorder::to_json() const {
  nlohmann::json a = nlohmann::json::array();
  for (const Event& e : events_) a.push_back({e.name, e.cat, e.stream, e.t0, e.t1, e.args});
  return a;
}

void TraceRecorder::append_events(const nlohmann::json& events, int pid, double clock_offset, double origin,
                                  nlohmann::json* out) {
  for (const auto& e : events) {
    const double t0 = e[3].get<double>() - clock_offset - origin, t1 = e[4].get<double>() - clock_offset - origin;
    nlohmann::json ev = {{"name", e[0]}, {"cat", e[1]}, {"ph", "X"},   {"pid", pid},
                         {"tid", e[2]},  {"ts", t0 * 1e6}, {"dur", std::max(0.0, t1 - t0) * 1e6}};
    if (!e[5].is_null()) ev["args"] = e[5];
    out->push_back(std::move(ev));
  }
}

void TraceRecorder::append_names(int pid, const std::string& process_name, nlohmann::json* out) {
  out->push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", process_name}}}});
  out->push_back({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", pid}, {"args", {{"sort_index", pid}}}});
  const char* streams[] = {"compute", "loads (RMA)", "waiting", "steps"};
  for (int s = 0; s < 4; ++s)
    out->push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", s}, {"args", {{"name", streams[s]}}}});
}

}  // namespace odmoe
