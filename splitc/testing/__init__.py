"""Test fixtures and oracles shipped for users' own tests: the model zoo and whole-graph baselines."""
