"""Input checks shared by every op: each raises a clear error naming the argument, expected vs actual.

They run before any computation, so a bad call never leaves half-done work behind.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_float(name: str, x, ndim=None, shape_doc: str = "") -> np.ndarray:
    """Require a float32/float64 ndarray (with ``ndim`` dimensions if given, an int or a tuple of ints)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32 or float64, got {type(x).__name__}")
    if x.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            doc = f" {shape_doc}" if shape_doc else ""
            raise ValueError(f"{name} must have {want} dimensions{doc}, got shape {x.shape}")
    return x


def check_shape(name: str, x: np.ndarray, expected: tuple) -> None:
    """Require ``x.shape == expected``; ``None`` entries in ``expected`` match any size."""
    ok = x.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape))
    if not ok:
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {want}, got {x.shape}")


def check_same_dtype(**arrays) -> None:
    """Require every given float array to share one dtype (ops compute in their input's dtype)."""
    present = {k: v for k, v in arrays.items() if v is not None}
    dtypes = {v.dtype for v in present.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{k}={v.dtype}" for k, v in present.items())
        raise TypeError(f"all floating inputs must share one dtype, got {listing}")


def check_matmul_operands(a, b) -> tuple:
    """Validate ``a @ b`` as NumPy's matmul takes it; return the product's shape (the contract of every
    backend's ``matmul``).

    Accepted: float32/float64 ndarrays (mixed: NumPy promotes to float64) with at least one axis. A 1-D
    a is a row (K,), a 1-D b a column (K,); otherwise a (..., M, K) and b (..., K, N) with batch axes
    that broadcast. Anything else raises TypeError (type, dtype) or ValueError (shape) naming a or b."""
    check_float("a", a)
    check_float("b", b)
    for name, x, layout in (("a", a, "(..., M, K) or (K,)"), ("b", b, "(..., K, N) or (K,)")):
        if x.ndim == 0:
            raise ValueError(f"{name} must have at least 1 dimension {layout}, got shape {x.shape}")
    b_axis = 0 if b.ndim == 1 else b.ndim - 2          # the axis of b that a's last axis is summed with
    if a.shape[-1] != b.shape[b_axis]:
        which = "only" if b.ndim == 1 else "second-to-last"
        raise ValueError(f"a's last axis must equal b's {which} axis (K), got a {a.shape} and b {b.shape}")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"a's and b's batch axes (all but the last two) must broadcast, "
                         f"got a {a.shape} and b {b.shape}") from None
    rows = a.shape[-2:-1]                              # (M,), or () when a is a vector
    cols = b.shape[-1:] if b.ndim > 1 else ()          # (N,), or () when b is a vector
    return batch + rows + cols


def check_ids(name: str, ids, upper: int, allow: int | None = None) -> np.ndarray:
    """Require an integer ndarray with values in [0, upper) (``allow`` is one extra permitted value)."""
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of integers, got {type(ids).__name__}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype (token ids), got {ids.dtype}")
    if ids.size:
        values = ids if allow is None else ids[ids != allow]
        if values.size:
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= upper:
                bad = low if low < 0 else high
                raise ValueError(f"{name} must lie in [0, {upper}), got a value of {bad}")
    return ids


def all_finite(*arrays) -> bool:
    """Whether every entry of the arrays is finite, in one vectorized sum each: a NaN or ±inf makes an
    IEEE sum non-finite.  A finite array whose sum overflows also answers False (kernels use this to
    send non-finite inputs to the reference, for which a false alarm only costs speed)."""
    return all(np.isfinite(np.sum(a)) for a in arrays)


def check_cache(name: str, cache, cache_type) -> None:
    """Require the cache made by the matching forward."""
    if not isinstance(cache, cache_type):
        raise TypeError(f"{name} must be the {cache_type.__name__} returned by the forward, got {type(cache).__name__}")


def upstream(name: str, dout, like: np.ndarray) -> np.ndarray:
    """An upstream gradient shaped like the forward output ``like``: ``None`` means zeros."""
    return upstream_shaped(name, dout, like.shape, like.dtype)


def upstream_shaped(name: str, dout, shape: tuple, dtype) -> np.ndarray:
    """An upstream gradient of ``shape``/``dtype`` (for backwards whose cache does not keep the output)."""
    if dout is None:
        return np.zeros(shape, dtype=dtype)
    dout = np.asarray(dout, dtype=dtype)
    if dout.shape != tuple(shape):
        raise ValueError(f"{name} must have the forward output's shape {tuple(shape)}, got {dout.shape}")
    return dout
