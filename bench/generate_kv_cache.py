"""Tokens/s of GPT generation with and without the key/value cache (500 new tokens, one sequence).

    python bench/generate_kv_cache.py [--new-tokens 500] [--n-layer 4] [--n-embd 128] [--json out.json]

block_size is set to hold the whole generation, so the cached run appends one position per token; the
uncached run re-runs the model on the whole prefix every token.  Random weights: speed does not depend
on what the model has learned.  Both runs are greedy and must produce the same tokens (checked).
"""
import argparse
import json
import time

import numpy as np
from threadpoolctl import threadpool_limits

from npllm.generate import generate
from npllm.models import GPT, GPTConfig


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=65)
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads (1: these matrices are too small for a thread team to pay off)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    config = GPTConfig(vocab_size=args.vocab_size, block_size=args.new_tokens + 1, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(config, seed=0)
    prompt = np.zeros((1, 1), dtype=np.int64)
    results, outputs = {}, {}
    for kv_cache in (True, False):
        with threadpool_limits(args.blas_threads, "blas"):
            start = time.perf_counter()
            outputs[kv_cache] = generate(model, prompt, args.new_tokens, temperature=0, kv_cache=kv_cache)
            seconds = time.perf_counter() - start
        results["cached" if kv_cache else "uncached"] = {"seconds": seconds, "tokens_per_second": args.new_tokens / seconds}
    assert np.array_equal(outputs[True], outputs[False]), "cached and uncached greedy outputs differ"
    speedup = results["cached"]["tokens_per_second"] / results["uncached"]["tokens_per_second"]
    print(f"GPT n_layer={args.n_layer} n_embd={args.n_embd}, {args.new_tokens} new tokens, greedy, batch 1")
    print(f"{'mode':<10}{'seconds':>10}{'tokens/s':>12}")
    for mode, row in results.items():
        print(f"{mode:<10}{row['seconds']:>10.2f}{row['tokens_per_second']:>12.1f}")
    print(f"speed-up of the cache: {speedup:.1f}x (identical tokens)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "results": results, "speedup": speedup}, f, indent=2)


if __name__ == "__main__":
    main()
