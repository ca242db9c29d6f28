#!/usr/bin/env python3
"""Train odmoe's bundled default model: a tiny Mixtral-architecture MoE on Tiny Shakespeare.

Everything is trained from scratch on CPU:

  1. a Llama/Mixtral-style BPE tokenizer (Hugging Face `tokenizers`: Metaspace
     pre-tokenizer, byte fallback, <unk>/<s>/</s> = 0/1/2, <s> prepended by the
     post-processor), vocabulary 2048;
  2. a `transformers` MixtralForCausalLM (8 experts, top-2 routing, GQA) with a
     per-layer Switch-style load-balancing loss so routing does not collapse.

The model is written in bf16 with the Hugging Face hub's per-expert Mixtral tensor
layout (model.layers.{l}.block_sparse_moe.experts.{e}.w1/w2/w3.weight), verified
by reloading it, and by an independent pure-PyTorch forward pass that reads
only the safetensors file. The script then measures validation loss, expert usage
and routing entropy, generates samples and writes the model card (README.md).

Usage (from the repository root):

  python3 weights-tools/train_default_model.py --data tinyshakespeare.txt \
      --out weights-tools/models/shakespeare-mixtral

The last 10% (by characters) of the corpus is held out for validation; the
tokenizer and the model see only the first 90%.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import random
import sys
import time

import torch
import torch.nn.functional as F

import safetensors
import tokenizers
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoTokenizer, MixtralConfig, MixtralForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 as in Llama / Mixtral
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
N_BYTE_TOKENS = 256  # <0x00> .. <0xFF>, ids 3 .. 258
META = "\u2581"  # "▁"


def log(msg=""):
    print(msg, flush=True)


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------

def build_tokenizer(train_text, vocab_size, max_token_length=16):
    """Train a Llama-style byte-fallback BPE tokenizer on `train_text`.

    The saved tokenizer uses a plain Metaspace pre-tokenizer (split on "▁", "▁"
    prepended to the first word). For *training* only, runs of newlines are
    additionally isolated so that no learned merge crosses a line break (like
    SentencePiece, which never merges across whitespace). Because no merge
    touches a newline/non-newline boundary, tokenizing with the plain Metaspace
    pre-tokenizer gives exactly the same ids; this is asserted on the full corpus
    in check_tokenizer().
    """
    metaspace = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="first", split=True)
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n+"), behavior="isolated"), metaspace])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - N_BYTE_TOKENS,  # byte tokens are added below
        special_tokens=SPECIAL_TOKENS,
        max_token_length=max_token_length,
        show_progress=False,
    )
    trainer_tok.train_from_iterator([train_text], trainer)
    trained = json.loads(trainer_tok.to_str())["model"]

    # Final vocabulary in Llama order: specials, 256 byte tokens, learned pieces.
    learned = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for t in SPECIAL_TOKENS:
        vocab[t] = len(vocab)
    for b in range(N_BYTE_TOKENS):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in learned:
        if piece in SPECIAL_TOKENS:
            continue
        assert piece not in vocab, piece
        vocab[piece] = len(vocab)
    assert len(vocab) == vocab_size, (len(vocab), vocab_size)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>",
                               byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = metaspace
    tok.decoder = decoders.Sequence([
        decoders.Replace(META, " "),
        decoders.ByteFallback(),
        decoders.Fuse(),
        decoders.Strip(content=" ", left=1, right=0),
    ])
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0",
        pair="<s>:0 $A:0 <s>:1 $B:1",
        special_tokens=[("<s>", BOS_ID)],
    )
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok, trainer_tok


def save_tokenizer(tok, out_dir, max_len):
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def check_tokenizer(tok, trainer_tok, out_dir, text):
    # 1. Plain Metaspace == training-time pre-tokenization (no merge crosses "\n").
    tok_split = Tokenizer.from_str(tok.to_str())
    tok_split.pre_tokenizer = trainer_tok.pre_tokenizer
    a = tok.encode(text, add_special_tokens=False).ids
    b = tok_split.encode(text, add_special_tokens=False).ids
    assert a == b, "newline-isolated and plain Metaspace tokenizations differ"
    # 2. Lossless round trip, including characters outside the corpus (byte fallback).
    probe = "First Citizen:\nWhat say'st thou, caf\u00e9 \u2603?\n\n  ROMEO: ok"
    for s in (text[:20000], probe):
        ids = tok.encode(s).ids
        assert ids[0] == BOS_ID
        assert tok.decode(ids, skip_special_tokens=True) == s, "round trip failed"
    assert "<0xC3>" in tok.encode(probe).tokens, "byte fallback not used"
    # 3. transformers can load the directory and agrees with `tokenizers`.
    for loader in (AutoTokenizer, PreTrainedTokenizerFast):
        hf = loader.from_pretrained(out_dir)
        assert hf.bos_token_id == BOS_ID and hf.eos_token_id == EOS_ID and hf.unk_token_id == UNK_ID
        assert hf(probe)["input_ids"] == tok.encode(probe).ids, loader.__name__
        assert hf.decode(hf(probe)["input_ids"], skip_special_tokens=True) == probe
    log("tokenizer checks passed (Metaspace equivalence, round trip, byte fallback, transformers load)")


# --------------------------------------------------------------------------------------
# Model helpers
# --------------------------------------------------------------------------------------

def make_config(args):
    return MixtralConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.ffn,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads,
        num_local_experts=args.experts,
        num_experts_per_tok=args.top_k,
        max_position_embeddings=args.max_pos,
        rope_theta=args.rope_theta,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=False,
        output_router_logits=True,  # training; switched off in the saved config (as in hub Mixtral)
        router_aux_loss_coef=args.aux_coef,
        router_jitter_noise=0.0,
        sliding_window=None,
        attention_dropout=0.0,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=None,
        use_cache=True,
    )


def load_balancing_loss(router_logits, top_k):
    """Switch-Transformer balance loss, computed per layer and averaged over layers.

    (transformers' built-in version pools all layers into one histogram, which lets
    one layer's imbalance hide behind another's.)"""
    losses = []
    for logits in router_logits:
        probs = torch.softmax(logits.float(), dim=-1)  # [tokens, E]
        n_exp = probs.shape[-1]
        top = torch.topk(probs, top_k, dim=-1).indices
        frac_routed = F.one_hot(top, n_exp).float().sum(1).mean(0) / top_k  # [E], sums to 1
        mean_prob = probs.mean(0)  # [E]
        losses.append(n_exp * torch.sum(frac_routed * mean_prob))
    return torch.stack(losses).mean()


def windows(ids, seq_len):
    """Non-overlapping evaluation windows: <s> + (seq_len - 1) tokens, covering every token once."""
    body = seq_len - 1
    out = []
    for s in range(0, len(ids), body):
        chunk = ids[s:s + body]
        out.append(torch.cat([torch.tensor([BOS_ID]), chunk]))
    return out


@torch.no_grad()
def evaluate(model, val_ids, seq_len, batch_size=16, collect_routing=False):
    """Mean next-token cross entropy over all validation tokens (the <s> prefix is not scored as a target)."""
    model.eval()
    wins = windows(val_ids, seq_len)
    total_nll, total_tok = 0.0, 0
    n_layers, n_exp, k = model.config.num_hidden_layers, model.config.num_local_experts, model.config.num_experts_per_tok
    counts = torch.zeros(n_layers, n_exp, dtype=torch.float64)
    # Group windows of equal length (only the last may be shorter).
    for i in range(0, len(wins), batch_size):
        group = wins[i:i + batch_size]
        for L in sorted(set(len(w) for w in group)):
            x = torch.stack([w for w in group if len(w) == L])
            out = model(input_ids=x, output_router_logits=collect_routing)
            logits = out.logits[:, :-1].float()
            tgt = x[:, 1:]
            total_nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="sum").item()
            total_tok += tgt.numel()
            if collect_routing:
                for l, rl in enumerate(out.router_logits):
                    rl = rl.view(x.shape[0], L, -1)[:, 1:]  # drop the <s> position
                    top = torch.topk(torch.softmax(rl.float(), -1), k, dim=-1).indices
                    counts[l] += torch.bincount(top.reshape(-1), minlength=n_exp).double()
    model.train()
    res = {"nll": total_nll / total_tok, "tokens": total_tok, "total_nll": total_nll}
    if collect_routing:
        res["usage"] = (counts / counts.sum(1, keepdim=True)).tolist()
    return res


def entropy_bits(p):
    return -sum(x * math.log2(x) for x in p if x > 0)


def cosine_lr(step, total, warmup, peak, floor_ratio):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# --------------------------------------------------------------------------------------
# Saving + verification
# --------------------------------------------------------------------------------------

def expected_hub_names(cfg):
    names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight",
                  p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                  p + "self_attn.v_proj.weight", p + "self_attn.o_proj.weight",
                  p + "block_sparse_moe.gate.weight"}
        for e in range(cfg.num_local_experts):
            names |= {p + f"block_sparse_moe.experts.{e}.{w}.weight" for w in ("w1", "w2", "w3")}
    return names


def hub_state_dict(model):
    """Hub-layout (per-expert w1/w2/w3) state dict from an in-memory model of either layout."""
    out = {}
    for name, t in model.state_dict().items():
        name = name.replace(".block_sparse_moe.", ".mlp.")
        if name.endswith(".mlp.experts.gate_up_proj"):  # [E, 2*ff, hidden] = [w1; w3]
            base = name[: -len("mlp.experts.gate_up_proj")] + "block_sparse_moe.experts."
            ff = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{base}{e}.w1.weight"] = t[e, :ff].contiguous()
                out[f"{base}{e}.w3.weight"] = t[e, ff:].contiguous()
        elif name.endswith(".mlp.experts.down_proj"):  # [E, hidden, ff]
            base = name[: -len("mlp.experts.down_proj")] + "block_sparse_moe.experts."
            for e in range(t.shape[0]):
                out[f"{base}{e}.w2.weight"] = t[e].contiguous()
        elif ".mlp." in name and ".experts." in name:  # already per-expert (older transformers)
            out[name.replace(".mlp.", ".block_sparse_moe.")] = t
        else:
            out[name.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = t
    return out


def save_model(model, out_dir):
    """Save in bf16 with the hub layout. transformers >= 5 keeps fused 3-D expert tensors
    in memory; save_pretrained() may or may not convert them back, so check and, if
    needed, rewrite model.safetensors ourselves."""
    model.config.output_router_logits = False
    model.save_pretrained(out_dir)
    path = os.path.join(out_dir, "model.safetensors")
    with safe_open(path, "pt") as f:
        names = set(f.keys())
    native = names == expected_hub_names(model.config)
    if not native:
        from safetensors.torch import save_file
        log("save_pretrained did not write the hub per-expert layout; rewriting model.safetensors")
        sd = hub_state_dict(model)
        assert set(sd) == expected_hub_names(model.config), sorted(set(sd) ^ expected_hub_names(model.config))
        save_file(sd, path, metadata={"format": "pt"})
    # Extra config keys for readers that predate transformers 5 (top-level rope_theta,
    # torch_dtype); transformers 5 folds rope_theta into rope_parameters on load.
    cpath = os.path.join(out_dir, "config.json")
    with open(cpath) as f:
        cfg = json.load(f)
    cfg.setdefault("torch_dtype", "bfloat16")
    if "rope_theta" not in cfg and isinstance(cfg.get("rope_parameters"), dict):
        cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
    with open(cpath, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    return native


def reference_forward(tensors, cfg, ids):
    """Independent fp32 Mixtral forward pass using only hub-named tensors (no transformers code).

    RoPE is the Hugging Face "rotate-half" convention on q/k as stored; routing is
    softmax over 8 logits, top-2, renormalized; expert = w2(silu(w1 x) * w3 x)."""
    W = {k: v.float() for k, v in tensors.items()}
    H, nh, nkv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    hd = H // nh
    T = ids.shape[0]
    eps = cfg.rms_norm_eps
    theta = cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def rope(q):  # [heads, T, hd]
        q1, q2 = q[..., : hd // 2], q[..., hd // 2:]
        return q * cos + torch.cat([-q2, q1], -1) * sin

    x = W["model.embed_tokens.weight"][ids]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(T, nh, hd).transpose(0, 1)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(nh // nkv, 0)
        v = v.repeat_interleave(nh // nkv, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, -1)
        o = (att @ v).transpose(0, 1).reshape(T, nh * hd)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        probs = torch.softmax(h @ W[p + "block_sparse_moe.gate.weight"].T, -1)
        topv, topi = torch.topk(probs, cfg.num_experts_per_tok, -1)
        topv = topv / topv.sum(-1, keepdim=True)
        moe = torch.zeros_like(h)
        for e in range(cfg.num_local_experts):
            q_ = p + f"block_sparse_moe.experts.{e}."
            y = (F.silu(h @ W[q_ + "w1.weight"].T) * (h @ W[q_ + "w3.weight"].T)) @ W[q_ + "w2.weight"].T
            wgt = (topv * (topi == e)).sum(-1, keepdim=True)
            moe = moe + wgt * y
        x = x + moe
    x = rms(x, W["model.norm.weight"])
    return x @ W["lm_head.weight"].T


def verify_saved(model_bf16, out_dir, probe_ids):
    """Reload the directory; compare names, dtypes and logits."""
    cfg = AutoConfig.from_pretrained(out_dir)
    expect = expected_hub_names(cfg)
    tensors = load_file(os.path.join(out_dir, "model.safetensors"))
    assert set(tensors) == expect, sorted(set(tensors) ^ expect)
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    # The split tensors must be the in-memory fused ones (w1 = gate rows, w3 = up rows).
    ref_sd = hub_state_dict(model_bf16)
    for n, t in tensors.items():
        assert torch.equal(t, ref_sd[n]), n

    loaded, info = MixtralForCausalLM.from_pretrained(out_dir, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"loading problems: {problems}"
    assert next(loaded.parameters()).dtype == torch.bfloat16, "config dtype should make it load as bf16"
    loaded.eval()
    model_bf16.eval()
    x = probe_ids[None]
    with torch.no_grad():
        a = model_bf16(input_ids=x).logits
        b = loaded(input_ids=x).logits
    assert torch.equal(a, b), f"bf16 logits differ after reload: {(a - b).abs().max()}"

    loaded32 = MixtralForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        hf32 = loaded32(input_ids=x).logits[0]
    ref = reference_forward(tensors, cfg, probe_ids)
    diff = (hf32 - ref).abs().max().item()
    assert diff < 1e-3, f"independent reference forward differs from transformers: {diff}"
    log(f"saved-model checks passed: {len(tensors)} tensors, hub names, bf16, reload identical, "
        f"independent reference max |dlogit| = {diff:.2e}")
    return loaded32, diff


# --------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------

def fmt_table(usage):
    E = len(usage[0])
    head = "| layer | " + " | ".join(f"e{e}" for e in range(E)) + " | entropy (bits) |\n"
    head += "|---" * (E + 2) + "|\n"
    rows = ""
    for l, u in enumerate(usage):
        rows += f"| {l} | " + " | ".join(f"{x:.3f}" for x in u) + f" | {entropy_bits(u):.3f} |\n"
    return head + rows


def write_card(out_dir, s):
    c = s["config"]
    card = f"""---
