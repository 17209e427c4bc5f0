"""Gradient checking: compare hand-written backward passes with central differences in float64.

The numerical gradient of a scalar function f with respect to one entry x_i is
    (f(x + ε e_i) − f(x − ε e_i)) / 2ε,
whose truncation error is O(ε²) and whose round-off error is O(u / ε) (u ≈ 1.1e-16 in float64), so
ε = 1e-6 balances them near 1e-10.  Analytic (a) and numerical (n) gradients are compared with the
relative error
    ‖a − n‖₂ / max(‖a‖₂ + ‖n‖₂, 1e-8)
(the form used in Ng's UFLDL notes, with CS231n's floor): scale-free, 0 when they agree, 1 when one is
zero and the other is not, and not fooled by single entries that are near zero in both.  A check passes when every
relative error is ≤ ``tol`` (1e-7 by default).

Three entry points, all returning a :class:`GradcheckReport` that prints as a table:
* :func:`check_function` — any scalar function of arrays plus its analytic gradients;
* :func:`check_op` — a ``name_forward``/``name_backward`` pair: the loss is Σ out ⊙ dout with a random
  upstream gradient dout; for sequence ops (``time_axis``) the report also breaks the error down per
  time step and names the first step where analytic and numerical gradients disagree;
* :func:`check_params` — a model: a params dict, a scalar loss function reading it, and the grads dict.
Large tensors are checked on a random sample of ``max_entries`` entries.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

DEFAULT_EPS = 1e-6
DEFAULT_TOL = 1e-7


def relative_error(analytic, numerical, floor=1e-8) -> float:
    """‖a − n‖ / max(‖a‖ + ‖n‖, floor): 0 when they agree; ``floor`` (as in CS231n's rel_error) keeps two
    gradients that are both zero up to round-off (say 1e-17) from reading as a relative error of 1."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numerical, dtype=np.float64)
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), floor))


def numerical_gradient(f, x, eps=DEFAULT_EPS, indices=None) -> np.ndarray:
    """Central-difference gradient of scalar f() w.r.t. array x (perturbed in place, then restored).

    x (any shape, float64) → gradient of x's shape; with ``indices`` (flat positions), only those
    entries are computed and a 1-D array of them is returned.
    """
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so it can be perturbed in place")
    positions = range(flat.size) if indices is None else indices
    grad = np.empty(len(positions), dtype=np.float64)
    for j, i in enumerate(positions):
        original = flat[i]
        flat[i] = original + eps
        f_plus = float(f())
        flat[i] = original - eps
        f_minus = float(f())
        flat[i] = original
        grad[j] = (f_plus - f_minus) / (2 * eps)
    return grad.reshape(x.shape) if indices is None else grad


@dataclass
class GradcheckResult:
    """The comparison for one input or parameter."""
    name: str
    shape: tuple
    relative_error: float
    max_abs_error: float
    n_checked: int
    n_total: int
    tol: float
    per_step: list | None = None   # relative error when only output step t carries gradient

    @property
    def passed(self) -> bool:
        return bool(self.relative_error <= self.tol)


@dataclass
class GradcheckReport:
    """All results of one check, a verdict, and (for sequence ops) a per-time-step breakdown."""
    op: str
    results: list
    tol: float
    eps: float
    per_step: list | None = None   # max over inputs, for each output time step
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        steps_ok = self.per_step is None or all(e <= self.tol for e in self.per_step)
        return all(r.passed for r in self.results) and steps_ok

    @property
    def max_error(self) -> float:
        errors = [r.relative_error for r in self.results] + list(self.per_step or [])
        return max(errors, default=0.0)

    @property
    def first_bad_step(self):
        """The first output time step whose gradients disagree, or None."""
        if self.per_step is None:
            return None
        return next((t for t, e in enumerate(self.per_step) if e > self.tol), None)

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        width = max([16] + [len(r.name) + 2 for r in self.results])
        lines = [f"gradcheck {self.op}: {verdict} (relative error ≤ {self.tol:g} required; "
                 f"central differences, eps={self.eps:g}, float64)",
                 f"  {'input':<{width}}{'shape':<18}{'checked':>12}{'max abs err':>14}{'rel error':>12}  verdict"]
        for r in self.results:
            lines.append(f"  {r.name:<{width}}{str(r.shape):<18}{f'{r.n_checked}/{r.n_total}':>12}"
                         f"{r.max_abs_error:>14.2e}{r.relative_error:>12.2e}  {'ok' if r.passed else 'FAIL'}")
        if self.per_step is not None:
            lines.append("  per time step (the loss taken from output step t only):")
            for t, err in enumerate(self.per_step):
                lines.append(f"    t={t:<4} rel error {err:.2e}  {'ok' if err <= self.tol else 'FAIL'}")
            bad = self.first_bad_step
            lines.append("  all time steps agree" if bad is None else
                         f"  first time step where analytic and numerical gradients disagree: t={bad}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _sample(size, max_entries, rng):
    if max_entries is None or size <= max_entries:
        return None
    return np.sort(rng.choice(size, size=max_entries, replace=False))


def _compare(name, x, analytic, f, eps, tol, max_entries, rng) -> GradcheckResult:
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != x.shape:
        raise ValueError(f"analytic gradient of {name} has shape {analytic.shape}, expected {x.shape}")
    idx = _sample(x.size, max_entries, rng)
    numerical = numerical_gradient(f, x, eps, idx)
    a = analytic.reshape(-1) if idx is None else analytic.reshape(-1)[idx]
    n = numerical.reshape(-1)
    max_abs = float(np.max(np.abs(a - n))) if a.size else 0.0
    return GradcheckResult(name, x.shape, relative_error(a, n), max_abs, a.size, x.size, tol)


def check_function(f, inputs, grads, *, names=None, eps=DEFAULT_EPS, tol=DEFAULT_TOL, max_entries=None,
                   seed=0, op="function") -> GradcheckReport:
    """Check analytic ``grads`` of scalar ``f(*inputs)`` against central differences.

    inputs: list of float64 arrays (perturbed in place during the check, then restored);
    grads: one analytic gradient per input, same shapes.
    """
    if len(inputs) != len(grads):
        raise ValueError(f"grads must hold one gradient per input ({len(inputs)}), got {len(grads)}")
    names = names or [f"input{i}" for i in range(len(inputs))]
    rng = np.random.default_rng(seed)
    results = []
    for name, x, g in zip(names, inputs, grads):
        _require_float64(name, x)
        results.append(_compare(name, x, g, lambda: f(*inputs), eps, tol, max_entries, rng))
    return GradcheckReport(op, results, tol, eps)


def _require_float64(name, x):
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name} must be a float64 numpy.ndarray for gradient checking, got {got}")


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _float_outputs(forward_result):
    """Split a forward's return value into its float array outputs (the cache is last)."""
    outputs = _as_tuple(forward_result)[:-1]
    return [np.asarray(o) for o in outputs]


