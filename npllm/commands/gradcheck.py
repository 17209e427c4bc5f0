"""``npllm gradcheck [--op NAME] [--tol T] [--backend B]``: gradient-check every op, print the table."""
from __future__ import annotations

from npllm.commands._args import add_backend, configure_process, positive_float, seed_value
from npllm.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("gradcheck", help="gradient-check every op (float64 central differences)")
    p.add_argument("--op", default=None, help="check one op, e.g. lstm or scaled_dot_product_attention")
    p.add_argument("--tol", type=positive_float, default=1e-7, help="relative-error tolerance (default: 1e-7)")
    add_backend(p, help_text="check the kernels of this backend instead of the reference (ops it implements)")
    p.add_argument("--seed", type=seed_value, default=0)


def run(args) -> int:
    """0 when every gradient is within --tol, 1 otherwise."""
    from npllm import gradcheck_suite, layers
    if args.op is not None and args.op not in layers.OPS:
        raise UsageError("--op", f"unknown op {args.op!r}; choose from {', '.join(layers.OPS)}")
    backend = args.backend or "numpy"
    configure_process(backend, tune_malloc=False)
    ok = gradcheck_suite.run([args.op] if args.op else None, tol=args.tol, seed=args.seed, backend=backend)
    return 0 if ok else 1
