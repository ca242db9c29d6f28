#!/usr/bin/env python3
"""Prompts for `odmoe eval-predictor` from the bundled model's held-out text.

The bundled model (train_default_model.py) trains on the first 90% (by characters) of
Tiny Shakespeare; the last 10% is held out. This script cuts that held-out part into
speaker turns ("NAME:\\n" followed by lines, turns separated by blank lines), takes `--count`
turns spread evenly over it, and keeps each turn's first lines up to `--max-chars`
characters. It writes JSON Lines: {"prompt": "..."} per line.

Usage (from the repository root):

  python3 weights-tools/make_heldout_prompts.py --data tinyshakespeare.txt \\
      --out weights-tools/models/shakespeare-mixtral/heldout-prompts.jsonl
"""

import argparse
import hashlib
import json
import os
import sys


def turns(text):
    out = []
    for block in text.split("\n\n"):
        lines = [l for l in block.strip("\n").split("\n") if l.strip()]
        if len(lines) >= 2 and lines[0].endswith(":") and lines[0][:-1].replace(" ", "").isalpha():
            out.append(lines)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the Tiny Shakespeare corpus the model was trained on")
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--max-chars", type=int, default=160)
    args = ap.parse_args()

    raw = open(args.data, "rb").read()
    text = raw.decode("utf-8")
    held_out = text[int(len(text) * 0.9):]  # the same split as train_default_model.py
    ts = turns(held_out)
    if len(ts) < args.count:
        sys.exit(f"only {len(ts)} speaker turns in the held-out text, {args.count} wanted")
    prompts = []
    for i in range(args.count):
        lines = ts[i * len(ts) // args.count]
        p = lines[0] + "\n" + lines[1]
        for l in lines[2:]:
            if len(p) + 1 + len(l) > args.max_chars:
                break
            p += "\n" + l
        prompts.append(p + "\n")
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}, ensure_ascii=False) + "\n")
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(prompts)} prompts from {len(ts)} held-out turns "
          f"(corpus sha256 {hashlib.sha256(raw).hexdigest()[:16]}...)")


if __name__ == "__main__":
    main()
