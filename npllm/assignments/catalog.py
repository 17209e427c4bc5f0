"""The assignments that ship with npllm: which functions each grades, for how many points, on what inputs.

Each :class:`Assignment` names a solution file beside this module (``rnn/rnn_layers.py``: the teacher's
code with ``# BEGIN SOLUTION`` / ``# END SOLUTION`` regions), the provided files shipped with it, and
its :class:`Part`\\ s.  A part grades one student function on one visible case (seeded; shown in the
notebook) and ``n_hidden`` hidden cases (drawn at grading time); ``make_inputs(rng, case)`` draws a
case's inputs, and the expected values come from npllm's reference (``npllm.layers``), never from
numbers typed in here (:mod:`npllm.assignments.plans`):

* a *forward* part compares the function's outputs with the reference's (``value_points``);
* a *backward* part gradient-checks the student's forward/backward pair (``gradcheck_points``) and
  compares the gradients with the reference's for random upstream gradients (``value_points``);
* a part with a ``plan`` is graded its own way: training a model (:mod:`~npllm.assignments.training_part`),
  grading a gradient checker (:mod:`~npllm.assignments.checker_parts`).

Later cases of a part have other sizes than the first, so code that hard-codes a shape fails.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from npllm import gradcheck, layers
from npllm.assignments.checker_parts import check_layer_plan, numerical_gradient_plan
from npllm.assignments.training_part import train_plan


@dataclass(frozen=True)
class Part:
    """One graded function: its points, how its inputs are drawn and what its results are called."""
    function: str                        # the student's function, e.g. "rnn_step_backward"
    task: str                            # one line: what the part asks for
    make_inputs: Callable                # (rng, case) -> (positional inputs, keyword options)
    outputs: tuple[str, ...]             # forward: result names without the cache; backward: gradient names
    value_points: int
    gradcheck_points: int = 0
    forward: str | None = None           # backward parts: the forward function whose cache it takes
    time_axis: int | None = None         # sequence ops: check each output time step separately too
    label: str = ""                      # tells apart two parts that grade the same function
    n_visible: int = 1                   # cases shown with their expected values in the notebook (0 points)
    n_hidden: int = 2                    # cases drawn at grading time; the part's points are split over them
    forward_outputs: tuple = ()          # backward parts: the names of the forward's results
    plan: Callable | None = None         # a part graded its own way (see npllm.assignments.plans)
    returns_cache: bool = True           # False: a plain function, its results compared as they are
    notebook: str = ""                   # such a part's notebook cell ({module} is the student's module)

    @property
    def kind(self) -> str:
        if self.plan is not None:
            return "custom"
        return "forward" if self.forward is None else "backward"

    @property
    def points(self) -> int:
        return self.value_points + self.gradcheck_points

    @property
    def name(self) -> str:
        """How reports name the part: the function, with the label when there is one."""
        return f"{self.function} ({self.label})" if self.label else self.function


@dataclass(frozen=True)
class Assignment:
    """A solution file, the parts graded in it, and the reference function for each student function."""
    name: str
    title: str
    module: str                          # stem of the solution/starter file, e.g. "rnn_layers"
    parts: tuple[Part, ...]
    reference: dict                      # student function name -> npllm.layers function
    provided: tuple = ()                 # teacher's helper files beside the solution, shipped as they are
    harness: tuple = ()                  # grader-only helper files the child may call, never shipped

    @property
    def points(self) -> int:
        return sum(part.points for part in self.parts)

    def provided_sources(self, harness: bool = False) -> dict:
        """{filename: source} of the provided files (with ``harness``: and the grader-only ones), from
        the installed package, never from a submission."""
        from importlib import resources

        folder = resources.files("npllm.assignments").joinpath(self.name)
        names = self.provided + (self.harness if harness else ())
        return {filename: folder.joinpath(filename).read_text(encoding="utf-8") for filename in names}


def _normal(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


# Weights are scaled down so tanh and σ stay away from saturation, where every gradient is ~0 and a
# wrong backward could still pass.
def _rnn_step_inputs(rng, case):
    B, D, H = ((2, 3, 4), (3, 2, 5))[case]
    return [_normal(rng, B, D), _normal(rng, B, H), _normal(rng, D, H, scale=0.5),
            _normal(rng, H, H, scale=0.5), _normal(rng, H, scale=0.1)], {}


def _rnn_inputs(rng, case):
    B, T, D, H = ((2, 3, 3, 4), (3, 4, 2, 5))[case]
    return [_normal(rng, B, T, D), _normal(rng, B, H), _normal(rng, D, H, scale=0.5),
            _normal(rng, H, H, scale=0.5), _normal(rng, H, scale=0.1)], {}


def _lstm_step_inputs(rng, case):
    B, D, H = ((2, 3, 4), (3, 2, 5))[case]
    return [_normal(rng, B, D), _normal(rng, B, H), _normal(rng, B, H), _normal(rng, D, 4 * H, scale=0.5),
            _normal(rng, H, 4 * H, scale=0.5), _normal(rng, 4 * H, scale=0.1)], {}


def _lstm_inputs(rng, case):
    B, T, D, H = ((2, 3, 3, 4), (3, 4, 2, 5))[case]
    return [_normal(rng, B, T, D), _normal(rng, B, H), _normal(rng, B, H), _normal(rng, D, 4 * H, scale=0.5),
            _normal(rng, H, 4 * H, scale=0.5), _normal(rng, 4 * H, scale=0.1)], {}


def _attention_inputs(rng, case):
    """No mask; the second case has Tq != Tk and dv != d."""
    B, H, Tq, Tk, d, dv = ((1, 2, 3, 3, 4, 2), (2, 1, 3, 5, 3, 4))[case]
    return [_normal(rng, B, H, Tq, d), _normal(rng, B, H, Tk, d), _normal(rng, B, H, Tk, dv)], {}


def _masked_attention_inputs(rng, case):
    """Case 0: causal + a padding mask on batch element 1.  Case 1: a key/value cache (Tq < Tk),
    causal + a mask that leaves one query with no key at all."""
    B, H, Tq, Tk, d, dv = ((2, 2, 4, 4, 3, 2), (2, 1, 3, 5, 4, 3))[case]
    mask = np.ones((B, 1, Tq, Tk), dtype=bool)
    if case == 0:
        mask[1, :, :, Tk - 1] = False            # the last key of batch element 1 is padding
    else:
        mask[0, :, :, 0] = False                 # batch element 0 may not see key 0 ...
        mask[1, :, 1, :] = False                 # ... and query 1 of batch element 1 sees nothing
    inputs = [_normal(rng, B, H, Tq, d), _normal(rng, B, H, Tk, d), _normal(rng, B, H, Tk, dv)]
    return inputs, {"mask": mask, "causal": True}


RNN = Assignment(
    name="rnn",
    title="A vanilla RNN and backpropagation through time",
    module="rnn_layers",
    parts=(
        Part("rnn_step_forward", "one step: h = tanh(x Wx + h_prev Wh + b)", _rnn_step_inputs, ("h",), 2),
        Part("rnn_step_backward", "the gradients of one step", _rnn_step_inputs,
             ("dx", "dh_prev", "dWx", "dWh", "db"), 2, 2, forward="rnn_step_forward", forward_outputs=("h",)),
        Part("rnn_forward", "the whole sequence, a loop over rnn_step_forward", _rnn_inputs, ("hs",), 2),
        Part("rnn_backward", "backpropagation through time", _rnn_inputs,
             ("dx", "dh0", "dWx", "dWh", "db"), 2, 2, forward="rnn_forward", time_axis=1, forward_outputs=("hs",)),
    ),
    reference={"rnn_step_forward": layers.rnn_step_forward, "rnn_step_backward": layers.rnn_step_backward,
               "rnn_forward": layers.rnn_forward, "rnn_backward": layers.rnn_backward},
)

LSTM = Assignment(
    name="lstm",
    title="An LSTM, forward and backward through time",
    module="lstm_layers",
    parts=(
        Part("lstm_step_forward", "one step: the gates i, f, g, o, the new cell c and state h",
             _lstm_step_inputs, ("h", "c"), 2),
        Part("lstm_step_backward", "the gradients of one step", _lstm_step_inputs,
             ("dx", "dh_prev", "dc_prev", "dWx", "dWh", "db"), 2, 2, forward="lstm_step_forward",
             forward_outputs=("h", "c")),
        Part("lstm_forward", "the whole sequence, a loop over lstm_step_forward", _lstm_inputs, ("hs", "cs"), 2),
        Part("lstm_backward", "backpropagation through time, carrying dh and dc", _lstm_inputs,
             ("dx", "dh0", "dc0", "dWx", "dWh", "db"), 2, 2, forward="lstm_forward", time_axis=1,
             forward_outputs=("hs", "cs")),
    ),
    reference={"lstm_step_forward": layers.lstm_step_forward, "lstm_step_backward": layers.lstm_step_backward,
               "lstm_forward": layers.lstm_forward, "lstm_backward": layers.lstm_backward},
)

ATTENTION = Assignment(
    name="attention",
    title="Scaled dot-product attention with masks, forward and backward",
    module="attention_layers",
    parts=(
        Part("scaled_dot_product_attention_forward", "softmax(q kᵀ / √d) v without masks",
             _attention_inputs, ("out",), 2),
        Part("scaled_dot_product_attention_forward", "causal and padding masks, a query with no allowed key",
             _masked_attention_inputs, ("out",), 2, label="masks"),
        Part("scaled_dot_product_attention_backward", "dq, dk, dv without masks", _attention_inputs,
             ("dq", "dk", "dv"), 2, 2, forward="scaled_dot_product_attention_forward", forward_outputs=("out",)),
        Part("scaled_dot_product_attention_backward", "dq, dk, dv with masks (no NaN for an empty row)",
             _masked_attention_inputs, ("dq", "dk", "dv"), 2, 2, forward="scaled_dot_product_attention_forward",
             forward_outputs=("out",), label="masks"),
    ),
    reference={"scaled_dot_product_attention_forward": layers.scaled_dot_product_attention_forward,
               "scaled_dot_product_attention_backward": layers.scaled_dot_product_attention_backward},
)

def _self_attention_inputs(rng, case):
    B, T, C, n_head = ((2, 4, 8, 2), (3, 5, 6, 3))[case]
    return [_normal(rng, B, T, C), _normal(rng, C, 3 * C, scale=0.3), _normal(rng, 3 * C, scale=0.1),
            _normal(rng, C, C, scale=0.3), _normal(rng, C, scale=0.1), n_head], {}


def _layer_norm_inputs(rng, case):
    shape = ((2, 3, 5), (4, 6))[case]
    C = shape[-1]
    return [_normal(rng, *shape, scale=2.0) + 1.0, 1.0 + _normal(rng, C, scale=0.1), _normal(rng, C, scale=0.1)], {}


_TRAIN_CELL = """copy_losses, *weights = tiny_gpt.train({module})
print(f"copy loss {{copy_losses[0]:.3f}} at step 1, {{copy_losses[-1]:.4f}} at step {{len(copy_losses)}} "
      f"(the grader wants < {{tiny_gpt.COPY_LOSS_THRESHOLD}})")"""

GPT = Assignment(
    name="gpt",
    title="A tiny GPT's layers: causal multi-head attention and layer norm, then training",
    module="gpt_layers",
    parts=(
        Part("causal_self_attention_forward", "multi-head causal self-attention, forward",
             _self_attention_inputs, ("y",), 2),
        Part("causal_self_attention_backward", "its backward: dx, dW_qkv, db_qkv, dW_out, db_out",
             _self_attention_inputs, ("dx", "dW_qkv", "db_qkv", "dW_out", "db_out"), 2, 2,
             forward="causal_self_attention_forward", forward_outputs=("y",), time_axis=1),
        Part("layer_norm_backward", "layer norm's backward: dx, dgamma, dbeta", _layer_norm_inputs,
             ("dx", "dgamma", "dbeta"), 2, 2, forward="layer_norm_forward", forward_outputs=("y",)),
        Part("train", "train tiny_gpt.py's copying GPT with your layers: the copy loss must fall below 0.3",
             None, (), 2, n_visible=0, n_hidden=1, plan=train_plan, notebook=_TRAIN_CELL),
    ),
    reference={"causal_self_attention_forward": functools.partial(layers.multi_head_attention_forward,
                                                                  causal=True),
               "causal_self_attention_backward": layers.multi_head_attention_backward,
               "layer_norm_forward": layers.layer_norm_forward, "layer_norm_backward": layers.layer_norm_backward},
    provided=("tiny_gpt.py",),
)

def _rope_inputs(rng, case):
    """Positions 0..T-1 shared by the batch; the second case has another head size and theta."""
    B, NH, T, HS, theta = ((2, 2, 5, 8, 10000.0), (1, 3, 4, 6, 100.0))[case]
    return [_normal(rng, B, NH, T, HS), np.arange(T)], {"theta": theta}


def _rope_offset_inputs(rng, case):
    """One row of positions per batch element, as a KV cache (an offset) or packed sequences (gaps) give."""
    B, NH, T, HS, theta = ((2, 2, 4, 6, 10000.0), (3, 1, 5, 4, 500.0))[case]
    # Offsets at least 10 apart: every row's positions differ, or a solution that ignores the row (one
    # shared set of angles) could pass by luck.
    offsets = 1 + 10 * np.arange(B)[:, None] + rng.integers(0, 5, (B, 1))
    positions = offsets + np.cumsum(rng.integers(1, 3, (B, T)), axis=1) - 1       # increasing, some gaps
    return [_normal(rng, B, NH, T, HS), positions], {"theta": theta}


def _rope_backward_inputs(rng, case):
    return (_rope_inputs, _rope_offset_inputs)[case](rng, case)


def _rms_norm_inputs(rng, case):
    shape = ((2, 3, 5), (4, 6))[case]
    C = shape[-1]
    return [_normal(rng, *shape, scale=2.0) + 1.0, 1.0 + _normal(rng, C, scale=0.1)], {"eps": 1e-5}


def _swiglu_inputs(rng, case):
    shape = ((2, 3, 5), (4, 7))[case]
    return [_normal(rng, *shape, scale=2.0), _normal(rng, *shape)], {}


LLAMA = Assignment(
    name="llama",
    title="A Llama block's new ops: RoPE forward and backward, RMSNorm and SwiGLU backward",
    module="llama_layers",
    parts=(
        Part("rope_forward", "rotate-half RoPE at positions 0..T-1", _rope_inputs, ("y",), 2),
        Part("rope_forward", "positions (B, T) that start at an offset and skip", _rope_offset_inputs,
             ("y",), 2, label="offsets"),
        Part("rope_backward", "its backward: the rotation by minus the angle", _rope_backward_inputs,
             ("dx",), 2, 2, forward="rope_forward", forward_outputs=("y",)),
        Part("rms_norm_backward", "RMSNorm's backward: dx, dweight", _rms_norm_inputs, ("dx", "dweight"), 2, 2,
             forward="rms_norm_forward", forward_outputs=("y",)),
        Part("swiglu_backward", "SwiGLU's backward: dgate, dup", _swiglu_inputs, ("dgate", "dup"), 2, 2,
             forward="swiglu_forward", forward_outputs=("y",)),
    ),
    reference={"rope_forward": layers.rope_forward, "rope_backward": layers.rope_backward,
               "rms_norm_forward": layers.rms_norm_forward, "rms_norm_backward": layers.rms_norm_backward,
               "swiglu_forward": layers.swiglu_forward, "swiglu_backward": layers.swiglu_backward},
)

def _test_function_inputs(rng, case):
    shape = ((3, 4), (2, 3, 2), (5,))[case]
    return [_normal(rng, *shape), _normal(rng, *shape)], {}


def _relative_error_inputs(rng, case):
    """Case 0: close arrays; case 1: unrelated ones; case 2: both zero (the floor keeps 0/0 away)."""
    a = _normal(rng, 3, 4)
    b = (a + _normal(rng, 3, 4, scale=1e-4), _normal(rng, 3, 4), np.zeros((3, 4)))[case]
    return [a if case < 2 else np.zeros((3, 4)), b], {}


def _layer_inputs(rng, case):
    """A layer to check, and a buggy backward of it (in checker_harness.py) with the gradient it breaks."""
    layer, bug, bad = (("affine", "affine_backward_wrong_dW", "dW"), ("sigmoid", "sigmoid_backward_wrong", "dx"),
                       ("affine", "affine_backward_wrong_db", "db"))[case]
    if layer == "sigmoid":
        return [_normal(rng, 3, 4)], {"layer": layer, "bug": bug, "bad": bad}
    N, D, M = ((2, 3, 4), None, (3, 4, 2))[case]
    return [_normal(rng, N, D), _normal(rng, D, M), _normal(rng, M)], {"layer": layer, "bug": bug, "bad": bad}


def _softmax_inputs(rng, case):
    return [_normal(rng, *((2, 5), (3, 2, 4))[case], scale=2.0)], {}


_CHECK_CELL = """import layers_to_check as L
rng = np.random.default_rng(0)
x, W, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4)
print("affine  ", {module}.check_layer(L.affine_forward, L.affine_backward, [x, W, b], rng.standard_normal((2, 4))))
print("sigmoid ", {module}.check_layer(L.sigmoid_forward, L.sigmoid_backward, [x], rng.standard_normal((2, 3))))
print("softmax ", {module}.check_layer(L.softmax_forward, L.softmax_backward, [x], rng.standard_normal((2, 3))))
# Which error is far above 1e-7?  That backward has the bug: fix it in softmax_backward_fixed."""

