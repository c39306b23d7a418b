"""The HTML leaderboard in a real browser: a click on a header sorts that header's own table by that column (the
second table and later ones too) and leaves every other table as it was; and no table has an index column.

The browser is headless Chromium (or Chrome), driven without Python packages: a copy of the page gets a script
that clicks headers when it loads, and ``--dump-dom`` prints the DOM after the clicks. Skipped where no such
browser is installed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from etlbench.results import ResultsStore

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


@dataclass
class Table:
    """One table of a page as text: its header rows, its body rows and how many header cells its body has."""

    head: list[list[str]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    body_th: int = 0

    @property
    def headers(self) -> list[str]:
        return self.head[-1] if self.head else []

    def column(self, header: str) -> list[str]:
        i = self.headers.index(header)
        return [r[i] for r in self.rows]


class _Tables(HTMLParser):
    """Every ``<table>`` of an HTML document, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[Table] = []
        self._part = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append(Table())
        elif tag in ("thead", "tbody"):
            self._part = tag
        elif tag == "tr":
            self._row = []
        elif tag in ("th", "td") and self._row is not None:
            self._cell = []
            self.tables[-1].body_th += tag == "th" and self._part == "tbody"

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            table = self.tables[-1]
            (table.head if self._part == "thead" else table.rows).append(self._row)
            self._row = None
        elif tag in ("thead", "tbody"):
            self._part = ""


def tables(page: str) -> list[Table]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def _trial(task: str, method: str, compression: float | None, seed: int, retention: float,
           status: str = "ok") -> dict:
    jitter = (seed - 1) * 0.01
    reduction = 0.7 if compression is None else 1 - 1 / compression
    row = {"trial_id": f"{task}-{method}-{compression}-{seed}", "task": task, "method": method,
           "compression": compression, "seed": seed, "status": status, "metric": retention + jitter,
           "metric_name": "mae_years" if task == "age" else "accuracy", "higher_is_better": task != "age",
           "baseline_metric": 6.0 if task == "age" else 0.9, "params": 100 * (1 - reduction),
           "macs": 1000 * (1 - reduction), "latency_ms": 10 * (1 - reduction)}
    if status == "ok":
        row |= {"retention": retention + jitter, "compression_achieved": compression, "params_reduction": reduction,
                "macs_reduction": reduction * 0.9, "latency_reduction": reduction * 0.5}
    return {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}


#: Retention per task, method and target; None: the trial failed (or was infeasible, at 64x).
RETENTION = {("age", "a"): {2: 0.90, 8: 0.70}, ("age", "b"): {2: 0.80, 8: 0.75},
             ("age", "c"): {2: 0.50, 8: None, None: 0.95},
             ("gender", "a"): {2: 0.98, 8: 0.40}, ("gender", "b"): {2: 0.80, 8: 0.60, 64: None},
             ("gender", "c"): {2: 0.60, 8: 0.62}}


@pytest.fixture
def page(tmp_path: Path) -> Path:
    """leaderboard.html of two tasks and three methods (three seeds, a failed, an infeasible and a budget-free
    point), whose tables are not already in the order of the columns the tests click."""
    from etlbench.report import write_report

    with ResultsStore(tmp_path / "results.sqlite") as store:
        run = store.start_run({"name": "browser", "seeds": [0, 1, 2], "gpus": 0}, {"cpu": "test cpu",
                                                                                   "torch": "2.14.1+cpu"})
        for (task, method), points in RETENTION.items():
            for compression, retention in points.items():
                status = "ok" if retention is not None else "infeasible" if compression == 64 else "failed"
                for seed in (0, 1, 2) if status == "ok" else (0,):
                    store.put(_trial(task, method, compression, seed, retention or 0.0, status), {}, run)
    write_report(tmp_path, figures=False)
    return tmp_path / "leaderboard.html"


def test_no_table_has_an_index_column(page: Path) -> None:
    """pandas' index (or the name of a pivot's column axis, "target") is never a column of the page."""
    found = tables(page.read_text())
    assert len(found) >= 8
    for table in found:
        assert len(table.head) == 1 and all(table.headers), table.headers  # one header row, every header named
        assert table.body_th == 0  # no index cells in the body
        assert all(len(r) == len(table.headers) for r in table.rows)
    ranking = [t for t in found if "AUC retention" in t.headers]
    assert len(ranking) == 2 and all(t.headers[:2] == ["method", "rank"] for t in ranking)
    assert "torch 2.14.1+cpu (a CPU build)" in page.read_text()


