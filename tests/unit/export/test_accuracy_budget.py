"""--accuracy-budget: parsing, defaults, checking, and its one-line errors (issue 14, Build 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from export import cli
from export.errors import ExportError
from export.steps.accuracy_budget import AccuracyBudget, BudgetSpecError, parse_spec


def test_a_spec_parses_every_metric() -> None:
    assert parse_spec("top1-drop=0.5") == {"top1-drop": 0.5}
    assert parse_spec(" cosine-mean=0.99, cosine-min=0.95 ,max-abs=0.05") == {
        "cosine-mean": 0.99, "cosine-min": 0.95, "max-abs": 0.05}


@pytest.mark.parametrize("spec, fragment", [
    ("top1-drop", "expected metric=value"),
    ("=0.5", "expected metric=value"),
    ("accuracy=0.5", "unknown metric 'accuracy'"),
    ("top1-drop=x", "expected a number"),
    ("top1-drop=-1", "between 0 and 100"),
    ("cosine-mean=1.5", "between -1 and 1"),
    ("cosine-min=nan", "between -1 and 1"),
    ("max-abs=-0.1", "between 0 and inf"),
    ("top1-drop=1,top1-drop=2", "given twice"),
    ("top1-drop=1,", "expected metric=value"),
])
def test_a_bad_spec_is_one_line(spec: str, fragment: str) -> None:
    with pytest.raises(BudgetSpecError, match=fragment) as error:
        parse_spec(spec)
    assert "\n" not in str(error.value)


def test_defaults_depend_on_labels() -> None:
    assert AccuracyBudget.resolve(None, has_labels=True).as_report() == {"top1_drop": 1.0}
    assert AccuracyBudget.resolve(None, has_labels=False).as_report() == {"cosine_mean": 0.99, "cosine_min": 0.95}
    assert str(AccuracyBudget.resolve({"top1-drop": 0.5}, has_labels=True)) == "top1-drop=0.5"


def test_top1_drop_without_labels_is_refused_in_one_line() -> None:
    with pytest.raises(ExportError, match="top1-drop needs labelled evaluation data") as error:
        AccuracyBudget.resolve({"top1-drop": 0.5}, has_labels=False)
    assert "\n" not in str(error.value)
    assert AccuracyBudget.resolve({"cosine-mean": 0.9}, has_labels=False).limits == {"cosine-mean": 0.9}


def test_check_lists_each_violation() -> None:
    budget = AccuracyBudget({"top1-drop": 0.5, "cosine-mean": 0.99, "cosine-min": 0.95, "max-abs": 0.1})
    within = {"top1_drop": 0.5, "cosine_mean": 0.99, "cosine_min": 0.96, "max_abs": 0.01}
    assert budget.check(within) == []  # limits are inclusive
    broken = {"top1_drop": 0.6, "cosine_mean": 0.98, "cosine_min": 0.96, "max_abs": 0.2}
    assert budget.check(broken) == ["top1-drop 0.6 > 0.5", "cosine-mean 0.98 < 0.99", "max-abs 0.2 > 0.1"]
    assert budget.check({"cosine_mean": 1.0}) == ["top1-drop: not measured", "cosine-min: not measured",
                                                  "max-abs: not measured"]
    assert budget.check({"top1_drop": float("nan"), "cosine_mean": 1, "cosine_min": 1, "max_abs": 0}) == [
        "top1-drop: not measured"]


@pytest.mark.parametrize("args, flag", [
    (["--accuracy-budget", "top1-drop=lots"], "--accuracy-budget"),
    (["--accuracy-budget", "speed=1"], "--accuracy-budget"),
    (["--max-trials", "-1"], "--max-trials"),
    (["--max-trials", "many"], "--max-trials"),
])
def test_cli_flags_are_checked_at_parse_time(args: list, flag: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--model", "digits-cnn", "--config", "c.yaml", "--key", "k", "--out", str(tmp_path / "b"), *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-export: error: ") and flag in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_cli_passes_the_budget_trials_and_eval_data_on(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(["--model", "m.onnx", "--config", "c.yaml", "--key", "k", "--out", "o",
                                          "--accuracy-budget", "cosine-min=0.9", "--max-trials", "0",
                                          "--eval-data", str(tmp_path)])
    assert args.accuracy_budget == {"cosine-min": 0.9} and args.max_trials == 0 and args.eval_data == tmp_path
    defaults = cli.build_parser().parse_args(["--model", "m.onnx", "--config", "c.yaml", "--key", "k", "--out", "o"])
    assert defaults.accuracy_budget is None and defaults.max_trials == 12 and defaults.eval_data is None
