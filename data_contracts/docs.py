"""Great Expectations Data Docs for a contract report, rendered in memory as one HTML page.

GX 1.x builds Data Docs sites from a file-backed context's stores; our contexts are ephemeral (nothing on
disk), so we call the same renderer and page view a docs site uses, on the results we already hold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from data_contracts.runner import ContractReport, _gx


def render_data_docs(report: ContractReport) -> str:
    """One HTML page (GX's validation-result view) per suite, concatenated."""
    _gx()
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    pages = []
    for result in report.gx_results:
        for r in result.results:  # the renderer rejects numpy scalars in observed values
            if r.result and "observed_value" in r.result:
                r.result["observed_value"] = _plain(r.result["observed_value"])
        pages.append(DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result)))
    return "\n".join(pages)


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x
