"""The CUDA bench (``npllm_kernels.cuda.bench``) validates every kernel version before it times it.

Its matmul, attention and cross-entropy sections, on tiny sizes (in Numba's simulator without a GPU).
"""
import pytest


@pytest.mark.cuda
def test_bench_sections_validate_then_time_every_version_on_tiny_sizes(cuda_kernels):
    bench = pytest.importorskip("npllm_kernels.cuda.bench")
    matmul_row, = bench.section_matmul((20,), reps=1, inner=1)
    assert all(matmul_row[f"{v}_max_rel_error"] < 1e-5 and matmul_row[f"{v}_ms"] > 0 for v in ("v1", "v2", "v3"))
    attention_row, = bench.section_attention((20,), shape=dict(B=1, H=2, d=8), reps=1, inner=1)
    assert attention_row["max_rel_error"] < 1e-5 and attention_row["forward_backward_ms"] > 0
    assert "reference_cpu_ms" in attention_row
    ce_row, = bench.section_cross_entropy((3, 11), reps=1, inner=1)
    assert ce_row["v1_max_rel_error"] < 1e-5 and ce_row["v2_max_rel_error"] < 1e-5 and ce_row["backward_ms"] > 0
