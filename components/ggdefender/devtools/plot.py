"""`detect replay --plot`: one panel per behavior with its metric, threshold and alarm periods (matplotlib, Agg)."""

from __future__ import annotations

import datetime
from typing import Any

from ggdefender.detect.profile import STATIC


def _numeric(value: Any) -> float:
    """A datapoint as a number: numbers as they are, lists by their size (ports, addresses, strings)."""
    return float(len(value)) if isinstance(value, tuple) else float(value)


def plot(result: Any, out_path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    series = list(result.series.values())
    if not series:
        raise ValueError("the profile has no behaviors to plot")
    fig, axes = plt.subplots(len(series), 1, figsize=(11, 2.6 * len(series) + 0.6), squeeze=False, sharex=True)
    to_dt = lambda t: datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)  # noqa: E731
    end = result.last or 0
    for ax, s in zip(axes[:, 0], series):
        b = s.behavior
        xs = [to_dt(p[0]) for p in s.points]
        ys = [_numeric(p[1]) for p in s.points]
        is_list = b.spec.is_list
        label = f"{'count of ' if is_list else ''}{b.metric}"
        ax.plot(xs, ys, marker=".", linewidth=1, label=label, color="tab:blue")
        bad = [(x, y) for x, y, p in zip(xs, ys, s.points) if p[3]]
        if bad:
            ax.scatter([x for x, _ in bad], [y for _, y in bad], color="tab:red", zorder=3, s=18, label="violating")
        if b.criteria_type == STATIC and not is_list:
            ax.axhline(float(b.threshold), color="tab:orange", linestyle="--", label=f"{b.operator} {b.threshold:g}")
        elif not is_list:
            tx = [to_dt(p[0]) for p in s.points if p[2] is not None]
            th = [p[2] for p in s.points if p[2] is not None]
            if th and isinstance(th[0], tuple):  # ML band
                ax.fill_between(tx, [t[0] for t in th], [t[1] for t in th], color="tab:green", alpha=0.15,
                                step="post", label=f"normal band ({b.confidence})")
            elif th:
                ax.step(tx, th, where="post", color="tab:orange", linestyle="--", label=f"{b.statistic} of history")
        for start, stop, _ in s.alarms:
            ax.axvspan(to_dt(start), to_dt(stop if stop is not None else max(end, start)), color="tab:red",
                       alpha=0.15, label="in alarm" if start == s.alarms[0][0] else None)
        ax.set_title(f"{b.profile}/{b.name}  ({b.criteria_type.lower()})", fontsize=10, loc="left")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=datetime.timezone.utc))
    fig.autofmt_xdate()
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
