#include "odmoe/cli/cli.h"

#include <cstdio>
#include <iostream>

#include "odmoe/core/error.h"

namespace odmoe::cli {

int dispatch(const char* program, int argc, char** argv, const std::vector<std::pair<std::string, Command>>& commands,
             const char* usage) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    for (const auto& [name, run] : commands)
      if (name == cmd) return run(argc - 1, argv + 1);
    std::fprintf(stderr, "%s: unknown command '%s'\n\n%s", program, cmd.c_str(), usage);
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s %s: %s\n(see %s %s --help)\n", program, cmd.c_str(), e.what(), program, cmd.c_str());
    return 2;
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "%s %s: %s\n(see %s %s --help)\n", program, cmd.c_str(), e.what(), program, cmd.c_str());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s %s: %s\n", program, cmd.c_str(), e.to_string().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s %s: error: %s\n", program, cmd.c_str(), e.what());
    return 1;
  }
}

bool parse_options(int argc, char** argv, boost::program_options::options_description& opts,
                   const boost::program_options::positional_options_description& positional, const char* usage,
                   boost::program_options::variables_map* vm) {
  namespace po = boost::program_options;
  opts.add_options()("help,h", "show this help");
  po::store(po::command_line_parser(argc, argv).options(opts).positional(positional).run(), *vm);
  if (vm->count("help")) {
    std::cout << usage << "\n" << opts << "\n";
    return false;
  }
  po::notify(*vm);
  return true;
}

}  // namespace odmoe::cli
