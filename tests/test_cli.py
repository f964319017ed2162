"""Every command of the ``tkmia`` command line on the tiny profile, and its errors."""

from __future__ import annotations

import pytest

from tkmia.cli import main

pytestmark = pytest.mark.slow

FAST = ["--profile", "tiny", "--n-samples", "4", "--max-iter", "5", "--no-progress"]


def test_attack_prints_a_summary_and_reuses_results(tiny_home, capsys):
    assert main(["attack", "--method", "tkmia", "--scheme", "global", "--k", "2", *FAST]) == 0
    out = capsys.readouterr().out
    assert "epoch" not in out  # --no-progress also silences the victim's training
    assert "success_rate" in out and "tkmia" in out and "records.parquet" in out
    assert main(["attack", "--method", "tkmia", "--scheme", "global", "--k", "2", *FAST]) == 0
    assert capsys.readouterr().out == out  # the stored run is loaded, same table


def test_attack_random_scheme_with_option_and_shard(tiny_home, capsys):
    args = ["attack", "--method", "tkmia", "--scheme", "random", "--k", "3", "--n-pert", "1", "--del-n", "1",
            "--option", "lambda_mode=gradient", "--shard", "0/1", *FAST]
    assert main(args) == 0
    assert "random" in capsys.readouterr().out


def test_experiment_and_report(tiny_home, capsys):
    args = ["experiment", "--methods", "tkmia,kfool", "--schemes", "global", "--ks", "2", *FAST]
    assert main(args) == 0
    assert "kfool" in capsys.readouterr().out
    assert main(["report", str(tiny_home / "results" / "tiny")]) == 0
    out = capsys.readouterr().out
    assert "tkmia" in out and "kfool" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["attack", "--k", "20", *FAST], "k must be in [1, 19]"),
        (["attack", "--scheme", "random", "--k", "2", "--n-pert", "3", *FAST],
         "n_pert must be in [1, k = 2]"),
        (["attack", "--shard", "2/2", *FAST], "shard must look like 'i/n'"),
        (["attack", "--classes", "a,b", *FAST], "--classes must be comma-separated integers"),
        (["attack", "--option", "nonsense", *FAST], "--option must look like NAME=VALUE"),
        (["attack", "--profile", "nope", "--no-progress"], "nope"),
        (["report", "/nonexistent/results"], "no records.parquet under"),
    ],
)
def test_bad_options_give_clear_errors(tiny_home, capsys, args, message):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_unknown_method_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["attack", "--method", "pgd"])
    assert "invalid choice: 'pgd'" in capsys.readouterr().err
