"""`videdit eval`: reconstruction, identity and temporal-consistency metrics of a run, with plots.

Heavy modules load lazily: importing this package costs nothing until a function is used.
"""
from __future__ import annotations

from videdit.lazy import lazy_attributes

_LAZY = {
    "EvalSettings": "videdit.evaluate.report",
    "evaluate_run": "videdit.evaluate.report",
    "compare_runs": "videdit.evaluate.report",
    "format_summary": "videdit.evaluate.report",
    "load_metrics": "videdit.evaluate.report",
    "load_models": "videdit.evaluate.report",
    "metrics_to_json": "videdit.evaluate.report",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = list(_LAZY)
