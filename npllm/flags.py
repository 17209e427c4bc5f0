"""Which ``npllm train`` flags the user set: needed where a flag's meaning depends on the model.

``--model seq2seq`` has its own defaults (a batch of 128 short pairs, not 12 text windows), and
``--init-from`` must refuse a flag that contradicts the loaded architecture — but only a flag the user
typed.  argparse does not record that, so a flag counts as *given* when its value differs from the
parser's default (``None`` for flags whose default depends on the model).  The one case this cannot
see: typing a flag with exactly the default value.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def train_defaults() -> dict:
    """The default value of every ``npllm train`` flag (by argparse dest), read from the CLI's parser."""
    from npllm.cli import build_parser
    return vars(build_parser().parse_args(["train"]))


def given(args, dest: str) -> bool:
    """True if flag ``dest`` (e.g. "n_layer") holds a value other than None and the parser's default."""
    value = getattr(args, dest, None)
    return value is not None and value != train_defaults().get(dest)


def fill_defaults(args, defaults: dict) -> None:
    """Set each flag in ``defaults`` (dest → value) that the user did not give."""
    for dest, value in defaults.items():
        if not given(args, dest):
            setattr(args, dest, value)
