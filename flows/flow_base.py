"""What every flow file shares: its ``--config`` parameter, the ``[resources]`` values its decorators read,
and the step context its steps hand to ``hps_core.recipes``.

    config = config_parameter("default.toml", help="...")
    @step_resources
    ... pipeline.train_sft(step_context_of(self), ...)
"""

import os

from metaflow import Config, config_expr, resources

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

# [resources] of the config, read by @resources and @kubernetes_image when Metaflow builds the flow.
IMAGE = config_expr("config.resources.image")
RETRIES = config_expr("config.resources.retries")  # @step_limits: Metaflow @retry / @timeout on every step
TIMEOUT_MINUTES = config_expr("config.resources.timeout_minutes")


def step_resources(step_function):
    """``@resources`` of a step from its ``[resources.<step>]`` table (compare_flow's ``train_method`` reads
    ``train_hps``, expand_flow's ``expand_shard`` reads ``expand``: hps_core.config.schema.RESOURCE_STEP_OF).
    The config parser fills every value a step's table leaves out with the shared ``[resources]`` one."""
    from hps_core.config.schema import RESOURCE_STEP_OF

    name = RESOURCE_STEP_OF.get(step_function.__name__, step_function.__name__)
    return resources(gpu=config_expr(f"config.resources.{name}.gpu"), memory=config_expr(f"config.resources.{name}.memory"),
                     cpu=config_expr(f"config.resources.{name}.cpu"))(step_function)


def nodes_of(flow, step_name: str) -> int:
    """``num_parallel`` of a gang step: its ``[resources.<step>] nodes`` (1 on a laptop by default)."""
    return int(flow.resolved_config["resources"][step_name]["nodes"])


def gang_main(inputs):
    """Node 0's task among a gang's ``inputs`` (the one that saved and published; the others only trained):
    each gang task sets ``self.gang_node = current.parallel.node_index``."""
    return next(task for task in inputs if task.gang_node == 0)


def config_parameter(default_file: str, help: str, parser: str = "hps_core.config.parse_config_text") -> Config:
    """The flow's ``--config config <file.toml>``; ``default_file`` is under flows/configs/, or "embedded" for
    the package's own default (hps_core/config/default.toml). The parser resolves and checks the whole config
    when the flow starts, so unknown keys and bad values stop it there."""
    if default_file == "embedded":
        from hps_core.config import DEFAULT_CONFIG_PATH

        return Config("config", default=str(DEFAULT_CONFIG_PATH), parser=parser, help=help)
    return Config("config", default=os.path.join(CONFIG_DIR, default_file), parser=parser, help=help)


def pipeline_config(flow):
    """The flow's config as a PipelineConfig (hps, compare and expand flows)."""
    from hps_core.config import PipelineConfig

    return PipelineConfig.from_dict(dict(flow.config), source="config")


def step_context_of(flow, sub: str = "", config=None):
    """The StepContext of the running step: the config (``pipeline_config`` unless given), run directory,
    tracker and parent MLflow run; ``sub`` a subdirectory of the run directory."""
    from hps_core.recipes.flow_run import step_context

    return step_context(flow, config if config is not None else pipeline_config(flow), sub)
