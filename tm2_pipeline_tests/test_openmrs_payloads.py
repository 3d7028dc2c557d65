"""Pure parts of the OpenMRS submission: the Condition body, "already there?", response reading, decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tm2_pipeline.identity import condition_uuid
from tm2_pipeline.openmrs.decisions import Action, plan_submission
from tm2_pipeline.openmrs.payloads import (
    additional_detail,
    condition_matches,
    condition_payload,
    correction_payload,
    noncoded_text,
    previous_version_of,
)
from tm2_pipeline.openmrs.responses import (
    error_message,
    is_duplicate_error,
    is_session_timeout,
    retry_after_seconds,
    sanitize,
    server_message,
)
from tm2_pipeline.openmrs.states import SubmissionEntry, SubmissionState
from tm2_pipeline_tests.openmrs_sample_records import make_record

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SERVER = "https://emr.example.org/openmrs"


@pytest.fixture
def record() -> dict:
    return make_record("91-3229-3771-7516", "SK01", "2024-01-15", "Ayurveda", "Moderate", namaste_code="VA-4")


def test_coded_payload_has_every_field_and_no_identifier(record: dict) -> None:
    payload = condition_payload(record, condition_uuid="c-1", patient_uuid="p-1", concept_uuid="k-1")
    assert payload == {
        "uuid": "c-1",
        "patient": "p-1",
        "condition": {"coded": "k-1"},
        "clinicalStatus": "ACTIVE",
        "verificationStatus": "CONFIRMED",
        "onsetDate": "2024-01-15",
        "additionalDetail": "ICD-11 TM2 SK01 (2025-01); System: Ayurveda; Severity: Moderate; "
        "Practitioner: HPR-71-2231-0098; NAMASTE: VA-4",
    }
    assert "91-3229-3771-7516" not in str(payload)


def test_noncoded_payload_uses_code_and_who_title(record: dict) -> None:
    payload = condition_payload(record, condition_uuid="c-1", patient_uuid="p-1", concept_uuid=None)
    assert payload["condition"] == {"nonCoded": "SK01 Migraine disorder (TM2)"}
    assert noncoded_text(record) == "SK01 Migraine disorder (TM2)"


def test_missing_severity_is_spelled_out(record: dict) -> None:
    record = {**record, "severity": None, "namaste_code": None}
    assert additional_detail(record) == (
        "ICD-11 TM2 SK01 (2025-01); System: Ayurveda; Severity: not recorded; Practitioner: HPR-71-2231-0098"
    )


def test_correction_body_leaves_patient_uuid_and_statuses_to_openmrs(record: dict) -> None:
    payload = condition_payload(record, condition_uuid="c-1", patient_uuid="p-1", concept_uuid=None)
    body = correction_payload(payload)
    assert set(body) == {"condition", "onsetDate", "additionalDetail"}
    assert body["additionalDetail"] == payload["additionalDetail"]


def _as_openmrs_returns(payload: dict) -> dict:
    coded = payload["condition"].get("coded")
    return {
        "uuid": payload["uuid"],
        "condition": {
            "coded": {"uuid": coded, "display": "x"} if coded else None,
            "nonCoded": payload["condition"].get("nonCoded"),
        },
        "clinicalStatus": "ACTIVE",
        "verificationStatus": "CONFIRMED",
        "onsetDate": payload["onsetDate"] + "T00:00:00.000+0530",
        "additionalDetail": payload["additionalDetail"],
        "previousVersion": None,
    }


@pytest.mark.parametrize("concept", ["k-1", None])
def test_condition_matches_what_openmrs_returns(record: dict, concept: str | None) -> None:
    payload = condition_payload(record, condition_uuid="c-1", patient_uuid="p-1", concept_uuid=concept)
    existing = _as_openmrs_returns(payload)
    assert condition_matches(existing, payload)
    assert not condition_matches({**existing, "additionalDetail": "other"}, payload)
    assert not condition_matches({**existing, "onsetDate": "2024-01-16T00:00:00.000+0000"}, payload)
    other = {"coded": {"uuid": "k-2"}} if concept else {"nonCoded": "SK01 something else"}
    assert not condition_matches({**existing, "condition": other}, payload)
    # Statuses a clinician changed in OpenMRS are theirs: the condition still holds the record.
    assert condition_matches({**existing, "clinicalStatus": "INACTIVE"}, payload)
    assert condition_matches({**existing, "verificationStatus": "PROVISIONAL"}, payload)


def test_previous_version_reads_refs_and_strings() -> None:
    assert previous_version_of({"previousVersion": {"uuid": "a", "links": []}}) == "a"
    assert previous_version_of({"previousVersion": "b"}) == "b"
    assert previous_version_of({"previousVersion": None}) is None


# --- responses ---------------------------------------------------------------------------------


def test_error_message_reads_openmrs_json_and_field_errors() -> None:
    body = (
        '{"error": {"message": "Invalid Submission", "code": "x", "globalErrors": [],'
        ' "fieldErrors": {"clinicalStatus": [{"code": "c", "message": "Clinical status is required"}]}}}'
    )
    assert error_message(body) == "Invalid Submission; clinicalStatus: Clinical status is required"
    assert error_message("<html><body><h1>502 Bad Gateway</h1></body></html>").split() == [
        "502",
        "Bad",
        "Gateway",
    ]


def test_sanitize_masks_identifiers_and_truncates() -> None:
    text = sanitize(
        "patient 91-3229-3771-7516 mail a.b@c.org MRN-01001 is odd " + "x" * 300, secrets=("MRN-01001",)
    )
    assert "3229" not in text and "a.b@c.org" not in text and "MRN-01001" not in text
    assert len(text) <= 200
    assert server_message(
        '{"error": {"message": "Some properties are not allowed to be set: encounter"}}'
    ) == ("Some properties are not allowed to be set: encounter")


def test_duplicate_and_session_timeout_detection() -> None:
    assert is_duplicate_error('{"error": {"message": "could not execute statement; constraint [uuid]"}}')
    assert is_duplicate_error('{"error": {"message": "Duplicate entry for key"}}')
    assert not is_duplicate_error('{"error": {"message": "Unable to acquire JDBC Connection"}}')
    assert is_session_timeout("<html><p>Session timed out</p></html>")


def test_retry_after_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = "Sun, 01 Jun 2025 12:00:30 GMT"
    assert retry_after_seconds(later, now=NOW) == pytest.approx(30.0)


# --- decisions ---------------------------------------------------------------------------------


def _entry(
    state: SubmissionState,
    *,
    content: str = "h1",
    confirmed: str | None = None,
    first: datetime = NOW,
    server: str = SERVER,
) -> SubmissionEntry:
    return SubmissionEntry(
        key="k",
        state=state,
        condition_uuid="u-current",
        content_hash=content,
        confirmed_hash=confirmed,
        server=server,
        first_attempt_at=first,
        updated_at=first,
    )


def _plan(entry: SubmissionEntry | None, content: str = "h1"):
    return plan_submission("k", content, entry, server=SERVER, now=NOW, patient_retry_days=30)


def test_new_record_is_created_with_its_own_uuid() -> None:
    plan = _plan(None)
    assert (plan.action, plan.condition_uuid, plan.fresh) == (Action.CREATE, condition_uuid("k"), False)


def test_confirmed_record_is_skipped_or_corrected() -> None:
    assert _plan(_entry(SubmissionState.SUBMITTED, confirmed="h1")).action is Action.SKIP
    assert _plan(_entry(SubmissionState.ALREADY_PRESENT, confirmed="h1")).action is Action.SKIP
    corrected = _plan(_entry(SubmissionState.SUBMITTED, confirmed="h1"), content="h2")
    assert (corrected.action, corrected.condition_uuid) == (Action.CORRECT, "u-current")


def test_unsettled_records_are_verified_before_sending() -> None:
    assert _plan(_entry(SubmissionState.IN_FLIGHT)).action is Action.VERIFY_CREATE
    assert _plan(_entry(SubmissionState.FAILED_RETRYABLE)).action is Action.VERIFY_CREATE
    in_flight_correction = _entry(SubmissionState.IN_FLIGHT, content="h2", confirmed="h1")
    assert _plan(in_flight_correction, content="h2").action is Action.VERIFY_CORRECT


def test_missing_patient_is_retried_only_within_the_window() -> None:
    recent = _entry(SubmissionState.PATIENT_NOT_FOUND, first=NOW - timedelta(days=29))
    old = _entry(SubmissionState.PATIENT_NOT_FOUND, first=NOW - timedelta(days=31))
    assert _plan(recent).action is Action.VERIFY_CREATE
    assert _plan(old).action is Action.SKIP
    assert _plan(old, content="h2").action is Action.VERIFY_CREATE  # corrected data gets another chance
    naive_recent = _entry(
        SubmissionState.CONCEPT_NOT_FOUND, first=(NOW - timedelta(days=1)).replace(tzinfo=None)
    )
    assert _plan(naive_recent).action is Action.VERIFY_CREATE


@pytest.mark.parametrize("state", [SubmissionState.AMBIGUOUS_PATIENT, SubmissionState.REJECTED_BY_SERVER])
def test_human_states_wait_unless_the_content_changes(state: SubmissionState) -> None:
    assert _plan(_entry(state)).action is Action.SKIP
    assert _plan(_entry(state), content="h2").action is Action.VERIFY_CREATE


def test_an_entry_about_another_server_starts_over() -> None:
    plan = _plan(_entry(SubmissionState.SUBMITTED, confirmed="h1", server="http://127.0.0.1:9/openmrs"))
    assert (plan.action, plan.condition_uuid, plan.fresh) == (Action.CREATE, condition_uuid("k"), True)


ECHOED_ID = 'PHI X,WAF"9<b>'


@pytest.mark.parametrize(
    "body",
    [
        # A gateway's error pages echoing the lookup's query string or the value, in the forms seen.
        "<html><body>Request blocked: identifier=PHI+X%2cWAF%229%3cb%3e&v=default</body></html>",
        "<html><body>Request blocked: identifier=PHI%20X%2CWAF%229%3Cb%3E</body></html>",
        "<html><body>value: PHI X,WAF&quot;9&lt;b&gt;</body></html>",
        "<html><body>value: PHI X,WAF&#34;9&#x3c;b&#x3E;</body></html>",
        "<html><body>value: PHI X,WAF%25229%253Cb%253E</body></html>",  # encoded twice
        '<html><body>Invalid identifier phi x,waf"9<b></body></html>',
        '<html><body>Invalid identifier PHI   X,WAF"9<b> (spaces run together)</body></html>',
        '{"error": {"message": "Invalid identifier phi x,waf\\"9<b>"}}',
    ],
)
def test_an_echoed_identifier_is_redacted_in_every_encoding(body: str) -> None:
    # Found by an audit: only the exact, quote() and quote_plus() forms were cut out before.
    message = server_message(body, secrets=(ECHOED_ID,))
    assert "[redacted]" in message
    flat = message.lower().replace(" ", "").replace("+", "")
    assert "phix" not in flat and "waf" not in flat, message


def test_a_message_that_echoes_no_secret_is_shown_as_it_came() -> None:
    # From a review: decoding every message turned "C++" into "C" and "%deleted" into mojibake.
    for text in ("^[A-Z]+$ (C++ tz +05:30)", "%deleted %cafe", "a &amp; b"):
        assert sanitize(text) == text
        assert sanitize(text, secrets=("MRN-01001",)) == text


def test_escaped_angle_brackets_in_a_page_that_echoes_an_id_keep_their_text() -> None:
    page = "<html><body>Invalid 5 &lt; 6 id=ABC-77 and 7 &gt; 3</body></html>"
    assert server_message(page, secrets=("ABC-77",)) == "Invalid 5 < 6 id=[redacted] and 7 > 3"
