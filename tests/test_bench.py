"""npllm bench: a smoke test on small shapes (timings are never asserted, only that kernels validate)."""
import json

from npllm.bench import run
from npllm.commands import main


def test_bench_validates_kernels_before_timing_them(capsys):
    results = run("numba", ["layer_norm", "gelu"], quick=True)
    for section in ("layer_norm", "gelu"):
        rows = results["sections"][section]
        assert rows and all(row["max_rel_error"] < 1e-3 and row["kernel_ms"] > 0 for row in rows)
    out = capsys.readouterr().out
    assert "layer_norm" in out and "speedup" in out and "machine:" in out


def test_bench_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "layer_norm", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["backend"] == "numba" and "layer_norm" in data["sections"] and "simd" in data["machine"]


def test_bench_unknown_section_is_a_usage_error(capsys):
    assert main(["bench", "--only", "convolution"]) == 2
    assert "--only: unknown section 'convolution'" in capsys.readouterr().err
