"""Data contracts: Great Expectations suites (JSON under suites/) and the code that runs them.

The only package of the project that imports great_expectations (lazily, on first validation).
"""

from data_contracts.runner import (
    ContractReport,
    ContractViolation,
    ExpectationOutcome,
    group_counts,
    load_suite,
    require_valid,
    suite_defaults,
    suite_version,
    validate_canonical,
    validate_table,
)

__all__ = [
    "ContractReport",
    "ContractViolation",
    "ExpectationOutcome",
    "group_counts",
    "load_suite",
    "require_valid",
    "suite_defaults",
    "suite_version",
    "validate_canonical",
    "validate_table",
]