_GRADIENT_CELL = """rng = np.random.default_rng(0)
x, w = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
f = lambda z: np.sum(w * np.tanh(z)) + 0.5 * np.sum(w * z * z)
exact = w * (1 - np.tanh(x) ** 2) + w * x
print("relative error against the exact gradient:", np.linalg.norm({module}.numerical_gradient(f, x.copy()) - exact)
      / np.linalg.norm(exact))   # about 1e-10 when it is right"""

GRADCHECK = Assignment(
    name="gradcheck",
    title="Gradient checking: write the checker, then find the planted bug",
    module="gradient_checker",
    parts=(
        Part("numerical_gradient", "central differences of a scalar function, x restored afterwards",
             _test_function_inputs, ("grad",), 3, n_hidden=3, plan=numerical_gradient_plan,
             notebook=_GRADIENT_CELL),
        Part("relative_error", "‖a − b‖ / max(‖a‖ + ‖b‖, 1e-8)", _relative_error_inputs, ("error",), 3,
             n_hidden=3, returns_cache=False),
        Part("check_layer", "one relative error per input of a forward/backward pair", _layer_inputs, ("errors",),
             3, n_hidden=3, plan=check_layer_plan, notebook=_CHECK_CELL),
        Part("softmax_backward_fixed", "the corrected backward of the buggy layer", _softmax_inputs, ("dx",), 2, 2,
             forward="provided:layers_to_check.softmax_forward", forward_outputs=("out",)),
    ),
    reference={"relative_error": gradcheck.relative_error,
               "provided:layers_to_check.softmax_forward": layers.softmax_forward,
               "softmax_backward_fixed": layers.softmax_backward},
    provided=("layers_to_check.py",),
    harness=("checker_harness.py",),
)

ASSIGNMENTS = {assignment.name: assignment for assignment in (RNN, LSTM, ATTENTION, GPT, LLAMA, GRADCHECK)}
