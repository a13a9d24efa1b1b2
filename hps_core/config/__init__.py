"""One typed configuration for the whole pipeline, at the bottom floor: it imports nothing else of hps_core.

``schema`` (the dataclasses), ``building`` (dicts -> dataclasses, unknown keys are errors), ``checks``
(values and combinations), ``loading`` (TOML files and Metaflow's parser), and the vocabularies the
checks read: ``vocab``, ``methods``, ``rules``, ``eval_specs``, ``compare_spec``, ``lora_check``; and
``metric_names``, the evaluation metrics every floor above writes or reads.
``hps_core.config.parse_config_text`` is the name the flows give Metaflow's ``Config``.
"""

from hps_core.config.building import ConfigError, _build  # noqa: F401
from hps_core.config.loading import DEFAULT_CONFIG_PATH, load_config, parse_config_text  # noqa: F401
from hps_core.config.schema import (  # noqa: F401
    ColumnMappingConfig,
    CompareConfig,
    DataConfig,
    EvalSetConfig,
    EvaluateConfig,
    ExpandConfig,
    LoraConfig,
    ModelConfig,
    PipelineConfig,
    PreferenceTrainConfig,
    RegisterConfig,
    ResourcesConfig,
    RewardModelConfig,
    RunConfig,
    ScheduleConfig,
    SFTConfig,
    TinyModelConfig,
    TrainStageConfig,
)
