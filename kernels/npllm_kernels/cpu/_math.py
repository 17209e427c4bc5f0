"""Vectorizable exp, tanh and sigmoid for float32/float64 scalars inside ``@njit`` loops.

Why this file exists: numba from PyPI has no SVML, so ``np.exp``/``np.tanh`` inside a loop are scalar
libm calls and the loop around them cannot vectorize.  The functions here use only multiplies, adds,
compares and an integer-to-float bit cast, so LLVM turns a loop over them into SIMD code, an order of
magnitude faster (docs/performance.md, "Small kernels").

``fast_exp(x)`` (Cody & Waite range reduction, as in Cephes ``exp``/``expf``):

    x = n ln2 + r,  n = round(x / ln2),  |r| <= ln2 / 2
    e^x = 2^n e^r,  e^r by a polynomial,  2^n built by writing n + bias into the exponent bits.

* float32: Cephes ``expf``'s degree-7 polynomial; relative error <= 3e-7 (about 2 ulp).
* float64: Taylor series to r^13 (remainder r^14/14! < 1e-16); relative error <= 1e-15.
* ``-inf`` and results below the smallest normal number (x < -86.5 in float32, x < -708 in float64)
  give 0 (no subnormals); results beyond the largest finite number give ``inf``; NaN stays NaN.

``fast_tanh(y)`` is ``1 - 2 / (e^{2y} + 1)`` (no overflow: e^{2y} = inf gives 1) with an odd polynomial
near 0, where that form loses digits to cancellation. ``fast_sigmoid(z)`` is ``1 / (1 + e^{-z})``.

These are *jit-only* building blocks (``numba.extending.overload``): call them from ``@njit`` code with
a float32 or float64 scalar and they specialise on its type.  Called from Python they accept arrays
and run a compiled loop (handy in tests and notebooks).

They are compiled *without* ``reassoc``: the range reduction's rounding trick ``(v + 1.5·2^52) - 1.5·2^52``
and the split ``ln2 = ln2_hi + ln2_lo`` only work when the compiler keeps the order of operations.
LLVM keeps each instruction's own fast-math flags when it inlines them into a kernel compiled with
``reassoc``, so the kernels' flags do not leak in.

Note on ``cache=True``: Numba invalidates a cached kernel when *its own* file changes, not when a
function it calls changes.  After editing this file, clear ``__pycache__`` of ``npllm_kernels/cpu``.
"""
import numpy as np
from numba import njit
from numba.core import types
from numba.extending import intrinsic, overload

# Fast-math flags for the kernels: reassoc lets row sums vectorize; no nnan/ninf so -inf/NaN stay exact.
KERNEL_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
# Flags for the functions below (no reassoc/arcp: see the module docstring).
_MATH_FASTMATH = {"contract", "nsz"}
# error_model="numpy": a float division by zero gives inf/nan instead of raising, which keeps the
# division free of a branch so loops around it vectorize.  forceinline: LLVM's inliner would leave the
# larger float64 bodies as calls, and a loop with a call in it does not vectorize.
_MATH_OPTIONS = {"fastmath": _MATH_FASTMATH, "error_model": "numpy", "forceinline": True,
                 "no_cpython_wrapper": True}

