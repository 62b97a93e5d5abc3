"""The GPU path, measured where the actors would run it: the engine's chunk scoring (engine.score.scoring.score_chunk:
read Parquet, preprocess with the model's spec, predict in fixed micro-batches, write Parquet) with the demo torch
MLP (its torch.export pt2 program), on `cuda` against the CPU of the same machine.

It needs only torch, pyarrow and numpy (no Ray, deltalake, MLflow, XGBoost or PyYAML), so it runs on a bare GPU box:

    # here, where the demo registry is (after `make demo`): the model as two small files
    python benchmarks/gpu_chunk.py prepare --out benchmarks/out/gpu-bundle
    # on the GPU machine, from the repository root (the bundle travels with the tree):
    python benchmarks/gpu_chunk.py run --bundle benchmarks/out/gpu-bundle --rows 4000000 --devices cpu,cuda

`run` writes synthetic Parquet files with the demo generator, scores them once per (device, micro-batch) and prints
one JSON line: rows/s per device and micro-batch, GPU utilisation sampled with `nvidia-smi` every 0.2 s while the
cuda runs go (mean and share of samples ≥ 70 %), and the share of a micro-batch's GPU time spent copying it to the
device (timed with CUDA events per micro-batch size). Scores on cuda are compared with the CPU's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def prepare(out: Path, model_uri: str, tracking_uri: str) -> None:
    """Resolve the registered MLP and write it as bundle.json (kind, preprocessing spec) + model.pt2."""
    from engine.models.registry import fetch_bundle

    bundle = fetch_bundle(model_uri, tracking_uri, None, allow_pickle=False)
    if bundle.kind != "torch_export":
        raise SystemExit(f"{model_uri} is a {bundle.kind} model; the GPU bench scores the pt2 torch MLP")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pt2").write_bytes(bundle.payload)
    meta = {"name": bundle.ref.name, "version": bundle.ref.version, "run_id": bundle.ref.run_id,
            "kind": bundle.kind, "spec": bundle.spec.to_json()}
    (out / "bundle.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    print(f"wrote {out}/bundle.json and model.pt2 ({len(bundle.payload):,} bytes)")


def load(bundle_dir: Path):
    from engine.models.registry import ModelBundle, ModelRef
    from engine.models.preprocess import PreprocessSpec

    meta = json.loads((bundle_dir / "bundle.json").read_text())
    ref = ModelRef(meta["name"], int(meta["version"]), meta["run_id"], str(bundle_dir))
    return ModelBundle(ref, meta["kind"], (bundle_dir / "model.pt2").read_bytes(),
                       PreprocessSpec.from_json(meta["spec"]))


def write_inputs(folder: Path, rows: int, files: int, n_features: int) -> list[str]:
    from engine.demo.data import make_day

    paths = []
    per = rows // files
    for i in range(files):
        table = make_day(i, "2026-01-01", per, n_features, seed=17)[0]
        ids = pc.add(table.column("entity_id"), i * 100_000_000)  # unique across files: runs compare in key order
        table = table.set_column(table.schema.get_field_index("entity_id"), "entity_id", ids)
        name = f"part-{i:03d}.parquet"
        pq.write_table(table, folder / name, row_group_size=131_072)
        paths.append(name)
    return paths


def score_files(bundle, in_dir: Path, files: list[str], out_dir: Path, device: str, micro: int,
                batch_rows: int) -> tuple[float, int, np.ndarray]:
    """One pass of score_chunk over every file (one chunk per file, as a unit's chunks): seconds, rows, scores."""
    from engine.score.scoring import Stamps, file_schema, score_chunk
    from engine.work import ChunkWork, Output, UnitWork
    import datetime as dt

    schema = pq.read_schema(in_dir / files[0])
    fschema = file_schema(schema, ["entity_id"], ["event_ts"], "score")
    stamps = Stamps(bundle.ref.name, bundle.ref.version, bundle.ref.run_id, "features", 0, "gpu-bench", "bench",
                    dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    output = Output(str(out_dir), {"ds": "2026-01-01", "model_name": bundle.ref.name,
                                   "model_version": bundle.ref.version}, ("entity_id",), ("event_ts",), "score",
                    stamps, fschema, 10_000_000, "zstd", device, micro)
    unit = UnitWork("bench", "2026-01-01", str(in_dir), schema, score_chunk, batch_rows, {}, None, output)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    rows = 0
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        rows += score_chunk(unit, ChunkWork("bench", (f,), i), bundle).rows_out
    secs = time.perf_counter() - t0
    out = pa.concat_tables([pq.read_table(p, columns=["entity_id", "score"]) for p in out_dir.rglob("*.parquet")])
    out = out.sort_by("entity_id")  # file names carry random ids: compare runs row by row in key order
    return secs, rows, out.column("score").to_numpy()


class GpuSampler:
    """`nvidia-smi` utilisation every 0.2 s in a thread, between start() and stop()."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))
            self._stop.wait(0.2)

    def start(self) -> "GpuSampler":
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5)
        s = self.samples
        return {"samples": len(s), "mean_pct": round(float(np.mean(s)), 1) if s else None,
                "busy_share": round(float(np.mean([v >= 70 for v in s])), 3) if s else None}


def transfer_share(bundle, micro: int, width: int) -> dict:
    """Per micro-batch on cuda: host→device copy, forward and device→host times (CUDA events), and the copy's share."""
    import torch

    from engine.models.scorers import build_scorer

    scorer = build_scorer(bundle, "cuda", micro)
    block = np.random.default_rng(0).standard_normal((micro, width), dtype=np.float32)
    h2d = fwd = d2h = 0.0
    reps = 20
    with torch.inference_mode():
        for _ in range(3 + reps):
            e = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            e[0].record()
            x = torch.from_numpy(block).to("cuda")
            e[1].record()
            y = scorer.module(x)
            e[2].record()
            y.float().cpu()
            e[3].record()
            torch.cuda.synchronize()
            if _ >= 3:
                h2d += e[0].elapsed_time(e[1])
                fwd += e[1].elapsed_time(e[2])
                d2h += e[2].elapsed_time(e[3])
    total = h2d + fwd + d2h
    return {"h2d_ms": round(h2d / reps, 4), "forward_ms": round(fwd / reps, 4), "d2h_ms": round(d2h / reps, 4),
            "h2d_share": round(h2d / total, 3) if total else None}


def run(bundle_dir: Path, rows: int, files: int, devices: list[str], micros: list[int], batch_rows: int,
        work: Path | None) -> dict:
    bundle = load(bundle_dir)
    width = len(bundle.spec.feature_names)
    tmp = Path(work or tempfile.mkdtemp(prefix="gpu-bench-"))
    in_dir = tmp / "in"
    in_dir.mkdir(parents=True, exist_ok=True)
    names = write_inputs(in_dir, rows, files, width)
    result: dict = {"rows": rows, "files": files, "batch_rows": batch_rows, "runs": []}
    try:
        import torch

        result["torch"] = torch.__version__
        result["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            result["gpu"] = torch.cuda.get_device_name(0)
        result["cpu_threads"] = torch.get_num_threads()
        reference = None
        for device in devices:
            if device == "cuda" and not torch.cuda.is_available():
                raise SystemExit("--devices names cuda but torch sees no GPU here; drop it or run on a GPU machine")
            for micro in micros:
                score_files(bundle, in_dir, names[:1], tmp / "warm", device, micro, batch_rows)  # load, compile, warm
                sampler = GpuSampler().start() if device == "cuda" else None
                secs, n, scores = score_files(bundle, in_dir, names, tmp / "out", device, micro, batch_rows)
                entry = {"device": device, "micro_batch_rows": micro, "rows": n, "seconds": round(secs, 3),
                         "rows_per_s": round(n / secs, 1)}
                if sampler is not None:
                    entry["gpu_util"] = sampler.stop()
                    entry.update(transfer_share(bundle, micro, width))
                if reference is None:
                    reference = scores
                else:
                    entry["max_abs_diff_vs_first"] = float(np.max(np.abs(scores - reference)))
                result["runs"].append(entry)
                print(json.dumps(entry), file=sys.stderr, flush=True)
        by = {}
        for e in result["runs"]:
            best = by.get(e["device"])
            if best is None or e["rows_per_s"] > best["rows_per_s"]:
                by[e["device"]] = e
        result["best"] = {d: {"rows_per_s": e["rows_per_s"], "micro_batch_rows": e["micro_batch_rows"]}
                          for d, e in by.items()}
        if "cuda" in by and "cpu" in by:
            result["cuda_vs_cpu"] = round(by["cuda"]["rows_per_s"] / by["cpu"]["rows_per_s"], 2)
    finally:
        if work is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="write the registered MLP as a bundle (here, with MLflow)")
    pp.add_argument("--out", type=Path, default=Path("benchmarks/out/gpu-bundle"))
    pp.add_argument("--model", default="models:/lakescore-demo-mlp/1")
    pp.add_argument("--tracking-uri", default=f"sqlite:///{os.path.abspath('mlruns.db')}")
    pr = sub.add_parser("run", help="score synthetic Parquet with the bundle on each device")
    pr.add_argument("--bundle", type=Path, default=Path("benchmarks/out/gpu-bundle"))
    pr.add_argument("--rows", type=int, default=4_000_000)
    pr.add_argument("--files", type=int, default=8)
    pr.add_argument("--devices", default="cpu,cuda")
    pr.add_argument("--micro", default="4096,16384,65536,262144", help="micro-batch sizes to try")
    pr.add_argument("--batch-rows", type=int, default=262_144, help="Parquet read batch (engine output.read_batch_rows)")
    pr.add_argument("--work", type=Path, default=None, help="keep inputs and outputs here (default: a temp dir)")
    pr.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.out, args.model, args.tracking_uri)
        return 0
    result = run(args.bundle, args.rows, args.files, args.devices.split(","), [int(m) for m in args.micro.split(",")],
                 args.batch_rows, args.work)
    line = json.dumps(result, sort_keys=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
