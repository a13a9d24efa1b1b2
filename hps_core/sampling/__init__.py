"""Preference groups and hard negatives: ``hardness`` (q ∝ exp(gamma * score), rules, gamma schedules),
``groups`` (one ranked group per prompt, negatives per epoch), ``negatives`` (the configured draws)."""
