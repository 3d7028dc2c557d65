"""One benchmark run on one machine against one MongoDB server: `python -m bench.run --rows N`.

Stages (see bench/stages.py): (a) floor, (b) pipeline, (c) validation, (d) rerun, (e) naive,
(f) openmrs. Each stage runs in a fresh process (clean CPU and peak-RSS figures). The store is
SecantusDB, started here on a temporary TM2_HOME, unless MONGODB_URI is set; the OpenMRS emulator is
served over HTTP on 127.0.0.1 with injected latency. Prints a table, then, as its LAST line:

    ratios: store/floor=X naive/pipeline_cpu=Y rerun/pipeline=Z openmrs/bound=W us_per_row=V

(n/a for a ratio whose stages were not run). Figures, never assertions: see bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.generate import DEFAULT_SEED, generate_tm2_csv
from bench.measure import StageResult
from bench.stages import STAGES, BenchContext
from tm2_pipeline.mongo_uri import database_in_uri

RESULT_MARK = "BENCH-RESULT "
REPO = Path(__file__).resolve().parent.parent
# A stage that needs another's outcome runs it first.
PREREQUISITES = {"rerun": ("pipeline",)}


def _stage_order(only: str | None) -> list[str]:
    if only is None:
        return list(STAGES)
    return [*PREREQUISITES.get(only, ()), only]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the OpenMRS emulator exited (code {process.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the OpenMRS emulator did not open its port")


def _start_store(home: Path) -> None:
    """Start the embedded store from a short-lived helper: the server is never our child, so its
    CPU can never land in anyone's RUSAGE_CHILDREN."""
    code = (
        "import sys; from pathlib import Path; from tm2_pipeline.embedded.secantus import EmbeddedSecantus; "
    )
    code += "EmbeddedSecantus(Path(sys.argv[1])).ensure_running()"
    subprocess.run([sys.executable, "-c", code, str(home)], check=True, cwd=REPO)


def _stop_store(home: Path) -> None:
    from tm2_pipeline.embedded.secantus import EmbeddedSecantus

    EmbeddedSecantus(home).stop()


