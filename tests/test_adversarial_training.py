"""Adversarial training as a configuration of train_model (training.Adversary); report.robustness."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tkmia import attacks, report
from tkmia.data import MultiShapes
from tkmia.models import CompactCNN, EfficientNetLite0
from tkmia.selection import GlobalSelection, RandomSelection
from tkmia.training import Adversary, train_model

OPTIONS = {"k": 2, "max_iter": 20, "lr": 5e-2}
SELECTION = RandomSelection(1, 1)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("TKMIA_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def shapes():
    return MultiShapes("train", n_images=64, image_size=32), MultiShapes("val", n_images=16, image_size=32)


def _model(seed: int = 0) -> CompactCNN:
    torch.manual_seed(seed)
    return CompactCNN(num_classes=20, width=4)


def _strip(history):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history]


def _same_history(a, b) -> bool:
    """Equal histories, NaN equal to NaN."""
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(x[k] == y[k] or (math.isnan(x[k]) and math.isnan(y[k])) for k in x)
        for x, y in zip(_strip(a), _strip(b))
    )


def _train(model, train, val, **kw):
    settings = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "progress": False, **kw}
    return train_model(model, train, val, **settings)


def _equal_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_adversary_none_is_the_clean_loop(shapes):
    train, val = shapes
    omitted, none = _model(), _model()
    r1 = _train(omitted, train, val, flip=True, seed=4)
    r2 = _train(none, train, val, flip=True, seed=4, adversary=None)
    assert _equal_weights(omitted, none)
    assert _strip(r1.history) == _strip(r2.history)
    assert "adv_fraction" not in r1.history[0]


def test_the_model_trains_on_the_attacks_images_in_the_ratio(shapes, monkeypatch):
    train, _ = shapes
    model = _model()
    calls = []  # (attacked clean images, result) per batch

    def factory(m):
        attack = attacks.TkMIA(m, **OPTIONS)
        original = attack.__call__

        class Spy(attacks.TkMIA):
            def __call__(self, images, labels, specified, **kw):
                out = original(images, labels, specified, **kw)
                calls.append((images.clone(), out))
                return out

        attack.__class__ = Spy
        return attack

    crafted = []  # (clean batch, mixed batch) per batch
    craft = Adversary.craft

    def spy_craft(self, attack, m, images, labels, generator):
        out = craft(self, attack, m, images, labels, generator)
        crafted.append((images.clone(), out[0].clone()))
        return out

    monkeypatch.setattr(Adversary, "craft", spy_craft)
    seen = []  # what the training steps' forward passes get
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()) if m.training else None)
    ratio = 0.5
    result = _train(model, train, None, adversary=Adversary(factory, SELECTION, ratio=ratio, start_epoch=1))
    n_batches = 64 // 16
    assert len(crafted) == len(calls) == n_batches  # epoch 1 is the warm-up: no attack
    assert len(seen) == 2 * n_batches
    n_adv = 0
    for (clean, mixed), (attacked, res), trained in zip(crafted, calls, seen[n_batches:]):
        assert torch.equal(trained, mixed)
        assert len(attacked) == round(ratio * len(clean))
        rows = [next(i for i in range(len(clean)) if torch.equal(clean[i], a)) for a in attacked]
        assert len(set(rows)) == len(rows)
        expected = clean.clone()
        for j, row in enumerate(rows):
            if res.eligible[j]:
                expected[row] = res.adv_images[j]
                assert not torch.equal(expected[row], clean[row])  # the attack moved it
        assert torch.equal(mixed, expected)
        n_adv += int(res.eligible.sum())
    assert n_adv > 0
    assert result.history[0]["adv_fraction"] == 0.0 and math.isnan(result.history[0]["adv_success"])
    assert result.history[1]["adv_fraction"] == pytest.approx(n_adv / 64)
    successes = sum(int((res.success & res.eligible).sum()) for _, res in calls)
    assert result.history[1]["adv_success"] == pytest.approx(successes / n_adv)


def test_crafting_leaves_batchnorm_and_mode_alone(shapes):
    train, _ = shapes
    model = _model()
    model.train()
    before = copy.deepcopy(model.state_dict())
    adversary = Adversary("tkmia", SELECTION, options=OPTIONS)
    images, labels = train.images[:16], train.labels[:16].float()
    generator = torch.Generator().manual_seed(0)
    _, n_adv, _ = adversary.craft(adversary.build(model), model, images, labels, generator)
    assert n_adv > 0
    assert model.training
    assert any("running_mean" in k for k in before)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # the check can fail: a forward pass in train mode does move the statistics
    model(images)
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_adversarial_training_lowers_the_attacks_success():
    train = MultiShapes("train", n_images=256, image_size=32)
    test = MultiShapes("val", n_images=64, image_size=32)
    clean, robust = _model(), _model()
    settings = {"epochs": 8, "batch_size": 32, "lr": 1e-2, "progress": False}
    train_model(clean, train, **settings)
    adversary = Adversary("tkmia", SELECTION, start_epoch=2, options=OPTIONS)
    history = train_model(robust, train, adversary=adversary, **settings).history
    assert [h["adv_fraction"] for h in history[:2]] == [0.0, 0.0] and history[-1]["adv_fraction"] > 0.3
    labels = test.labels.float()
    tables = {name: report.robustness(m, test.images, labels, {"tkmia": attacks.TkMIA(m, **OPTIONS)},
                                      SELECTION, 2)
              for name, m in (("clean", clean), ("robust", robust))}
    rate = {name: float(t["success_rate"].iloc[0]) for name, t in tables.items()}
    # measured: clean 0.875 (21/24), adversarial 0.60 (12/20)
    assert rate["clean"] >= 0.8
    assert rate["robust"] <= rate["clean"] - 0.2


def test_the_same_seed_gives_the_same_weights(shapes):
    train, val = shapes
    adversary = Adversary("tkmia", SELECTION, ratio=0.5, start_epoch=1, options=OPTIONS)
    a, b, c = _model(), _model(), _model()
    ra = _train(a, train, val, adversary=adversary, seed=1, flip=True)
    rb = _train(b, train, val, adversary=adversary, seed=1, flip=True)
    _train(c, train, val, adversary=adversary, seed=2, flip=True)
    assert _equal_weights(a, b)
    assert _same_history(ra.history, rb.history)
    assert not _equal_weights(a, c)


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, True, "half", float("nan")])
def test_refuses_a_bad_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        Adversary("tkmia", SELECTION, ratio=ratio, options=OPTIONS)


def test_refusals(shapes):
    train, _ = shapes
    with pytest.raises(ValueError, match="start_epoch"):
        Adversary("tkmia", SELECTION, start_epoch=-1, options=OPTIONS)
    with pytest.raises(ValueError, match="start_epoch=2 leaves no adversarial epoch of epochs=2"):
        _train(_model(), train, None, adversary=Adversary("tkmia", SELECTION, start_epoch=2, options=OPTIONS))
    with pytest.raises(ValueError, match="unknown attack method 'pgd'; known methods"):
        Adversary("pgd", SELECTION, options=OPTIONS)
    with pytest.raises(TypeError, match="selection must be a selection scheme"):
        Adversary("tkmia", torch.ones(4, 20), options=OPTIONS)
    with pytest.raises(TypeError, match="attack must be a name"):
        Adversary(3, SELECTION)
    with pytest.raises(ValueError, match="lack 'k'"):
        Adversary("tkmia", SELECTION, options={"max_iter": 5})
    with pytest.raises(ValueError, match="apply to an attack given by name only"):
        Adversary(lambda m: attacks.TkMIA(m, 2), SELECTION, options=OPTIONS)
    other = _model()
    with pytest.raises(ValueError, match="built on the model it is given"):
        _train(_model(), train, None, adversary=Adversary(lambda m: attacks.TkMIA(other, 2), SELECTION))
    frozen, adversary = EfficientNetLite0(4, frozen_blocks=15), Adversary("tkmia", SELECTION, options=OPTIONS)
    with pytest.raises(ValueError, match="adversary and cached_features=True cannot be combined"):
        _train(frozen, train, None, cached_features=True, adversary=adversary)
    with pytest.raises(TypeError, match="adversary must be"):
        _train(_model(), train, None, adversary="tkmia")


def test_robustness_summarises_each_attack(shapes):
    train, _ = shapes
    model = _model()
    _train(model, train, None)
    images, labels = train.images[:32], train.labels[:32].float()
    sel = GlobalSelection([0, 1, 2, 3, 4])
    built = {"b": attacks.TkMIA(model, 2, max_iter=30, lr=1e-1), "a": attacks.KFool(model, 2, max_iter=5)}
    table = report.robustness(model, images, labels, built, sel, 2)
    assert table["method"].tolist() == ["b", "a"]
    for name, attack in built.items():
        res = attack(images, labels, sel)
        row = table.set_index("method").loc[name]
        e, s = res.eligible, res.success
        assert row["n"] == int(e.sum()) > 0 and s.any()
        assert row["success_rate"] == pytest.approx(float(s[e].float().mean()))
        assert row["imperceptible_rate"] == pytest.approx(float(res.imperceptible[e].float().mean()))
        pert = float(res.perturbation_l2_255[s].double().mean())
        assert row["pert_l2_255"] == pytest.approx(pert, rel=1e-6)
    nobody = report.robustness(model, images, torch.zeros_like(labels), built, sel, 2)  # no true label
    assert nobody["n"].tolist() == [0, 0] and nobody["success_rate"].isna().all()
    with pytest.raises(ValueError, match="k=3"):
        report.robustness(model, images, labels, built, sel, 3)
    with pytest.raises(TypeError, match="selection"):
        report.robustness(model, images, labels, built, torch.ones(32, 20), 2)
