"""``npllm eval --checkpoint PATH [--data FILE]``: loss and perplexity of a checkpoint on a text."""
from __future__ import annotations

import json
import sys

from npllm.commands._args import add_backend, positive_int
from npllm.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="loss and perplexity of a checkpoint on a text file")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or an --out-dir of npllm train")
    p.add_argument("--data", default=None, help="default: the validation split the model was trained with")
    p.add_argument("--batch-size", type=positive_int, default=16, help="windows per forward pass (default: 16)")
    p.add_argument("--max-batches", type=positive_int, default=None, help="default: the whole text")
    add_backend(p)


def run(args) -> int:
    """Print the loss and perplexity of --checkpoint on --data (default: its validation split)."""
    from pathlib import Path

    from npllm.commands._checkpoint import open_checkpoint
    from npllm.data import train_val_split
    from npllm.evaluate import corpus_loss
    from npllm.metrics import perplexity
    from npllm.training.lm import corpus_ids

    checkpoint, model, tokenizer = open_checkpoint(args)
    if args.data is not None:
        ids, what = corpus_ids(args.data, tokenizer), args.data
    else:
        source = (checkpoint.meta.get("extra") or {}).get("data", {}).get("source")
        if source is None:
            raise UsageError("--data", "the checkpoint does not record its training data; pass --data FILE")
        if source != "builtin" and not Path(source).is_file():
            raise UsageError("--data", "the checkpoint's training file is no longer a regular file; pass --data FILE")
        _, ids = train_val_split(corpus_ids(source, tokenizer))
        what = "validation split of " + ("the built-in corpus" if source == "builtin" else source)
    block_size = model.config.block_size
    if len(ids) < block_size + 1:
        raise UsageError("--data", f"{what} has {len(ids)} tokens, fewer than one block of "
                         f"{block_size + 1} (the model's block_size + 1)")
    loss, n_tokens = corpus_loss(model, ids, args.batch_size, block_size, args.max_batches)
    print(f"{what}: {n_tokens} tokens, loss {loss:.4f} nats/token, perplexity {perplexity(loss):.2f}",
          file=sys.stderr)
    print(json.dumps({"loss": loss, "perplexity": perplexity(loss), "tokens": n_tokens}))
    return 0
