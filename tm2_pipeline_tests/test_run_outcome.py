"""How a finished run is reported (run_outcome.classify_run), for outcomes the pipeline's own runs
reach only by accident: here a step stopped by Ctrl-C."""

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError

from tm2_pipeline.run_outcome import FAILED, INTERRUPTED_MESSAGE, classify_run


def test_a_step_stopped_by_ctrl_c_is_reported_in_words_not_by_dagsters_class_name() -> None:
    # As the pipeline's steps: a retry policy, under which Dagster turns the interrupt into a retry
    # request first (the failure's innermost cause is the interrupt).
    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=1))
    def stopped() -> None:
        raise DagsterExecutionInterruptedError()  # what Dagster raises in a step at Ctrl-C or SIGTERM

    with dg.instance_for_test() as instance:
        result = dg.materialize([stopped], instance=instance, raise_on_error=False)
        outcome = classify_run(instance, result.run_id, result.success)
    assert (outcome.status, outcome.error) == (FAILED, f"stopped: {INTERRUPTED_MESSAGE}")
