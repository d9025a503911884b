"""Progress for long work: an ipywidgets bar inside a notebook, a text line elsewhere."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["progress_reporter"]


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_reporter(label: str) -> Callable[[float], None]:
    """Return ``report(fraction)``; call it with 0..1 as work advances (1 finishes it)."""
    if _in_notebook():
        import ipywidgets as widgets
        from IPython.display import display

        bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description=label,
                                    style={"description_width": "initial"},
                                    layout=widgets.Layout(width="60%"))
        display(bar)

        def report_widget(fraction: float) -> None:
            bar.value = min(1.0, max(0.0, fraction))
            if fraction >= 1.0:
                bar.bar_style = "success"

        return report_widget

    shown = [-1]

    def report_text(fraction: float) -> None:
        percent = int(min(1.0, max(0.0, fraction)) * 100)
        if percent // 10 != shown[0] // 10 or percent == 100:
            shown[0] = percent
            end = "\n" if percent >= 100 else "\r"
            print(f"{label}: {percent:3d} %", end=end, file=sys.stderr, flush=True)

    return report_text
