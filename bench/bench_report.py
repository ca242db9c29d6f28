#!/usr/bin/env python3
"""Turns the JSON of `odmoe bench` into the paper's Table 2 layout (markdown) and plots (PNG).

    bench/bench_report.py BENCH.json [--out DIR] [--name PREFIX] [--trace TRACE.json]

Writes, in DIR (default: next to the JSON, named after it):
  PREFIX.md             Table 2: one row per run (mode + predictor, groups), per case
                        (input/output tokens) decode tokens/s and TTFT, then memory per rank,
                        and a second table with what explains the speed (stall, bytes moved,
                        recall or hit rate, token agreement and perplexity for substitution).
  PREFIX-speed-memory.png   decode tokens/s against the largest rank's memory, one point per
                        run, one panel per case: what each mode buys for the memory it needs.
  PREFIX-timeline.png   the per-layer timeline of one decode token from a trace written by
                        `odmoe bench --trace-dir` (or `generate --trace`): main's dense work and
                        waits, every expert rank's loads and computes, the predictions.

Needs matplotlib for the plots (Debian: python3-matplotlib); the markdown needs nothing.
"""
import argparse
import json
import os
import statistics
import sys


def case_key(r):
    return (r["input_len"], r["output_len"])


def run_key(r):
    return (r["name"], r["groups"])


def fmt(x, spec, dash="-"):
    return dash if x is None else format(x, spec)


def mib(b):
    return None if b is None else b / 2**20


