"""``npllm generate --checkpoint PATH``: sample text from a trained model."""
from __future__ import annotations

import sys
import time

import numpy as np

from npllm.commands._args import add_backend, nonneg_float, nonneg_int, positive_int, seed_value, top_p_value
from npllm.errors import UsageError

MAX_TOKENS = 1 << 24      # tokens a run may hold in memory (samples × (prompt + new tokens))


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample text from a checkpoint")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or an --out-dir of npllm train, or a Hugging "
                   "Face GPT-2 or Llama/Qwen2/Mistral directory (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--prompt", default="", help="text to continue; empty: start from a newline")
    p.add_argument("--max-new-tokens", type=nonneg_int, default=200, help="tokens to generate (default: 200)")
    p.add_argument("--temperature", type=nonneg_float, default=1.0, help="0 = greedy (default: 1.0)")
    p.add_argument("--top-k", type=positive_int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=top_p_value, default=None,
                   help="sample among the most likely tokens whose probabilities reach p, 0 < p <= 1")
    p.add_argument("--seed", type=seed_value, default=0, help="seeds the sampling (default: 0)")
    p.add_argument("--num-samples", type=positive_int, default=1, help="independent samples (one batch)")
    p.add_argument("--no-kv-cache", action="store_true", help="recompute the whole prefix every token")
    add_backend(p)


def run(args) -> int:
    """Load the checkpoint, sample --num-samples texts, print them to stdout."""
    from npllm.commands._checkpoint import open_checkpoint
    from npllm.generate import generate, prompt_ids
    total = args.num_samples * (args.max_new_tokens + len(args.prompt) + 1)
    if total > MAX_TOKENS:
        raise UsageError("--max-new-tokens", f"{args.num_samples} sample(s) of {args.max_new_tokens:,} new tokens "
                                             f"need about {total * 8 / 2**20:,.0f} MiB of token ids alone; the "
                                             f"limit is {MAX_TOKENS:,} tokens")
    _, model, tokenizer = open_checkpoint(args)
    # A Hugging Face tokenizer's template (Llama 3's <|begin_of_text|>) starts the prompt, as in transformers;
    # it is not printed.
    template = (getattr(tokenizer, "template", None) or {}).get("prefix", [])
    try:
        ids, echo = prompt_ids(tokenizer, args.prompt)
    except ValueError as exc:
        raise UsageError("--prompt", str(exc)) from None
    if template and args.prompt:
        ids = tokenizer.encode(args.prompt, add_special_tokens=True)
    elif template:
        ids = list(template)
    if not ids:
        raise UsageError("--prompt", f"{args.prompt!r} encodes to no tokens")
    idx = np.tile(np.asarray(ids, dtype=np.int64), (args.num_samples, 1))   # (num_samples, T)
    started = time.perf_counter()
    tokens = generate(model, idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                      top_p=args.top_p, rng=args.seed, kv_cache=not args.no_kv_cache)
    seconds = time.perf_counter() - started
    first = len(template) if echo else len(ids)         # an invented start token is not printed
    # A Hugging Face model's vocab_size may exceed its tokenizer's (padding rows): such ids have no text.
    texts = [tokenizer.decode([i for i in row[first:].tolist() if i < tokenizer.vocab_size]) for row in tokens]
    print(("\n" + "-" * 40 + "\n").join(texts))
    count = args.max_new_tokens * args.num_samples
    print(f"[{count} tokens in {seconds:.2f} s, {count / max(seconds, 1e-9):.0f} tokens/s]", file=sys.stderr)
    return 0
