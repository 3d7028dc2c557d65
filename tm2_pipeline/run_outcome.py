"""What a finished ingestion run means for its file: succeeded, refused, blocked or failed.

Read from the run's own events, so the CLI and the landing sensor agree on every outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
from dagster import DagsterEventType

if TYPE_CHECKING:
    from dagster._utils.error import SerializableErrorInfo

from tm2_pipeline.assets.refusal import REFUSED_METADATA

SUCCEEDED, REFUSED, BLOCKED, FAILED = "succeeded", "refused", "blocked", "failed"
# What Dagster raises in a step stopped by Ctrl-C, SIGTERM or a termination from the UI.
_INTERRUPTED = "DagsterExecutionInterruptedError"
INTERRUPTED_MESSAGE = (
    "interrupted (Ctrl-C, SIGTERM or terminated) before it finished: ingest the file again to finish;"
    " nothing stored so far is lost or stored twice"
)
_QUALIFIED_CLASS = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*: ")


@dataclass(frozen=True)
class RunOutcome:
    status: str
    error: str | None = None


def classify_run(instance: dg.DagsterInstance, run_id: str, run_succeeded: bool) -> RunOutcome:
    kinds = {
        DagsterEventType.ASSET_CHECK_EVALUATION,
        DagsterEventType.STEP_FAILURE,
        DagsterEventType.RESOURCE_INIT_FAILURE,
    }
    events = instance.all_logs(run_id, of_type=kinds)
    step_errors: list[str] = []
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.RESOURCE_INIT_FAILURE:
            # A setting only a resource can judge (MONGODB_URI, the write concern): our own message.
            error = event.event_specific_data.error if event.event_specific_data else None
            step_errors.append(f"{event.step_key or 'resources'}: {_innermost(error)}")
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            failed_blocking = (
                not evaluation.passed
                and evaluation.blocking
                and evaluation.severity == dg.AssetCheckSeverity.ERROR
            )
            if not failed_blocking:
                continue
            if evaluation.check_name == "file_readable":
                return RunOutcome(REFUSED, evaluation.description)
            # The check's own description names the setting it went past (TM2_REJECT_BLOCK).
            reason = evaluation.description or f"failed on {evaluation.asset_key.to_user_string()}"
            return RunOutcome(BLOCKED, f"blocking check {evaluation.check_name}: {reason}")
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            failure = event.step_failure_data
            user_failure = failure.user_failure_data
            if user_failure and REFUSED_METADATA in user_failure.metadata:
                return RunOutcome(REFUSED, user_failure.description)
            message = user_failure.description if user_failure else None
            if not message and failure.error:
                interrupted = _innermost_error(failure.error).cls_name == _INTERRUPTED
                message = INTERRUPTED_MESSAGE if interrupted else _innermost(failure.error)
            step_errors.append(f"{event.step_key}: {message}")
    if run_succeeded:
        return RunOutcome(SUCCEEDED)
    return RunOutcome(FAILED, step_errors[-1] if step_errors else "the run failed")


def _innermost_error(error: SerializableErrorInfo) -> SerializableErrorInfo:
    while error.cause is not None:
        error = error.cause
    return error


def _innermost(error: SerializableErrorInfo | None) -> str:
    """The message of the innermost exception (our own, written to carry no PHI), without the
    `module.ClassName: ` Dagster puts before it."""
    if error is None:
        return "failed"
    return _QUALIFIED_CLASS.sub("", _innermost_error(error).message.strip(), count=1)
