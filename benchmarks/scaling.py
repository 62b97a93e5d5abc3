"""The scaling curve (issue 20): (a), (b), (c′) and (d) at several sizes, on whole-process clocks.

    python benchmarks/bench.py --scaling [--scaling-rows 1000000,4000000,16000000] [--repeat N] [--skip …]
    make bench BENCH_ARGS=--scaling

At each size (its own work dir `<out>/scaling-<rows>/`: data, model and outputs, cached like the main bench's):
(a) raw (the work alone: the limit), (b) the score job on Ray (`lakescore submit`, launch → exit), (c′) spark_udf
tuned on the whole-process clock (spark-submit of benchmarks/peer_app.py to the standalone cluster, launch → exit)
and (d) the score job on Spark (spark-submit, launch → exit). Every output is checked against (a)'s at that size
(verify.py). The Spark parts run with the standalone master and worker up and Ray down, then (b) with the Ray
cluster up and Spark down, as in the main bench; (b)'s working-dir upload is warmed by one untimed run first.

Writes into --out: `scaling.md` (the table), `scaling.png` (rows/s against rows, log x, one line per part) and
`scaling.json`; prints the table, then the JSON as the last line on stdout. Rows/s should not fall as rows grow: a
part whose median falls from one size to the next is marked FALLS (a figure, not an assertion).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import verify
from bench import start_standalone, summarize, timed
from engine.testing.ray_cluster import LocalRayCluster
from job import run_lakescore
from peers import peer_out, run_peer_whole
from raw import run_raw
from report import median_run
from spark_job import run_spark_job
from workload import REPO, Workdir, load_booster, log, setup

# (JSON key, label, --skip name): the curve's parts, each on its whole-process clock ((a): the work alone).
PARTS = (("raw", "(a) raw, the work alone", None), ("lakescore", "(b) Ray score job, whole", "lakescore"),
         ("spark_udf_tuned_whole", "(c′) spark_udf tuned, whole", "spark_tuned"),
         ("spark_job", "(d) Spark score job, whole", "spark_job"))


def sizes(text: str) -> list[int]:
    try:
        rows = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        rows = []
    if not rows or rows[0] <= 0:
        raise SystemExit(f"--scaling-rows: expected a comma list of positive row counts, got {text!r}")
    return rows


def run(args) -> int:
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {p[2] for p in PARTS if p[2]}
    if unknown:
        raise SystemExit(f"--skip with --scaling: unknown part(s) {sorted(unknown)}; known: lakescore, spark_tuned, spark_job")
    out = Path(args.out).resolve()
    per: dict[int, dict] = {}
    try:
        for n in sizes(args.scaling_rows):
            a, wd = at_size(args, out, n)
            setup(a, wd, {n})
            _, booster = load_booster(wd)
            per[n] = {"rows": n, "raw": summarize([timed(f"raw@{n}", lambda: run_raw(a, wd, booster), None, lambda r: True)
                                                   for _ in range(args.repeat)])}
        measure_spark(args, out, skip, per)
        measure_ray(args, out, skip, per)
    except verify.ScoresDiffer as e:
        print(f"bench: error: wrong scores — {e}", file=sys.stderr, flush=True)
        return 1
    result = summarize_curve(per, args)
    write_outputs(result, out)
    print((out / "scaling.md").read_text())
    print(json.dumps(result, default=str), flush=True)
    return 0


def at_size(args, out: Path, rows: int) -> tuple[argparse.Namespace, Workdir]:
    """The bench's arguments with --rows = `rows`, and that size's own work dir."""
    return argparse.Namespace(**{**vars(args), "rows": rows}), Workdir(out / f"scaling-{rows}")


def check(wd: Workdir, name: str, got) -> dict:
    return verify.compare(name, verify.read_parquet_scores(wd.raw_out), got)


def measure_spark(args, out: Path, skip: set[str], per: dict) -> None:
    """(c′) whole and (d) at every size, run by run, on one standalone master and worker."""
    if {"spark_tuned", "spark_job"} <= skip:
        return
    meta: dict = {}
    standalone = start_standalone(args, Workdir(out), meta)
    env = {**standalone.env, "PYTHONPATH": str(REPO)}
    try:
        for n in per:
            a, wd = at_size(args, out, n)
            c, d = [], []
            for i in range(args.repeat):
                if "spark_tuned" not in skip:
                    c.append(timed(f"spark_udf_tuned_whole@{n}", lambda: run_peer_whole(a, wd, "spark_udf_tuned", standalone.master_url, env),
                                   None, lambda r: check(wd, f"(c′) whole @ {n}", verify.read_parquet_scores(
                                       peer_out(wd, "spark_udf_tuned", whole=True)))))
                if "spark_job" not in skip:
                    d.append(timed(f"spark_job@{n}", lambda: run_spark_job(a, wd, standalone.master_url, env, n), None,
                                   lambda r: check(wd, f"(d) spark_job @ {n}", verify.read_delta_scores(wd.scores(n)))))
            per[n].update({"spark_udf_tuned_whole": summarize(c), "spark_job": summarize(d), **meta})
    finally:
        standalone.stop()
        log("spark: standalone master and worker stopped")


def measure_ray(args, out: Path, skip: set[str], per: dict) -> None:
    """(b) at every size on one private Ray cluster, after one untimed warm-up run (the working dir's upload)."""
    if "lakescore" in skip:
        return
    cluster = LocalRayCluster(args.num_cpus, log_path=out / "ray-start.log")
    log(f"ray: starting a private cluster (temp dir {cluster.temp_dir}, dashboard {cluster.address})")
    try:
        startup = round(cluster.start(), 2)
        first = min(per)
        a, wd = at_size(args, out, first)
        run_lakescore(a, wd, cluster, first, "warm-up", False)
        for n in per:
            a, wd = at_size(args, out, n)
            runs = [timed(f"lakescore@{n}", lambda: run_lakescore(a, wd, cluster, n, "main", False), cluster,
                          lambda r: check(wd, f"(b) @ {n}", verify.read_delta_scores(wd.scores(n))))
                    for _ in range(args.repeat)]
            per[n].update({"lakescore": summarize(runs), "ray_cluster_startup_s": startup})
    finally:
        cluster.stop()
        log("ray: cluster stopped")


def steady(size: dict) -> dict:
    """(b)'s and (d)'s steady state (first task → last commit), beside their whole clocks: medians as report.py's."""
    out = {"lakescore": None, "spark_job": None}
    mid = median_run(size.get("lakescore"))
    span = (mid or {}).get("tasks", {}).get("tasks_span_s")
    if span:
        out["lakescore"] = round(size["rows"] / span)
    d = size.get("spark_job")
    if d:
        s = [r["timeline"].get("steady_rows_per_s") for r in d["runs"]]
        out["spark_job"] = round(statistics.median(s)) if all(s) else None
    return out


def summarize_curve(per: dict[int, dict], args) -> dict:
    """rows/s per part and size (medians), ratios to (a) at the same size, steady states, and whether each part's
    rows/s rises (or holds) from each size to the next."""
    table = []
    for n, size in sorted(per.items()):
        row = {"rows": n, **{k: round(size[k]["rows_per_s"]) if size.get(k) else None for k, _, _ in PARTS}}
        row.update({f"{k}_ratio_vs_raw": round(row[k] / row["raw"], 3) if row[k] and row["raw"] else None
                    for k, _, _ in PARTS[1:]})
        row.update({f"{k}_steady": v for k, v in steady(size).items()})
        table.append(row)
    holds = {}
    for k, _, _ in PARTS:
        v = [r[k] for r in table if r[k]]
        holds[k] = None if len(v) < 2 else all(b >= a for a, b in zip(v, v[1:]))
    return {"scaling_rows": [r["rows"] for r in table], "repeat": args.repeat, "features": args.features,
            "trees": args.trees, "depth": args.depth, "clock": "whole process, launch → exit ((a): the work alone)",
            "table": table, "rows_per_s_holds_or_rises": holds, "runs": per}


def fmt(v, spec=",.0f") -> str:
    return "—" if v is None else format(v, spec)


def markdown(result: dict) -> str:
    head = ["rows", *[label for _, label, _ in PARTS], "(b)/(a)", "(c′)/(a)", "(d)/(a)", "(b) steady", "(d) steady"]
    lines = [f"Rows/s, median of {result['repeat']}; whole-process clocks (launch → exit, the cluster already running; "
             "(a) is the work alone, the limit). Steady: first task → last commit.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["table"]:
        cells = [fmt(r["rows"]), *[fmt(r[k]) for k, _, _ in PARTS],
                 *[fmt(r[f"{k}_ratio_vs_raw"], ".2f") for k, _, _ in PARTS[1:]],
                 fmt(r["lakescore_steady"]), fmt(r["spark_job_steady"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for k, label, _ in PARTS:
        ok = result["rows_per_s_holds_or_rises"][k]
        lines.append(f"- {label}: rows/s as rows grow: {'—' if ok is None else ('holds or rises' if ok else 'FALLS')}")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for (k, label, _), marker in zip(PARTS, "osD^"):
        pts = [(r["rows"], r[k]) for r in result["table"] if r[k]]
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("rows")
    ax.set_ylabel("rows/s (median)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"lakescore scaling: XGBoost {result['trees']} trees depth {result['depth']}, {result['features']} features")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.md").write_text(markdown(result))
    plot(result, out / "scaling.png")
    (out / "scaling.json").write_text(json.dumps(result, default=str, indent=1))
    log(f"scaling: wrote {out / 'scaling.md'}, {out / 'scaling.png'} and {out / 'scaling.json'}")
