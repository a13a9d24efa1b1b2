"""Evaluation: ``generation`` (sampling), ``metrics`` (reward, harm, BLEU, margins, intervals),
``harm_judge``, ``bleu``, ``plots``, ``report`` (one evaluation run, logged), ``comparison`` (methods over
seeds)."""
