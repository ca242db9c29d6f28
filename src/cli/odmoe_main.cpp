// odmoe: run a converted model.
//
//   [mpirun -np N] odmoe generate --model DIR --prompt TEXT|--prompts FILE [--max-new-tokens K]
//                  [--temperature T --top-k K --top-p P --seed S] [--stats-json FILE] [--trace FILE]
//                  [--save-routing FILE] [distributed options]
//   [mpirun -np N] odmoe logits --model DIR --token-ids 1,2,3 [--out FILE]
//   [mpirun -np N] odmoe perplexity --model DIR --text FILE [--context 256] [--json FILE]
//   odmoe tokenize --model DIR|--tokenizer FILE --text T|--file F|--decode 1,2,3 [--ids] [--no-special]
//
// One process runs everything (without starting MPI unless mpirun/srun launched it); with
// mpirun -np N (N >= 2) rank 0 is main and ranks 1..N-1 are expert ranks (--mode,
// --predictor, --groups, --placement, ...). Exit status: 0 success, 1 error (the message says
// what was wrong and how to fix it; every rank is brought down), 2 bad command line.
#include <mpi.h>
#include <unistd.h>

#include <cstdio>

#include "commands.h"
#include "odmoe/comm/comm.h"

using namespace odmoe;

namespace {

constexpr const char* kUsage =
    "usage: odmoe COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  generate     generate text from a prompt, streaming it as it is produced\n"
    "  logits       print the logits of a sequence of token ids as JSON\n"
    "  perplexity   perplexity of the model on a text file\n"
    "  eval-predictor  recall, precision and lead time of expert predictors over prompts\n"
    "  bench        the paper's protocol over modes x predictors x groups in one job (JSON)\n"
    "  simulate     discrete-event model of distributed decode; projects other clusters, --suggest-groups\n"
    "  tokenize     the ids (and vocabulary entries) of a text, or the text of ids (--decode)\n"
    "\n"
    "`odmoe COMMAND --help` describes each command's options.\n";

int run(int argc, char** argv) {
  return cli::dispatch("odmoe", argc, argv,
                       {{"generate", cli::cmd_generate},
                        {"logits", cli::cmd_logits},
                        {"perplexity", cli::cmd_perplexity},
                        {"eval-predictor", cli::cmd_eval_predictor},
                        {"bench", cli::cmd_bench},
                        {"simulate", cli::cmd_simulate}}, kUsage);
}

}  // namespace

int main(int argc, char** argv) {
  // tokenize runs in one process without MPI: it needs neither ranks nor the MPI runtime.
  if (argc >= 2 && std::string(argv[1]) == "tokenize")
    return cli::dispatch("odmoe", argc, argv, {{"tokenize", cli::cmd_tokenize}}, kUsage);
  // MPI starts when a command first asks for the ranks (mpi_world_size, after its options are
  // parsed), and only when a launcher started this process: --help, a bad command line and a
  // single-process run never pay for its start-up.
  const int rc = run(argc, argv);
  if (job_degraded()) {
    // An expert rank died and the run carried on without it (--on-worker-failure degrade):
    // MPI without fault tolerance cannot finalize with a dead rank, so end here.
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(rc);
  }
  if (rc != 0 && Engine::ranks_coupled()) {
    // The other ranks are waiting on this one: bring the whole job down now rather than
    // let them run into their timeouts.
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, rc);  // (does not return)
  }
  mpi_finalize();
  return rc;
}