def browser() -> str:
    """A Chromium or Chrome binary (``CHROME_BIN`` first), else the test is skipped."""
    found = [b for b in (os.environ.get("CHROME_BIN"), *BROWSERS) if b and shutil.which(b)]
    if not found:
        pytest.skip(f"no Chromium or Chrome binary found ({', '.join(BROWSERS)}; or set CHROME_BIN)")
    return str(shutil.which(found[0]))


_CLICKS = """<script>
const clickErrors = [];
window.addEventListener('error', e => clickErrors.push(String(e.message)));
try {
  const tables = document.querySelectorAll('table');
  for (const [t, header, times] of CLICKS) {
    const th = Array.from(tables[t].tHead.rows[0].cells).find(c => c.textContent.trim() === header);
    for (let k = 0; k < times; k++) th.click();
  }
} catch (e) { clickErrors.push(String(e)); }
const out = document.createElement('pre');
out.id = 'click-errors';
out.textContent = JSON.stringify(clickErrors);
document.body.appendChild(out);
</script>"""


def clicked(page: Path, clicks: list[tuple[int, str, int]], binary: str) -> list[Table]:
    """The page's tables after clicking, in a headless browser, each (table index, header text, times)."""
    copy = page.with_name(f"clicked-{len(list(page.parent.glob('clicked-*')))}.html")
    copy.write_text(page.read_text().replace("</body>", _CLICKS.replace("CLICKS", json.dumps(clicks)) + "</body>"))
    profile = page.parent / "browser-profile"
    result = subprocess.run([binary, "--headless=new", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
                             "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                             "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "</table>" in result.stdout, result.stderr[-3000:]
    errors = re.search(r'<pre id="click-errors">(.*?)</pre>', result.stdout, re.S)
    assert errors is not None and json.loads(errors.group(1)) == [], errors and errors.group(1)
    return tables(result.stdout)


def _key(cell: str) -> tuple[int, float]:
    """The order the page promises: cells that start with a number by it, then text, then blanks."""
    number = re.match(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", cell, re.I)
    return (0, float(number.group())) if number else (2 if cell == "" else 1, 0.0)


def assert_sorted(before: Table, after: Table, header: str, descending: bool) -> None:
    """``after`` holds ``before``'s rows, whole, in a new order: ``header``'s numbers ascending (descending),
    then its text cells, then its blank cells."""
    assert after.headers == before.headers
    assert sorted(map(tuple, after.rows)) == sorted(map(tuple, before.rows))
    assert after.rows != before.rows, f"{header}: the rows kept their order"
    keys = [_key(c) for c in after.column(header)]
    assert [k[0] for k in keys] == sorted(k[0] for k in keys), after.column(header)
    numbers = [k[1] for k in keys if k[0] == 0]
    assert numbers == sorted(numbers, reverse=descending), after.column(header)


def _index(found: list[Table], header: str, nth: int) -> int:
    return [i for i, t in enumerate(found) if header in t.headers][nth]


def test_a_click_sorts_its_own_table_by_its_column(page: Path) -> None:
    """Clicks on the second table and later ones sort each by the clicked column (numbers like "0.750 ± 0.025"
    or "87.5%" by their value, blanks last, a second click reverses); the first table does not move."""
    binary = browser()
    before = tables(page.read_text())
    headline = _index(before, "runner-up", 0)
    assert headline == 1  # the second table of the page
    age_rank, gender_rank = _index(before, "AUC retention", 0), _index(before, "AUC retention", 1)
    age_points, gender_points = _index(before, "ok/failed/infeasible", 0), _index(before, "ok/failed/infeasible", 1)
    for clicks in ([(headline, "retention", 1), (age_rank, "auto", 1), (gender_points, "retention", 1)],
                   [(gender_rank, "2x", 2), (age_points, "params red.", 2)]):
        after = clicked(page, clicks, binary)
        assert len(after) == len(before)
        for t, header, times in clicks:
            assert_sorted(before[t], after[t], header, descending=times % 2 == 0)
        sorted_tables = {t for t, _, _ in clicks}
        for i, (old, new) in enumerate(zip(before, after, strict=True)):
            if i not in sorted_tables:
                assert (new.headers, new.rows) == (old.headers, old.rows), f"table {i} changed"  # the first too
