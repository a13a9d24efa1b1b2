"""Data contracts: Great Expectations suites (JSON under suites/) and the code that runs them.

The only package of the project that imports great_expectations (lazily, on first validation).
"""

from data_contracts.canonical import validate_canonical
from data_contracts.checks import group_counts, normalised_text, pair_checks, row_checks
from data_contracts.docs import render_data_docs
from data_contracts.outcome import POLICIES, ContractOutcome, QuarantineLimitExceeded, enforce_contracts
from data_contracts.runner import (
    ContractReport,
    ContractViolation,
    ExpectationOutcome,
    load_suite,
    require_valid,
    suite_defaults,
    suite_version,
    validate_pairwise,
    validate_table,
)

__all__ = [
    "POLICIES",
    "ContractOutcome",
    "ContractReport",
    "ContractViolation",
    "ExpectationOutcome",
    "QuarantineLimitExceeded",
    "enforce_contracts",
    "group_counts",
    "load_suite",
    "normalised_text",
    "pair_checks",
    "render_data_docs",
    "require_valid",
    "row_checks",
    "suite_defaults",
    "suite_version",
    "validate_canonical",
    "validate_pairwise",
    "validate_table",
]
