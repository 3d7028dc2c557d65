"""A markdown quality report of one validated file, for Dagster metadata (`MetadataValue.md`).

It holds counts only, plus TM2 codes (not PHI) and column names: never a patient or practitioner
identifier, never a cell value of another column. Rejected codes are shown in canonical form and
only when they are shaped like an ICD-11 code (`codes.is_code_shaped`), like the reason messages.
"""

from __future__ import annotations

from collections import Counter

from tm2_pipeline.validation import ValidationResult

_TOP_CODES = 10


def quality_report_markdown(result: ValidationResult, file_name: str) -> str:
    """Counts of rows, outcomes, reasons, systems, blocks, rejected codes, warnings and ignored columns."""
    counts = (result.rows, result.accepted, result.duplicates, result.rejected, len(result.warnings))
    lines = [
        f"## TM2 quality report: {_cell(file_name)}",
        "",
        "| rows | accepted | duplicates | rejected | warnings |",
        "| ---: | ---: | ---: | ---: | ---: |",
        "| " + " | ".join(str(count) for count in counts) + " |",
        "",
        f"Read as {result.encoding}, delimiter {_delimiter_name(result.delimiter)}.",
    ]
    if result.ignored_columns:
        ignored = ", ".join(f"`{_cell(name)}`" for name in result.ignored_columns)
        lines.append(f"Ignored columns: {ignored}.")

    reasons = Counter(result.rejection_reasons).most_common()
    lines += _table("Rejection reasons", ("column", "check", "rows"), reasons)
    lines += _table("Warnings", ("column", "check", "rows"), result.warnings.counts().most_common())

    systems = sorted(result.accepted_per_system.items())
    lines += _table("Accepted records per system", ("system_type", "records"), systems)
    blocks = Counter(result.accepted_per_block).most_common()
    lines += _table("Accepted records per WHO block", ("block", "records"), blocks)

    rejected_codes = Counter(result.rejected_codes).most_common(_TOP_CODES)
    lines += _table(f"Top rejected codes (top {_TOP_CODES})", ("tm2_code", "rows"), rejected_codes)
    lines += ["", "Block titles: ICD-11 © World Health Organization, CC BY-ND 3.0 IGO."]
    return "\n".join(lines) + "\n"


def _table(title: str, header: tuple[str, ...], rows: list[tuple[object, int]]) -> list[str]:
    lines = ["", f"### {title}", ""]
    if not rows:
        return [*lines, "none"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    for labels, count in rows:
        cells = [_cell(str(label)) for label in (labels if isinstance(labels, tuple) else (labels,))]
        lines.append("| " + " | ".join([*cells, str(count)]) + " |")
    return lines


def _cell(text: str) -> str:
    # Markdown table cells: no pipes, no line breaks.
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _delimiter_name(delimiter: str) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab"}.get(delimiter, repr(delimiter))