def check_op(forward, backward, inputs, kwargs=None, *, names=None, eps=DEFAULT_EPS, tol=DEFAULT_TOL,
             max_entries=200, seed=0, time_axis=None, op=None) -> GradcheckReport:
    """Check ``backward`` of a forward/backward pair on ``inputs`` (float inputs are copied to float64).

    The scalar checked is L = Σ_k Σ out_k ⊙ dout_k with random normal upstream gradients dout_k, so
    ``backward(*douts, cache)`` must equal ∂L/∂input.  ``kwargs`` is a dict of options, or a function
    returning one (called before every forward: dropout needs a fresh, identically seeded rng).  With ``time_axis`` (the time axis of the
    outputs, e.g. 1 for (B, T, H)), each output step t is also checked alone, locating BPTT errors.
    """
    # kwargs may be a function returning fresh keyword arguments, for ops that consume state on each
    # call (dropout's Generator): every forward of the check must then see the same mask.
    make_kwargs = kwargs if callable(kwargs) else (lambda: dict(kwargs or {}))
    rng = np.random.default_rng(seed)
    if names is None:
        params = [p for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params[:len(inputs)]]
    inputs = [x.astype(np.float64) if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating) else x
              for x in inputs]
    float_positions = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray) and x.dtype == np.float64]
    outputs = _float_outputs(forward(*inputs, **make_kwargs()))
    douts = [rng.standard_normal(o.shape) if o.ndim else np.float64(rng.standard_normal()) for o in outputs]

    def loss_with(upstream):
        def f():
            outs = _float_outputs(forward(*inputs, **make_kwargs()))
            return sum(float(np.sum(o * d)) for o, d in zip(outs, upstream))
        return f

    def analytic_with(upstream):
        cache = _as_tuple(forward(*inputs, **make_kwargs()))[-1]
        grads = _as_tuple(backward(*upstream, cache))
        if len(grads) != len(float_positions):
            raise ValueError(f"backward returned {len(grads)} gradients, expected one per float input "
                             f"({len(float_positions)}: {', '.join(names[i] for i in float_positions)})")
        return grads

    grads = analytic_with(douts)
    results = []
    for i, g in zip(float_positions, grads):
        if g is None:     # a backward that leaves out a gradient must not pass by omission
            results.append(GradcheckResult(names[i], inputs[i].shape, 1.0, float("inf"), 0, inputs[i].size, tol))
        else:
            results.append(_compare(names[i], inputs[i], g, loss_with(douts), eps, tol, max_entries, rng))
    report = GradcheckReport(op or getattr(forward, "__name__", "op").removesuffix("_forward"), results, tol, eps)
    if time_axis is not None:
        report.per_step = _per_step_errors(douts, time_axis, analytic_with, loss_with, inputs,
                                           float_positions, eps, max_entries, rng)
    return report


def _per_step_errors(douts, time_axis, analytic_with, loss_with, inputs, float_positions, eps, max_entries, rng):
    """For each output step t: keep dout only at step t, and take the worst relative error over inputs."""
    T = douts[0].shape[time_axis]
    errors = []
    for t in range(T):
        step_douts = []
        for d in douts:
            masked = np.zeros_like(d)
            index = [slice(None)] * d.ndim
            index[time_axis] = t
            masked[tuple(index)] = d[tuple(index)]
            step_douts.append(masked)
        grads = analytic_with(step_douts)
        worst = 0.0
        for i, g in zip(float_positions, grads):
            if g is None:
                continue
            result = _compare("", inputs[i], g, loss_with(step_douts), eps, 1.0, max_entries, rng)
            worst = max(worst, result.relative_error)
        errors.append(worst)
    return errors


def check_params(loss_fn, params, grads, *, names=None, eps=DEFAULT_EPS, tol=DEFAULT_TOL, max_entries=50,
                 seed=0, op="model") -> GradcheckReport:
    """Check a model's gradients: ``loss_fn()`` → scalar, computed from ``params`` (a dict of float64
    arrays it reads on every call); ``grads`` has the same keys.  ``names`` restricts the check."""
    names = list(params) if names is None else list(names)
    missing = [n for n in names if n not in grads]
    if missing:
        raise KeyError(f"grads has no entry for {missing[:5]}")
    rng = np.random.default_rng(seed)
    results = []
    for name in names:
        _require_float64(f"params[{name!r}]", params[name])
        results.append(_compare(name, params[name], grads[name], loss_fn, eps, tol, max_entries, rng))
    return GradcheckReport(op, results, tol, eps)
