"""Which rows a report stands on: it never averages rows that do not belong together.

Rows of one (experiment, backbone) are one section; within it, only one code version is reported: the newest
(the one whose rows were written last) unless another is asked for, and one row per point (task, method,
compression, seed): the newest, where an edited spec of the same name left older trials at the same point.
Every row left out is counted, with the reason, on the page.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from etlbench.errors import ReportError
from etlbench.results import SCOPE

UNKNOWN = "(unknown)"  # rows written before a column existed


@dataclass(frozen=True)
class Selection:
    """The rows to report, one section per (experiment, backbone), and what was left out and why."""

    sections: list[tuple[tuple[str, str], pd.DataFrame]]
    left_out: list[str]


def select(trials: pd.DataFrame, *, code_version: str | None = None, backbone: str | None = None,
           experiment: str | None = None) -> Selection:
    """Split ``trials`` into sections and keep one code version in each (``code_version``: that one, else the
    newest); ``backbone``/``experiment`` keep only those sections."""
    df = trials.copy()
    for column in (*SCOPE, "code_version"):
        df[column] = df[column].fillna(UNKNOWN).astype(str)
    left_out: list[str] = []
    for column, wanted in (("backbone", backbone), ("experiment", experiment), ("code_version", code_version)):
        if wanted is None:
            continue
        known = sorted(df[column].unique())
        if wanted not in known:
            raise ReportError(f"no rows with {column} {wanted!r}; the database has: {', '.join(known)}")
        dropped = df[df[column] != wanted]
        if len(dropped):
            left_out.append(f"{len(dropped)} row(s) of another {column} than {wanted} ({_counts(dropped, column)}): "
                            f"not selected")
        df = df[df[column] == wanted]
    sections = []
    for key, part in df.groupby(list(SCOPE), sort=True):
        newest = part.sort_values("updated_at").iloc[-1]["code_version"]
        older = part[part["code_version"] != newest]
        if len(older):
            left_out.append(f"{key[0]} on {key[1]}: {len(older)} row(s) of other code "
                            f"({_counts(older, 'code_version')}) left out; reported: code {newest}, the newest "
                            f"(choose another with --code-version)")
        part = part[part["code_version"] == newest].sort_values("updated_at")
        points = ["task", "method", "compression", "seed"]
        repeated = part[part.duplicated(points, keep="last")]  # other trials at the same point: another spec
        if len(repeated):
            left_out.append(f"{key[0]} on {key[1]}: {len(repeated)} row(s) of another spec at a point that a newer "
                            f"row holds (same task, method, compression and seed) left out")
        sections.append((key, part.drop_duplicates(points, keep="last")))
    return Selection(sections, left_out)


def _counts(df: pd.DataFrame, column: str) -> str:
    return ", ".join(f"{value}: {n}" for value, n in df[column].value_counts().sort_index().items())
