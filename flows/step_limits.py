"""``[resources] retries`` and ``timeout_minutes`` as Metaflow ``@retry`` / ``@timeout`` on every step.

A flow mutator, so the numbers come from the config (``config_expr``) and hold wherever the flow runs:
``run`` on a laptop (Metaflow's local runtime retries and times out a task itself) and ``argo-workflows
create`` (the template gets Argo's retryStrategy and activeDeadlineSeconds). A step that already carries
``@retry`` or ``@timeout`` in the flow file keeps its own: ``validate`` says ``@retry(times=0)``, because a
broken data contract fails the same way every time.

What a retry may rely on: a training step resumes from its newest checkpoint (restored from MLflow on a
fresh pod, ``hps_core.tracking.checkpoint_mirror``), registration is resumable (a half-registered model is
finished, never registered twice), and the other steps write their outputs atomically.
"""

from metaflow import FlowMutator

# Minutes Metaflow waits before a retry: long enough for a restarted MLflow server or a rescheduled pod,
# short enough that a laptop run with retries does not sit idle.
MINUTES_BETWEEN_RETRIES = 1


class step_limits(FlowMutator):
    """``@step_limits(config_expr("config.resources.retries"), config_expr("config.resources.timeout_minutes"))``."""

    def init(self, retries, timeout_minutes):
        self.retries, self.timeout_minutes = int(retries or 0), int(timeout_minutes or 0)

    def pre_mutate(self, mutable_flow):
        for _, mutable_step in mutable_flow.steps:
            if self.retries:  # IGNORE (the default): a step's own @retry wins
                mutable_step.add_decorator("retry", deco_kwargs={
                    "times": self.retries, "minutes_between_retries": MINUTES_BETWEEN_RETRIES})
            if self.timeout_minutes:
                mutable_step.add_decorator("timeout", deco_kwargs={"minutes": self.timeout_minutes})
