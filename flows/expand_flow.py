"""Response expansion: prompts with fewer than K responses get K candidates from a generator model, scored by
the reward model, sharded over a foreach; the expanded file then passes the data contracts like any input.

Run as:
    python flows/expand_flow.py --config config <config.toml> run \\
        --generator <causal LM dir or hub id> --reward-model <reward model dir or hub id> --k 8 --shards 4 \\
        --out expanded.jsonl

start -> validate (the input, contracts) -> plan ─(foreach shard)─> expand_shard -> merge (contracts again) -> end

The config's ``[data]`` names the input (any format the loader reads); ``[model]`` its lengths; ``[evaluate]``
the sampling (temperature, top_p, max_new_tokens, batch_size); ``[reward_model]`` the reward model's head.
The output is scored JSONL (``hps_core.data.scored_jsonl``): use it as ``data.source`` of hps_flow or
compare_flow. ``hps_core/recipes/expansion.py`` holds the logic.
"""


import flow_env  # noqa: F401  (flows/: user, offline hub, secrets kept out of the logs)
from hps_core.common.redaction import scrub_text  # noqa: E402

from flow_base import IMAGE, RETRIES, TIMEOUT_MINUTES, config_parameter, pipeline_config, step_context_of, step_resources  # noqa: E402  (flows/: config parameter, resources, step context)
from kubernetes_image import kubernetes_image  # noqa: E402
from metaflow import FlowSpec, Parameter, card, current, retry, step  # noqa: E402
from mlflow_failures import mark_mlflow_failures  # noqa: E402
from step_limits import step_limits  # noqa: E402  (flows/: [resources] retries / timeout_minutes)


