#!/usr/bin/env python3
"""Decode speed of the distributed modes on one model, in one run: `resident` (every expert
kept in the expert ranks' memory: the fully cached baseline) against `on-demand` with the
`oracle` predictor (a recorded trace: the upper bound of prediction) and with `none` (load
after routing), next to what the paper's Eq. 1 predicts:

    t_maxload = G * t_main + (G - 1) * t_worker

t_main (main's dense work per layer) and t_worker (one layer's expert phase as main sees it)
are measured in the resident run. With --load-gbps auto, each expert rank's pulls are capped
(EMULATION of an edge link, odmoe --load-gbps) at the rate that makes one layer's loads take
--fit (default 0.8) of t_maxload, so Eq. 1 says they should all be hidden.

    bench/dist_modes_bench.py --model DIR [--np 5] [--groups 2] [--tokens 64] [--load-gbps auto|X|0]
                              [--json FILE]

Prints one row per mode: decode tokens/s, % of resident, load time hidden behind compute
(measured and per Eq. 1), time stalled on weights; writes everything as JSON with --json.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile


def run(cmd, env):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-4000:]}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--np", type=int, default=3, help="MPI ranks: main + expert ranks")
    ap.add_argument("--groups", type=int, default=0, help="0: odmoe's default")
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per run")
    ap.add_argument("--load-gbps", default="auto", help="auto | a rate in Gbit/s | 0 (no cap)")
    ap.add_argument("--fit", type=float, default=0.8, help="auto: one layer's loads take this fraction of t_maxload")
    ap.add_argument("--repeat", type=int, default=1, help="runs per mode; the best decode speed is kept")
    ap.add_argument("--odmoe", default=os.path.join(os.path.dirname(__file__), "..", "build", "bin", "odmoe"))
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--mpirun-args", default="--oversubscribe", help="extra mpirun arguments")
    ap.add_argument("--extra", default="", help="extra odmoe arguments for every run (e.g. --threads 1)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()

    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    tmp = tempfile.mkdtemp(prefix="odmoe-bench-")
    try:
        base = [a.odmoe, "generate", "--model", a.model, "--prompt", a.prompt, "--max-new-tokens", str(a.tokens)]
        base += a.extra.split()
        trace = os.path.join(tmp, "routing.json")

        def stats_of(cmd, tag):
            path = os.path.join(tmp, tag + ".json")
            best = None
            for _ in range(a.repeat):
                run(cmd + ["--stats-json", path], env)
                s = json.load(open(path))
                if best is None or s["decode_tokens_per_second"] > best["decode_tokens_per_second"]:
                    best = s
            return best

        mpi = [a.mpirun] + a.mpirun_args.split() + ["-np", str(a.np)]
        groups = ["--groups", str(a.groups)] if a.groups else []
        single = stats_of(base + ["--save-routing", trace], "single")
        resident = stats_of(mpi + base + ["--mode", "resident"] + groups, "resident")

        sch, tim = resident["schedule"], resident["timing"]
        G, S = sch["groups"], sch["group_size"]
        L = len(json.load(open(trace))["steps"][0]["layers"])
        rt = json.load(open(trace))
        k, E = rt["top_k"], rt["n_expert"]
        expert_bytes = tim["workers_bytes_pulled"] / (L * E)  # resident pulls every expert once
        per_worker_layer = math.ceil(k / S) * expert_bytes    # one layer's loads on one expert rank
        t_main, t_worker = tim["t_main_seconds_per_layer"], tim["t_worker_seconds_per_layer"]
        t_maxload = G * t_main + (G - 1) * t_worker
        if a.load_gbps == "auto":
            gbps = per_worker_layer * 8 / (a.fit * t_maxload) / 1e9 if t_maxload > 0 else 0.0
        else:
            gbps = float(a.load_gbps)

        cap = ["--load-gbps", f"{gbps:.6g}"] if gbps > 0 else []
        oracle = stats_of(mpi + base + ["--mode", "on-demand", "--predictor", "oracle", "--routing-trace", trace]
                          + groups + cap, "oracle")
        none = stats_of(mpi + base + ["--mode", "on-demand", "--predictor", "none"] + groups + cap, "none")

        res_tps = resident["decode_tokens_per_second"]
        # The transport's limit: what one expert rank's pulls sustain (bytes / time a load
        # took, measured in the run without prediction, where loads do not queue behind
        # each other), and the decode speed that allows when every expert is pulled once.
        tn = none["timing"]
        pull_bps = tn["workers_bytes_pulled"] / tn["workers_load_seconds"] if tn["workers_load_seconds"] > 0 else 0
        bytes_per_token_per_worker = per_worker_layer * math.ceil(L / G)
        pull_bound_tps = pull_bps / bytes_per_token_per_worker if bytes_per_token_per_worker else 0
        t_load_layer = per_worker_layer * 8 / (gbps * 1e9) if gbps > 0 else None
        eq1_hidden = 1.0 if t_load_layer is None else min(1.0, t_maxload / t_load_layer)
        rows = []
        for name, s in [("single process", single), ("resident", resident), ("on-demand oracle", oracle),
                        ("on-demand none", none)]:
            t = s.get("timing", {})
            wall = s["prefill_seconds"] + s["decode_seconds"]
            workers = max(1, a.np - 1)
            rows.append({
                "run": name,
                "decode_tokens_per_second": s["decode_tokens_per_second"],
                "percent_of_resident": 100.0 * s["decode_tokens_per_second"] / res_tps,
                "ttft_seconds": s["ttft_seconds"],
                "load_hidden_fraction": t.get("load_hidden_fraction"),
                "stall_fraction": (t["workers_stall_seconds"] / workers / wall) if t else None,
                "stall_ms_per_token": (1e3 * t["workers_stall_seconds"] / workers / max(1, s["generated_tokens"]))
                if t else None,
                "bytes_pulled": t.get("workers_bytes_pulled"),
                "predictor_recall": s.get("predictor", {}).get("recall"),
            })

        print(f"model {a.model}: {L} layers, {E} experts, top-{k}; expert {expert_bytes / 2**20:.2f} MiB")
        print(f"{a.np} ranks: {sch['description']}; {resident['engine'].split(', cpu')[0]}")
        print(f"Eq. 1 (from the resident run): t_main {t_main * 1e3:.3f} ms, t_worker {t_worker * 1e3:.3f} ms per layer "
              f"-> t_maxload = {G}*t_main + {G - 1}*t_worker = {t_maxload * 1e3:.3f} ms")
        if gbps > 0:
            print(f"link EMULATION: --load-gbps {gbps:.4g} per expert rank -> one layer's loads "
                  f"({per_worker_layer / 2**20:.2f} MiB per rank) take {t_load_layer * 1e3:.3f} ms "
                  f"= {t_load_layer / t_maxload:.2f} x t_maxload; Eq. 1 predicts {100 * eq1_hidden:.0f}% hidden")
        else:
            print("no link cap: pulls run at the RMA transport's speed")
        print(f"limits: resident {res_tps:.1f} tok/s; measured pull bandwidth {pull_bps * 8 / 1e9:.2f} Gbit/s per "
              f"expert rank, {bytes_per_token_per_worker / 2**20:.2f} MiB per token per rank "
              f"-> on-demand can reach at most {pull_bound_tps:.1f} tok/s "
              f"({100 * min(1.0, pull_bound_tps / res_tps):.0f}% of resident)")
        print(f"{'run':<18} {'decode tok/s':>12} {'% resident':>10} {'TTFT ms':>8} {'hidden':>7} {'stall':>7} "
              f"{'stall ms/tok':>12} {'recall':>7}")
        for r in rows:
            f = lambda v, fmt: (fmt % v) if v is not None else "-"
            print(f"{r['run']:<18} {r['decode_tokens_per_second']:>12.1f} {r['percent_of_resident']:>9.1f}% "
                  f"{1e3 * r['ttft_seconds']:>8.2f} {f(r['load_hidden_fraction'] and 100 * r['load_hidden_fraction'], '%6.1f%%'):>7} "
                  f"{f(r['stall_fraction'] and 100 * r['stall_fraction'], '%6.1f%%'):>7} "
                  f"{f(r['stall_ms_per_token'], '%12.3f'):>12} {f(r['predictor_recall'], '%7.3f'):>7}")
        if a.json:
            out = {"model": a.model, "np": a.np, "schedule": sch, "tokens": a.tokens, "prompt": a.prompt,
                   "expert_bytes": expert_bytes, "eq1": {"t_main_seconds": t_main, "t_worker_seconds": t_worker,
                                                         "t_maxload_seconds": t_maxload, "load_gbps": gbps,
                                                         "t_load_layer_seconds": t_load_layer,
                                                         "predicted_hidden_fraction": eq1_hidden},
                   "limits": {"resident_tokens_per_second": res_tps, "pull_bytes_per_second": pull_bps,
                              "bytes_per_token_per_worker": bytes_per_token_per_worker,
                              "on_demand_bound_tokens_per_second": pull_bound_tps},
                   "rows": rows, "raw": {"single": single, "resident": resident, "oracle": oracle, "none": none}}
            with open(a.json, "w") as fh:
                json.dump(out, fh, indent=2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
