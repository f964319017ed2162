"""Training, mAP against sklearn, the victim cache and the train / data commands."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tkmia import cli
from tkmia.data import MultiShapes, load_dataset
from tkmia.models import CompactCNN
from tkmia.profiles import load_profile
from tkmia.training import (
    class_average_precision,
    evaluate,
    mean_average_precision,
    predict,
    train_model,
)
from tkmia.victims import eval_scores, load_victim, victim_dir, victim_key

sklearn_metrics = pytest.importorskip("sklearn.metrics")

TINY = {
    "dataset": {"image_size": 32, "sizes": {"train": 48, "val": 16, "test": 16}},
    "model": {"width": 4},
    "train": {"epochs": 2, "batch_size": 16},
}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("TKMIA_HOME", str(tmp_path / "home"))


@pytest.fixture
def tiny_profile():
    return load_profile("default", name="tiny", **TINY)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(40, 6, generator=g) < 0.4).float()
    labels[0] = 1.0  # every class has a positive
    scores = torch.randn(40, 6, generator=g)
    scores[:, 1] = torch.round(scores[:, 1])  # ties
    ours = class_average_precision(scores, labels)
    theirs = sklearn_metrics.average_precision_score(labels.numpy(), scores.numpy(), average=None)
    assert torch.allclose(ours, torch.as_tensor(theirs, dtype=torch.float64), atol=1e-12)
    assert mean_average_precision(scores, labels) == pytest.approx(float(theirs.mean()))


def test_average_precision_edge_cases():
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    scores = torch.tensor([[3.0, 1.0], [2.0, 2.0], [1.0, 3.0]])
    ap = class_average_precision(scores, labels)
    assert ap[0] == pytest.approx((1 / 2) * 1 + (1 / 2) * (2 / 3))
    assert torch.isnan(ap[1])  # no positive
    assert mean_average_precision(scores, labels) == pytest.approx(float(ap[0]))
    with pytest.raises(ValueError, match="scores"):
        class_average_precision(scores, labels[:2])


def test_tiny_training_run_lowers_the_loss():
    train = MultiShapes("train", n_images=32, image_size=32)
    val = MultiShapes("val", n_images=8, image_size=32)
    model = CompactCNN(20, width=4)
    result = train_model(model, train, val, epochs=4, batch_size=8, lr=1e-2, progress=False)
    assert len(result.history) == 4 and result.seconds > 0
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert 0.0 <= result.history[-1]["val_map"] <= 1.0
    assert not model.training
    metrics = evaluate(model, val, k=3)
    assert metrics["n_images"] == 8 and 0 <= metrics["precision_at_k"] <= 1


def test_training_is_seeded():
    train = MultiShapes("train", n_images=16, image_size=32)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = CompactCNN(20, width=4)
        train_model(model, train, epochs=1, batch_size=8, lr=1e-3, seed=5, flip=True,
                    progress=False)  # fmt: skip
        states.append(model.head.weight.detach().clone())
    assert torch.equal(states[0], states[1])


@pytest.mark.parametrize("kwargs, word", [({"epochs": 0}, "epochs"),
                                          ({"optimizer": "rmsprop"}, "optimizer"),
                                          ({"lr": -1.0}, "lr")])  # fmt: skip
def test_bad_training_arguments(kwargs, word):
    args = {"epochs": 1, "batch_size": 4, "lr": 1e-3} | kwargs
    with pytest.raises(ValueError, match=word):
        train_model(CompactCNN(20, width=4), MultiShapes("val", 4, 32), **args, progress=False)


def test_victim_cache_trains_once_then_loads(tiny_profile, tmp_path):
    model, meta = load_victim(tiny_profile, progress=False)
    folder = victim_dir(tiny_profile)
    assert folder.parent == tmp_path / "home" / "victims"
    assert (folder / "model.pt").is_file() and (folder / "metadata.json").is_file()
    assert meta["key"] == victim_key(tiny_profile) and meta["eval_split"] == "test"
    assert set(meta) >= {"config", "dataset_checksum", "eval", "tkmia_version", "training_seconds"}
    assert len(meta["history"]) == 2 and not model.training
    stamp = (folder / "model.pt").stat().st_mtime_ns
    again, meta2 = load_victim(tiny_profile)
    assert (folder / "model.pt").stat().st_mtime_ns == stamp  # not retrained
    assert meta2 == meta
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), again(x))
    # a different training config is a different victim; the attack section is not part of it
    assert victim_key(tiny_profile.replace(train__epochs=3)) != victim_key(tiny_profile)
    assert victim_key(tiny_profile.replace(attack__k=2)) == victim_key(tiny_profile)


def test_the_victim_keeps_the_scores_its_training_computed_on_the_test_split(tiny_profile):
    model, meta = load_victim(tiny_profile, progress=False)
    test = load_dataset(tiny_profile, "test")
    scores, labels = eval_scores(tiny_profile, test)
    fresh_scores, fresh_labels = predict(model, test)
    assert torch.equal(scores, fresh_scores) and torch.equal(labels, fresh_labels)
    assert meta["eval"]["map"] == pytest.approx(evaluate(model, test, k=3)["map"], abs=0)
    # another split, or another dataset with the same length, has none
    assert eval_scores(tiny_profile, load_dataset(tiny_profile, "val")) is None
    other = load_dataset(tiny_profile.replace(dataset__seed=5), "test")
    assert len(other) == len(test) and eval_scores(tiny_profile, other) is None
    # a damaged file is no answer (the caller scores the split itself)
    (victim_dir(tiny_profile) / "eval_scores.pt").write_bytes(b"broken")
    assert eval_scores(tiny_profile, test) is None


def test_cli_train_and_data_show(tiny_profile, tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_profile.to_dict()))
    assert cli.main(["train", "--profile", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mAP" in out and "training time" in out
    meta = json.loads((victim_dir(tiny_profile) / "metadata.json").read_text())
    assert meta["profile"] == "tiny"
    png = tmp_path / "grid.png"
    assert cli.main(["data", "show", "--profile", str(path), "--n", "4", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["data", "info", "--profile", str(path)]) == 0
    assert "share_4_or_more" in capsys.readouterr().out


def test_cli_reports_a_bad_profile(capsys):
    assert cli.main(["train", "--profile", "imagenet"]) == 2
    assert "imagenet" in capsys.readouterr().err


def test_damaged_checkpoints_name_the_folder(tmp_path):
    from tkmia.training import load_checkpoint, save_checkpoint

    model = CompactCNN(num_classes=20, width=4)
    save_checkpoint(model, tmp_path, {"note": "x"})
    fresh, meta = load_checkpoint(CompactCNN(num_classes=20, width=4), tmp_path)
    assert meta["note"] == "x"
    weights = tmp_path / "model.pt"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(ValueError, match=f"checkpoint in {tmp_path} is unreadable .*delete the folder"):
        load_checkpoint(CompactCNN(num_classes=20, width=4), tmp_path)
    save_checkpoint(model, tmp_path, {"note": "x"})
    with pytest.raises(ValueError, match="does not fit the model"):
        load_checkpoint(CompactCNN(num_classes=20, width=8), tmp_path)


def test_check_device():
    from tkmia.training import check_device

    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu' is not a torch device"):
        check_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available on this machine"):
            check_device("cuda")
    with pytest.raises(ValueError, match="cuda:99"):
        check_device("cuda:99")