def markdown(data):
    runs = data["runs"]
    cases = sorted({case_key(r) for r in runs})
    order = []
    for r in runs:
        if run_key(r) not in order:
            order.append(run_key(r))
    by = {(run_key(r), case_key(r)): r for r in runs}
    cfg = data.get("model_config", {})
    proto = data.get("protocol", {})
    lines = [
        f"# odmoe bench: {data.get('model', '?')}",
        "",
        f"- model: {cfg.get('arch', '?')}, {cfg.get('layers', '?')} layers, {cfg.get('experts', '?')} experts, "
        f"top-{cfg.get('top_k', '?')}, hidden {cfg.get('hidden', '?')}",
        f"- {data.get('ranks', '?')} ranks (main + expert ranks); greedy, batch 1, EOS ignored; "
        f"{proto.get('prompts_per_case', '?')} prompts per case after {proto.get('warmup_generations', 0)} warm-up",
        f"- command: `{data.get('command', '?')}`",
        "- machine: " + (lambda m: f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                         f"{m.get('memory_bytes', 0) / 2**30:.0f} GiB, {m.get('backend', '?')}")(data.get("machine") or {}),
        f"- date: {data.get('date', '?')}",
    ]
    if data.get("load_gbps_emulated"):
        lines.append(f"- expert pulls capped at {data['load_gbps_emulated']} Gbit/s per expert rank (emulated edge link)")
    src = runs[0].get("device_bytes_source", "working-set") if runs else "working-set"
    mem_note = ("peak device memory" if src == "measured" else
                "working set a GPU rank keeps on its device: dense weights + KV cache (+ shadow) on main, "
                "expert slots on expert ranks (CPU backend)")
    lines += ["", "## Table 2: decode speed, time to first token and memory", ""]
    head = ["run", "G"]
    for i, o in cases:
        head += [f"{i}/{o} decode tok/s", f"{i}/{o} TTFT ms"]
    head += ["max rank MiB", "total MiB"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for k in order:
        row = [k[0], str(k[1])]
        mem = None
        for c in cases:
            r = by.get((k, c))
            if r is None:
                row += ["-", "-"]
                continue
            res = by.get(((("resident"), k[1]), c))
            pct = ""
            if res and res is not r and res["decode_tokens_per_second"] > 0:
                pct = f" ({100 * r['decode_tokens_per_second'] / res['decode_tokens_per_second']:.0f}%)"
            row += [f"{r['decode_tokens_per_second']:.1f}{pct}", f"{1e3 * r['ttft_seconds']:.1f}"]
            mem = r
        row += [fmt(mib(mem["device_bytes_max_rank"]), ".1f"), fmt(mib(mem["device_bytes_total"]), ".1f")]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Memory: {mem_note}. Percentages: of the resident run at the same G and case, the limit "
              "loading on demand can reach.", ""]

    lines += ["## What explains it (per case)", ""]
    head = ["run", "G", "in/out", "output tok/s", "stall", "MiB moved/token", "recall", "hit rate",
            "token agreement", "perplexity"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for k in order:
        for c in cases:
            r = by.get((k, c))
            if r is None:
                continue
            agree = "-"
            if "token_agreement" in r:
                agree = f"{100 * r['token_agreement']:.1f}% (first {r['tokens_before_divergence']:.1f} same)"
            elif r.get("tokens_match_reference") is True:
                agree = "exact"
            elif r.get("tokens_match_reference") is False:
                agree = "DIFFERS"
            ppl = "-"
            if "perplexity" in r:
                p = r["perplexity"]
                ppl = f"{p['perplexity']:.3f}"
                if "change_vs_exact" in p:
                    ppl += f" ({100 * p['change_vs_exact']:+.2f}%)"
            lines.append("| " + " | ".join([
                k[0], str(k[1]), f"{c[0]}/{c[1]}", f"{r['output_tokens_per_second']:.1f}",
                fmt(None if "stall_fraction" not in r else 100 * r["stall_fraction"], ".1f") +
                ("%" if "stall_fraction" in r else ""),
                fmt(mib(r.get("bytes_pulled_per_token")), ".2f"),
                fmt(None if "recall" not in r else 100 * r["recall"], ".1f") + ("%" if "recall" in r else ""),
                fmt(None if "hit_rate" not in r else 100 * r["hit_rate"], ".1f") + ("%" if "hit_rate" in r else ""),
                agree, ppl]) + " |")
    lines.append("")
    return "\n".join(lines)


def plot_speed_memory(data, path, plt):
    runs = data["runs"]
    cases = sorted({case_key(r) for r in runs})
    fig, axes = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 3.8), squeeze=False)
    modes = sorted({r["mode"] for r in runs})
    markers = dict(zip(modes, "osD^vP*X"))
    for ax, c in zip(axes[0], cases):
        for r in (r for r in runs if case_key(r) == c):
            x = mib(r["device_bytes_max_rank"])
            y = r["decode_tokens_per_second"]
            ax.scatter([x], [y], marker=markers[r["mode"]], s=46)
            ax.annotate(f"{r['name']} G{r['groups']}", (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_title(f"{c[0]} in / {c[1]} out", fontsize=10)
        ax.set_xlabel("largest rank's memory, MiB")
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("decode tokens/s")
    fig.suptitle(f"odmoe bench: decode speed vs memory ({data.get('model_config', {}).get('arch', '')})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_trace(path):
    with open(path) as f:
        t = json.load(f)
    events = t["traceEvents"] if isinstance(t, dict) else t
    names = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            names[e["pid"]] = e["args"]["name"]
    return [e for e in events if e.get("ph") == "X"], names


def pick_step(events):
    """A typical decode step: the one of median length among the last half of the steps."""
    steps = [e for e in events if e.get("cat") == "step"]
    if not steps:
        sys.exit("the trace has no step events")
    tail = steps[len(steps) // 2:]
    med = statistics.median(e["dur"] for e in tail)
    return min(tail, key=lambda e: abs(e["dur"] - med))


def plot_timeline(trace_path, path, plt):
    events, names = load_trace(trace_path)
    step = pick_step(events)
    t0, t1 = step["ts"], step["ts"] + step["dur"]
    pad = 0.15 * step["dur"]
    lo, hi = t0 - pad, t1 + pad
    rows = []  # (label, pid, predicate)
    pids = sorted(names)
    for pid in pids:
        if pid == 0:
            rows.append(("main: dense", 0, lambda e: e.get("cat") == "main" and e["name"].startswith("dense")))
            rows.append(("main: waits for experts", 0, lambda e: e.get("cat") == "main" and e["name"].startswith("experts")))
        else:
            rows.append((f"rank {pid}: loads", pid, lambda e: e.get("cat") == "load"))
            rows.append((f"rank {pid}: compute", pid, lambda e: e.get("cat") in ("compute", "stall")))
    cmap = plt.get_cmap("tab10")

    def layer_of(name):
        for tok in name.split():
            if tok.startswith("L") and tok[1:].isdigit():
                return int(tok[1:])
        return None

    fig, ax = plt.subplots(figsize=(11, 0.42 * len(rows) + 1.6))
    for y, (label, pid, pred) in enumerate(rows):
        for e in events:
            if e.get("pid") != pid or not pred(e):
                continue
            s, d = e["ts"], e["dur"]
            if s + d < lo or s > hi:
                continue
            layer = layer_of(e["name"])
            color = "black" if e.get("cat") == "stall" else cmap((layer or 0) % 10)
            hatch = "//" if e.get("cat") == "load" else None
            ax.barh(y, max(d, 0.5), left=s - t0, height=0.7, color=color, alpha=0.85, hatch=hatch,
                    edgecolor="white", linewidth=0.3)
    preds = [e for e in events if e.get("cat") == "predict" and lo <= e["ts"] <= hi]
    for e in preds:
        ax.axvline(e["ts"] - t0, color="grey", alpha=0.25, linewidth=0.6)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(lo - t0, hi - t0)
    ax.set_xlabel(f"microseconds from the start of {step['name']} (it lasts {step['dur']:.0f} us); "
                  "colour = layer, hatched = load, black = stall, grey lines = predictions")
    ax.set_title(f"one decode token, per layer: {os.path.basename(trace_path)}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="the file written by odmoe bench --json")
    ap.add_argument("--out", help="output directory (default: the JSON's)")
    ap.add_argument("--name", help="file name prefix (default: the JSON's name)")
    ap.add_argument("--trace", help="trace for the timeline (default: the first on-demand run's, if traced)")
    ap.add_argument("--no-plots", action="store_true", help="write the markdown only")
    a = ap.parse_args()
    with open(a.json) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        sys.exit(f"{a.json}: not the JSON of odmoe bench (no runs)")
    out = a.out or os.path.dirname(os.path.abspath(a.json))
    name = a.name or os.path.splitext(os.path.basename(a.json))[0]
    os.makedirs(out, exist_ok=True)
    md = os.path.join(out, name + ".md")
    with open(md, "w") as f:
        f.write(markdown(data))
    print(md)
    if a.no_plots:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("the plots need matplotlib (Debian: apt-get install python3-matplotlib); --no-plots skips them")
    p = os.path.join(out, name + "-speed-memory.png")
    plot_speed_memory(data, p, plt)
    print(p)
    trace = a.trace
    if not trace:
        for r in data["runs"]:
            if r.get("trace") and r["mode"] != "resident" and os.path.exists(r["trace"]):
                trace = r["trace"]
                break
    if trace:
        p = os.path.join(out, name + "-timeline.png")
        plot_timeline(trace, p, plt)
        print(p)


if __name__ == "__main__":
    main()
