#include "odmoe/core/error.h"

#include <unistd.h>

#include <array>
#include <atomic>

namespace odmoe {
namespace {

std::atomic<int> g_rank{-1};

int current_rank() { return g_rank.load(std::memory_order_relaxed); }

std::string current_host() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) return "unknown-host";
  return std::string(buf.data());
}

}  // namespace

void set_error_rank(int rank) { g_rank.store(rank, std::memory_order_relaxed); }

const char* subsystem_name(Subsystem s) {
  switch (s) {
    case Subsystem::kCore: return "core";
    case Subsystem::kIo: return "io";
    case Subsystem::kHdf5: return "hdf5";
    case Subsystem::kSafetensors: return "safetensors";
    case Subsystem::kConfig: return "config";
    case Subsystem::kConvert: return "convert";
    case Subsystem::kTokenizer: return "tokenizer";
    case Subsystem::kModel: return "model";
    case Subsystem::kCuda: return "cuda";
    case Subsystem::kMpi: return "mpi";
    case Subsystem::kCli: return "cli";
  }
  return "unknown";
}

Error::Error(Subsystem subsystem, std::string code, std::string message, std::string hint, const char* file,
             int line)
    : std::runtime_error(message),
      subsystem_(subsystem),
      code_(std::move(code)),
      message_(std::move(message)),
      hint_(std::move(hint)),
      file_(file),
      line_(line),
      rank_(current_rank()),
      host_(current_host()) {}

std::string Error::to_string() const {
  std::ostringstream os;
  os << "error [" << subsystem_name(subsystem_) << "/" << code_ << "]";
  if (rank_ >= 0) os << " rank " << rank_ << " on " << host_;
  os << ": " << message_;
  std::string f(file_ ? file_ : "?");
  auto slash = f.find_last_of('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  os << " (" << f << ":" << line_ << ")";
  if (!hint_.empty()) os << "\nHINT: " << hint_;
  return os.str();
}

namespace detail {
void throw_error(Subsystem subsystem, const char* code, const std::string& message, const std::string& hint,
                 const char* file, int line) {
  throw Error(subsystem, code, message, hint, file, line);
}
}  // namespace detail

}  // namespace odmoe
