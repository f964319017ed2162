"""The silent-wrong and unclear paths of the attack engine and of `tkmia run` (issue 19): each
bad input stops with a message that names the cause, and nothing the caller owns is changed or
deleted."""

from __future__ import annotations

import pytest
import torch
from test_book_runner import _notebook  # the runner tests' toy notebook
from torch import nn

from tkmia.attacks import METHODS, TkMIA, get
from tkmia.book.runner import RUN_MARKER, check_parameters, rerun
from tkmia.cli import main as cli_main
from tkmia.selection import GlobalSelection

C = 6


def _problem(channels: int = 3):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, channels, 8, 8, generator=gen)
    labels = torch.tensor([[1, 1, 1, 1, 1, 0]] * 4, dtype=torch.float32)
    return images, labels


class _Net(nn.Module):
    """A small victim whose forward can misbehave in the ways users' models do."""

    def __init__(self, mode: str = "plain"):
        super().__init__()
        self.mode = mode
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, C))

    def forward(self, x):
        if self.mode == "in_place":
            x.sub_(0.5)  # in-place normalisation
        if self.mode == "no_grad":
            with torch.no_grad():
                return self.body(x)
        if self.mode == "detach":  # the first layer frozen by detaching: weights still attached
            return self.body(x.detach())
        return self.body(x)


@pytest.mark.parametrize("name", METHODS)
def test_one_channel_images_are_refused_with_the_channel_count(name):
    images, labels = _problem(channels=1)
    with pytest.raises(ValueError, match=r"images must have 3 \(RGB\) channels.*got 1"):
        get(name)(_Net(), 2, max_iter=2)(images, labels, GlobalSelection([0, 1]))


@pytest.mark.parametrize("name", METHODS)
def test_a_model_that_edits_its_input_in_place_is_named_and_the_caller_images_stay(name):
    images, labels = _problem()
    before = images.clone()
    with pytest.raises(ValueError, match="model modifies its input in place"):
        get(name)(_Net("in_place"), 2, max_iter=2)(images, labels, GlobalSelection([0, 1]))
    assert torch.equal(images, before)


@pytest.mark.parametrize("name", METHODS)
def test_a_model_under_no_grad_is_named(name):
    images, labels = _problem()
    with pytest.raises(ValueError, match=r"runs under torch.no_grad\(\)"):
        get(name)(_Net("no_grad"), 2, max_iter=2)(images, labels, GlobalSelection([0, 1]))


@pytest.mark.parametrize("name", METHODS)
def test_a_model_that_detaches_its_input_is_named(name):
    images, labels = _problem()
    with pytest.raises(ValueError, match="do not depend on its input through autograd"):
        get(name)(_Net("detach"), 2, max_iter=2)(images, labels, GlobalSelection([0, 1]))


@pytest.mark.parametrize(("option", "value"), [("lr", 1e300), ("weight_decay", 1e300), ("lambda_lr", 1e300)])
def test_a_finite_rate_that_overflows_float32_is_named(option, value):
    images, labels = _problem()
    with pytest.raises(ValueError, match=rf"{option} = 1e\+300 overflows torch.float32"):
        TkMIA(_Net(), 2, max_iter=2, lambda_mode="gradient", **{option: value})(
            images, labels, GlobalSelection([0, 1]))


def test_the_meta_device_is_named_for_images_and_model():
    images, labels = _problem()
    with pytest.raises(ValueError, match="images is on the meta device"):
        TkMIA(_Net(), 2, max_iter=2)(images.to("meta"), labels.to("meta"), GlobalSelection([0, 1]))
    with pytest.raises(ValueError, match="model is on the meta device"):
        TkMIA(_Net().to("meta"), 2, max_iter=2)(images, labels, GlobalSelection([0, 1]))


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("alpha", float("nan"), r"alpha = nan is not allowed \(not a finite number"),
        ("alpha", "nan", r"alpha = 'nan' is not allowed \(not a finite number"),
        ("lrs", [float("inf")], r"not a finite number"),
        ("alpha", 10**400, r"too large for a float"),
        ("k", 2**70, r"too large for a 64-bit integer"),
    ],
)
def test_the_parameter_checker_refuses_nan_infinity_and_huge_numbers(tmp_path, name, value, reason):
    with pytest.raises(ValueError, match=reason):
        check_parameters(_notebook(tmp_path), {name: value})


def test_cli_nan_parameter_is_one_line(tmp_path, capsys):
    source = _notebook(tmp_path / "src")
    assert cli_main(["run", str(source), "-p", "alpha", "nan", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a finite number" in err and "Traceback" not in err


def test_out_an_existing_file_is_one_line_and_the_file_stays(tmp_path, capsys):
    source = _notebook(tmp_path / "src")
    out = tmp_path / "runs.txt"
    out.write_text("mine")
    assert cli_main(["run", str(source), "-p", "k", "2", "--out", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is an existing file" in err
    assert out.read_text() == "mine"


@pytest.mark.parametrize("suffix", ["", "--failed"])
def test_a_folder_with_the_run_name_that_is_no_run_is_never_removed(tmp_path, capsys, suffix):
    source = _notebook(tmp_path / "src", body="print(k)")
    out = tmp_path / "runs"
    theirs = out / f"toy--k=2{suffix}"
    theirs.mkdir(parents=True)
    (theirs / "thesis.tex").write_text("years of work")
    assert cli_main(["run", str(source), "-p", "k", "2", "--out", str(out), "--no-report"]) == 2
    assert "is not a tkmia run folder" in capsys.readouterr().err
    assert (theirs / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in out.iterdir()) == [theirs.name]


def test_a_run_folder_carries_its_marker_and_is_replaced_by_the_next_run(tmp_path):
    source = _notebook(tmp_path / "src", body="print(k)")
    out = tmp_path / "runs"
    first = rerun(source, {"k": 2}, out, report=False, log=lambda _: None)
    assert (first.folder / RUN_MARKER).is_file()
    second = rerun(source, {"k": 2}, out, report=False, log=lambda _: None)
    assert second.folder == first.folder and (second.folder / RUN_MARKER).is_file()
    assert sorted(p.name for p in out.iterdir()) == ["toy--k=2"]


def test_a_run_folder_from_before_the_marker_is_still_recognised(tmp_path):
    """A folder with exactly a run's entries (the notebook, html/) is a run of the same notebook;
    one with anything else beside them is not."""
    source = _notebook(tmp_path / "src", body="print(k)")
    out = tmp_path / "runs"
    old = out / "toy--k=2"
    (old / "html").mkdir(parents=True)
    (old / "toy.ipynb").write_text("{}")
    assert rerun(source, {"k": 2}, out, report=False, log=lambda _: None).folder == old
    assert (old / RUN_MARKER).is_file()
    (old / RUN_MARKER).unlink()
    (old / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a tkmia run folder"):
        rerun(source, {"k": 2}, out, report=False, log=lambda _: None)
    assert (old / "notes.txt").read_text() == "mine"
