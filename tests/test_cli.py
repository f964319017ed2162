"""Every command of the ``tkmia`` command line on the tiny profile, and its errors."""

from __future__ import annotations

import pandas as pd
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


# ----------------------------------------------------------------------------- issue 9: one-line errors


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {text!r}"
    assert "Traceback" not in text
    return lines[0]


def fail(capsys, args) -> str:
    assert main(args) == 2
    return one_line(capsys.readouterr().err)


@pytest.fixture()
def own_home(tiny_home, tmp_path, monkeypatch):
    """A TKMIA_HOME of its own, holding a copy of the shared tiny victim and dataset cache."""
    import shutil

    assert main(["train", "--profile", "tiny", "--quiet"]) == 0  # trained once in the shared home
    home = tmp_path / "home"
    for name in ("victims", "multishapes"):
        shutil.copytree(tiny_home / name, home / name)
    monkeypatch.setenv("TKMIA_HOME", str(home))
    return home


def test_no_eligible_sample_is_one_line(tiny_home, capsys):
    line = fail(capsys, ["attack", "--scheme", "random", "--k", "3", "--n-pert", "3", "--del-n", "3", *FAST])
    assert "no sample of test (200 samples) is eligible" in line and "n_pert=3" in line


def test_device_without_cuda_is_one_line(tiny_home, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = fail(capsys, ["attack", "--device", "cuda", *FAST])
    assert "device='cuda'" in line and "CUDA is not available" in line and "--device cpu" in line
    assert "device='cuda'" in fail(capsys, ["train", "--profile", "tiny", "--device", "cuda", "--quiet"])


def test_malformed_profile_yaml_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ndataset:\n  name: multishapes\n   root: null\n")
    line = fail(capsys, ["attack", "--profile", str(path), "--no-progress"])
    assert str(path) in line and "line 4" in line


def test_truncated_victim_checkpoint_names_the_folder(own_home, capsys):
    from tkmia.profiles import load_profile
    from tkmia.victims import victim_dir

    # the tiny profile's own victim (other tests may have cached other victims in the shared home)
    checkpoint = victim_dir(load_profile("tiny")) / "model.pt"
    assert checkpoint.parent.parent == own_home / "victims"
    assert checkpoint.is_file(), sorted(own_home.glob("victims/*"))
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    line = fail(capsys, ["attack", *FAST])
    assert str(checkpoint.parent) in line and "tkmia train --force" in line


def test_truncated_dataset_cache_is_rebuilt(own_home, capsys):
    for cache in own_home.glob("multishapes/*.pt"):
        cache.write_bytes(cache.read_bytes()[:50])
    assert main(["attack", "--k", "2", *FAST]) == 0
    captured = capsys.readouterr()
    assert "success_rate" in captured.out
    assert "dataset cache" in captured.err and "rebuilding it" in captured.err
    assert "Traceback" not in captured.err


def test_damaged_run_files(tiny_home, tmp_path, capsys):
    args = ["attack", "--k", "2", "--batch-size", "2", "--results", str(tmp_path), *FAST]
    assert main(args) == 0
    out = capsys.readouterr().out
    (folder,) = (tmp_path / "tiny").iterdir()
    (folder / "batch_00001.parquet").write_bytes(b"")
    (folder / "records.parquet").write_bytes(b"PAR1")
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out == out  # the same table, batch 1 recomputed
    assert "batch_00001.parquet is unreadable" in captured.err and "recomputing that batch" in captured.err
    (folder / "config.json").write_text("")
    line = fail(capsys, ["report", str(tmp_path)])
    assert str(folder / "config.json") in line and "unreadable" in line


def test_report_csv_into_a_missing_folder(tiny_home, tmp_path, capsys):
    assert main(["attack", "--k", "2", "--results", str(tmp_path), *FAST]) == 0
    capsys.readouterr()
    line = fail(capsys, ["report", str(tmp_path), "--csv", str(tmp_path / "nowhere" / "t.csv")])
    assert "--csv" in line and str(tmp_path / "nowhere") in line
    assert main(["report", str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().startswith("scheme,k,method")


def test_more_samples_than_eligible_runs_all_and_says_how_many(tiny_home, tmp_path, capsys):
    args = ["attack", "--k", "2", "--classes", "5", "--n-samples", "150", "--max-iter", "1", "--no-progress",
            "--batch-size", "32", "--profile", "tiny", "--results", str(tmp_path)]
    assert main(args) == 0
    captured = capsys.readouterr()
    warning = one_line(captured.err)
    assert "n_samples=150 but only" in warning and "attacking those" in warning
    eligible = int(warning.split("but only ")[1].split()[0])
    (folder,) = (tmp_path / "tiny").iterdir()
    assert 0 < eligible < 150 and len(pd.read_parquet(folder / "records.parquet")) == eligible


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--option", "nope=1"], "'nope' is not an option of TkMIA"),
        (["--option", "lambda_mode=bogus"], "lambda_mode must be one of"),
        (["--lr", "nan"], "lr must be a finite number, got nan"),
        (["--lr", "-0.1"], "lr must be > 0, got -0.1"),
        (["--method", "kfool", "--option", "momentum=0.5"], "'momentum' is not an option of KFool"),
    ],
)
def test_bad_settings_stop_before_the_victim_and_write_nothing(tiny_home, tmp_path, capsys, monkeypatch,
                                                                extra, message):
    import tkmia.victims

    def no_victim(*a, **k):
        raise AssertionError("the victim was loaded")

    monkeypatch.setattr(tkmia.victims, "load_victim", no_victim)
    line = fail(capsys, ["attack", *extra, "--results", str(tmp_path), *FAST])
    assert message in line
    assert list(tmp_path.iterdir()) == []


def test_a_shard_that_finishes_first_says_partial(tiny_home, tmp_path, capsys):
    args = ["attack", "--k", "2", "--batch-size", "2", "--results", str(tmp_path), *FAST]
    assert main([*args, "--shard", "0/2"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == ("shard 0/2 done\npartial: 1 of 2 batches; waiting for shards … "
                           "(the last shard to finish writes the table)")
    assert main([*args, "--shard", "1/2"]) == 0
    out = capsys.readouterr().out
    path = out.split("records: ")[1].strip()
    assert path.endswith("records.parquet") and __import__("pathlib").Path(path).exists()


def test_experiment_accepts_shard(tiny_home, tmp_path, capsys):
    args = ["experiment", "--methods", "tkmia,kfool", "--schemes", "global", "--ks", "2", "--batch-size", "2",
            "--results", str(tmp_path), *FAST]
    assert main([*args, "--shard", "1/2"]) == 0
    assert capsys.readouterr().out.startswith("shard 1/2 done\npartial: 2 of 4 batches")
    assert main([*args, "--shard", "0/2"]) == 0
    out = capsys.readouterr().out
    assert "kfool" in out and out.count("records: ") == 2 and "partial" not in out
