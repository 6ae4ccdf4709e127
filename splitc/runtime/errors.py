"""Errors of the runtime that are about the output directory, not the network."""


class PlanError(ValueError):
    """The output directory or its plan manifest is missing or malformed."""
