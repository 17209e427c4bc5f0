"""The op table ``npllm.layers.OPS`` as a whole: every op's gradient-check cases run; ops keep the input dtype.

An op's cases run in its family's ``test_op_<family>.py`` (through ``_helpers.gradcheck_cases``) when the op
is listed in ``IN_FAMILY_FILES``; every other op of the table has its cases run here, so no op, however
new, goes unchecked.  (The modern decoder's ops are among them: test_op_rms_norm.py, test_op_swiglu.py
and test_op_rope.py check their cases with helpers of their own.)
"""
import ast
from pathlib import Path

import numpy as np
import pytest
from _helpers import assert_passes_gradient_check, gradcheck_cases

import npllm.layers as ref
from npllm.gradcheck_suite import op_cases

IN_FAMILY_FILES = {"linear", "embedding", "tanh", "sigmoid", "relu", "gelu", "softmax", "log_softmax",
                   "cross_entropy", "layer_norm", "dropout", "rnn_step", "rnn", "lstm_step", "lstm", "gru_step",
                   "gru", "scaled_dot_product_attention", "multi_head_attention", "additive_attention", "mlp"}


def test_every_op_in_the_table_has_cases():
    cases = [(name, case) for name in ref.OPS for case in op_cases(name, np.random.default_rng(1))]
    assert set(ref.OPS) == {n for n, _ in cases}


def test_every_op_of_the_family_files_is_gradient_checked_in_one_of_them():
    """Every op of IN_FAMILY_FILES is passed, by name, to gradcheck_cases in a test_op_ file."""
    files = [path for path in sorted(Path(__file__).parent.glob("test_op_*.py")) if path.name != Path(__file__).name]
    named = [arg.value for path in files
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "gradcheck_cases"
             for arg in node.args if isinstance(arg, ast.Constant)]
    assert IN_FAMILY_FILES <= set(named), IN_FAMILY_FILES - set(named)


@pytest.mark.parametrize("name,case", gradcheck_cases(*(op for op in ref.OPS if op not in IN_FAMILY_FILES)))
def test_backward_matches_numerical_gradient(name, case):
    assert_passes_gradient_check(case)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ops_compute_in_the_input_dtype(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    assert ref.gelu_forward(x)[0].dtype == dtype
    assert ref.sigmoid_forward(x)[0].dtype == dtype
    assert ref.layer_norm_forward(x, np.ones(4, dtype), np.zeros(4, dtype))[0].dtype == dtype
    loss, cache = ref.cross_entropy_forward(x, np.zeros((2, 3), dtype=np.int64))
    assert loss.dtype == dtype and ref.cross_entropy_backward(1.0, cache).dtype == dtype
    out, cache = ref.scaled_dot_product_attention_forward(x[None], x[None], x[None], causal=True)
    assert out.dtype == dtype and all(g.dtype == dtype for g in ref.scaled_dot_product_attention_backward(out, cache))
