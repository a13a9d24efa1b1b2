"""HyPER routing (Miranda et al., ACL 2025): which preference annotations need a human, which an AI judge
labels as well. The flow is ``flows/routing_flow.py``; its routed output is an input of ``flows/hps_flow.py``.

Modules: ``config`` (typed config), ``multipref`` (adapter + generated default), ``features`` (tags),
``candidates`` (mixes), ``reward_probe`` (the small reward model), ``ppm`` (performance prediction model),
``route`` (routing rules, routed output), ``report`` (tables, figure, metrics), ``steps`` (what each flow
step does).
"""
