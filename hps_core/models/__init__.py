"""Models as the pipeline loads them: ``loading`` (Hugging Face directories, the tiny builder), ``gguf``
(GGUF files converted once), ``sources`` (what a config's model string names), ``reward`` (a reward model
as a scorer)."""
