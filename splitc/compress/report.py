"""The compile report's compression section: what ``edge.compression`` of the plan says, as printed."""

from __future__ import annotations

from rich.console import Console


def _level(step: dict) -> str:
    level = step.get("level")
    return "—" if level is None else f"{level:.0%}"


def print_compression(console: Console, record: dict, table, show) -> None:
    """The applied rewrites (level, FLOPs saved, measured drop), then why each other one did not apply.

    ``table(title, columns, right)`` and ``show(console, table)`` are the command line's table helpers.
    """
    requested = ",".join(record.get("requested", [])) or "none"
    console.print(f"[bold]Edge compression[/] (--compress {requested}): variant {record['variant']}",
                  highlight=False, soft_wrap=True)
    applied = record.get("applied") or []
    if applied:
        samples = record.get("samples")
        title = f"Applied rewrites (drop of the variant as a whole, measured on {samples} samples)"
        rows = table(title, ["rewrite", "level", "FLOPs saved", "drop", "bound"],
                     right=("level", "FLOPs saved", "drop", "bound"))
        for step in applied:
            rows.add_row(step["rewrite"], _level(step), f"{step['flops_saved']:.0%}", f"{step['drop']:.2%}",
                         f"{step['drop_bound']:.2%}")
        show(console, rows)
        console.print(f"edge FLOPs {record['edge_flops_before']:.3g} -> {record['edge_flops_after']:.3g} "
                      f"({record['flops_saved']:.0%} fewer)", highlight=False)
    for family, reason in (record.get("not_applied") or {}).items():
        console.print(f"{family}: {reason}", highlight=False, soft_wrap=True)
    search = record.get("search") or {}
    if search:
        console.print(f"search: {search['candidates']} (cut, variant) candidates, {search['visited']} within "
                      f"reach of the best, {search['evaluations']} accuracy evaluations", highlight=False)
