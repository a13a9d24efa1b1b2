"""HPS alignment pipeline: validate -> groups -> SFT | reward model -> expand -> HPS -> evaluate -> register.

Run as:
    python flows/hps_flow.py run                                              # embedded default, laptop
    python flows/hps_flow.py --config config flows/configs/<name>.toml run    # your data and models
    python flows/hps_flow.py argo-workflows create                            # scheduled, on Kubernetes

                      ┌─> train_sft ──────────┐
start -> validate -> build_groups             ├─> join_models -> expand => train_hps -> evaluate -> register -> end
                      └─> train_reward_model ─┘

``=>``: ``train_hps`` is a ``@parallel`` gang of ``[resources.train_hps] nodes`` tasks (one by default), one
torchrun node each; ``evaluate`` joins it and takes node 0's model (the other nodes only train). Metaflow
lets no step both join and fan out, hence ``join_models`` before ``expand``.

``expand`` grows each training group to ``[expand] k`` responses sampled from the SFT model and scored by
the reward model (contracts again, negatives drawn again); with ``k = 0`` (the default) it passes through.

MLflow: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<cwd>/mlflow.db`` (artifacts in ``./mlruns``).
Each step is a few lines; the work lives in ``hps_core.recipes.hps``. Steps hand tables and checkpoints to
each other by reference: a local path plus an MLflow artifact URI that a step on another machine downloads.
"""

import os

import flow_env  # noqa: F401  (flows/: user, telemetry off, secrets kept out of the logs)
from hps_core.common.redaction import scrub_text  # noqa: E402

from flow_base import IMAGE, RETRIES, TIMEOUT_MINUTES, config_parameter, gang_main, nodes_of, pipeline_config, step_context_of, step_resources  # noqa: E402  (flows/: config parameter, resources, step context, gangs)
from kubernetes_image import kubernetes_image  # noqa: E402  (flows/: Kubernetes steps use resources.image)
from metaflow import FlowSpec, card, config_expr, current, parallel, schedule, retry, step  # noqa: E402
from mlflow_failures import mark_mlflow_failures  # noqa: E402  (flows/: a failed step fails the MLflow run)
from step_limits import step_limits  # noqa: E402  (flows/: [resources] retries / timeout_minutes)


