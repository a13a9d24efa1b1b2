"""Method comparison (flows/compare_flow.py): several preference methods trained from one SFT checkpoint
on the same groups, evaluated alike, aggregated over seeds into the paper-style table.

``spec``: method entries such as ``"dpo-bt:max_min"`` (torch-free, read by the config check);
``runs``: what one (method, n, seed) branch does; ``aggregate``: means and 95 % intervals over seeds,
the markdown table, the claims check and the plot.
"""
