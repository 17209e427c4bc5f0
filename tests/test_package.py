"""Packaging promises: import npllm stays light, the contract's names exist, the CLI is wired."""
import inspect
import subprocess
import sys

from npllm import layers as L


def test_import_npllm_does_not_import_numba():
    code = "import sys, npllm, npllm.layers, npllm.gradcheck; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_forward_in_the_table_has_a_backward():
    for op in L.OPS:
        assert callable(getattr(L, f"{op}_forward")) and callable(getattr(L, f"{op}_backward"))


def test_every_public_layer_function_has_a_docstring():
    for name in dir(L):
        obj = getattr(L, name)
        if callable(obj) and not name.startswith("_") and inspect.isfunction(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
