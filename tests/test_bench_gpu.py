"""benchmarks/gpu_chunk.py: the GPU bench runs where only torch, pyarrow and numpy are installed (its CPU path is
checked here, with Ray, deltalake, MLflow, XGBoost, PyYAML and pydantic made unimportable), and refuses cuda
without a GPU."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import MLP, ROOT

BARE = ("import runpy, sys\n"
        "for m in ['ray', 'deltalake', 'mlflow', 'xgboost', 'yaml', 'pydantic', 'pyspark', 'pandera', 'sklearn']:\n"
        "    sys.modules[m] = None\n"
        "sys.argv = ['gpu_chunk.py', *sys.argv[1:]]\n"
        "runpy.run_path('benchmarks/gpu_chunk.py', run_name='__main__')\n")


def test_gpu_bench_runs_on_a_bare_box_and_scores_like_the_engine(demo_root, tmp_path):
    bundle = tmp_path / "bundle"
    prep = subprocess.run([sys.executable, "benchmarks/gpu_chunk.py", "prepare", "--out", str(bundle), "--model",
                           f"models:/{MLP}/1", "--tracking-uri", f"sqlite:///{demo_root}/mlruns.db"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-2000:]
    assert (bundle / "model.pt2").stat().st_size > 0
    out = subprocess.run([sys.executable, "-c", BARE, "run", "--bundle", str(bundle), "--rows", "20000", "--files", "2",
                          "--devices", "cpu", "--micro", "4096,16384", "--batch-rows", "5000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["micro_batch_rows"] for r in result["runs"]] == [4096, 16384]
    assert all(r["rows"] == 20000 and r["rows_per_s"] > 0 for r in result["runs"])
    assert result["runs"][1]["max_abs_diff_vs_first"] < 1e-6  # the micro-batch size does not move a score
    assert result["best"]["cpu"]["rows_per_s"] > 0


def test_gpu_bench_refuses_cuda_without_a_gpu(demo_root, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal of device cuda without one cannot be shown here")
    bundle = tmp_path / "bundle"
    subprocess.run([sys.executable, "benchmarks/gpu_chunk.py", "prepare", "--out", str(bundle), "--model",
                    f"models:/{MLP}/1", "--tracking-uri", f"sqlite:///{demo_root}/mlruns.db"], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    out = subprocess.run([sys.executable, "benchmarks/gpu_chunk.py", "run", "--bundle", str(bundle), "--rows", "2000",
                          "--files", "1", "--devices", "cuda"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "torch sees no GPU" in out.stderr
