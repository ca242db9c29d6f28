#!/usr/bin/env python3
"""Checks `odmoe simulate` against real runs, and uses it to project clusters that are not at hand.

validate (the default part): for each configuration (ranks, groups, mode, predictor, emulated
link rate) it runs

    mpirun --oversubscribe -np N odmoe generate --model DIR --prompt TEXT --max-new-tokens 128 \\
           --groups G --mode M --predictor P [--load-gbps X] --stats-json F

--repeat times (the configurations interleaved round by round, so a slow phase of the
machine hits them all alike), feeds every stats file to

    odmoe simulate --from-stats F --json OUT

and compares the simulated decode tokens/s with the measured one (medians over the
repeats). The simulator takes from the file what the runtime measured of each part: main's
dense work per layer and its remaining work per token, the workers' compute per expert,
the pull time (the emulated link's rate, plus what a pull took beyond it), the predictor's
recall and lead histogram, and a message latency (main's wait per layer less the workers'
compute and mean stall). What it predicts is how the schedule turns these into waiting:
loads queued on a link, stalls, what overlaps with what.

The emulated-link runs also get --pull-post-us: on one node a get is a copy made as it
is posted, and the worker takes its next command (the missed expert's COMPUTE) only after
it. The runs of the same shape without a link cap measure that copy (their pull time).

"what-if": each emulated-link run is also predicted from the run at the other link rate
of the same configuration and round, with only --load-gbps changed: a prediction of a run
the simulator has not seen. It inherits the other run's conditions, so on a busy machine
it measures the machine's swings as much as the model.

Runs without a link cap are reported apart: on one node a pull is a memory copy made by
the same two cores under MPI's lock, not a separate link, which the model does not cover
well (see bench/README.md).

projection (--parts projection): the simulator on clusters described by their hardware:
  (a) the paper's testbed: 10 nodes with one RTX 3090 each, PCIe 4.0, 1 Gbit/s Ethernet,
      Mixtral-8x7B in f32 and bf16, the store replicated on every node (pulls over PCIe,
      activations over the 1 Gbit/s link); 1 main + 8 workers + 1 shadow node, as the paper
      ran it, and 1 main + 9 workers with the shadow on main; --suggest-groups for each;
  (b) 64 nodes with one H100 each and a 100 Gbit/s network, DeepSeek-V3 (671B) in int8 with
      the store sharded over the nodes (it does not fit one node's memory, so pulls cross
      the network), --suggest-groups.

    bench/sim_validate.py [--parts validate,projection] [--repeat 5] [--tokens 128]
                          [--json FILE] [--out-txt FILE]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(cmd, env=None, check=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if check and p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-4000:]}")
    return p.stdout


class Out:
    """Prints and keeps the text for --out-txt."""

    def __init__(self):
        self.lines = []

    def __call__(self, s=""):
        print(s, flush=True)
        self.lines.append(s)


def configurations(gbps_list):
    """(np, groups, mode, predictor, load_gbps) to run."""
    shapes = [(3, 1), (5, 1), (5, 2), (5, 4)]
    out = []
    for np_, g in shapes:
        out.append((np_, g, "resident", "none", 0.0))
        out.append((np_, g, "on-demand", "none", 0.0))
        out.append((np_, g, "on-demand", "shadow", 0.0))
        for gbps in gbps_list:
            out.append((np_, g, "on-demand", "none", gbps))
            out.append((np_, g, "on-demand", "shadow", gbps))
    return out


def tag_of(cfg):
    np_, g, mode, pred, gbps = cfg
    return f"np{np_}_G{g}_{mode}_{pred}_{gbps:g}"


def simulate(odmoe, stats_path, extra, tmp):
    out = os.path.join(tmp, "sim.json")
    run([odmoe, "simulate", "--from-stats", stats_path, "--json", out] + extra)
    with open(out) as f:
        return json.load(f)["runs"][0]


def validate(a, say, tmp):
    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    gbps_list = [float(x) for x in a.load_gbps.split(",") if x]
    cfgs = configurations(gbps_list)
    samples = {tag_of(c): [] for c in cfgs}
    say(f"validate: {len(cfgs)} configurations x {a.repeat} rounds, {a.tokens} new tokens each, model {os.path.relpath(a.model, ROOT)}")
    for rnd in range(a.repeat):
        for cfg in cfgs:
            np_, g, mode, pred, gbps = cfg
            path = os.path.join(tmp, f"{tag_of(cfg)}_{rnd}.json")
            cmd = [a.mpirun] + a.mpirun_args.split() + ["-np", str(np_), a.odmoe, "generate", "--model", a.model,
                                                         "--prompt", a.prompt, "--max-new-tokens", str(a.tokens),
                                                         "--groups", str(g), "--mode", mode, "--predictor", pred,
                                                         "--stats-json", path]
            if gbps > 0:
                cmd += ["--load-gbps", f"{gbps:g}"]
            run(cmd, env)
            samples[tag_of(cfg)].append(path)
        print(f"  round {rnd + 1}/{a.repeat} done", file=sys.stderr, flush=True)

    # On one node a get is a copy made as it is posted, and the worker takes its next
    # command only after it: the runs without a link cap measure that copy (their pull time),
    # which the emulated-link runs of the same shape get as --pull-post-us.
    copy_us = {}
    for cfg in cfgs:
        np_, g, mode, _, gbps = cfg
        if mode == "resident" or gbps > 0:
            continue
        for p in samples[tag_of(cfg)]:
            with open(p) as f:
                t = json.load(f)["ranks"][1:]
            pulls = sum(r.get("pulls", 0) for r in t)
            if pulls:
                copy_us.setdefault((np_, g), []).append(1e6 * sum(r.get("load_seconds", 0) for r in t) / pulls)
    copy_us = {k: statistics.median(v) for k, v in copy_us.items()}

    def extra_args(cfg):
        np_, g, mode, _, gbps = cfg
        return ["--pull-post-us", f"{copy_us[(np_, g)]:.4g}"] if gbps > 0 and (np_, g) in copy_us else []

    # Every run is compared with its own simulation; a configuration's error is the median
    # over the rounds (the machine's load swings from round to round, and each run's inputs
    # come from that run).
    rows = []
    by_cfg = {}
    for cfg in cfgs:
        np_, g, mode, pred, gbps = cfg
        meas, selfp, errs, extra = [], [], [], {}
        for p in samples[tag_of(cfg)]:
            with open(p) as f:
                s = json.load(f)
            meas.append(s["decode_tokens_per_second"])
            r = simulate(a.odmoe, p, extra_args(cfg), tmp)
            selfp.append(r["simulated"]["tokens_per_second"])
            errs.append((selfp[-1] - meas[-1]) / meas[-1])
            t = s["timing"]
            steps = r["config"]["tokens"]
            extra.setdefault("stall_ms_per_token", []).append(1e3 * t["workers_stall_seconds"] / steps)
            extra.setdefault("sim_stall_ms_per_token", []).append(1e3 * r["simulated"]["stall_seconds"] / steps)
            extra.setdefault("recall", []).append(s.get("predictor", {}).get("recall", 0.0))
            extra.setdefault("hidden", []).append(t.get("load_hidden_fraction", 1.0))
            extra.setdefault("sim_hidden", []).append(r["simulated"]["load_hidden_fraction"])
            extra.setdefault("msg_us", []).append(1e6 * r["config"]["msg_latency_seconds"])
            extra.setdefault("submit_us", []).append(1e6 * r["config"]["t_submit_seconds"])
        m = statistics.median(meas)
        row = {"np": np_, "groups": g, "mode": mode, "predictor": pred, "load_gbps": gbps,
               "measured_tokens_per_second": m, "measured_all": meas, "measured_spread": (max(meas) - min(meas)) / m,
               "simulated_tokens_per_second": statistics.median(selfp), "simulated_all": selfp,
               "errors": errs, "error": statistics.median(errs)}
        for k, v in extra.items():
            row[k] = statistics.median(v)
        rows.append(row)
        by_cfg[cfg] = row

    # What if the link were another rate: each emulated run predicted from the run of the
    # same configuration and round at the other rate (run seconds before it), with only
    # --load-gbps changed.
    for cfg in cfgs:
        np_, g, mode, pred, gbps = cfg
        if gbps <= 0 or len(gbps_list) < 2:
            continue
        src = [x for x in gbps_list if x != gbps][0]
        errs, preds = [], []
        for p_src, m in zip(samples[tag_of((np_, g, mode, pred, src))], by_cfg[cfg]["measured_all"]):
            preds.append(simulate(a.odmoe, p_src, ["--load-gbps", f"{gbps:g}"] + extra_args(cfg), tmp)["simulated"][
                "tokens_per_second"])
            errs.append((preds[-1] - m) / m)
        row = by_cfg[cfg]
        row["what_if_from_gbps"] = src
        row["what_if_all"] = preds
        row["what_if_tokens_per_second"] = statistics.median(preds)
        row["what_if_errors"] = errs
        row["what_if_error"] = statistics.median(errs)

    say()
    say("the copy a posted pull holds its worker for (no-cap runs' pull time, passed as --pull-post-us to the "
        "emulated-link runs): " + ", ".join(f"np {k[0]} G {k[1]}: {v:.1f} us" for k, v in sorted(copy_us.items())))
    say()
    say("Per configuration: medians over the rounds; 'error' is the median of the runs' own errors (simulated vs "
        "measured, run by run).")
    say()
    say("| np | G | mode | predictor | link Gbit/s | measured tok/s (spread) | simulated | error "
        "| what-if from the other rate | error | stall ms/tok meas / sim | load hidden meas / sim |")
    say("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        wi = (f"{r['what_if_tokens_per_second']:.0f} (from {r['what_if_from_gbps']:g}) | {100 * r['what_if_error']:+.1f}%"
              if "what_if_error" in r else "- | -")
        say(f"| {r['np']} | {r['groups']} | {r['mode']} | {r['predictor']} | {r['load_gbps']:g} "
            f"| {r['measured_tokens_per_second']:.0f} ({100 * r['measured_spread']:.0f}%) "
            f"| {r['simulated_tokens_per_second']:.0f} | {100 * r['error']:+.1f}% | {wi} "
            f"| {r['stall_ms_per_token']:.3f} / {r['sim_stall_ms_per_token']:.3f} "
            f"| {100 * r['hidden']:.0f}% / {100 * r['sim_hidden']:.0f}% |")

    def stats_of(sel, key):
        errs = [abs(r[key]) for r in rows if sel(r) and key in r]
        if not errs:
            return None
        runs = [abs(e) for r in rows if sel(r) and key in r for e in r[key + "s"]]
        return {"n": len(errs), "mean_abs_error": sum(errs) / len(errs), "max_abs_error": max(errs),
                "within_15_percent": sum(e <= 0.15 for e in errs),
                "runs": len(runs), "runs_mean_abs_error": sum(runs) / len(runs)}

    groups = {
        "all": lambda r: True,
        "resident": lambda r: r["mode"] == "resident",
        "on-demand, emulated link": lambda r: r["mode"] != "resident" and r["load_gbps"] > 0,
        "on-demand, no link cap": lambda r: r["mode"] != "resident" and r["load_gbps"] == 0,
    }
    summary = {}
    say()
    for name, sel in groups.items():
        st = stats_of(sel, "error")
        summary[name] = st
        say(f"{name}: {st['n']} configurations, mean |error| {100 * st['mean_abs_error']:.1f}%, "
            f"max {100 * st['max_abs_error']:.1f}%, {st['within_15_percent']} within 15% "
            f"(run by run: mean |error| {100 * st['runs_mean_abs_error']:.1f}% over {st['runs']} runs)")
    wi = stats_of(lambda r: True, "what_if_error")
    if wi:
        summary["what-if"] = wi
        say(f"what-if (link rate changed, predicted from the run at the other rate): {wi['n']} configurations, "
            f"mean |error| {100 * wi['mean_abs_error']:.1f}%, max {100 * wi['max_abs_error']:.1f}%, "
            f"{wi['within_15_percent']} within 15% (run by run: {100 * wi['runs_mean_abs_error']:.1f}% over "
            f"{wi['runs']} runs)")
    return {"rows": rows, "summary": summary, "pull_post_us": {f"np{k[0]}_G{k[1]}": v for k, v in copy_us.items()}}


def projection(a, say, tmp):
    out = {}

    def sim(name, args):
        path = os.path.join(tmp, name + ".json")
        text = run([a.odmoe, "simulate"] + args + ["--json", path])
        say(f"$ odmoe simulate {' '.join(args)}")
        for line in text.rstrip().splitlines():
            say("    " + line)
        say()
        with open(path) as f:
            out[name] = {"args": args, "result": json.load(f)}

    say("(a) the paper's testbed: 10 nodes x RTX 3090 (24 GB, 936 GB/s), PCIe 4.0 x16, 1 Gbit/s Ethernet,")
    say("    Mixtral-8x7B, store replicated (pulls over PCIe, activations over the 1 Gbit/s link)")
    say()
    testbed = ["--arch", "mixtral-8x7b", "--gpu", "rtx3090", "--nodes", "10", "--link-gbps", "1"]
    for dtype in ["f32", "bf16"]:
        sim(f"testbed_{dtype}_shadow_node", testbed + ["--dtype", dtype, "--shadow-node", "--predictor", "shadow",
                                                        "--suggest-groups"])
        sim(f"testbed_{dtype}_main_shadow", testbed + ["--dtype", dtype, "--predictor", "shadow", "--suggest-groups"])
    sim("testbed_bf16_none", testbed + ["--dtype", "bf16", "--shadow-node", "--predictor", "none", "--groups", "4"])
    say("(b) 64 nodes x H100 (80 GB, 3.35 TB/s), PCIe 5.0, 100 Gbit/s network, DeepSeek-V3 (671B) in int8,")
    say("    store sharded over the nodes (pulls cross the network)")
    say()
    big = ["--arch", "deepseek-v3", "--dtype", "int8", "--gpu", "h100", "--nodes", "64", "--link-gbps", "100",
           "--store", "sharded", "--predictor", "shadow"]
    sim("deepseek_v3_64_h100", big + ["--suggest-groups"])
    sim("deepseek_v3_64_h100_lookahead2", big + ["--lookahead", "2", "--suggest-groups"])
    return out


def environment(a):
    def out(cmd):
        try:
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.strip()
        except OSError:
            return ""
    return {"git_revision": out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
            "cores": os.cpu_count(), "mpirun": out([a.mpirun, "--version"]).splitlines()[0:1],
            "kernel": out(["uname", "-r"])}


def header(a, part):
    env = environment(a)
    return (f"# bench/sim_validate.py --parts {part} (git {env['git_revision']}, {env['cores']} cores, "
            f"{' '.join(env['mpirun'])})\n\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="validate,projection")
    ap.add_argument("--model", default=os.path.join(ROOT, "build", "shakespeare-mixtral"))
    ap.add_argument("--odmoe", default=os.path.join(ROOT, "build", "bin", "odmoe"))
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--mpirun-args", default="--oversubscribe")
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5, help="rounds; medians are compared")
    ap.add_argument("--load-gbps", default="10,30", help="emulated link rates for the on-demand runs")
    ap.add_argument("--json", help="write all results to this JSON file")
    ap.add_argument("--results-dir", help="write sim_validation.txt|json and sim_projection.txt|json here")
    a = ap.parse_args()
    parts = a.parts.split(",")
    result = {}
    with tempfile.TemporaryDirectory(prefix="odmoe-simval-") as tmp:
        # Run a private copy: a rebuild of the tree during the run must not swap the binary.
        copy = os.path.join(tmp, "odmoe")
        shutil.copy2(a.odmoe, copy)
        a.odmoe = copy
        for part, fn, name in [("validate", validate, "sim_validation"), ("projection", projection, "sim_projection")]:
            if part not in parts:
                continue
            say = Out()
            result[part] = fn(a, say, tmp)
            if a.results_dir:
                with open(os.path.join(a.results_dir, name + ".txt"), "w") as f:
                    f.write(header(a, part) + "\n".join(say.lines) + "\n")
                with open(os.path.join(a.results_dir, name + ".json"), "w") as f:
                    json.dump({"command": " ".join(sys.argv), "environment": environment(a), part: result[part]}, f,
                              indent=2)
            print()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "environment": environment(a), **result}, f, indent=2)


if __name__ == "__main__":
    main()