# Deployed (argo-workflows create): runs on [schedule] cron, none when it is "" (daily=False turns off
# @schedule's daily default). Local `run` ignores both decorators.
@schedule(cron=config_expr("config.schedule.cron"), timezone=config_expr("config.schedule.timezone"), daily=False)
@kubernetes_image(IMAGE)
@step_limits(RETRIES, TIMEOUT_MINUTES)
@mark_mlflow_failures
class HPSFlow(FlowSpec):
    """Hard Preference Sampling alignment, from raw preference data to registered model versions."""

    config = config_parameter("embedded", help="TOML config (flows/configs/*.toml); unknown keys are errors.")

    def _ctx(self, sub: str = ""):
        return step_context_of(self, sub)

    @step
    def start(self):
        """Resolve the config, record code version, open the MLflow parent run."""
        from hps_core.recipes.flow_run import open_run
        from hps_core.models.sources import check_model_sources

        cfg = pipeline_config(self)
        sources = check_model_sources(cfg)  # a model that cannot be had fails here, before any data step
        for name, value in open_run(cfg, flow_name=current.flow_name, run_id=current.run_id,
                                    run_name=f"hps-{current.run_id}").items():
            setattr(self, name, value)
        self.lineage = {**self.lineage, **sources}  # e.g. base_model_sha256 of a GGUF base
        self.next(self.validate)

    @card(type="blank", id="contracts")
    @retry(times=0)  # a broken data contract is not transient: fail once, at once
    @step
    def validate(self):
        """Raw data -> canonical table -> data contracts; stops the flow with a report on a violation."""
        from metaflow.cards import Markdown

        from hps_core.recipes import hps as pipeline

        try:
            self.validation = pipeline.validate(self._ctx())
        except Exception as err:
            # The contract report is Markdown (counts, expectations, examples with file:line); show it as such.
            current.card["contracts"].append(Markdown(scrub_text(f"# Data contracts FAILED\n\n{err}")))
            raise
        current.card["contracts"].append(Markdown(scrub_text(self.validation["report_markdown"])))
        self.lineage = {
            **self.lineage,
            "canonical_digest": self.validation["canonical_digest"],
            "raw_file_digests": ";".join(f"{os.path.basename(p)}={d}" for p, d in self.validation["raw_files"].items()),
            "contract_suites": ";".join(f"{k}@{v}" for k, v in self.validation["contract"]["suites"].items()),
            "contract_result": "passed after quarantine" if self.validation["contract"]["quarantined"] else "passed",
            "label_sources": ";".join(f"{k}={v}" for k, v in sorted(self.validation["label_sources"].items())),
            **self.validation["upstream"],  # e.g. upstream.routing_run, upstream.ppm_version (routed data)
        }
        self.next(self.build_groups)

    @step
    def build_groups(self):
        """One ranked group per prompt, train/eval split by prompt hash, negatives drawn per epoch."""
        from hps_core.recipes import hps as pipeline

        self.groups = pipeline.build_groups(self._ctx(), self.validation["canonical"])
        self.lineage = {**self.lineage, "groups_digest": self.groups["groups_digest"], "base_model": self.groups["base_model"]}
        self.next(self.train_sft, self.train_reward_model)

    @step_resources
    @step
    def train_sft(self):
        """Supervised fine-tuning of the base model (GPU step on a cluster)."""
        from hps_core.recipes import hps as pipeline

        self.sft = pipeline.train_sft(self._ctx(), self.groups["groups"], self.groups["base"])
        self.next(self.join_models)

    @step_resources
    @step
    def train_reward_model(self):
        """Bradley-Terry reward model on its own prompts (or the training groups), unless the config names one."""
        from hps_core.recipes import hps as pipeline

        self.reward_model = pipeline.train_reward_model(self._ctx(), self.groups["groups"], self.groups["base"])
        self.next(self.join_models)

    @step
    def join_models(self, inputs):
        """The SFT and reward models side by side, with everything the steps before them made."""
        self.merge_artifacts(inputs, include=["resolved_config", "run_dir", "tracking_uri", "lineage", "mlflow_parent_run_id",
                                              "validation", "groups", "sft", "reward_model"])
        self.next(self.expand)

    @card(type="blank", id="expansion")
    @step_resources
    @step
    def expand(self):
        """Training groups grown to K responses by the SFT model, scored by the reward model ([expand] k > 0)."""
        from metaflow.cards import Markdown

        if self.resolved_config["expand"]["k"] == 0:  # pass-through, with no step context (no MLflow or torch import)
            self.groups = {**self.groups, "expanded": False}
        else:
            from hps_core.recipes import hps as pipeline

            self.groups = pipeline.expand(self._ctx(), self.validation["canonical"], self.groups, self.sft["model"],
                                          self.reward_model["model"])
        self.lineage = {**self.lineage, "reward_model": self.reward_model["model_dir"]}
        if self.groups["expanded"]:
            self.lineage = {**self.lineage, "groups_digest": self.groups["groups_digest"],
                            "expanded_digest": self.groups["expanded_digest"],
                            "expansion": f"k={self.resolved_config['expand']['k']} generator=sft scorer=reward_model"}
            current.card["expansion"].append(Markdown(scrub_text("# Expanded groups\n\n" + self.groups["report_markdown"])))
        else:
            current.card["expansion"].append(Markdown("# No expansion\n\n`[expand] k = 0`: the groups as the data gives them."))
        self.next(self.train_hps, num_parallel=nodes_of(self, "train_hps"))

    @step_resources
    @parallel
    @step
    def train_hps(self):
        """Preference training with hard negatives from the SFT checkpoint (frozen as reference), on each node."""
        from hps_core.recipes import hps as pipeline

        self.gang_node = current.parallel.node_index
        self.hps = pipeline.train_hps(self._ctx(), self.groups["groups"], self.groups["negatives"], self.sft["model"])
        self.next(self.evaluate)

    @card(type="blank", id="evaluation")
    @step_resources
    @step
    def evaluate(self, inputs):
        """SFT and HPS side by side: reward, harm, implicit margins, with 95 % intervals."""
        from metaflow.cards import Image, Markdown

        from hps_core.recipes import hps as pipeline

        self.merge_artifacts(inputs, exclude=["hps", "gang_node"])  # the same on every node but these
        self.hps = gang_main(inputs).hps
        self.evaluation = pipeline.evaluate(
            self._ctx(), self.groups["groups"], self.sft["model"], self.hps["model"], self.reward_model["model"]
        )
        current.card["evaluation"].append(Markdown(scrub_text("# SFT vs HPS\n\n" + self.evaluation["comparison_markdown"])))
        for path in self.evaluation["figures"]:
            with open(path, "rb") as handle:
                current.card["evaluation"].append(Image(handle.read(), label=os.path.basename(path)))
        self.next(self.register)

    @step
    def register(self):
        """Both checkpoints become MLflow model versions with metrics and lineage; HPS gets `challenger`.
        Then the MLflow parent run is tagged with them and closed (here, not in `end`: this step has MLflow
        loaded already, and `end` then imports nothing heavy)."""
        from hps_core.recipes import hps as pipeline

        ctx = self._ctx()
        self.registered = pipeline.register(
            ctx, self.sft["model"], self.hps["model"], self.evaluation["metrics"], self.lineage,
            validation=self.validation, groups=self.groups,
        )
        ctx.tracker.set_tags(self.mlflow_parent_run_id, {f"registered.{k}": v for k, v in self.registered.items()})
        ctx.tracker.finish_run(self.mlflow_parent_run_id)
        self.next(self.end)

    @step
    def end(self):
        """Tag this Metaflow run with the MLflow run and the model versions it registered."""
        from metaflow import Run

        Run(f"{current.flow_name}/{current.run_id}").add_tags(
            [f"mlflow_run:{self.mlflow_parent_run_id}"] + [f"model:{uri}" for uri in self.registered.values()]
        )
        for name, uri in self.registered.items():
            print(f"registered {name}: {uri}")


if __name__ == "__main__":
    HPSFlow()
