"""A step that raises marks the flow's MLflow parent run FAILED (instead of leaving it RUNNING forever).

Metaflow has no on-failure hook for local runs, so every step is wrapped (``@mark_mlflow_failures`` on
the flow class adds ``fail_mlflow_run_on_error`` to each step). Child runs already mark themselves
FAILED (``MlflowTracker.child_run``); this covers the parent and work done outside any child run. A step
that is retried and then succeeds leaves the parent FAILED until ``end`` sets FINISHED, which is what a
reader should see while the run is in doubt. Marking is best effort: the step's own error is what
propagates.
"""

from metaflow import FlowMutator, user_step_decorator


def _parent_run(flow, inputs):
    """(tracking URI, MLflow parent run id, experiment) from this step or, in a join, from an input."""
    for source in (flow, *(inputs or ())):
        try:
            return source.tracking_uri, source.mlflow_parent_run_id, source.resolved_config["run"]["experiment"]
        except Exception:  # not set yet (start failed early) or not merged yet (join step)
            continue
    return None


@user_step_decorator
def fail_mlflow_run_on_error(step_name, flow, inputs=None):
    try:
        yield
    except Exception as err:
        parent = _parent_run(flow, inputs)
        if parent is not None:
            try:
                from hps_core.tracking.mlflow_tracker import MlflowTracker

                uri, run_id, experiment = parent
                tracker = MlflowTracker(uri, experiment_name=experiment)
                tracker.set_tags(run_id, {"failed_step": step_name, "failure": f"{type(err).__name__}: {err}"})
                tracker.finish_run(run_id, status="FAILED")
            except Exception as mark_err:  # the step's error matters more than ours
                print(f"could not mark MLflow run FAILED after step {step_name} failed: {mark_err}")
        raise


class mark_mlflow_failures(FlowMutator):
    def pre_mutate(self, mutable_flow):
        for _, mutable_step in mutable_flow.steps:
            mutable_step.add_decorator(fail_mlflow_run_on_error)
