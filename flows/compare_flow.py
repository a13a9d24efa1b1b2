"""Method comparison: several preference methods from one SFT checkpoint, on the same groups, judged alike.

Run as:
    python flows/compare_flow.py --config config flows/configs/compare_default.toml run --max-workers 2

                                 ┌─> train_sft ──────────┐
start -> validate -> build_groups┤                       ├─> join_models -> plan ─(foreach n x method x seed)─>
                                 └─> train_reward_model ─┘
         train_method (train, then evaluate) ─> report -> end

``[compare]`` names the methods (``"dpo-bt:max_min"``: a bt method with its negative rule), the seeds and the
group sizes. SFT and the reward model are trained once; every branch draws its own negatives (its method's
rule, its seed), trains from the SFT checkpoint, and is evaluated by the evaluate step's code with the
same reward model and judge. ``report`` aggregates over seeds (mean and 95 % t interval) into the
paper-style table: a Metaflow card, MLflow artifacts (``compare_report`` run) and ``comparison.md``.
MLflow: one parent run; a child per shared step, and per branch a run with ``train`` and ``evaluate`` children.
"""

import time

import flow_env  # noqa: F401  (flows/: user, offline hub, secrets kept out of the logs)
from hps_core.common.redaction import scrub_text  # noqa: E402

from flow_base import IMAGE, RETRIES, TIMEOUT_MINUTES, config_parameter, pipeline_config, step_context_of, step_resources  # noqa: E402  (flows/: config parameter, resources, step context)
from kubernetes_image import kubernetes_image  # noqa: E402
from metaflow import FlowSpec, card, current, retry, step  # noqa: E402
from mlflow_failures import mark_mlflow_failures  # noqa: E402
from step_limits import step_limits  # noqa: E402  (flows/: [resources] retries / timeout_minutes)


@kubernetes_image(IMAGE)
@step_limits(RETRIES, TIMEOUT_MINUTES)
@mark_mlflow_failures
class CompareFlow(FlowSpec):
    """Preference methods side by side over seeds: quality, margins, harm, cost."""

    config = config_parameter("compare_default.toml", help="TOML config with a [compare] section (flows/configs/compare_*.toml); unknown keys are errors.")

    def _ctx(self, sub: str = ""):
        return step_context_of(self, sub)

    @step
    def start(self):
        """Resolve the config, record the code version, open the MLflow parent run."""
        from hps_core.recipes.flow_run import open_run
        from hps_core.models.sources import check_model_sources

        cfg = pipeline_config(self)
        self.started_at = time.time()
        sources = check_model_sources(cfg)  # a model that cannot be had fails here, before any data step
        for name, value in open_run(cfg, flow_name=current.flow_name, run_id=current.run_id,
                                    run_name=f"compare-{current.run_id}").items():
            setattr(self, name, value)
        self.lineage = {**self.lineage, **sources}
        self.next(self.validate)

    @card(type="blank", id="contracts")
    @retry(times=0)  # a broken data contract is not transient: fail once, at once
    @step
    def validate(self):
        """Raw data -> canonical table -> data contracts (as in hps_flow)."""
        from metaflow.cards import Markdown

        from hps_core.recipes import hps as pipeline

        self.validation = pipeline.validate(self._ctx())
        current.card["contracts"].append(Markdown(scrub_text(self.validation["report_markdown"])))
        self.next(self.build_groups)

    @step
    def build_groups(self):
        """Groups and the split, shared by every method (each branch draws its own negatives)."""
        from hps_core.recipes import hps as pipeline

        self.groups = pipeline.build_groups(self._ctx(), self.validation["canonical"])
        self.next(self.train_sft, self.train_reward_model)

    @step_resources
    @step
    def train_sft(self):
        """The one SFT checkpoint every method starts from (and is regularised towards)."""
        from hps_core.recipes import hps as pipeline

        self.sft = pipeline.train_sft(self._ctx(), self.groups["groups"], self.groups["base"])
        self.next(self.join_models)

    @step_resources
    @step
    def train_reward_model(self):
        """The one reward model every method is scored with."""
        from hps_core.recipes import hps as pipeline

        self.reward_model = pipeline.train_reward_model(self._ctx(), self.groups["groups"], self.groups["base"])
        self.next(self.join_models)

    @step
    def join_models(self, inputs):
        """SFT and reward model ready; the groups of every group size written once, shared by all branches."""
        from hps_core.recipes.compare import group_size_files

        self.merge_artifacts(inputs, include=["started_at", "resolved_config", "run_dir", "tracking_uri", "lineage",
                                              "mlflow_parent_run_id", "validation", "groups", "sft", "reward_model"])
        self.sized_groups = group_size_files(self._ctx(), self.groups["groups"])
        self.next(self.plan)

    @step
    def plan(self):
        """One branch per (group size, method, seed)."""
        from hps_core.recipes.compare import plan_runs

        self.runs = plan_runs(self._ctx().cfg)
        print(f"{len(self.runs)} branches: " + ", ".join(r["name"] for r in self.runs))
        self.next(self.train_method, foreach="runs")

    @step_resources
    @step
    def train_method(self):
        """This branch's negatives (its rule, its seed), its training from the SFT checkpoint (cost measured),
        then SFT and the new policy through the evaluate step's code: same reward model, same judge."""
        from hps_core.recipes.compare import evaluate_method, result_row, train_method

        self.branch = self.input
        groups, ctx = self.sized_groups["groups"][str(self.branch["n"])], self._ctx()
        self.trained = train_method(ctx, self.branch, groups, self.sft["model"])
        evaluated = evaluate_method(ctx, self.branch, groups, self.sft["model"], self.trained["model"],
                                    self.reward_model["model"], self.trained["branch_run_id"])
        self.row = result_row(self.branch, self.trained, evaluated)
        self.next(self.report)

    @card(type="blank", id="comparison")
    @step
    def report(self, inputs):
        """Means and 95 % intervals over seeds: the table (card, MLflow, markdown), the claims check, a plot."""
        from metaflow.cards import Image, Markdown

        from hps_core.recipes.compare import write_outputs

        self.merge_artifacts(inputs, include=["started_at", "resolved_config", "run_dir", "tracking_uri", "lineage",
                                              "mlflow_parent_run_id"])
        self.rows = [inp.row for inp in inputs]
        self.comparison = write_outputs(self._ctx(), self.rows, inputs[0].sized_groups["sizes"],
                                        wall_s=time.time() - self.started_at)
        current.card["comparison"].append(Markdown(scrub_text("# Method comparison\n\n" + self.comparison["markdown"])))
        with open(self.comparison["paths"]["figure"], "rb") as handle:
            current.card["comparison"].append(Image(handle.read(), label="comparison.png"))
        print(self.comparison["markdown"])
        self.next(self.end)

    @step
    def end(self):
        """Close the MLflow parent run; print where the table is."""
        from hps_core.tracking.mlflow_tracker import MlflowTracker

        tracker = MlflowTracker(self.tracking_uri, experiment_name=self.resolved_config["run"]["experiment"])
        tracker.finish_run(self.mlflow_parent_run_id)
        print(f"comparison table: {self.comparison['paths']['markdown']}")


if __name__ == "__main__":
    CompareFlow()
