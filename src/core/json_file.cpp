#include "odmoe/core/json_file.h"

#include <cstdio>
#include <fstream>

#include "odmoe/core/error.h"

namespace odmoe {

void write_json_file(const std::string& path, const nlohmann::json& j, int indent, const std::string& what) {
  write_text_file(path, j.dump(indent) + "\n", what);
}

void write_text_file(const std::string& path, const std::string& text, const std::string& what) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    ODMOE_CHECK(f.good(), kIo, "open", "cannot write " << what << " " << path, "check the path");
    f << text;
    f.flush();
    if (!f.good()) {
      std::remove(tmp.c_str());
      ODMOE_THROW(kIo, "write", "writing " << what << " " << path << " failed", "check free space");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    ODMOE_THROW(kIo, "rename", "cannot write " << what << " " << path, "check the folder's permissions");
  }
}

}  // namespace odmoe
