"""`tm2 submissions` rows: where each record came from, why it waits, its patient id only on request."""

from datetime import UTC, datetime

from tm2_pipeline.openmrs.states import Attempt, SubmissionEntry, SubmissionState
from tm2_pipeline.submission_listing import NOT_IN_OPENMRS, describe, listed_submissions

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def entry(key: str, state: SubmissionState, *attempts: Attempt) -> SubmissionEntry:
    return SubmissionEntry(
        key=key,
        state=state,
        condition_uuid=f"u-{key}",
        content_hash="h",
        confirmed_hash=None,
        server="https://emr.example.org/openmrs",
        first_attempt_at=AT,
        updated_at=AT,
        attempts=attempts,
    )


def record(key: str, row: int) -> dict:
    return {
        "_id": key,
        "patient_id": f"MRN-{row:05d}",
        "tm2_code": "SK25",
        "diagnosis_date": "2026-02-27",
        "source": {"file": "clinic_a.csv", "sha256": "ab" * 32, "row": row},
    }


def test_rows_say_where_each_record_came_from_and_why_it_waits_without_its_patient():
    ambiguous = entry(
        "k1", SubmissionState.AMBIGUOUS_PATIENT, Attempt(AT, "GET", 200, "2 patients carry this identifier")
    )
    gone = entry("k2", SubmissionState.FAILED_RETRYABLE)
    [first, second] = listed_submissions([ambiguous, gone], lambda keys: [record("k1", 7)])
    assert first == {
        "state": "ambiguous_patient",
        "file": "clinic_a.csv",
        "row": 7,
        "tm2_code": "SK25",
        "diagnosis_date": "2026-02-27",
        "updated_at": AT.isoformat(),
        "last_attempt": {"method": "GET", "status": 200, "message": "2 patients carry this identifier"},
    }
    assert describe(first) == (
        "clinic_a.csv row 7  ambiguous_patient  SK25 2026-02-27  "
        "last: GET 200 2 patients carry this identifier"
    )
    # A log entry whose record is no longer stored is still listed, by its key.
    assert (second["file"], second["last_attempt"]) == (None, None)
    assert describe(second) == "a record no longer in the store  failed_retryable"
    assert "MRN-" not in describe(first) + str(first)


def test_the_patient_id_is_shown_only_on_request():
    [row] = listed_submissions(
        [entry("k1", SubmissionState.REJECTED_BY_SERVER)], lambda keys: [record("k1", 3)], with_values=True
    )
    # The key too: an unsalted hash of the patient id, code, date and system (from a review: the id
    # came back from it in a second by trying the clinic's id range).
    assert (row["patient_id"], row["key"]) == ("MRN-00003", "k1")
    assert "patient MRN-00003" in describe(row)


def test_records_are_looked_up_a_thousand_keys_at_a_time_in_the_log_order():
    entries = [entry(f"k{n:04d}", SubmissionState.PATIENT_NOT_FOUND) for n in range(2500)]
    asked: list[int] = []

    def find(keys):
        asked.append(len(keys))
        return [record(key, int(key[1:])) for key in reversed(keys)]

    rows = list(listed_submissions(iter(entries), find))
    assert asked == [1000, 1000, 500]
    assert [row["row"] for row in rows] == list(range(2500))


def test_by_default_everything_openmrs_is_not_known_to_hold_is_listed():
    assert set(NOT_IN_OPENMRS) == set(SubmissionState) - {
        SubmissionState.SUBMITTED,
        SubmissionState.ALREADY_PRESENT,
    }
