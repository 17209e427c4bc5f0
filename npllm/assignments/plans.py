"""Test-case plans: what the child must call for one case of a part, and how the grader judges it.

A :class:`Plan` holds the calls (see ``_child.py``) and input arrays of one case, the kinds of check
it scores, and ``judge``: a function of the child's plain-array results that returns one
:class:`~npllm.assignments.grading.Check` per kind.  The expected values come from the reference,
called here in the grader's process.

* a *forward* part: one call; values compared with the reference's outputs;
* a *backward* part: the student's forward (for its cache and outputs), the backward on random
  upstream gradients, the forward again on inputs moved by ±ε along a random direction per float
  input (a directional central difference of L = Σ dout ⊙ out), and for a sequence op one backward per
  output time step t with the upstream gradient kept at step t only;
* a part with its own ``plan`` (training a model, grading a gradient checker) builds its Plan itself.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

from npllm.assignments.grading import (GRADCHECK_EPS, GRADCHECK_TOL, Check, CheckFailed, case_inputs,
                                       compare_all)


@dataclass
class Plan:
    description: str                 # the case's input shapes, for the report
    calls: list
    arrays: dict
    kinds: tuple                     # the checks it scores: ("values",) or ("gradcheck", "values")
    judge: Callable                  # ChildResult -> [Check]


def refs(values, prefix: str, arrays: dict, name: str):
    """JSON references for call arguments: arrays are stored in ``arrays``, other values pass as is."""
    if isinstance(values, dict):
        return {key: refs(value, prefix, arrays, f"{name}.{key}") for key, value in values.items()}
    if isinstance(values, (list, tuple)):
        return [refs(value, prefix, arrays, f"{name}{index}") for index, value in enumerate(values)]
    if isinstance(values, np.ndarray):
        arrays[prefix + name] = values
        return {"array": prefix + name}
    return values.item() if isinstance(values, np.generic) else values


def parameter_names(function, count: int) -> list:
    try:
        names = [p.name for p in inspect.signature(function).parameters.values()]
    except (TypeError, ValueError):
        names = []
    return (names + [f"input {i + 1}" for i in range(len(names), count)])[:count]


def describe(names, args, kwargs) -> str:
    text = ", ".join(f"{n} {tuple(a.shape)}" if isinstance(a, np.ndarray) else f"{n}={a!r}"
                     for n, a in zip(names, args))
    options = [f"{k}=<{v.dtype} {tuple(v.shape)}>" if isinstance(v, np.ndarray) else f"{k}={v!r}"
               for k, v in kwargs.items()]
    return text + (f"; {', '.join(options)}" if options else "")


def values_check(child, call_id: str, names, expected: list) -> Check:
    error = child.call_error(call_id)
    if error:
        return Check("values", False, error)
    try:
        return Check("values", True, compare_all(names, child.results(call_id), expected))
    except CheckFailed as failure:
        return Check("values", False, str(failure))


def _call(call_id, function, args, kwargs, n_results, names, **extra) -> dict:
    return {"id": call_id, "function": function, "args": args, "kwargs": kwargs, "n_results": n_results,
            "result_names": list(names), "returns": ", ".join(names), **extra}


def reference_case(assignment, part, number: int, index: int, hidden: bool, seed: int):
    """A forward/backward part's case: (rng, args, kwargs, outputs, upstream, expected, cache) with the
    reference's results; ``upstream`` is empty and ``expected`` the outputs for a forward part."""
    rng, args, kwargs = case_inputs(part, number, index, hidden, seed)
    results = assignment.reference[part.forward or part.function](*args, **kwargs)
    if not part.returns_cache:
        results = (*(results if isinstance(results, tuple) else (results,)), None)
    outputs, cache = [np.asarray(o) for o in results[:-1]], results[-1]
    if part.kind == "forward":
        return rng, args, kwargs, outputs, [], outputs, cache
    upstream = [rng.standard_normal(o.shape) for o in outputs]
    grads = assignment.reference[part.function](*upstream, cache)
    return rng, args, kwargs, outputs, upstream, list(grads) if isinstance(grads, tuple) else [grads], cache


