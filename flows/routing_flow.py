"""HyPER routing: send each preference annotation to humans or to an AI judge, then hand the routed labels
to the HPS flow (Miranda et al., ACL 2025; docs: README "HyPER: routing labels to humans or an AI judge").

Run as:
    python flows/routing_flow.py run                                                  # embedded default
    python flows/routing_flow.py --config config flows/configs/<name>.toml run        # your pairwise data
    python flows/hps_flow.py --config config .hps/routing/<run id>/routed/hps_config.toml run   # HPS on the routed labels

start -> validate -> simulate -> fit_ppm -> route -> report -> end

- validate: pairs with a human and an AI label (+ gold pairs) -> data contracts -> binary tags per instance
- simulate: candidate mixes (random budgets, tag-driven fills); a small reward model trained on each mix's
  labels and scored on gold dev pairs
- fit_ppm: quadratic regression from tag counts to that score, cross-validated, registered (``hyper-ppm``)
- route: the best predicted mix at the budget (and the per-instance gain rule); the routed data written as
  scored JSONL with ``label_source`` per record, a lineage sidecar and an hps config
- report: 100 % human vs 100 % AI vs random vs HyPER on held-out gold test pairs (card + MLflow)

MLflow: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<cwd>/mlflow.db``. The work lives in
``hps_core.recipes.routing``.
"""

import os

import flow_env  # noqa: F401  (flows/: user, offline hub, secrets kept out of the logs)
from hps_core.common.redaction import scrub_text  # noqa: E402

from flow_base import config_parameter, step_context_of  # noqa: E402  (flows/: config parameter, resources, step context)
from metaflow import FlowSpec, card, current, step  # noqa: E402
from mlflow_failures import mark_mlflow_failures  # noqa: E402  (flows/: a failed step fails the MLflow run)


@mark_mlflow_failures
class RoutingFlow(FlowSpec):
    """HyPER: learn which instances need a human label, route a dataset, write it for the HPS flow."""

    config = config_parameter("routing_default.toml", help="TOML routing config (flows/configs/routing_default.toml); unknown keys are errors.", parser="hps_core.routing.config.parse_routing_config_text")

    def _ctx(self):
        from hps_core.routing.config import RoutingConfig

        return step_context_of(self, config=RoutingConfig.from_dict(dict(self.config), source="config"))

    @step
    def start(self):
        """Resolve the config, record the code version, open the MLflow parent run."""
        from hps_core.recipes.flow_run import open_run
        from hps_core.routing.config import RoutingConfig

        cfg = RoutingConfig.from_dict(dict(self.config), source="config")
        for name, value in open_run(cfg, flow_name=current.flow_name, run_id=current.run_id,
                                    run_name=f"routing-{current.run_id}", runs_dir="routing").items():
            setattr(self, name, value)
        self.next(self.validate)

    @card(type="blank", id="contracts")
    @step
    def validate(self):
        """Pairs with human and AI labels + gold pairs -> data contracts -> tags per instance."""
        from metaflow.cards import Markdown

        from hps_core.recipes import routing as steps

        try:
            self.validation = steps.validate(self._ctx())
        except Exception as err:
            current.card["contracts"].append(Markdown(scrub_text(f"# Data contracts FAILED\n\n{err}")))
            raise
        current.card["contracts"].append(Markdown(scrub_text(self.validation["report_markdown"])))
        self.lineage = {
            **self.lineage,
            "raw_file_digests": ";".join(f"{os.path.basename(p)}={d}" for p, d in self.validation["raw_files"].items()),
            "contract_suites": ";".join(f"{k}@{v}" for k, v in self.validation["contract_suites"].items()),
        }
        self.next(self.simulate)

    @step
    def simulate(self):
        """Candidate mixes; a reward model trained on each, scored on gold dev pairs."""
        from hps_core.recipes import routing as steps

        self.simulation = steps.simulate(self._ctx(), self.validation)
        self.next(self.fit_ppm)

    @step
    def fit_ppm(self):
        """Quadratic PPM from tag counts to score, cross-validated and registered."""
        from hps_core.recipes import routing as steps

        self.ppm = steps.fit(self._ctx(), self.validation, self.simulation)
        self.lineage = {**self.lineage, "ppm_version": self.ppm["model_uri"], "ppm_sha256": self.ppm["sha256"]}
        self.next(self.route)

    @step
    def route(self):
        """The best predicted mix at the budget, written as scored JSONL with label_source per record."""
        from hps_core.recipes import routing as steps

        self.routed = steps.route(self._ctx(), self.validation, self.ppm, f"{current.flow_name}/{current.run_id}")
        self.lineage = {**self.lineage, "routed_sha256": self.routed["sha256"]}
        self.next(self.report)

    @card(type="blank", id="routing")
    @step
    def report(self):
        """100 % human vs 100 % AI vs random vs HyPER on held-out gold test pairs."""
        from metaflow.cards import Image, Markdown

        from hps_core.recipes import routing as steps

        self.report_result = steps.report(self._ctx(), self.validation, self.simulation, self.ppm, self.routed)
        current.card["routing"].append(Markdown(scrub_text(self.report_result["markdown"])))
        with open(self.report_result["figure_path"], "rb") as handle:
            current.card["routing"].append(Image(handle.read(), label="PPM fit and label mixes"))
        self.next(self.end)

    @step
    def end(self):
        """Close the MLflow run; tag this Metaflow run with it and the PPM version; say how to run HPS."""
        from metaflow import Run

        from hps_core.tracking.mlflow_tracker import MlflowTracker

        tracker = MlflowTracker(self.tracking_uri, experiment_name=self.resolved_config["run"]["experiment"])
        tracker.set_tags(self.mlflow_parent_run_id, {"ppm_version": self.ppm["model_uri"],
                                                     "routed_path": self.routed["routed_path"],
                                                     "routed_sha256": self.routed["sha256"]})
        tracker.finish_run(self.mlflow_parent_run_id)
        Run(f"{current.flow_name}/{current.run_id}").add_tags(
            [f"mlflow_run:{self.mlflow_parent_run_id}", f"model:{self.ppm['model_uri']}"])
        for name, value in self.report_result["metrics"].items():
            if name.startswith(("routing/acc_", "ppm/cv_")):
                print(f"{name} = {value:.4f}")
        print(f"routed data: {self.routed['routed_path']}\n"
              f"HPS on it:   python flows/hps_flow.py --config config {self.routed['hps_config_path']} run")


if __name__ == "__main__":
    RoutingFlow()
