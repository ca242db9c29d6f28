#!/usr/bin/env python3
"""Soak: many generations in a row in one MPI job, and one generation through the whole
context, watching memory per rank and speed from start to end.

    bench/soak.py --model DIR [--np 5] [--count 200] [--max-new-tokens 64] [--groups G]
                  [--extra "--predictor shadow"] [--odmoe build/bin/odmoe]
                  [--lsan-odmoe build-asan/bin/odmoe --lsan-count 50] [--json FILE]

1. `odmoe generate --prompts FILE` with --count prompts (the bundled held-out passages, cycled)
   under `mpirun -np N`: every rank records its resident set and peak after each generation
   (memory marks). Printed per rank: peak RSS after the first generation and after the last,
   and the growth; decode tokens/s over the first and the last tenth of the batch (the last
   tenth repeats the first tenth's prompts, so both measure the same work).
2. One generation from a short prompt until the context is full (stop reason context-full),
   with the peak memory of every rank.
3. With --lsan-odmoe (an AddressSanitizer build: cmake -DODMOE_SANITIZER=address), the first
   --lsan-count prompts again with LeakSanitizer on, in one process and under mpirun -np N:
   exit status 0 means no leak was found.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.join(HERE, "..", "weights-tools", "models", "shakespeare-mixtral", "heldout-prompts.jsonl")


def run(cmd, env=None, check=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if check and p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-4000:]}")
    return p


def mib(b):
    return b / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--np", type=int, default=5)
    ap.add_argument("--count", type=int, default=200, help="generations in the batch")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--groups", type=int, default=0)
    ap.add_argument("--extra", default="--predictor shadow", help="more odmoe generate options")
    ap.add_argument("--prompts", default=BUNDLED, help="JSON Lines prompts, cycled to --count")
    ap.add_argument("--odmoe", default="build/bin/odmoe")
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--lsan-odmoe", help="an AddressSanitizer build of odmoe: the batch again under LeakSanitizer")
    ap.add_argument("--lsan-count", type=int, default=50)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    with open(a.prompts) as f:
        source = [json.loads(line) for line in f if line.strip()]
    if not source:
        sys.exit(f"{a.prompts} holds no prompts")
    mpi = [a.mpirun, "--oversubscribe", "-np", str(a.np)]
    common = ["--model", a.model, "--groups", str(a.groups)] + a.extra.split()
    out = {"model": a.model, "np": a.np, "count": a.count, "max_new_tokens": a.max_new_tokens, "extra": a.extra}
    with tempfile.TemporaryDirectory() as tmp:
        batch_file = os.path.join(tmp, "prompts.jsonl")
        # The prompts cycle, except that the last tenth repeats the first tenth's prompts in
        # order: the two speeds compare the same work, early and late in the job.
        tenth = max(1, a.count // 10)
        batch = [source[i % len(source)] for i in range(a.count)]
        batch[a.count - tenth:] = batch[:tenth]
        with open(batch_file, "w") as f:
            for p in batch:
                f.write(json.dumps(p) + "\n")

        # 1. The batch.
        stats = os.path.join(tmp, "batch.json")
        p = run(mpi + [a.odmoe, "generate", "--prompts", batch_file, "--max-new-tokens", str(a.max_new_tokens),
                       "--stats-json", stats] + common, env)
        lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
        if len(lines) != a.count:
            sys.exit(f"{len(lines)} results for {a.count} prompts")
        s = json.load(open(stats))
        b = s["batch"]
        print(f"batch: {a.count} generations of up to {a.max_new_tokens} tokens, mpirun -np {a.np} ({s['engine']})")
        print(f"  decode tok/s: first tenth {b['decode_tokens_per_second_first_tenth']:.1f}, "
              f"last tenth {b['decode_tokens_per_second_last_tenth']:.1f}")
        # Per tenth, the median of the generations' decode speeds: the spread shows this
        # machine's noise, a trend would show a slowdown.
        rates = [x["decode_tokens_per_second"] for x in lines]
        deciles = [statistics.median(rates[i * tenth:(i + 1) * tenth]) for i in range(a.count // tenth)]
        print("  median decode tok/s per tenth: " + " ".join(f"{r:.0f}" for r in deciles))
        print(f"  {'rank':>4} {'peak RSS after 1st':>19} {'after last':>11} {'growth':>9} {'RSS after 1st':>14} {'after last':>11}")
        growth = []
        for m in b["memory_per_rank"]:
            g = m["peak_rss_bytes_after_last"] - m["peak_rss_bytes_after_first"]
            growth.append(g)
            print(f"  {m['rank']:>4} {mib(m['peak_rss_bytes_after_first']):>15.1f} MiB {mib(m['peak_rss_bytes_after_last']):>7.1f} MiB"
                  f" {mib(g):>5.1f} MiB {mib(m['rss_bytes_after_first']):>10.1f} MiB {mib(m['rss_bytes_after_last']):>7.1f} MiB")
        out["batch"] = {k: v for k, v in b.items() if k != "per_prompt"}
        out["batch"]["max_peak_growth_bytes"] = max(growth)
        out["batch"]["median_decode_tokens_per_second_per_tenth"] = deciles

        # 2. The whole context.
        stats = os.path.join(tmp, "long.json")
        run(mpi + [a.odmoe, "generate", "--prompt", "ROMEO:", "--max-new-tokens", "1000000", "--stats-json", stats]
            + common, env)
        s = json.load(open(stats))
        print(f"long: {s['generated_tokens']} tokens to the end of the context (stop: {s['stop_reason']}), "
              f"decode {s['decode_tokens_per_second']:.1f} tok/s; peak RSS per rank, MiB: " +
              ", ".join(f"{r['rank']}: {mib(r['peak_host_bytes']):.1f}" for r in s["ranks"]))
        out["long"] = {"generated_tokens": s["generated_tokens"], "stop_reason": s["stop_reason"],
                       "decode_tokens_per_second": s["decode_tokens_per_second"],
                       "peak_host_bytes_per_rank": [r["peak_host_bytes"] for r in s["ranks"]]}

        # 3. Leaks.
        if a.lsan_odmoe:
            small = os.path.join(tmp, "lsan.jsonl")
            with open(small, "w") as f:
                for i in range(a.lsan_count):
                    f.write(json.dumps(source[i % len(source)]) + "\n")
            # What LeakSanitizer needs beside Open MPI: see tests/lsan.supp.
            supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lsan.supp")
            lsan_env = {"ASAN_OPTIONS": "detect_leaks=1:fast_unwind_on_malloc=0",
                        "LSAN_OPTIONS": f"use_tls=0:suppressions={os.path.abspath(supp)}",
                        "OMPI_MCA_mca_base_component_disable_dlclose": "1",
                        "PMIX_MCA_mca_base_component_disable_dlclose": "1"}
            lenv = dict(env, **lsan_env)
            xs = [w for k in lsan_env for w in ("-x", k)]
            out["lsan"] = []
            for how, launcher in (("one process", []), (f"mpirun -np {a.np}", mpi + xs)):
                p = run(launcher + [a.lsan_odmoe, "generate", "--prompts", small, "--max-new-tokens",
                                    str(a.max_new_tokens)] + common, lenv, check=False)
                leaked = "LeakSanitizer" in p.stderr
                print(f"leaks: {a.lsan_count} generations ({how}) under LeakSanitizer: exit {p.returncode}, "
                      f"{'LEAKS REPORTED' if leaked else 'no leak reported'}")
                out["lsan"].append({"launch": how, "generations": a.lsan_count, "exit_status": p.returncode,
                                    "leak_reported": leaked})
                if p.returncode != 0:
                    print(p.stderr[-4000:])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
