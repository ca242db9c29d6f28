// The one way odmoe writes a result file (JSON, text): whole or not at all (written beside the
// target, then renamed over it), so a reader never sees half a file and a failed run leaves none.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace odmoe {

// Writes `j` (dump(indent); -1: compact) and a newline to `path`. `what` names the file in
// errors, e.g. "--stats-json". Throws odmoe::Error (kIo) when it cannot.
void write_json_file(const std::string& path, const nlohmann::json& j, int indent, const std::string& what);
// Writes `text` as it is to `path`, the same way.
void write_text_file(const std::string& path, const std::string& text, const std::string& what);

}  // namespace odmoe