def _start_emulator(workdir: Path, latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    code = "import sys; from tm2_pipeline.openmrs.emulator.server import serve_sandbox; "
    code += "serve_sandbox(int(sys.argv[1]), latency_ms=float(sys.argv[2]))"
    log = (workdir / "openmrs-emulator.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(port), str(latency_ms)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    _wait_for_port(port, process)
    return process, f"http://127.0.0.1:{port}/openmrs"


def _run_stage_process(stage: str, ctx: BenchContext) -> StageResult:
    """Run one stage in a fresh interpreter; its last marked stdout line is the result."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    command = [
        sys.executable,
        "-m",
        "bench.run",
        "--stage-process",
        stage,
        "--context",
        json.dumps(asdict(ctx)),
    ]
    completed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    marked = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if completed.returncode != 0 or not marked:
        sys.stderr.write(completed.stderr[-4000:])
        raise RuntimeError(f"stage {stage} failed (exit {completed.returncode})")
    return StageResult.from_json(marked[-1].removeprefix(RESULT_MARK))


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or not denominator or math.isnan(numerator) or math.isnan(denominator):
        return "n/a"
    return f"{numerator / denominator:.2f}"


def ratios_line(results: dict[str, StageResult]) -> str:
    def get(stage: str, attribute: str) -> float | None:
        return getattr(results[stage], attribute) if stage in results else None

    openmrs = results.get("openmrs")
    achieved = openmrs.extra.get("achieved_per_s") if openmrs else None
    bound = openmrs.extra.get("bound_per_s") if openmrs else None
    us_per_row = get("pipeline", "cpu_us_per_row")
    return (
        f"ratios: store/floor={_ratio(get('pipeline', 'wall_s'), get('floor', 'wall_s'))} "
        f"naive/pipeline_cpu={_ratio(get('naive', 'cpu_us_per_row'), get('pipeline', 'cpu_us_per_row'))} "
        f"rerun/pipeline={_ratio(get('rerun', 'wall_s'), get('pipeline', 'wall_s'))} "
        f"openmrs/bound={_ratio(achieved, bound)} "
        f"us_per_row={_ratio(us_per_row, 1.0)}"
    )


def floors_line(results: dict[str, StageResult]) -> str | None:
    """Second floors, for what the machine allows: (b) against the same insert into a collection
    carrying issue 4's three secondary indexes; (f) against bare httpx, one request per record."""
    floor, pipeline, openmrs = results.get("floor"), results.get("pipeline"), results.get("openmrs")
    ratios = []
    if floor and pipeline and "with_pipeline_indexes_wall_s" in floor.extra:
        indexed_wall = floor.extra["with_pipeline_indexes_wall_s"]
        ratios.append(f"store/indexed_floor={_ratio(pipeline.wall_s, indexed_wall)}")
    if openmrs and "http_floor_per_s" in openmrs.extra:
        ratios.append(
            f"openmrs/http_floor={_ratio(openmrs.extra['achieved_per_s'], openmrs.extra['http_floor_per_s'])}"
        )
    return f"also: {' '.join(ratios)}" if ratios else None


def table(results: dict[str, StageResult]) -> str:
    labels = {
        "floor": "(a) floor",
        "pipeline": "(b) pipeline",
        "validation": "(c) validation",
        "rerun": "(d) rerun",
        "naive": "(e) naive",
        "openmrs": "(f) openmrs",
    }
    header = (
        f"{'stage':<15} {'rows':>9} {'wall s':>8} {'CPU s':>8} {'rows/s':>10} {'CPU us/row':>10} "
        f"{'peak RSS MB':>11}  note"
    )
    lines = [header, "-" * len(header)]
    for stage, result in results.items():
        lines.append(
            f"{labels[stage]:<15} {result.rows:>9} {result.wall_s:>8.2f} {result.cpu_s:>8.2f} "
            f"{result.rows_per_s:>10.0f} {result.cpu_us_per_row:>10.1f} {result.peak_rss_mb:>11.0f}  "
            f"{result.note}"
        )
    for stage, result in results.items():
        if result.extra:
            lines.append(f"  {stage}: {json.dumps(result.extra, sort_keys=True)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, StageResult]:
    with tempfile.TemporaryDirectory(prefix="tm2-bench-") as workdir:
        data_path = Path(workdir) / f"tm2_bench_{args.rows}.csv"
        data_path.write_bytes(generate_tm2_csv(args.rows, seed=args.seed))
        ctx = BenchContext(
            workdir=workdir,
            data_path=str(data_path),
            rows=args.rows,
            seed=args.seed,
            naive_rows=args.naive_rows,
            openmrs_records=args.openmrs_records,
            concurrency=args.concurrency,
            latency_ms=args.latency_ms,
            openmrs_api=args.openmrs_api,
            indexed_floor=not args.no_indexed_floor,
        )
        stages = _stage_order(args.only)
        embedded = not os.environ.get("MONGODB_URI") and bool(set(stages) - {"validation"})
        emulator: subprocess.Popen | None = None
        results: dict[str, StageResult] = {}
        try:
            if embedded:
                _start_store(ctx.home)
            if "openmrs" in stages:
                emulator, ctx.openmrs_url = _start_emulator(Path(workdir), args.latency_ms)
            for stage in stages:
                results[stage] = _run_stage_process(stage, ctx)
                print(f"... {stage}: {results[stage].wall_s:.2f} s", file=sys.stderr, flush=True)
        finally:
            if emulator is not None:
                emulator.terminate()
                emulator.wait(timeout=30)
            if embedded:
                _stop_store(ctx.home)
        return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TM2 pipeline benchmark (see bench/RESULTS.md)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--only", choices=list(STAGES))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--naive-rows", type=int, default=5000, help="rows stage (e) loads (per-row figures)")
    parser.add_argument("--openmrs-records", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--openmrs-api",
        choices=("rest", "fhir"),
        default="rest",
        help="(f) through REST or FHIR2 (2 requests a record)",
    )
    parser.add_argument(
        "--no-indexed-floor", action="store_true", help="skip (a)'s second insert into an indexed collection"
    )
    parser.add_argument("--stage-process", choices=list(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--context", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (uri := os.environ.get("MONGODB_URI")) and database_in_uri(uri):
        parser.error("give MONGODB_URI without a database name: the benchmark creates its own (bench_*)")
    if args.stage_process:
        result = STAGES[args.stage_process](BenchContext(**json.loads(args.context)))
        print(RESULT_MARK + result.to_json(), flush=True)
        return 0
    results = run(args)
    print(table(results))
    if line := floors_line(results):
        print(line)
    print(ratios_line(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
