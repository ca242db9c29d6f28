// One error type for the whole project, and the thin CHECK macros built on it.
//
// An odmoe::Error carries the subsystem that failed, a short code, the source location,
// the MPI rank and host where it happened, and an optional hint telling the user how to
// fix it. Entry points catch it, print it once, and bring every rank down.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace odmoe {

enum class Subsystem { kCore, kIo, kHdf5, kSafetensors, kConfig, kConvert, kTokenizer, kModel, kCuda, kMpi, kCli };

const char* subsystem_name(Subsystem s);

// A bad value the caller chose (an option's value, a name): the programs report it as a bad
// command line (exit status 2). Library code throws it where a user-facing choice is parsed.
struct ArgumentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The rank that errors thrown in this process name ("rank 3 on host"). The transport sets it
// once MPI is up and back to -1 when MPI ends; core itself knows nothing of MPI.
void set_error_rank(int rank);

class Error : public std::runtime_error {
 public:
  Error(Subsystem subsystem, std::string code, std::string message, std::string hint, const char* file,
        int line);

  Subsystem subsystem() const { return subsystem_; }
  const std::string& code() const { return code_; }
  const std::string& message() const { return message_; }
  const std::string& hint() const { return hint_; }
  const std::string& host() const { return host_; }
  int rank() const { return rank_; }  // -1 outside an MPI job (set_error_rank)
  const char* file() const { return file_; }
  int line() const { return line_; }

  // "error [hdf5/read] rank 0 on host: message (file.cpp:12)\nHINT: ..."
  std::string to_string() const;

 private:
  Subsystem subsystem_;
  std::string code_;
  std::string message_;
  std::string hint_;
  const char* file_;
  int line_;
  int rank_;
  std::string host_;
};

namespace detail {
// Builds a message with operator<< and throws. Kept out of line so the macros stay small.
[[noreturn]] void throw_error(Subsystem subsystem, const char* code, const std::string& message,
                              const std::string& hint, const char* file, int line);

struct MessageBuilder {
  std::ostringstream os;
  template <typename T>
  MessageBuilder& operator<<(const T& v) {
    os << v;
    return *this;
  }
  std::string str() const { return os.str(); }
};
}  // namespace detail

}  // namespace odmoe

// ODMOE_THROW(kIo, "open", "cannot open " << path, "check the path")
#define ODMOE_THROW(SUBSYS, CODE, MSG, HINT)                                                        \
  ::odmoe::detail::throw_error(::odmoe::Subsystem::SUBSYS, CODE,                                    \
                               (::odmoe::detail::MessageBuilder() << MSG).str(),                    \
                               (::odmoe::detail::MessageBuilder() << HINT).str(), __FILE__, __LINE__)

// ODMOE_CHECK(cond, kConfig, "bad-config", "n_head must divide n_embd, got " << n, "")
#define ODMOE_CHECK(COND, SUBSYS, CODE, MSG, HINT) \
  do {                                             \
    if (!(COND)) ODMOE_THROW(SUBSYS, CODE, MSG, HINT); \
  } while (0)
