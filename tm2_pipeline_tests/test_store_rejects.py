"""RejectStore against the real SecantusDB server (bulk ReplaceOne upserts: mongomock 4.3 cannot run them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tm2_pipeline.store.rejects import RejectStore

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
SHA = "d" * 64

pytestmark = pytest.mark.integration


def rejected(row: int, **values: str | None) -> dict:
    return {"row": row, "values": values or {"patient_id": f"P{row}"}, "reasons": [f"reason for {row}"]}


def test_replacing_twice_keeps_one_document_per_row(mongo_db):
    store = RejectStore(mongo_db)
    rows = [rejected(7), rejected(3), rejected(12)]
    assert store.replace_for_file("a.csv", SHA, "a.csv", rows, T0) == 3
    assert store.replace_for_file("a.csv", SHA, "a.csv", rows, T0 + timedelta(hours=1)) == 3
    assert store.count() == 3
    stored = store.for_file(SHA)
    assert [doc["row"] for doc in stored] == [3, 7, 12]
    assert stored[0]["_id"] == f"{SHA}:3"
    assert {doc["file"] for doc in stored} == {"a.csv"} and {doc["partition"] for doc in stored} == {"a.csv"}
    assert stored[1]["values"] == {"patient_id": "P7"} and stored[1]["reasons"] == ["reason for 7"]


def test_re_ingesting_the_same_rejects_writes_nothing(mongo_db):
    store = RejectStore(mongo_db)
    rows = [rejected(3), rejected(7)]
    store.replace_for_file("a.csv", SHA, "a.csv", rows, T0)
    before = list(store.collection.find().sort("_id", 1))
    store.replace_for_file("a.csv", SHA, "a.csv", rows, T0 + timedelta(days=1))
    assert list(store.collection.find().sort("_id", 1)) == before  # recorded_at included

    changed = [rejected(3), {**rejected(7), "reasons": ["another reason"]}]
    store.replace_for_file("renamed.csv", SHA, "renamed.csv", changed, T0 + timedelta(days=2))
    after = store.for_file(SHA)
    assert [doc["file"] for doc in after] == ["renamed.csv", "renamed.csv"]
    assert after[1]["reasons"] == ["another reason"]
    assert after[1]["recorded_at"] == datetime(2025, 3, 3, 9, 0)  # naive: the fixture's client reads UTC


def test_rows_no_longer_rejected_are_removed_and_other_files_untouched(mongo_db):
    store = RejectStore(mongo_db)
    store.replace_for_file("a.csv", SHA, "a.csv", [rejected(3), rejected(7)], T0)
    store.replace_for_file("b.csv", "e" * 64, "b.csv", [rejected(3)], T0)
    store.replace_for_file("a.csv", SHA, "a.csv", [rejected(7), rejected(9)], T0)
    assert [doc["row"] for doc in store.for_file(SHA)] == [7, 9]
    assert [doc["row"] for doc in store.for_file("e" * 64)] == [3]
    store.replace_for_file("a.csv", SHA, "a.csv", [], T0)
    assert store.for_file(SHA) == [] and store.count() == 1


def test_any_header_survives_as_a_raw_value(mongo_db):
    store = RejectStore(mongo_db)
    odd = {"Patient.ID": "P1", "$where": "x", "Dx Date": None, "तारीख": "१२/०३/२०२४"}
    store.replace_for_file("a.csv", SHA, "a.csv", [{"row": 2, "values": odd, "reasons": ["bad date"]}], T0)
    [stored] = store.for_file(SHA)
    assert stored["values"] == odd
    assert list(stored["values"]) == list(odd)  # the file's column order is kept


def test_bad_rejected_rows_are_refused_before_writing(mongo_db):
    store = RejectStore(mongo_db)
    with pytest.raises(ValueError, match="repeat a row"):
        store.replace_for_file("a.csv", SHA, "a.csv", [rejected(3), rejected(3)], T0)
    with pytest.raises(TypeError, match="must be an int"):
        store.replace_for_file("a.csv", SHA, "a.csv", [{"row": "3", "values": {}, "reasons": []}], T0)
    assert store.count() == 0


def test_rejects_replaced_chunk_by_chunk_equal_one_replacement(mongo_db):
    store = RejectStore(mongo_db)
    store.replace_for_file("a.csv", SHA, "a.csv", [rejected(2), rejected(7), rejected(20)], T0)
    kept = store.collection.find_one({"_id": f"{SHA}:7"})
    with store.replacing("a.csv", SHA, "a.csv", T0 + timedelta(days=1)) as replacement:
        replacement.write([rejected(3), rejected(7)])
        replacement.write([])
        # Rows of the earlier replacement stay until the new one is complete.
        assert [doc["row"] for doc in store.for_file(SHA)] == [2, 3, 7, 20]
        replacement.write([rejected(9)])
        with pytest.raises(ValueError, match="row order"):
            replacement.write([rejected(8)])
    assert replacement.written == 3
    assert [doc["row"] for doc in store.for_file(SHA)] == [3, 7, 9]
    assert store.collection.find_one({"_id": f"{SHA}:7"}) == kept  # unchanged: not written again


def test_a_replacement_that_fails_midway_removes_nothing(mongo_db):
    store = RejectStore(mongo_db)
    store.replace_for_file("a.csv", SHA, "a.csv", [rejected(2)], T0)
    with pytest.raises(RuntimeError), store.replacing("a.csv", SHA, "a.csv", T0) as replacement:
        replacement.write([rejected(5)])
        raise RuntimeError("the run died")
    assert [doc["row"] for doc in store.for_file(SHA)] == [2, 5]  # the next replacement tidies up
    store.remove_for_file(SHA)
    assert store.for_file(SHA) == []


def test_a_reject_too_large_for_one_document_keeps_a_bounded_copy_of_its_values(mongo_db):
    # A block of old-Mac rows pasted into a Windows export reads as one ragged row (README, Known
    # limits): 1.75 million fields, more than MongoDB's 16 MB a document. The file's bytes stay whole.
    from tm2_pipeline.store.rejects import CUT_MARK, MAX_LISTED_VALUES, MAX_VALUE_CHARS

    store = RejectStore(mongo_db)
    huge = {"row": 2, "values": {"patient_id": "P" * 20_000, "extra_fields": ["x" * 10] * 1_750_000}}
    small = rejected(3)
    assert store.replace_for_file("a.csv", SHA, "a.csv", [{**huge, "reasons": ["ragged"]}, small], T0) == 2
    first, second = store.for_file(SHA)
    assert first["values_cut"] is True and "values_cut" not in second
    assert first["values"]["patient_id"] == "P" * MAX_VALUE_CHARS + CUT_MARK
    assert len(first["values"]["extra_fields"]) == MAX_LISTED_VALUES + 1
    assert first["values"]["extra_fields"][-1] == CUT_MARK.strip() and first["reasons"] == ["ragged"]
