"""Deterministic synthetic TM2 clinic exports for the benchmarks: same (rows, seed) -> same bytes.

What a row looks like, roughly as a busy multi-system clinic's export:

- tm2_code: real codes of the shipped ICD-11 TM2 list, Zipf-weighted over a seeded ranking (a few
  codes are most of the case mix; residual Y/Z codes are rarer);
- patient_id: a pool of about rows/3 patients (they come back), ABHA numbers (written with dashes,
  or as 14 bare digits) and clinic MRNs; practitioner_id: 40 practitioners (HPR numbers,
  name@hpr.abdm, council registration numbers);
- diagnosis_date: 2022-01-01 to 2025-12-31, mostly ISO, also dd/mm/yyyy, dd-Mon-yy, Excel serials;
- condition_name: the WHO title (commas and diacritics included, so the csv writer quotes), empty
  (filled by the pipeline), or a short local name (some Devanagari);
- system_type, severity: canonical words mostly, with the spellings clinics use (AYURVEDA, mod., 2);
- namaste_code: for some Ayurveda rows, the code the crosswalk pairs with the TM2 code.

About `dirty_share` of the rows carry one dirt of the kinds in docs/tm2-codes.md: junk or unused
codes, TM1 codes, impossible and future dates, Excel-mangled ABHA numbers, unknown systems and
severities, empty required cells, ragged rows, exact and near duplicates of an earlier row.
Dates never depend on today, so the bytes are the same whenever they are generated.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import itertools
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from tm2_pipeline.codes import CROSSWALK_PATH, tm2_code_list
from tm2_pipeline.reading import TM2_COLUMNS

DEFAULT_SEED = 20250101
FIRST_DAY = datetime.date(2022, 1, 1)
DAYS = (datetime.date(2025, 12, 31) - FIRST_DAY).days + 1
EXCEL_EPOCH = datetime.date(1899, 12, 30)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

SYSTEMS = (("Ayurveda", 0.6), ("Siddha", 0.25), ("Unani", 0.15))
SEVERITIES = (
    ("Mild", 0.33),
    ("Moderate", 0.33),
    ("Severe", 0.14),
    ("", 0.1),
    ("mod.", 0.03),
    ("2", 0.03),
    ("MILD", 0.02),
    ("sev", 0.02),
)
DATE_FORMATS = (("iso", 0.7), ("day_first", 0.2), ("month_name", 0.07), ("excel", 0.03))
LOCAL_NAMES = ("जोड़ों का दर्द", "Sandhivata", "Amavata", "Vali azhal keel vayu", "Waja-ul-Mafasil", "Kasa")
DIRT = (
    "junk_code",
    "unused_code",
    "tm1_code",
    "impossible_date",
    "future_date",
    "excel_mangled_id",
    "bad_system",
    "bad_severity",
    "missing_patient",
    "ragged_row",
    "exact_duplicate",
    "near_duplicate",
)


def _weighted(options: Sequence[tuple[str, float]]) -> tuple[list[str], list[float]]:
    values = [value for value, _ in options]
    return values, list(itertools.accumulate(weight for _, weight in options))


def _code_weights(rng: random.Random) -> tuple[list[str], list[float]]:
    """Codes in a seeded rank order, Zipf weights (s=1.1); residual codes weigh a quarter."""
    code_list = tm2_code_list()
    codes = sorted(code_list.codes)
    rng.shuffle(codes)
    weights = [
        (0.25 if code_list.get(code).is_residual else 1.0) / (rank + 1) ** 1.1
        for rank, code in enumerate(codes)
    ]
    return codes, list(itertools.accumulate(weights))


def _crosswalk() -> dict[str, list[str]]:
    """TM2 code -> the Ayurveda NAMASTE codes paired with it (sorted: deterministic)."""
    pairs: dict[str, list[str]] = {}
    with CROSSWALK_PATH.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            pairs.setdefault(row["tm2_code"], []).append(row["namaste_code"])
    return {code: sorted(namaste) for code, namaste in pairs.items()}


def _patient_pool(rng: random.Random, size: int) -> list[str]:
    pool = []
    for number in range(size):
        if rng.random() < 0.6:
            digits = f"91{rng.randrange(10**12):012d}"
            dashed = f"{digits[:2]}-{digits[2:6]}-{digits[6:10]}-{digits[10:]}"
            pool.append(dashed if rng.random() < 0.8 else digits)
        else:
            pool.append(f"MRN-{100000 + number:07d}")
    return pool


def _practitioner_pool(rng: random.Random) -> list[str]:
    names = ("meera", "arjun", "fatima", "ravi", "lakshmi", "imran", "kavya", "suresh")
    pool = []
    for number in range(40):
        kind = number % 3
        if kind == 0:
            pool.append(
                f"HPR-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}-{rng.randrange(1000, 9999)}"
            )
        elif kind == 1:
            pool.append(f"dr.{names[number % len(names)]}{number}@hpr.abdm")
        else:
            pool.append(
                f"{rng.choice(('KA', 'TN', 'KL', 'MH'))}-{rng.choice(('AYU', 'SID', 'UNA'))}-{10000 + number}"
            )
    return pool


def _date_text(day: datetime.date, style: str) -> str:
    if style == "iso":
        return day.isoformat()
    if style == "day_first":
        return f"{day.day:02d}/{day.month:02d}/{day.year}"
    if style == "month_name":
        return f"{day.day:02d}-{MONTHS[day.month - 1]}-{day.year % 100:02d}"
    return str((day - EXCEL_EPOCH).days)


class _RowMaker:
    def __init__(self, rng: random.Random, rows: int, patient_ids: Sequence[str] | None) -> None:
        self.rng = rng
        self.codes, self.code_weights = _code_weights(rng)
        self.titles = {code: tm2_code_list().get(code).title for code in self.codes}
        self.crosswalk = _crosswalk()
        self.patients = list(patient_ids) if patient_ids else _patient_pool(rng, max(50, rows // 3))
        self.practitioners = _practitioner_pool(rng)
        self.systems = _weighted(SYSTEMS)
        self.severities = _weighted(SEVERITIES)
        self.date_styles = _weighted(DATE_FORMATS)

    def clean_rows(self, count: int) -> list[list[str]]:
        rng = self.rng
        codes = rng.choices(self.codes, cum_weights=self.code_weights, k=count)
        systems = rng.choices(*self.systems, k=count)
        severities = rng.choices(*self.severities, k=count)
        styles = rng.choices(*self.date_styles, k=count)
        rows = []
        for code, system, severity, style in zip(codes, systems, severities, styles, strict=True):
            day = FIRST_DAY + datetime.timedelta(days=rng.randrange(DAYS))
            roll = rng.random()
            name = self.titles[code] if roll < 0.75 else "" if roll < 0.92 else rng.choice(LOCAL_NAMES)
            namaste = ""
            if system == "Ayurveda" and code in self.crosswalk and rng.random() < 0.4:
                namaste = rng.choice(self.crosswalk[code])
            if rng.random() < 0.05:
                system = system.upper()
            rows.append(
                [
                    rng.choice(self.patients),
                    code,
                    name,
                    system,
                    severity,
                    _date_text(day, style),
                    rng.choice(self.practitioners),
                    namaste,
                ]
            )
        return rows

    def dirty(self, row: list[str], earlier: list[list[str]]) -> list[str]:
        """`row` with one dirt applied (duplicates copy an earlier clean row instead)."""
        rng = self.rng
        kind = rng.choice(DIRT)
        row = list(row)
        if kind == "junk_code":
            row[1] = row[1] + "€"
        elif kind == "unused_code":
            row[1] = rng.choice(("SK4A", "SL1B", "SM2C"))
        elif kind == "tm1_code":
            row[1] = rng.choice(("SA00", "SB21", "SE8Z"))
        elif kind == "impossible_date":
            row[5] = rng.choice(("2025-02-30", "31/04/2024", "2023-13-01"))
        elif kind == "future_date":
            row[5] = "2099-01-15"
        elif kind == "excel_mangled_id":
            row[0] = "9.11235E+13"
        elif kind == "bad_system":
            row[3] = rng.choice(("Homeopathy", "Yoga"))
        elif kind == "bad_severity":
            row[4] = "very bad"
        elif kind == "missing_patient":
            row[0] = ""
        elif kind == "ragged_row":
            row.append("stray")
        elif kind == "exact_duplicate" and earlier:
            row = list(rng.choice(earlier))
        elif kind == "near_duplicate" and earlier:
            row = list(rng.choice(earlier))
            row[1] = f" {row[1].lower()}\u00a0"
            row[3] = row[3].lower() + "  "
        return row


def generate_tm2_rows(
    rows: int,
    *,
    seed: int = DEFAULT_SEED,
    dirty_share: float = 0.02,
    patient_ids: Sequence[str] | None = None,
) -> list[list[str]]:
    """`rows` data rows (header excluded) as lists of cells; `patient_ids` overrides the patient pool."""
    rng = random.Random(seed)
    maker = _RowMaker(rng, rows, patient_ids)
    result = maker.clean_rows(rows)
    dirty_positions = rng.sample(range(rows), round(rows * dirty_share)) if dirty_share else []
    for position in sorted(dirty_positions):
        result[position] = maker.dirty(result[position], result[max(0, position - 1000) : position])
    return result


def generate_tm2_csv(
    rows: int,
    *,
    seed: int = DEFAULT_SEED,
    dirty_share: float = 0.02,
    patient_ids: Sequence[str] | None = None,
) -> bytes:
    """A UTF-8 CSV export (CRLF, as Excel writes it) with the TM2 header and `rows` data rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(TM2_COLUMNS)
    writer.writerows(generate_tm2_rows(rows, seed=seed, dirty_share=dirty_share, patient_ids=patient_ids))
    return buffer.getvalue().encode("utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--dirty-share", type=float, default=0.02)
    parser.add_argument("--out", type=Path, help="output file (default: stdout)")
    args = parser.parse_args(argv)
    data = generate_tm2_csv(args.rows, seed=args.seed, dirty_share=args.dirty_share)
    if args.out:
        args.out.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