def make_plan(assignment, part, number: int, index: int, hidden: bool, seed: int, prefix: str) -> Plan:
    if part.plan is not None:
        return part.plan(assignment, part, number, index, hidden, seed, prefix)
    rng, args, kwargs, outputs, upstream, expected, _ = reference_case(assignment, part, number, index, hidden,
                                                                       seed)
    forward_name = part.forward or part.function
    names = parameter_names(assignment.reference[forward_name], len(args))
    arrays = {}
    arg_refs, kwarg_refs = refs(args, prefix, arrays, "a"), refs(kwargs, prefix, arrays, "k")
    output_names = part.forward_outputs or tuple(part.outputs)
    student_forward = forward_name if ":" in forward_name else f"student:{forward_name}"
    if part.returns_cache:
        forward_call = _call(prefix + "fw", student_forward, arg_refs, kwarg_refs, len(outputs) + 1,
                             list(output_names) + ["cache"], cache=prefix + "cache", arg_names=names)
    else:
        forward_call = _call(prefix + "fw", student_forward, arg_refs, kwarg_refs, len(outputs), output_names,
                             arg_names=names)
    description = describe(names, args, kwargs)
    if part.kind == "forward":
        return Plan(description, [forward_call], arrays, ("values",),
                    lambda child: [values_check(child, prefix + "fw", part.outputs, outputs)])

    def backward_call(call_id, upstream_arrays, cache_key):
        return _call(call_id, f"student:{part.function}",
                     refs(upstream_arrays, prefix, arrays, call_id.removeprefix(prefix) + ".u")
                     + [{"cache": cache_key}], {}, len(part.outputs), part.outputs,
                     cache_from=prefix + "fw", needs=forward_name.rpartition(".")[2])

    calls = [forward_call, backward_call(prefix + "bw", upstream, prefix + "cache")]
    floats = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype == np.float64]
    directions = {i: rng.standard_normal(args[i].shape) for i in floats}
    for i in floats:
        for sign in (+1, -1):
            moved = list(args)
            moved[i] = args[i] + sign * GRADCHECK_EPS * directions[i]
            calls.append(_call(f"{prefix}p{i}{'+' if sign > 0 else '-'}", student_forward,
                               refs(moved, prefix, arrays, f"p{i}{sign:+d}."), kwarg_refs, len(outputs) + 1,
                               list(output_names) + ["cache"], cache=prefix + "moved"))
    steps = outputs[0].shape[part.time_axis] if part.time_axis is not None else 0
    step_upstreams = []
    for t in range(steps):
        masked = [np.zeros_like(u) for u in upstream]
        for m, u in zip(masked, upstream):
            index_t = [slice(None)] * u.ndim
            index_t[part.time_axis] = t
            m[tuple(index_t)] = u[tuple(index_t)]
        step_upstreams.append(masked)
        calls.append(dict(forward_call, id=f"{prefix}s{t}.fw", cache=f"{prefix}s{t}.cache"))
        calls.append(backward_call(f"{prefix}s{t}.bw", masked, f"{prefix}s{t}.cache"))

    def gradcheck(child) -> Check:
        error = child.call_error(prefix + "bw")
        if error:
            return Check("gradcheck", False, error)
        try:
            compare_all(output_names, child.results(prefix + "fw"), outputs)
        except CheckFailed as failure:
            return Check("gradcheck", False, f"not counted until {forward_name.rpartition('.')[2]} is right "
                                             f"({failure})")
        try:
            errors = _directional_errors(child, prefix, prefix + "bw", upstream, floats, directions, args,
                                         part.outputs)
            per_step = [max(_directional_errors(child, prefix, f"{prefix}s{t}.bw", step_upstreams[t], floats,
                                                directions, args, part.outputs).values())
                        for t in range(steps)]
        except CheckFailed as failure:
            return Check("gradcheck", False, str(failure))
        failing = [f"{name} {err:.1e}" for name, err in errors.items() if err > GRADCHECK_TOL]
        if not failing:
            return Check("gradcheck", True, f"ok (largest relative error {max(errors.values()):.1e})")
        message = f"relative error {', '.join(failing)} (must be <= {GRADCHECK_TOL:g})"
        bad = next((t for t, err in enumerate(per_step) if err > GRADCHECK_TOL), None)
        if bad is not None:
            message += f"; the first output time step that disagrees is t={bad}"
        return Check("gradcheck", False, message)

    shapes = ", ".join(f"d{n} {tuple(u.shape)}" for n, u in zip(output_names, upstream))
    return Plan(f"{description}; upstream {shapes}", calls, arrays, ("gradcheck", "values"),
                lambda child: [gradcheck(child), values_check(child, prefix + "bw", part.outputs, expected)])


def _directional_errors(child, prefix, backward_id, upstream, floats, directions, args, grad_names) -> dict:
    """{gradient name: relative error of ⟨grad, u⟩ against (L(x + εu) − L(x − εu)) / 2ε}.

    The error is |a − n| / max(|a| + |n|, 1): relative for the O(1) derivatives of the cases, absolute
    (round-off is ~1e-9) where the derivative is nearly zero.
    """
    error = child.call_error(backward_id)
    if error:
        raise CheckFailed(error)
    grads = child.results(backward_id)
    errors = {}
    for position, i in enumerate(floats):
        name = grad_names[position]
        if grads[position].shape != args[i].shape:
            raise CheckFailed(f"{name} has shape {grads[position].shape}, expected {args[i].shape}")
        for sign in "+-":
            error = child.call_error(f"{prefix}p{i}{sign}")
            if error:
                raise CheckFailed(error)
        plus, minus = child.results(f"{prefix}p{i}+"), child.results(f"{prefix}p{i}-")
        loss_plus = sum(float(np.sum(u * o)) for u, o in zip(upstream, plus))
        loss_minus = sum(float(np.sum(u * o)) for u, o in zip(upstream, minus))
        numerical = (loss_plus - loss_minus) / (2 * GRADCHECK_EPS)
        analytic = float(np.sum(grads[position] * directions[i]))
        errors[name] = abs(analytic - numerical) / max(abs(analytic) + abs(numerical), 1.0)
        if not np.isfinite(errors[name]):
            errors[name] = float("inf")
    return errors