@kubernetes_image(IMAGE)
@step_limits(RETRIES, TIMEOUT_MINUTES)
@mark_mlflow_failures
class ExpandFlow(FlowSpec):
    """Multi-response groups from few-response data: generate, score, validate."""

    config = config_parameter("embedded", help="TOML config: [data] the input, [model] lengths, [evaluate] sampling, [reward_model] head.")
    generator = Parameter("generator", required=True, help="causal LM that samples the new candidates (dir or hub id)")
    reward_model_path = Parameter("reward-model", required=True, help="reward model that scores them (dir or hub id)")
    k = Parameter("k", default=8, type=int, help="responses per prompt after expansion (prompts with fewer are expanded)")
    shards = Parameter("shards", default=4, type=int, help="foreach width: each shard is one task (one pod on a cluster)")
    out = Parameter("out", default="expanded.jsonl", help="where the merged scored JSONL goes")
    rescore = Parameter("rescore", default=True, type=bool,
                        help="score every response of an expanded group with the reward model (one scale), not only the new ones")

    def _ctx(self, sub: str = ""):
        return step_context_of(self, sub)

    @step
    def start(self):
        """Resolve the config, open the MLflow parent run."""
        from pathlib import Path

        from hps_core.recipes.flow_run import open_run

        if self.k < 2:
            raise ValueError(f"--k {self.k}: a preference group needs at least 2 responses; use --k 2 or more")
        from hps_core.models.sources import check_model_source

        cfg = pipeline_config(self)
        sources = {**check_model_source("--generator", self.generator, tag="generator"),
                   **check_model_source("--reward-model", self.reward_model_path, tag="reward_model")}
        self.out_path = str(Path(self.out).resolve())
        expand = {"generator": self.generator, "reward_model": self.reward_model_path, "k": self.k,
                  "shards": self.shards, "rescore": self.rescore, "out": self.out_path}
        for name, value in open_run(cfg, flow_name=current.flow_name, run_id=current.run_id,
                                    run_name=f"expand-{current.run_id}", digest_config=False,
                                    extra_params={"expand": expand}).items():
            setattr(self, name, value)
        self.lineage = {**self.lineage, **sources}  # e.g. generator_sha256 of a GGUF generator
        self.next(self.validate)

    @retry(times=0)  # a broken data contract is not transient: fail once, at once
    @step
    def validate(self):
        """The input through the loader and the data contracts."""
        from hps_core.recipes import hps as pipeline

        self.validation = pipeline.validate(self._ctx("input"))
        self.next(self.plan)

    @step
    def plan(self):
        """One row per prompt (which ones need expansion), cut into shards."""
        import pandas as pd

        from hps_core.recipes.expansion import groups_to_expand, shard_prompts
        from hps_core.tracking.handoff import local

        ctx = self._ctx()
        groups = groups_to_expand(pd.read_parquet(local(ctx, self.validation["canonical"])), self.k)
        path = ctx.path("expansion", "groups.parquet")
        groups.to_parquet(path, index=False)
        self.groups_path = str(path)
        self.shard_ranges = [{"index": i, "start": a, "stop": b} for i, (a, b) in enumerate(shard_prompts(len(groups), self.shards))]
        print(f"{int(groups['expand'].sum())} of {len(groups)} prompts have fewer than {self.k} responses; "
              f"{len(self.shard_ranges)} shard(s)")
        self.next(self.expand_shard, foreach="shard_ranges")

    @step_resources
    @step
    def expand_shard(self):
        """Generate and score this shard's prompts (batched); its JSONL is handed on by reference."""
        import pandas as pd

        from hps_core.recipes.expansion import expand_groups, write_jsonl
        from hps_core.tracking.handoff import publish

        ctx, shard = self._ctx(), self.input
        groups = pd.read_parquet(self.groups_path).iloc[shard["start"]:shard["stop"]].reset_index(drop=True)
        from hps_core.models.sources import materialize

        generator = materialize(self.generator, ctx.cache_dir / "models", "--generator")
        reward_model = materialize(self.reward_model_path, ctx.cache_dir / "models", "--reward-model")
        records = expand_groups(groups, generator, reward_model, ctx.cfg, k=self.k,
                                seed=ctx.cfg.run.seed, rescore=self.rescore)
        path = write_jsonl(records, ctx.path("expansion", f"shard_{shard['index']:04d}.jsonl"))
        with ctx.child(f"expand_shard_{shard['index']}") as run_id:
            self.shard_file = publish(ctx, run_id, path, f"shard_{shard['index']:04d}")
        self.shard = shard
        self.next(self.merge)

    @card(type="blank", id="contracts")
    @step
    def merge(self, inputs):
        """Shards concatenated in prompt order; the expanded file through the same contracts as any input."""
        import dataclasses

        import pandas as pd
        from metaflow.cards import Markdown

        from hps_core.recipes import hps as pipeline
        from hps_core.recipes.expansion import expansion_stats, merge_shards
        from hps_core.tracking.handoff import local

        self.merge_artifacts(inputs, include=["resolved_config", "run_dir", "tracking_uri", "lineage", "mlflow_parent_run_id",
                                              "out_path", "groups_path"])
        ctx = self._ctx()
        ordered = sorted(inputs, key=lambda inp: inp.shard["index"])
        merged = merge_shards([local(ctx, inp.shard_file) for inp in ordered], self.out_path)
        expanded_ctx = self._ctx("expanded")
        cfg = expanded_ctx.cfg
        expanded_ctx = dataclasses.replace(expanded_ctx, cfg=dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, source=str(merged), format="scored-jsonl")))
        self.expanded_validation = pipeline.validate(expanded_ctx)
        import json

        records = [json.loads(line) for line in merged.read_text(encoding="utf-8").splitlines() if line.strip()]
        self.stats = expansion_stats(pd.read_parquet(self.groups_path), records, self.k)
        with ctx.child("expand_merge") as run_id:
            ctx.tracker.log_metrics(run_id, {f"expansion/{k}": v for k, v in self.stats.items()})
            ctx.tracker.log_artifact(run_id, str(merged), "expansion")
        current.card["contracts"].append(Markdown(scrub_text(
            "# Expanded data\n\n" + "\n".join(f"- {k}: {v:g}" for k, v in self.stats.items()) + "\n\n"
            + self.expanded_validation["report_markdown"])))
        print(f"expanded file: {merged} ({self.stats})")
        self.next(self.end)

    @step
    def end(self):
        from hps_core.tracking.mlflow_tracker import MlflowTracker

        MlflowTracker(self.tracking_uri, experiment_name=self.resolved_config["run"]["experiment"]).finish_run(self.mlflow_parent_run_id)


if __name__ == "__main__":
    ExpandFlow()
