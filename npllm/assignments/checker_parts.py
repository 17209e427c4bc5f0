"""The gradcheck assignment's parts that grade a student's gradient checker rather than a layer.

* ``numerical_gradient``: the child runs the student's function on a test function with a known
  gradient (``checker_harness.test_function``: Σ w ⊙ tanh(z) + ½ Σ w ⊙ z²) at a drawn x; the grader
  compares with the analytic gradient, w ⊙ (1 − tanh² x) + w ⊙ x, and checks that x came back unchanged.
* ``check_layer``: each case runs the student's checker on a provided layer twice, with its correct
  backward and with a buggy one (``checker_harness.py``); the grader wants every error of the correct
  layer at most ``CORRECT_BELOW`` and, for the buggy one, the broken gradient's error above
  ``BUG_ABOVE`` with the others small — a checker that always answers 0 fails every case.
"""
from __future__ import annotations

import numpy as np

from npllm.assignments.grading import Check, case_inputs
from npllm.assignments.plans import Plan, describe, refs
from npllm.gradcheck import relative_error

CORRECT_BELOW, BUG_ABOVE = 1e-6, 1e-3


def numerical_gradient_plan(assignment, part, number, index, hidden, seed, prefix) -> Plan:
    _, (x, w), _ = case_inputs(part, number, index, hidden, seed)
    arrays = {}
    call = {"id": prefix + "grad", "function": "provided:checker_harness.numerical_gradient_of_test_function",
            "args": [{"student_module": True}, *refs([x, w], prefix, arrays, "a")], "kwargs": {},
            "n_results": 2, "result_names": ["the gradient", "x after the call"], "returns": "grad",
            "inplace_check": False}   # the judge says so itself, naming x
    analytic = w * (1.0 - np.tanh(x) ** 2) + w * x

    def judge(child):
        error = child.call_error(prefix + "grad")
        if error:
            return [Check("values", False, error)]
        grad, x_after = child.results(prefix + "grad")
        if grad.shape != x.shape:
            return [Check("values", False, f"the gradient has shape {grad.shape}, expected {x.shape}")]
        if not np.array_equal(x_after, x):
            where = tuple(int(i) for i in np.argwhere(x_after != x)[0])
            return [Check("values", False, f"x was left changed at index {where} (restore each entry after "
                                           f"perturbing it)")]
        err = relative_error(grad, analytic)
        ok = err <= CORRECT_BELOW
        return [Check("values", ok, f"{'ok' if ok else 'wrong'}: relative error {err:.1e} against the exact "
                                    f"gradient (must be <= {CORRECT_BELOW:g})")]

    return Plan(describe(["x", "w"], [x, w], {}), [call], arrays, ("values",), judge)


def check_layer_plan(assignment, part, number, index, hidden, seed, prefix) -> Plan:
    """A case checks one layer twice: its correct backward, then one with a planted bug."""
    rng, inputs, options = case_inputs(part, number, index, hidden, seed)
    layer, bug, bad_gradient = options["layer"], options["bug"], options["bad"]
    dout = rng.standard_normal((inputs[0] @ inputs[1]).shape if layer == "affine" else inputs[0].shape)
    names = ["dx", "dW", "db"] if layer == "affine" else ["dx"]
    arrays = {}
    args = [*refs(inputs, prefix, arrays, "a")], *refs([dout], prefix, arrays, "d")
    calls = [{"id": f"{prefix}{which}", "function": "provided:checker_harness.check_a_layer",
              "args": [{"student_module": True}, {"provided": "layers_to_check"}, which, *args], "kwargs": {},
              "n_results": 1, "result_names": ["the list of relative errors"], "returns": "errors",
              "inplace_check": False} for which in (layer, bug)]

    def verdict(child, which, wrong_gradient):
        error = child.call_error(prefix + which)
        if error:
            return error
        errors = child.results(prefix + which)[0].reshape(-1)
        if errors.size != len(inputs):
            return f"returned {errors.size} errors, expected one per input ({len(inputs)})"
        shown = ", ".join(f"{n} {e:.1e}" for n, e in zip(names, errors))
        what = (f"the {layer} layer with a planted bug in {wrong_gradient}" if wrong_gradient
                else f"the correct {layer} layer")
        # NaN compares False both ways, so a NaN error is a miss whichever way it should go.
        wanted = {n: (f"above {BUG_ABOVE:g}" if n == wrong_gradient else f"<= {CORRECT_BELOW:g}")
                  for n, e in zip(names, errors)
                  if not (e > BUG_ABOVE if n == wrong_gradient else e <= CORRECT_BELOW)}
        if wanted:
            return (f"on {what} your errors are {shown}; wanted "
                    + " and ".join(f"{n} {bound}" for n, bound in wanted.items()))
        return None

    def judge(child):
        failures = [v for v in (verdict(child, layer, None), verdict(child, bug, bad_gradient)) if v]
        if failures:
            return [Check("values", False, "; ".join(failures))]
        return [Check("values", True, f"ok: the correct {layer} layer passes and the bug in {bad_gradient} "
                                      f"is caught")]

    return Plan(f"{layer} layer, " + describe([n.removeprefix("d") for n in names], inputs, {}), calls, arrays,
                ("values",), judge)
