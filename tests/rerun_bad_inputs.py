"""Re-run the bad inputs of issue 19 and count how each ends: ``python tests/rerun_bad_inputs.py``.

Each must end in an error raised by tkmia itself (ValueError/TypeError naming the argument) or, for
the commands, exit status 2 with one line; a traceback from inside torch or PIL, or a value
returned for an input that has no right answer, is counted. Not collected by pytest (the unit
tests of each case are in test_silent_paths.py, test_relaxation.py and test_grading.py).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import traceback
from pathlib import Path

import torch
from torch import nn

from tkmia import metrics, relaxation
from tkmia.attacks import TkMIA
from tkmia.cli import main as cli

C, K = 6, 2


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, C))


class _EditsInput(nn.Module):
    def __init__(self, edit):
        super().__init__()
        self.net, self.edit = _model(), edit

    def forward(self, x):
        self.edit(x)
        return self.net(x)


class _NoGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _model()

    def forward(self, x):
        with torch.no_grad():
            return self.net(x)


def main() -> int:
    torch.manual_seed(0)
    x, y, s = torch.rand(2, 3, 16, 16), torch.zeros(2, C), torch.zeros(2, C)
    y[:, :4], s[:, 0] = 1, 1
    calls = {
        "one-channel images": lambda: TkMIA(_model(), k=K)(torch.rand(2, 1, 16, 16), y, s),
        "a model that scales its input in place": lambda: TkMIA(_EditsInput(lambda t: t.mul_(0.5)), k=K)(
            x.clone(), y, s),
        "a forward under no_grad": lambda: TkMIA(_NoGrad(), k=K)(x.clone(), y, s),
        "in-place normalisation": lambda: TkMIA(_EditsInput(lambda t: t.sub_(0.5)), k=K)(x.clone(), y, s),
        "lr 1e300": lambda: TkMIA(_model(), k=K, lr=1e300)(x.clone(), y, s),
        "the meta device": lambda: TkMIA(_model().to("meta"), k=K)(x.to("meta"), y.to("meta"), s.to("meta")),
        "a lambda of the wrong shape": lambda: relaxation.atk_variational(torch.rand(3, 5), 2,
                                                                          torch.rand(3, 1)),
        "a specified set outside the labels": lambda: relaxation.tkmia_loss(torch.rand(2, C), y,
                                                                            torch.ones(2, C), K),
        "k out of range": lambda: metrics.precision_at_k(torch.rand(2, C), y, C + 3),
        "labels of the wrong shape": lambda: metrics.map_at_k(torch.rand(2, C), y[:, :3], K),
        "NaN scores": lambda: metrics.ndcg_at_k(torch.full((2, C), float("nan")), y, K),
        "m = 0": lambda: relaxation.average_top_k(torch.rand(2, C), 0),
    }
    scratch = Path(tempfile.mkdtemp(prefix="tkmia-bad-"))
    (scratch / "a_file").write_text("x")
    commands = {
        "tkmia run -p seed nan": ["run", "notebooks/02_measures.ipynb", "-p", "seed", "nan", "--out",
                                  str(scratch / "o")],
        "tkmia run -p seed 1e40": ["run", "notebooks/02_measures.ipynb", "-p", "seed", str(10 ** 40), "--out",
                                   str(scratch / "o")],
        "tkmia run --out a file": ["run", "notebooks/02_measures.ipynb", "--out", str(scratch / "a_file")],
        "tkmia classroom grade --out a file": ["classroom", "grade", str(scratch), "--out",
                                               str(scratch / "a_file")],
    }
    tracebacks = silent = 0
    for name, call in calls.items():
        try:
            value = call()
        except (ValueError, TypeError) as err:
            where = traceback.extract_tb(err.__traceback__)[-1].filename
            ours = "/tkmia/" in where
            tracebacks += not ours
            print(f"{'error' if ours else 'TRACEBACK'}: {name}: {type(err).__name__}: {str(err)[:140]}")
        except Exception as err:  # noqa: BLE001 (what the count is about)
            tracebacks += 1
            print(f"TRACEBACK: {name}: {type(err).__name__}: {err}")
        else:
            silent += 1
            print(f"SILENT: {name}: returned a {type(value).__name__}")
    for name, argv in commands.items():
        printed = io.StringIO()
        with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = cli(argv)
            except BaseException as err:  # noqa: BLE001
                status, tracebacks = f"raised {type(err).__name__}", tracebacks + 1
        lines = printed.getvalue().strip().splitlines()
        tracebacks += status != 2 or len(lines) != 1
        print(f"exit {status}: {name}: {lines[-1][:140] if lines else ''}")
    shutil.rmtree(scratch)
    print(f"{len(calls) + len(commands)} bad inputs: {tracebacks} tracebacks, {silent} silently wrong")
    return int(bool(tracebacks or silent))


if __name__ == "__main__":
    raise SystemExit(main())
