"""Every bad input of tests/bad_inputs.py gets one named ``etlbench: error:`` line (exit 2) before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from etlbench.cli import main
from tests.bad_inputs import CASES, UNSAFE_HINTS, Case


def _no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("bad input reached training or measurement")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_gets_one_named_line(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ETLBENCH_DATA", raising=False)
    for target in ("etlbench.trial.run_trial", "etlbench.transfer.transfer_baseline",
                   "etlbench.runner.execute.Run.train", "etlbench.runner.execute.Run.measure"):
        monkeypatch.setattr(target, _no_work)
    case.setup(tmp_path)
    try:
        code = main([a.replace("{d}", str(tmp_path)) for a in case.argv])
    except SystemExit as stop:  # the argument parser exits by itself
        code = stop.code
    out, err = capsys.readouterr()
    text = err + out if case.code == 0 else err
    assert code == case.code, text
    if case.code:
        assert err.startswith("etlbench: error: ") and err.count("\n") == 1, err
    for fragment in case.expect:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert not any(hint in text for hint in UNSAFE_HINTS), text
