"""Argument types shared by the commands: numbers checked for range and finiteness, with clear messages."""
from __future__ import annotations

import argparse
import math

BACKEND_CHOICES = ("numpy", "numba", "cuda")


def number(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite number of ``kind`` inside [low, high] (or open ends)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {text}")
        if high is not None and (value > high or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"must be {'<' if high_open else '<='} {high}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


positive_int = number(int, 1)
nonneg_int = number(int, 0)
positive_float = number(float, 0.0, low_open=True)
nonneg_float = number(float, 0.0)
seed_value = number(int, 0, 2**32 - 1)
probability = number(float, 0.0, 1.0, high_open=True)
top_p_value = number(float, 0.0, 1.0, low_open=True)


def add_backend(parser, default=None, help_text="default: $NPLLM_BACKEND or numpy") -> None:
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default=default, help=help_text)


def configure_process(backend: str | None, **settings) -> str:
    """:func:`npllm.process.configure`, its errors as a UsageError naming --backend, or NPLLM_BACKEND
    when the variable chose the backend."""
    from npllm.errors import EnvironmentVariableError, UsageError
    from npllm.process import configure
    try:
        return configure(backend, **settings)
    except EnvironmentVariableError as exc:
        raise UsageError(exc.variable, exc.message) from None
    except (ValueError, RuntimeError) as exc:
        raise UsageError("--backend", str(exc)) from None