# ---- float32 constants (np.float32 globals stay float32 inside numba; a Python float would promote) ----
_F32_LOG2E = np.float32(1.4426950408889634)
_F32_SHIFT = np.float32(1.5 * 2**23)        # adding then subtracting it rounds to the nearest integer
_F32_LN2_HI = np.float32(0.693359375)        # ln2 = hi + lo, hi with few mantissa bits so n*hi is exact
_F32_LN2_LO = np.float32(-2.12194440e-4)
_F32_LO = np.float32(-86.5)                  # below: e^x < 2^-124, flushed to 0
_F32_HI = np.float32(88.72283)               # above: e^x > FLT_MAX, inf
_F32_EXP_POLY = tuple(np.float32(c) for c in (   # Cephes expf: e^r ~ 1 + r + r^2 P(r), |r| <= ln2/2
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_F32_TANH_POLY = tuple(np.float32(c) for c in (  # Cephes tanhf: tanh(y) ~ y + y^3 P(y^2), |y| < 0.625
    -5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1))
_F32_TANH_SMALL = np.float32(0.625)

# ---- float64 constants ----
_F64_LOG2E = 1.4426950408889634
_F64_SHIFT = 1.5 * 2.0**52
_F64_LN2_HI = 6.93145751953125e-1
_F64_LN2_LO = 1.42860682030941723212e-6
_F64_LO = -708.0                             # below: e^x < 2^-1021, flushed to 0
_F64_HI = 709.782712893384                   # above: e^x > DBL_MAX, inf
_INV_FACTORIALS = (1 / 6227020800, 1 / 479001600, 1 / 39916800, 1 / 3628800, 1 / 362880, 1 / 40320,
                   1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1.0, 1.0)   # 1/13! ... 1/0!
# Taylor series of tanh (coefficients 2^2n (2^2n - 1) B_2n / (2n)!), y^1..y^15; used for |y| < 0.125,
# where the next term is below 1e-17 relative and 1 - 2/(e^2y + 1) would lose about 4 digits.
_F64_TANH_TAYLOR = (-929569 / 638512875, 21844 / 6081075, -1382 / 155925, 62 / 2835, -17 / 315, 2 / 15,
                    -1 / 3, 1.0)
_F64_TANH_SMALL = 0.125


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (a register bit cast; vectorizes)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        as_int32 = context.cast(builder, args[0], signature.args[0], types.int32)
        return builder.bitcast(as_int32, context.get_value_type(types.float32))
    return types.float32(bits), codegen


@intrinsic
def _float64_from_bits(typingctx, bits):
    """Reinterpret a 64-bit integer as a float64 (a register bit cast; vectorizes)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        as_int64 = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.bitcast(as_int64, context.get_value_type(types.float64))
    return types.float64(bits), codegen


def _exp_float32(x):
    xc = _F32_LO if x < _F32_LO else x
    xc = _F32_HI if xc > _F32_HI else xc
    n = (xc * _F32_LOG2E + _F32_SHIFT) - _F32_SHIFT          # round(x / ln2), as a float
    r = (xc - n * _F32_LN2_HI) - n * _F32_LN2_LO               # |r| <= ln2/2, exact to ~1 ulp
    c = _F32_EXP_POLY
    p = c[0]
    for k in range(1, 6):
        p = p * r + c[k]
    p = p * (r * r) + r + np.float32(1.0)
    # 2^(n-1) then *2: n ranges over [-125, 128] after clamping, so n - 1 + 127 stays a normal exponent.
    half_scale = _float32_from_bits((np.int32(n) + np.int32(126)) << np.int32(23))
    y = p * half_scale * np.float32(2.0)
    y = np.float32(0.0) if x < _F32_LO else y
    y = np.float32(np.inf) if x > _F32_HI else y
    return x if x != x else y                                   # NaN in, NaN out


def _exp_float64(x):
    xc = _F64_LO if x < _F64_LO else x
    xc = _F64_HI if xc > _F64_HI else xc
    n = (xc * _F64_LOG2E + _F64_SHIFT) - _F64_SHIFT
    r = (xc - n * _F64_LN2_HI) - n * _F64_LN2_LO
    c = _INV_FACTORIALS
    p = c[0]
    for k in range(1, 14):
        p = p * r + c[k]
    half_scale = _float64_from_bits((np.int64(n) + np.int64(1022)) << np.int64(52))
    y = p * half_scale * 2.0
    y = 0.0 if x < _F64_LO else y
    y = np.inf if x > _F64_HI else y
    return x if x != x else y


def fast_exp(x):
    """e**x: jit-only scalar (float32/float64) building block; from Python, an array -> array."""
    return _apply_exp(np.asarray(x))


def fast_tanh(y):
    """tanh(y): jit-only scalar (float32/float64) building block; from Python, an array -> array."""
    return _apply_tanh(np.asarray(y))


def fast_sigmoid(z):
    """1 / (1 + e^-z): jit-only scalar (float32/float64) building block; from Python, array -> array."""
    return _apply_sigmoid(np.asarray(z))


def _float_kind(x):
    """'f32' or 'f64' for a numba float type, else None (so the overload does not match)."""
    if isinstance(x, types.Float):
        return "f32" if x.bitwidth == 32 else "f64"
    return None


@overload(fast_exp, jit_options=_MATH_OPTIONS)
def _fast_exp_overload(x):
    kind = _float_kind(x)
    if kind == "f32":
        return _exp_float32
    if kind == "f64":
        return _exp_float64
    return None


@overload(fast_tanh, jit_options=_MATH_OPTIONS)
def _fast_tanh_overload(y):
    kind = _float_kind(y)
    if kind == "f32":
        def tanh_float32(y):
            s = y * y
            c = _F32_TANH_POLY
            p = c[0]
            for k in range(1, 5):
                p = p * s + c[k]
            small = p * s * y + y
            # e^{2y} = inf for large y gives exactly 1; e^{2y} = 0 gives exactly -1.
            large = np.float32(1.0) - np.float32(2.0) / (fast_exp(y + y) + np.float32(1.0))
            return small if abs(y) < _F32_TANH_SMALL else large
        return tanh_float32
    if kind == "f64":
        def tanh_float64(y):
            s = y * y
            c = _F64_TANH_TAYLOR
            p = c[0]
            for k in range(1, 8):
                p = p * s + c[k]
            small = p * y
            large = 1.0 - 2.0 / (fast_exp(y + y) + 1.0)
            return small if abs(y) < _F64_TANH_SMALL else large
        return tanh_float64
    return None


@overload(fast_sigmoid, jit_options=_MATH_OPTIONS)
def _fast_sigmoid_overload(z):
    kind = _float_kind(z)
    if kind is None:
        return None
    one = np.float32(1.0) if kind == "f32" else 1.0

    def sigmoid(z):
        # e^{-z} = inf for very negative z gives exactly 0 (never inf/inf); no cancellation anywhere.
        return one / (one + fast_exp(-z))
    return sigmoid


@njit(cache=True, fastmath=KERNEL_FASTMATH)
def _apply_exp(x):
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = fast_exp(flat[i])
    return out.reshape(x.shape)


@njit(cache=True, fastmath=KERNEL_FASTMATH)
def _apply_tanh(x):
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = fast_tanh(flat[i])
    return out.reshape(x.shape)


@njit(cache=True, fastmath=KERNEL_FASTMATH)
def _apply_sigmoid(x):
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = fast_sigmoid(flat[i])
    return out.reshape(x.shape)
