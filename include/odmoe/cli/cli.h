// What the command-line programs (odmoe, odmoe-weights) share: sub-command dispatch, option
// parsing with --help, and one mapping of failures to exit status and messages:
//   0 success, 1 error (odmoe::Error printed with its HINT), 2 bad command line.
#pragma once

#include <boost/program_options.hpp>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "odmoe/core/error.h"

namespace odmoe::cli {

// A bad command line found after parsing (a value out of range, ...): exit status 2. The
// library reports bad user-chosen values with the same type (core/error.h).
using UsageError = ::odmoe::ArgumentError;

using Command = std::function<int(int argc, char** argv)>;

// Runs the sub-command named by argv[1] with argv shifted by one.
int dispatch(const char* program, int argc, char** argv, const std::vector<std::pair<std::string, Command>>& commands,
             const char* usage);

// Parses `opts` (plus --help) and positional arguments; returns false if --help was printed.
bool parse_options(int argc, char** argv, boost::program_options::options_description& opts,
                   const boost::program_options::positional_options_description& positional, const char* usage,
                   boost::program_options::variables_map* vm);

}  // namespace odmoe::cli
