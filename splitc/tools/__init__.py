"""Tools above the API: the end-to-end benchmark harness."""