license: mit
library_name: transformers
pipeline_tag: text-generation
tags: [mixtral, moe, tiny, shakespeare, test-model]
---

# shakespeare-mixtral (odmoe default model)

A tiny **Mixtral-architecture** Mixture-of-Experts language model trained from
scratch on Tiny Shakespeare. It is odmoe's bundled default model: small enough to
ship in the repository and to run anywhere, but with the real Mixtral structure
(top-2 routing over 8 SwiGLU experts, grouped-query attention, RoPE, RMSNorm,
untied embeddings) and the Hugging Face hub file layout, so that it exercises
the same code paths as `mistralai/Mixtral-8x7B`. It writes Shakespeare-like text;
it is not useful for anything else.

## Architecture

| | |
|---|---|
| class | `MixtralForCausalLM` (transformers `model_type: mixtral`) |
| vocab | {c['vocab_size']} (BPE, byte fallback) |
| hidden size | {c['hidden_size']} |
| layers | {c['num_hidden_layers']} |
| attention | {c['num_attention_heads']} query heads, {c['num_key_value_heads']} key/value heads (GQA), head dim {c['hidden_size'] // c['num_attention_heads']} |
| RoPE | theta {s['rope_theta']:g}, HF "rotate-half" convention, max positions {c['max_position_embeddings']} |
| MoE | {c['num_local_experts']} experts per layer, top-{c['num_experts_per_tok']}, expert FFN size {c['intermediate_size']} (SwiGLU) |
| norm | RMSNorm, eps {c['rms_norm_eps']} |
| embeddings | untied (`lm_head.weight` stored separately) |
| parameters | {s['n_params']:,} total, {s['n_active']:,} active per token |
| weights | `model.safetensors`, bfloat16, {s['file_size']:,} bytes, {s['n_tensors']} tensors |

Tensor names follow the hub Mixtral checkpoints (per-expert, not fused):

```
model.embed_tokens.weight                             [{c['vocab_size']}, {c['hidden_size']}]
model.layers.{{l}}.input_layernorm.weight               [{c['hidden_size']}]
model.layers.{{l}}.self_attn.q_proj.weight              [{c['hidden_size']}, {c['hidden_size']}]
model.layers.{{l}}.self_attn.k_proj.weight              [{c['num_key_value_heads'] * c['hidden_size'] // c['num_attention_heads']}, {c['hidden_size']}]
model.layers.{{l}}.self_attn.v_proj.weight              [{c['num_key_value_heads'] * c['hidden_size'] // c['num_attention_heads']}, {c['hidden_size']}]
model.layers.{{l}}.self_attn.o_proj.weight              [{c['hidden_size']}, {c['hidden_size']}]
model.layers.{{l}}.post_attention_layernorm.weight      [{c['hidden_size']}]
model.layers.{{l}}.block_sparse_moe.gate.weight         [{c['num_local_experts']}, {c['hidden_size']}]
model.layers.{{l}}.block_sparse_moe.experts.{{e}}.w1.weight   [{c['intermediate_size']}, {c['hidden_size']}]   (gate_proj)
model.layers.{{l}}.block_sparse_moe.experts.{{e}}.w3.weight   [{c['intermediate_size']}, {c['hidden_size']}]   (up_proj)
model.layers.{{l}}.block_sparse_moe.experts.{{e}}.w2.weight   [{c['hidden_size']}, {c['intermediate_size']}]   (down_proj)
model.norm.weight                                     [{c['hidden_size']}]
lm_head.weight                                        [{c['vocab_size']}, {c['hidden_size']}]
```

Expert output: `w2(silu(w1 x) * w3 x)`; router: softmax over the 8 gate logits,
top-2, the two weights renormalized to sum to 1.

`config.json` is the one written by transformers {s['versions']['transformers']}
(`rope_parameters`, `dtype`), plus top-level `rope_theta` and `torch_dtype` for
older readers. `output_router_logits` is `false` in the saved config (it was on
during training).

## Tokenizer

`tokenizer.json` (Hugging Face `tokenizers`), Llama/Mixtral style: BPE with
`byte_fallback`, vocabulary {c['vocab_size']}: `<unk>`=0, `<s>`=1, `</s>`=2,
`<0x00>`..`<0xFF>`=3..258, then {c['vocab_size'] - 259} learned pieces. Metaspace
pre-tokenizer (`▁` replacement, `prepend_scheme: first`, split on `▁`); decoder
Replace(`▁`→space) + ByteFallback + Fuse + Strip(1 leading space); the
post-processor prepends `<s>`. Newline is an ordinary piece (`\\n`, `\\n\\n`, ...);
no learned merge crosses a line break. Any text outside the corpus alphabet
falls back to byte tokens. The corpus tokenizes at {s['chars_per_token']:.2f}
characters per token.

## Training

Trained by [`weights-tools/train_default_model.py`](../../train_default_model.py):

```
{s['command']}
```

* data: Tiny Shakespeare ({s['n_chars']:,} characters, sha256 `{s['data_sha256'][:16]}...`). Train: first 90%
  ({s['n_train_chars']:,} chars, {s['n_train_tokens']:,} tokens); validation: last 10%
  ({s['n_val_chars']:,} chars, {s['n_val_tokens']:,} tokens). The tokenizer and the model
  saw only the training part.
* samples: `<s>` + {s['seq_len'] - 1} tokens from a random offset of the training stream;
  batch {s['batch_size']}; {s['steps']} steps ({s['tokens_seen']:,} tokens, {s['epochs']:.1f} epochs).
* loss: next-token cross entropy + {s['aux_coef']} x Switch load-balancing loss
  (computed per layer and averaged).
* AdamW (betas 0.9/0.95, weight decay {s['weight_decay']} on matrices), peak LR {s['lr']},
  {s['warmup']} warmup steps, cosine decay to {s['min_lr_ratio']} x peak, grad-norm clip 1.0, fp32, seed {s['seed']}.
* machine: {s['machine']}; torch threads: {s['threads']} (on a 2-core machine shared with
  compile jobs one thread was much faster than two); training took {s['train_time'] / 60:.1f} min
  ({s['train_time'] / s['steps']:.2f} s/step), the whole script {s['total_time'] / 60:.1f} min.
* software: torch {s['versions']['torch']}, transformers {s['versions']['transformers']},
  tokenizers {s['versions']['tokenizers']}, safetensors {s['versions']['safetensors']}, Python {s['versions']['python']}.

Training loss (cross entropy, nats/token, mean over the preceding logging window) and validation loss:

| step | train CE | balance loss | val CE |
|---:|---:|---:|---:|
{s['curve']}

## Evaluation (validation split, saved bf16 weights)

Mean next-token cross entropy over all {s['n_val_tokens']:,} validation tokens (non-overlapping
windows of {s['seq_len']} = `<s>` + {s['seq_len'] - 1} tokens, computed in fp32 from the bf16 weights):

* **{s['val_nll']:.4f} nats/token, perplexity {math.exp(s['val_nll']):.2f}**
  ({s['val_bpc']:.3f} bits/character)
* the fp32 weights before conversion: {s['val_nll_fp32']:.4f} nats/token

### Expert usage

Fraction of routed (token, expert) assignments per expert on the validation text
(top-2, so every token counts twice; the `<s>` position is excluded). The entropy is
that of this usage distribution, in bits (uniform = 3.000).

{s['usage_table']}
## Samples

Prompt `{s['prompt']!r}`, 200 new tokens.

Greedy:

```
{s['greedy']}
```

Sampled (temperature {s['temperature']}, top-k {s['top_k']}, seed {s['seed']}):

```
{s['sampled']}
```

## Reference values for engine tests

Prompt `{s['prompt']!r}` tokenizes (with `<s>`) to
`{s['prompt_ids']}`. The greedy continuation computed by transformers (fp32 math on the
bf16 weights, KV cache) begins with ids `{s['greedy_ids'][:24]}`; an engine computing in
bf16 may legitimately drift from it after a few tokens.
Last-position logits of the prompt, first 8 entries (fp32):
`{[round(v, 4) for v in s['last_logits'][:8]]}`.
An independent pure-PyTorch forward pass from the safetensors file (in the script)
matches transformers to {s['ref_diff']:.1e} in the logits.
"""
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(card)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="path to tinyshakespeare.txt")
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--aux-coef", type=float, default=0.02)
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--max-pos", type=int, default=512)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--max-file-mb", type=float, default=16.0)
    args = ap.parse_args()

    t_start = time.time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    with open(args.data, "rb") as f:
        raw = f.read()
    data_sha256 = hashlib.sha256(raw).hexdigest()
    text = raw.decode("utf-8")
    cut = int(len(text) * 0.9)
    train_text, val_text = text[:cut], text[cut:]
    log(f"corpus {len(text):,} chars: train {len(train_text):,}, validation {len(val_text):,}")

    # ---- tokenizer
    tok, trainer_tok = build_tokenizer(train_text, args.vocab_size)
    save_tokenizer(tok, args.out, args.max_pos)
    check_tokenizer(tok, trainer_tok, args.out, text)
    train_ids = torch.tensor(tok.encode(train_text, add_special_tokens=False).ids, dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text, add_special_tokens=False).ids, dtype=torch.long)
    log(f"tokens: train {len(train_ids):,}, validation {len(val_ids):,} "
        f"({len(train_text) / len(train_ids):.2f} chars/token)")

    # ---- model
    config = make_config(args)
    torch.manual_seed(args.seed)
    model = MixtralForCausalLM(config)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    expert_params = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    n_active = n_params - expert_params + expert_params * args.top_k // args.experts
    log(f"parameters: {n_params:,} total, {n_active:,} active per token")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    gen = torch.Generator().manual_seed(args.seed)
    body = args.seq_len - 1
    bos_col = torch.full((args.batch_size, 1), BOS_ID, dtype=torch.long)
    curve = []
    acc_ce = acc_aux = 0.0
    acc_n = 0
    t_train = time.time()
    for step in range(args.steps):
        lr = cosine_lr(step, args.steps, args.warmup, args.lr, args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train_ids) - body, (args.batch_size,), generator=gen)
        x = torch.cat([bos_col, torch.stack([train_ids[s:s + body] for s in starts.tolist()])], 1)
        out = model(input_ids=x, output_router_logits=True)
        logits = out.logits[:, :-1]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        aux = load_balancing_loss(out.router_logits, args.top_k)
        loss = ce + args.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        acc_ce += ce.item()
        acc_aux += aux.item()
        acc_n += 1
        last = step + 1 == args.steps
        if (step + 1) % args.log_every == 0 or last:
            el = time.time() - t_train
            row = {"step": step + 1, "ce": acc_ce / acc_n, "aux": acc_aux / acc_n, "val": None}
            log(f"step {step + 1:5d}/{args.steps}  ce {row['ce']:.4f}  balance {row['aux']:.4f}  "
                f"lr {lr:.2e}  {el:.0f}s ({el / (step + 1):.2f} s/step)")
            if (step + 1) % args.eval_every == 0 or last:
                row["val"] = evaluate(model, val_ids, args.seq_len)["nll"]
                log(f"           val ce {row['val']:.4f}")
            curve.append(row)
            acc_ce = acc_aux = 0.0
            acc_n = 0
    train_time = time.time() - t_train
    log(f"training: {train_time:.0f}s")

    val_fp32 = evaluate(model, val_ids, args.seq_len)["nll"]

    # ---- save (bf16, hub layout) and verify
    # Cast the parameters only: Module.to() would also round the RoPE inv_freq buffers to
    # bf16, which from_pretrained() does not do (it recomputes them in fp32).
    fp32_buffers = {n: b.clone() for n, b in model.named_buffers()}
    model = model.to(torch.bfloat16).eval()
    for n, b in model.named_buffers():
        b.data = fp32_buffers[n]
    native = save_model(model, args.out)
    log(f"save_pretrained wrote the hub per-expert layout natively: {native}")
    file_size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    assert file_size <= args.max_file_mb * 1024 * 1024, f"model.safetensors is {file_size} bytes"
    probe = torch.tensor(tok.encode(val_text[:600]).ids[:128])
    model32, ref_diff = verify_saved(model, args.out, probe)

    # ---- evaluation of the saved weights
    ev = evaluate(model32, val_ids, args.seq_len, collect_routing=True)
    log(f"validation (saved bf16 weights): {ev['nll']:.4f} nats/token, ppl {math.exp(ev['nll']):.2f}, "
        f"{ev['total_nll'] / len(val_text) / math.log(2):.3f} bits/char; fp32 weights: {val_fp32:.4f}")
    log("expert usage (fraction of top-2 assignments) / routing entropy in bits:")
    for l, u in enumerate(ev["usage"]):
        log(f"  layer {l}: " + " ".join(f"{x:.3f}" for x in u) + f"   H={entropy_bits(u):.3f}")

    # ---- samples
    prompt = "ROMEO:\n"
    enc = torch.tensor([tok.encode(prompt).ids])
    with torch.no_grad():
        last_logits = model32(input_ids=enc).logits[0, -1].tolist()
        g = model32.generate(enc, max_new_tokens=200, do_sample=False, pad_token_id=EOS_ID)
        torch.manual_seed(args.seed)
        sm = model32.generate(enc, max_new_tokens=200, do_sample=True, temperature=0.8, top_k=50,
                              pad_token_id=EOS_ID)
    greedy_ids = g[0, enc.shape[1]:].tolist()
    greedy = tok.decode(g[0].tolist(), skip_special_tokens=True)
    sampled = tok.decode(sm[0].tolist(), skip_special_tokens=True)
    log("---- greedy ----\n" + greedy + "\n---- sampled ----\n" + sampled + "\n----")

    # ---- model card
    cfg = json.load(open(os.path.join(args.out, "config.json")))
    rows = []
    for r in curve:
        if r["val"] is not None or r["step"] % (args.log_every * 4) == 0 or r["step"] == args.log_every:
            val = "" if r["val"] is None else f"{r['val']:.3f}"
            rows.append(f"| {r['step']} | {r['ce']:.3f} | {r['aux']:.3f} | {val} |")
    curve_md = "\n".join(rows)
    cmd = "python3 weights-tools/train_default_model.py --data tinyshakespeare.txt --out " + args.out
    extra = []
    defaults = vars(ap.parse_args(["--data", "x", "--out", "y"]))
    for k, v in vars(args).items():
        if k not in ("data", "out") and v != defaults[k]:
            extra.append(f"--{k.replace('_', '-')} {v}")
    if extra:
        cmd += " " + " ".join(extra)
    stats = {
        "config": cfg, "rope_theta": args.rope_theta, "n_params": n_params, "n_active": n_active,
        "file_size": file_size, "n_tensors": len(expected_hub_names(model.config)),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__,
                     "python": platform.python_version()},
        "chars_per_token": len(train_text) / len(train_ids), "command": cmd,
        "n_chars": len(text), "n_train_chars": len(train_text), "n_val_chars": len(val_text),
        "n_train_tokens": len(train_ids), "n_val_tokens": len(val_ids), "seq_len": args.seq_len,
        "batch_size": args.batch_size, "steps": args.steps,
        "tokens_seen": args.steps * args.batch_size * body,
        "epochs": args.steps * args.batch_size * body / len(train_ids), "aux_coef": args.aux_coef,
        "weight_decay": args.weight_decay, "lr": args.lr, "warmup": args.warmup,
        "min_lr_ratio": args.min_lr_ratio, "seed": args.seed,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared with other jobs)",
        "threads": args.threads, "train_time": train_time, "curve": curve_md,
        "val_nll": ev["nll"], "val_bpc": ev["total_nll"] / len(val_text) / math.log(2),
        "val_nll_fp32": val_fp32, "usage_table": fmt_table(ev["usage"]),
        "prompt": prompt, "greedy": greedy, "sampled": sampled, "temperature": 0.8, "top_k": 50,
        "prompt_ids": enc[0].tolist(), "greedy_ids": greedy_ids, "last_logits": last_logits,
        "ref_diff": ref_diff, "data_sha256": data_sha256, "total_time": time.time() - t_start,
    }
    write_card(args.out, stats)
    log(f"wrote {args.out} (model.safetensors {file_size:,} bytes); total {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
