"""bench/: the generator is deterministic and dirty as promised; run.py completes and ends with the ratios
line. Formats only: no timing is ever asserted (figures live in bench/RESULTS.md)."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.generate import generate_tm2_csv
from tm2_pipeline.codes import tm2_code_list
from tm2_pipeline.validation import validate_tm2_export

REPO = Path(__file__).resolve().parent.parent
RATIOS = re.compile(
    r"ratios: store/floor=\d+\.\d\d naive/pipeline_cpu=\d+\.\d\d rerun/pipeline=\d+\.\d\d "
    r"openmrs/bound=\d+\.\d\d us_per_row=\d+\.\d\d"
)


def _generate_in_a_process(tmp_path: Path, name: str, hash_seed: str, seed: int = 11) -> bytes:
    out = tmp_path / name
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    command = [
        sys.executable,
        "-m",
        "bench.generate",
        "--rows",
        "400",
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, cwd=REPO, env=env)
    return out.read_bytes()


def test_generate_is_deterministic_across_processes(tmp_path: Path) -> None:
    first = _generate_in_a_process(tmp_path, "a.csv", hash_seed="1")
    again = _generate_in_a_process(tmp_path, "b.csv", hash_seed="2")  # set/dict order must not matter
    assert first == again
    assert first == generate_tm2_csv(400, seed=11)
    assert _generate_in_a_process(tmp_path, "c.csv", hash_seed="1", seed=12) != first


def test_generated_file_is_mostly_clean_real_codes_with_some_dirt() -> None:
    result = validate_tm2_export(generate_tm2_csv(3000), today=datetime.date(2026, 1, 1))
    dirty = result.rejected + result.duplicates
    assert result.rows == 3000
    assert 0.01 * 3000 <= dirty <= 0.03 * 3000
    assert set(result.accepted_records["tm2_code"]) <= tm2_code_list().codes
    checks = {reason["check"] for row in result.rejected_rows for reason in row["reasons"]}
    assert {"unknown_code", "tm1_code", "bad_date", "future_date", "excel_mangled_id", "ragged_row"} <= checks
    assert len(set(result.accepted_records["tm2_code"])) > 100  # a clinic's case mix, not a handful


@pytest.mark.integration
def test_run_completes_and_ends_with_the_ratios_line() -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("MONGODB_URI", "DAGSTER_HOME")}
    command = [
        sys.executable,
        "-m",
        "bench.run",
        "--rows",
        "300",
        "--naive-rows",
        "100",
        "--openmrs-records",
        "40",
    ]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    assert RATIOS.fullmatch(lines[-1]), lines[-1]
    floors = r"also: store/indexed_floor=\d+\.\d\d openmrs/http_floor=\d+\.\d\d"
    assert re.fullmatch(floors, lines[-2]), lines[-2]
    for stage in ("(a) floor", "(b) pipeline", "(c) validation", "(d) rerun", "(e) naive", "(f) openmrs"):
        assert any(line.startswith(stage) for line in lines), stage
    assert '"status": "succeeded"' in completed.stdout


def test_a_mongodb_uri_naming_a_database_is_refused_before_anything_runs(monkeypatch, capsys):
    from bench.run import main

    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:1/clinicdb")
    with pytest.raises(SystemExit) as caught:
        main(["--rows", "10"])
    assert caught.value.code == 2
    assert "without a database name: the benchmark creates its own" in capsys.readouterr().err
