"""Every value-taking option of every command, given bad values: each must be refused with a
message naming the option (exit status 1 or 2), never accepted, never a crash or a hang.

    test_cli_options.py ODMOE ODMOE_WEIGHTS SOURCE_DIR

The options are read from each command's --help, so a new option is covered the day it is
added. Values tried: a word, NaN, 1e400 (out of every range) and -7 for options with a number
as default; a word for options that choose among names. Options that take free text (paths,
prompts, lists parsed later) are given only what is meaningless for them, see FREE.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

odmoe, weights, src = sys.argv[1:4]
tmp = tempfile.mkdtemp()
model = os.path.join(tmp, "m")
subprocess.run([weights, "convert", os.path.join(src, "weights-tools/models/shakespeare-mixtral"), model],
               check=True, stdout=subprocess.DEVNULL)
text = os.path.join(tmp, "text.txt")
with open(text, "w") as f:
    f.write("ROMEO: But soft, what light through yonder window breaks? " * 20)

# Options whose values are free text or a file: nothing to refuse from a word.
FREE = {"model", "prompt", "prompts", "text", "out", "json", "stats-json", "save-routing", "trace", "trace-dir",
        "routing-trace", "from-stats", "config", "token-ids", "runs", "modes", "predictors", "groups",
        "input-len", "output-len", "gpu", "arch", "in", "shadow", "tokenizer"}
# (command, option, value) that are valid by design, with the reason.
VALID = {
    ("generate", "substitute", "-7"): "negative turns substitution off",
    ("logits", "substitute", "-7"): "negative turns substitution off",
    ("perplexity", "substitute", "-7"): "negative turns substitution off",
    ("eval-predictor", "substitute", "-7"): "negative turns substitution off",
    ("generate", "seed", "-7"): "any 64-bit seed",
    ("eval-predictor", "seed", "-7"): "any 64-bit seed",
    ("simulate", "seed", "-7"): "any 64-bit seed",
    ("synth", "seed", "-7"): "any 64-bit seed",
}
commands = [
    ("odmoe", "generate", ["--model", model, "--prompt", "hi", "--max-new-tokens", "2"]),
    ("odmoe", "logits", ["--model", model, "--token-ids", "1,2"]),
    ("odmoe", "perplexity", ["--model", model, "--text", text, "--context", "16"]),
    ("odmoe", "eval-predictor", ["--model", model, "--tokens", "2", "--limit", "1", "--predictors", "previous"]),
    ("odmoe", "bench", ["--model", model, "--json", os.path.join(tmp, "bench.json"), "--input-len", "8",
                        "--output-len", "2", "--prompts-per-case", "1", "--warmup", "0"]),
    ("odmoe", "simulate", ["--arch", "mixtral-8x7b", "--gpu", "rtx3090", "--nodes", "3", "--tokens", "4"]),
    ("odmoe", "tokenize", ["--model", model, "--text", "ROMEO: hi"]),
    ("odmoe-weights", "convert", [os.path.join(src, "weights-tools/models/shakespeare-mixtral"),
                                  os.path.join(tmp, "conv")]),
    ("odmoe-weights", "synth", ["--arch", os.path.join(src, "weights-tools/models/shakespeare-mixtral/config.json"),
                                os.path.join(tmp, "synth")]),
]
progs = {"odmoe": odmoe, "odmoe-weights": weights}


def run(args):
    try:
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                           errors="replace", cwd=tmp)
        return p.returncode, p.stdout
    except subprocess.TimeoutExpired:
        return "timeout", ""


def options(prog, sub):
    rc, h = run([progs[prog], sub, "--help"])
    assert rc == 0, f"{prog} {sub} --help: {rc}\n{h}"
    out = []
    for m in re.finditer(r"^\s+--([a-z0-9-]+) arg(?: \(=([^)]*)\))?", h, re.M):
        out.append((m.group(1), m.group(2)))
    assert out, f"{prog} {sub} --help lists no options"
    return out


failures, tried = [], 0
for prog, sub, base in commands:
    if base is not None:
        rc, out = run([progs[prog], sub] + base)
        assert rc == 0, f"the valid command {prog} {sub} {' '.join(base)} failed ({rc}):\n{out[-2000:]}"
        for d in ("conv", "synth"):
            shutil.rmtree(os.path.join(tmp, d), ignore_errors=True)
    for opt, default in options(prog, sub):
        if opt in FREE:
            continue
        numeric = default is not None and re.fullmatch(r"-?[0-9.]+(e-?[0-9]+)?", default) is not None
        values = ["abc", "nan", "1e400", "-7"] if numeric else ["abc"]
        for v in values:
            if (sub, opt, v) in VALID:
                continue
            args = list(base)
            if f"--{opt}" in args:
                i = args.index(f"--{opt}")
                del args[i:i + 2]
            rc, out = run([progs[prog], sub] + args + [f"--{opt}", v])
            tried += 1
            for d in ("conv", "synth"):
                shutil.rmtree(os.path.join(tmp, d), ignore_errors=True)
            named = f"--{opt}" in out or f"'{opt}'" in out
            if rc not in (1, 2) or not named:
                last = out.strip().splitlines()[-1] if out.strip() else ""
                failures.append(f"{prog} {sub} --{opt} {v!r}: exit {rc}, "
                                f"{'names the option' if named else 'does not name the option'}: {last[:200]}")
    # An unknown option.
    rc, out = run([progs[prog], sub, "--no-such-option", "1"])
    tried += 1
    if rc != 2 or "no-such-option" not in out:
        failures.append(f"{prog} {sub} --no-such-option: exit {rc}")

shutil.rmtree(tmp, ignore_errors=True)
print(f"{tried} bad values tried over {len(commands)} commands")
if failures:
    print("\n".join(failures))
    sys.exit(1)
print("every one refused, naming its option")
