"""``npllm bench [--backend B] [--json PATH] [--only SECTIONS] [--quick]``: kernels against the reference."""
from __future__ import annotations

import json

from npllm.commands._args import add_backend, configure_process
from npllm.errors import UsageError


def add_parser(sub) -> None:
    from npllm.bench import SECTIONS
    p = sub.add_parser("bench", help="kernel and training-step benchmarks against the NumPy reference")
    add_backend(p, default="numba", help_text="the backend measured against numpy (default: numba)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--only", default=None, help=f"comma-separated subset: {','.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="small shapes only (a smoke test)")


def run(args) -> int:
    """Parse --only, configure the process for --backend, run the sections, write --json if asked."""
    from npllm import bench
    only = None
    if args.only is not None:
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in only if s not in bench.SECTIONS]
        if unknown or not only:
            raise UsageError("--only", f"unknown section {', '.join(map(repr, unknown)) or '(empty)'}; "
                                       f"choose from {', '.join(bench.SECTIONS)}")
    configure_process(args.backend)      # as ``npllm train`` does, so steps are timed under the same settings
    results = bench.run(args.backend, only, args.quick)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        except OSError as exc:
            raise UsageError("--json", f"cannot write {args.json}: {exc.strerror}") from None
    return 0
