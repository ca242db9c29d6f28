#!/usr/bin/env python3
"""The predictors, measured: what the README's predictor table and curves come from.

    bench/predictor_bench.py --model DIR [--np 5] [--groups 2] [--prompts 100] [--tokens 256]
                             [--parts eval,curves,departure,extra,speed] [--json FILE]

Parts (each prints a Markdown table; --json keeps everything):

  eval       `mpirun -np NP odmoe eval-predictor` (on-demand, G groups, greedy, alignment every
             token): recall, precision, share of layers predicted >= G-1 layers ahead, mean
             lead, shadow memory, for shadow f16/int8/int4, gate-ahead, previous, random.
  curves     recall by token index with and without alignment (token and/or KV) for each
             shadow precision: the paper's "recall falls without alignment" curve. One
             process with --predictor-sync (accuracy, not timing).
  departure  early (the shadow starts the next token from its own guess) against late (it
             waits for the full model's token, as the paper does): share of layers ready
             >= G-1 layers ahead, per layer, distributed.
  extra      --predict-extra 0/1/2 (top-(k+m) candidates in spare slots) on the int4 shadow:
             recall against precision, distributed.
  speed      decode tokens/s of on-demand with shadow (on main, and on a rank of its own)
             against on-demand with oracle (the upper bound), none, and resident, interleaved
             over --speed-repeat rounds (the median is reported), each run the same prompt
             and token count.

The limit each figure is compared with is printed beside it: recall and readiness against
oracle (100%), speed against oracle and resident in the same run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def run(cmd, env):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-4000:]}")
    return p.stdout


def pct(x):
    return f"{100.0 * x:.2f}%"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--np", type=int, default=5)
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=100, help="prompts for eval (the bundled held-out file)")
    ap.add_argument("--curve-prompts", type=int, default=20)
    ap.add_argument("--side-prompts", type=int, default=20, help="prompts for departure and extra")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--speed-tokens", type=int, default=256)
    ap.add_argument("--speed-repeat", type=int, default=3)
    ap.add_argument("--parts", default="eval,curves,departure,extra,speed")
    ap.add_argument("--odmoe", default=os.path.join(os.path.dirname(__file__), "..", "build", "bin", "odmoe"))
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--mpirun-args", default="--oversubscribe")
    ap.add_argument("--json")
    a = ap.parse_args()
    parts = set(a.parts.split(","))

    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    tmp = tempfile.mkdtemp(prefix="odmoe-pred-")
    mpi = [a.mpirun] + a.mpirun_args.split() + ["-np", str(a.np)]
    dist = ["--mode", "on-demand", "--groups", str(a.groups)]
    out = {"model": a.model, "np": a.np, "groups": a.groups, "tokens": a.tokens}

    def eval_predictor(tag, launcher, predictors, prompts, extra=()):
        path = os.path.join(tmp, tag + ".json")
        run(launcher + [a.odmoe, "eval-predictor", "--model", a.model, "--limit", str(prompts), "--tokens",
                        str(a.tokens), "--predictors", predictors, "--json", path] + list(extra), env)
        return json.load(open(path))

    if "eval" in parts:
        j = eval_predictor("eval", mpi, "shadow:f16,shadow:int8,shadow:int4,gate-ahead,previous,random", a.prompts, dist)
        out["eval"] = j
        full = None
        print(f"\n### Predictors: {j['prompts']} prompts x {j['tokens_per_prompt']} tokens, mpirun -np {a.np}, "
              f"{a.groups} groups, greedy, alignment every token\n")
        print("| predictor | recall | precision | ready >= G-1 layers ahead | mean lead (layers) | predictor memory |")
        print("|---|---|---|---|---|---|")
        for r in j["results"]:
            mem = "-"
            if "shadow_weight_bytes" in r:
                full = r["full_model_weight_bytes"]
                mem = f"{r['shadow_weight_bytes'] / 2**20:.1f} MiB ({100 * r['shadow_to_full_ratio']:.0f}% of the model)"
            print(f"| {r['label']} | {pct(r['recall'])} | {pct(r['precision'])} | {pct(r['ready_fraction'])} | "
                  f"{r['mean_lead_layers']:.2f} | {mem} |")
        if full:
            print(f"\nFull model: {full / 2**20:.1f} MiB of weights. Limit: oracle, 100% recall and precision.")

    if "curves" in parts:
        out["curves"] = {}
        print(f"\n### Recall by token index, {a.curve_prompts} prompts x {a.tokens} tokens, one process, "
              f"--predictor-sync\n")
        rows = []
        for tp, kp, name in [(1, 1, "token + KV"), (1, 0, "token only"), (0, 1, "KV only"), (0, 0, "none")]:
            j = eval_predictor(f"curve-{tp}{kp}", [], "shadow:f16,shadow:int8,shadow:int4", a.curve_prompts,
                               ["--align-token-period", str(tp), "--align-kv-period", str(kp)])
            out["curves"][name] = j
            for r in j["results"]:
                # recall_by_token comes in buckets of 16 tokens: show pairs (32 tokens per column)
                bt = r["recall_by_token"]
                curve = []
                for i in range(0, len(bt), 2):
                    pair = bt[i:i + 2]
                    act = sum(b["activated"] for b in pair)
                    curve.append((pair[0]["first_token"], pair[-1]["first_token"] + pair[-1]["tokens"] - 1,
                                  sum(b["recall"] * b["activated"] for b in pair) / act if act else 0.0))
                rows.append((name, r["label"], r["recall"], curve))
        heads = rows[0][3]
        print("| alignment | shadow | overall | " + " | ".join(f"tokens {a}-{b}" for a, b, _ in heads) + " |")
        print("|---|---|---|" + "---|" * len(heads))
        for name, label, rec, curve in rows:
            print(f"| {name} | {label} | {pct(rec)} | " + " | ".join(f"{100 * x:.1f}" for _, _, x in curve) + " |")

    def side_table(part, title, head, label, predictor, variants):
        """One eval-predictor run per variant (label, options) of `predictor`, as a table."""
        out[part] = {}
        print(f"\n### {title}, {a.side_prompts} prompts x {a.tokens} tokens, mpirun -np {a.np}, {a.groups} groups\n")
        print(f"| {label} | " + " | ".join(head) + " |")
        print("|---|" + "---|" * len(head))
        for name, options in variants:
            j = eval_predictor(f"{part}-{name}", mpi, predictor, a.side_prompts, dist + options)
            out[part][name] = j
            r = j["results"][0]
            cells = {"recall": pct(r["recall"]), "precision": pct(r["precision"]),
                     "ready >= G-1 ahead": pct(r["ready_fraction"]),
                     "ready, per layer": " / ".join(f"{100 * l['ready_fraction']:.0f}" for l in r["per_layer"]),
                     "mean lead": f"{r['mean_lead_layers']:.2f}", "decode tok/s": f"{r['decode_tokens_per_second']:.0f}"}
            print(f"| {name} | " + " | ".join(cells[h] for h in head) + " |")

    if "departure" in parts:
        side_table("departure", "Early against late departure, shadow int8",
                   ["recall", "ready >= G-1 ahead", "ready, per layer", "mean lead", "decode tok/s"], "departure",
                   "shadow:int8", [(d, ["--shadow-departure", d]) for d in ["late", "early"]])

    if "extra" in parts:
        side_table("extra", "Top-(k+m) candidates in spare slots, shadow int4",
                   ["recall", "precision", "decode tok/s"], "m (--predict-extra)", "shadow:int4",
                   [(str(m), ["--predict-extra", str(m)]) for m in [0, 1, 2]])

    if "speed" in parts:
        trace = os.path.join(tmp, "routing.json")
        base = [a.odmoe, "generate", "--model", a.model, "--prompt", "ROMEO:", "--max-new-tokens", str(a.speed_tokens)]
        run(base + ["--save-routing", trace], env)
        modes = {
            "resident": ["--mode", "resident", "--groups", str(a.groups)],
            "on-demand, oracle": dist + ["--predictor", "oracle", "--routing-trace", trace],
            "on-demand, shadow int8": dist + ["--predictor", "shadow", "--shadow-dtype", "int8"],
            "on-demand, shadow f16": dist + ["--predictor", "shadow", "--shadow-dtype", "f16"],
            "on-demand, none": dist + ["--predictor", "none"],
            # The shadow on a rank of its own (one more rank, the last).
            "on-demand, shadow int8, --predictor-rank": dist + ["--predictor", "shadow", "--shadow-dtype", "int8",
                                                                "--predictor-rank", str(a.np)],
        }
        mpi_plus = [a.mpirun] + a.mpirun_args.split() + ["-np", str(a.np + 1)]
        speeds = {m: [] for m in modes}
        last = {}
        for _ in range(a.speed_repeat):
            for m, extra in modes.items():
                path = os.path.join(tmp, "speed.json")
                run((mpi_plus if "--predictor-rank" in extra else mpi) + base + extra + ["--stats-json", path], env)
                s = json.load(open(path))
                speeds[m].append(s["decode_tokens_per_second"])
                last[m] = s
        out["speed"] = {m: {"runs": v, "median": statistics.median(v), "last": last[m]} for m, v in speeds.items()}
        oracle = statistics.median(speeds["on-demand, oracle"])
        resident = statistics.median(speeds["resident"])
        print(f"\n### Decode speed, {a.speed_tokens} tokens, mpirun -np {a.np}, {a.groups} groups, median of "
              f"{a.speed_repeat} interleaved runs\n")
        print("| mode | decode tok/s | % of oracle | % of resident | recall | load hidden | stall fraction |")
        print("|---|---|---|---|---|---|---|")
        for m, v in speeds.items():
            s = last[m]
            med = statistics.median(v)
            rec = s.get("predictor", {}).get("recall")
            t = s["timing"]
            stall = t["workers_stall_seconds"] / max(1e-9, s["decode_seconds"] * (a.np - 1))
            print(f"| {m} | {med:.0f} | {100 * med / oracle:.1f}% | {100 * med / resident:.1f}% | "
                  f"{'-' if rec is None or m == 'resident' else pct(rec)} | {100 * t['load_hidden_fraction']:.0f}% | "
                  f"{100 * stall:.1f}% |")

    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(a.json + ".tmp", a.json)
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
