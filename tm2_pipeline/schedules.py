"""The nightly schedule: retry every OpenMRS submission still in a retryable state."""

import dagster as dg

from tm2_pipeline.jobs import openmrs_retry


def build_nightly_retry_schedule(timezone: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="nightly_openmrs_retry",
        cron_schedule="0 2 * * *",
        execution_timezone=timezone,
        job=openmrs_retry,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="02:00 nightly: retry submissions left failed_retryable, in_flight or patient_not_found.",
    )
    def nightly_openmrs_retry(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        night = context.scheduled_execution_time.date().isoformat()
        # One run per night, even if the daemon evaluates the tick twice.
        return dg.RunRequest(run_key=f"openmrs_retry:{night}", tags={"tm2/night": night})

    return nightly_openmrs_retry
