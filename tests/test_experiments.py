"""The experiment runner: records, resumption, shards, reuse, determinism; and the summaries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tkmia import experiments as ex
from tkmia import report
from tkmia.metrics import MEASURES, measures, topk_indices

C = 8


class TinySet:
    """An in-memory dataset with the embedded dataset's interface (.images, .labels)."""

    def __init__(self, n=48, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, 8, 8, generator=gen)
        self.labels = (torch.rand(n, C, generator=gen) < 0.6).float()
        self.classes = [f"c{i}" for i in range(C)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, C)).eval()


CONFIG = ex.ExperimentConfig(
    profile="tiny", method="tkmia", scheme="global", k=3, classes=(0, 1, 2, 3), lr=0.2, max_iter=25,
    weight_decay=1e-4, n_samples=10, batch_size=3, save_images=100,
)


def go(config=CONFIG, root=None, **kw):
    return ex.run(config, model=tiny_model(), dataset=TinySet(), root=root, progress=False, **kw)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["seconds"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return go(root=tmp_path_factory.mktemp("base"))


def test_one_row_per_first_eligible_sample(baseline):
    records = baseline.records
    assert len(records) == 10
    assert records["sample"].is_unique
    assert list(records["sample"]) == sorted(records["sample"])
    assert records["eligible"].all()
    assert records["success"].any()
    expected = {"clean_topk", "adv_topk", "specified", "pert_l2", "pert_l2_255", "delta_n", "seconds"}
    assert expected <= set(records)


def test_records_agree_with_saved_adversarial_images(baseline):
    saved = ex.load_images(baseline)
    data = TinySet()
    model = tiny_model()
    records = baseline.records.set_index("sample").loc[saved["sample"]]
    with torch.no_grad():
        adv_scores = model(saved["adv"])
    labels = data.labels[saved["sample"]]
    recomputed = measures(adv_scores, labels, 3)
    for m in MEASURES:
        torch.testing.assert_close(torch.tensor(records[f"adv_{m}"].values, dtype=torch.float32),
                                   recomputed[m], atol=1e-5, rtol=0)
    assert records["adv_topk"].map(list).tolist() == topk_indices(adv_scores, 3).tolist()
    l2 = (saved["adv"] - data.images[saved["sample"]]).flatten(1).norm(dim=1)
    torch.testing.assert_close(torch.tensor(records["pert_l2"].values, dtype=torch.float32), l2)


@pytest.mark.parametrize("fail_at", [0, 1, 3])
def test_resume_after_interruption_gives_the_same_table(tmp_path, baseline, monkeypatch, fail_at):
    original = ex.ExperimentConfig.attack
    calls = {"n": 0}

    def flaky(self, model, box=(0.0, 1.0)):
        attack = original(self, model, box)
        inner = attack.__call__

        class Boom(type(attack)):
            def __call__(self_, *args, **kw):
                if calls["n"] == fail_at:
                    calls["n"] += 1
                    raise KeyboardInterrupt("simulated interruption inside a batch")
                calls["n"] += 1
                return inner(*args, **kw)

        attack.__class__ = Boom
        return attack

    monkeypatch.setattr(ex.ExperimentConfig, "attack", flaky)
    with pytest.raises(KeyboardInterrupt):
        go(root=tmp_path)
    monkeypatch.setattr(ex.ExperimentConfig, "attack", original)
    resumed = go(root=tmp_path)
    pd.testing.assert_frame_equal(comparable(resumed.records), comparable(baseline.records))
    saved = ex.load_images(resumed)
    assert sorted(saved["sample"]) == sorted(baseline.records["sample"])


def test_shards_merge_to_the_single_run_table(tmp_path, baseline):
    for i in range(3):
        part = go(root=tmp_path, shard=f"{i}/3")
    assert len(part.records) == 10  # the last shard completes the run
    merged = ex.merge(part.path)
    pd.testing.assert_frame_equal(comparable(merged.records), comparable(baseline.records))


def test_incomplete_shards_cannot_merge(tmp_path):
    part = go(root=tmp_path, shard="0/2")
    assert len(part.records) < 10
    with pytest.raises(ValueError, match="incomplete"):
        ex.merge(part.path)


def test_stored_results_are_reused_and_force_recomputes(tmp_path, monkeypatch):
    first = go(root=tmp_path)

    def forbidden(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(ex.ExperimentConfig, "attack", forbidden)
    again = go(root=tmp_path)
    pd.testing.assert_frame_equal(again.records, first.records)
    with pytest.raises(AssertionError, match="recomputed"):
        go(root=tmp_path, force=True)


def test_stored_run_asked_for_more_saved_images_attacks_those_batches_again(tmp_path, monkeypatch, baseline):
    few = go(dataclasses.replace(CONFIG, save_images=2), root=tmp_path)
    assert len(ex.load_images(few)["sample"]) == 2
    more = go(dataclasses.replace(CONFIG, save_images=7), root=tmp_path)
    assert more.path == few.path
    assert ex.load_images(more)["sample"] == list(more.records["sample"][:7])
    pd.testing.assert_frame_equal(comparable(more.records), comparable(baseline.records))

    def forbidden(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(ex.ExperimentConfig, "attack", forbidden)
    for enough in (7, 5, 0):  # as many or fewer images than stored: the run is reused as it is
        go(dataclasses.replace(CONFIG, save_images=enough), root=tmp_path)


def test_same_seed_same_table_random_scheme(tmp_path):
    config = dataclasses.replace(CONFIG, scheme="random", classes=None, n_pert=2, del_n=1, seed=5)
    a = go(config, root=tmp_path / "a").records
    b = go(config, root=tmp_path / "b").records
    pd.testing.assert_frame_equal(comparable(a), comparable(b))
    assert (a["specified"].map(len) == 2).all() and (a["required"] == 1).all()


def test_config_key_separates_settings():
    assert CONFIG.key("v") != dataclasses.replace(CONFIG, k=2).key("v")
    assert CONFIG.key("v") != CONFIG.key("w")
    assert CONFIG.key("v") == dataclasses.replace(CONFIG, save_images=0).key("v")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ex.ExperimentConfig(method="pgd"), "method must be one of"),
        (lambda: ex.ExperimentConfig(scheme="top"), "scheme must be one of"),
        (lambda: ex.ExperimentConfig(k=-1), "k must be a non-negative int"),
        (lambda: dataclasses.replace(CONFIG, k=8).check(8), r"k must be in \[1, 7\]"),
        (lambda: dataclasses.replace(CONFIG, scheme="random", n_pert=4, del_n=1).check(8), "n_pert must be"),
        (lambda: ex.parse_shard("3/3"), "shard must look like"),
        (lambda: ex.parse_shard("a/b"), "shard must look like"),
        (lambda: go(dataclasses.replace(CONFIG, lr=None)), r"must set \['lr'\]"),
    ],
)
def test_bad_configuration_raises_named_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ----------------------------------------------------------------------------- report


def test_summary_agrees_with_hand_computation():
    rows = []
    for method, succ, pert, dp in [
        ("tkmia", [True, True, False], [2.0, 4.0, 9.0], [0.0, 0.0, -1 / 3]),
        ("tkml_ap_u", [True, False, True], [6.0, 1.0, 8.0], [-1.0, -2 / 3, -1.0]),
    ]:
        for i in range(3):
            row = {"scheme": "global", "k": 3, "method": method, "eligible": True, "success": succ[i],
                   "imperceptible": succ[i] and dp[i] == 0, "pert_l2_255": pert[i], "iterations": i}
            for m in MEASURES:
                row[f"clean_{m}"] = 1.0
                row[f"adv_{m}"] = 1.0 + (dp[i] if m == "precision_at_k" else 0.0)
            rows.append(row)
    rows.append({**rows[0], "eligible": False, "pert_l2_255": 1000.0})  # ignored
    table = report.summarize(pd.DataFrame(rows))
    assert list(table["method"]) == ["tkmia", "tkml_ap_u"]
    first, second = table.iloc[0], table.iloc[1]
    assert first["n"] == 3 and first["success_rate"] == pytest.approx(2 / 3)
    assert first["imperceptible_rate"] == pytest.approx(2 / 3)
    assert first["pert_l2_255"] == pytest.approx(3.0)  # successful only: (2 + 4) / 2
    assert first["delta_precision_at_k"] == pytest.approx(-1 / 9)
    assert second["pert_l2_255"] == pytest.approx(7.0)
    assert second["delta_precision_at_k"] == pytest.approx((-1 - 2 / 3 - 1) / 3)
    assert second["imperceptible_rate"] == 0
    assert first["iterations"] == pytest.approx(1.0)


def test_summary_of_a_real_run(baseline):
    table = report.summarize(baseline.records)
    assert len(table) == 1 and table.loc[0, "n"] == 10
    assert table.loc[0, "success_rate"] == pytest.approx(baseline.records["success"].mean())


def test_load_records_keeps_runs_of_different_settings_apart(tmp_path):
    go(root=tmp_path)
    go(dataclasses.replace(CONFIG, lr=0.05), root=tmp_path)
    records = report.load_records(tmp_path)
    assert set(records["lr"]) == {0.2, 0.05} and records["run"].nunique() == 2
    assert report.varying_settings(records) == ["lr"]
    table = report.summarize(records, by=("scheme", "k", "method", *report.varying_settings(records)))
    assert len(table) == 2 and sorted(table["n"]) == [10, 10]


def test_records_tensors_gives_back_scores_and_masks_as_stored():
    from tkmia.experiments import records_tensors

    records = pd.DataFrame({"clean_scores": [[0.5, -1.0, 2.0], [1.0, 0.0, 0.25]],
                            "adv_scores": [np.array([0.1, 0.2, 0.3]), np.array([3.0, 2.0, 1.0])],
                            "labels": [[0, 2], []], "specified": [[2], []]})
    out = records_tensors(records)
    assert out["clean_scores"].dtype == torch.float64
    assert out["clean_scores"].tolist() == [[0.5, -1.0, 2.0], [1.0, 0.0, 0.25]]
    assert out["adv_scores"][1].tolist() == [3.0, 2.0, 1.0]
    for column in ("labels", "specified"):  # slow definition: 1 where the class is listed
        expected = [[float(c in row) for c in range(3)] for row in records[column]]
        assert out[column].tolist() == expected
    half = records_tensors(records[["adv_scores", "labels"]], torch.float32)
    assert set(half) == {"adv_scores", "labels"} and half["labels"].dtype == torch.float32
    with pytest.raises(ValueError, match="records is empty"):
        records_tensors(records.iloc[:0])
    with pytest.raises(ValueError, match="no clean_scores or adv_scores"):
        records_tensors(records[["labels"]])


class Counting(nn.Module):
    """Wraps a model and counts the images it scores."""

    def __init__(self, model):
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.model(x)


@pytest.mark.parametrize("scheme", ["global", "random"])
def test_a_cached_scan_gives_the_same_plan_without_scoring_again(tmp_path, scheme):
    data = TinySet(n=40)
    config = dataclasses.replace(CONFIG, scheme=scheme, n_pert=2, del_n=1, n_samples=6)
    attack = config.attack(tiny_model(), (0.0, 1.0))
    cache = ex.scan_cache(tmp_path, "victim", "data", attack, "cpu")
    fresh = ex.select_eligible(tiny_model(), data, config, chunk=7)
    first = Counting(tiny_model())
    assert ex.select_eligible(first, data, config, chunk=7, cache=cache) == fresh
    assert first.images > 0 and cache.exists()
    again = Counting(tiny_model())
    assert ex.select_eligible(again, data, config, chunk=7, cache=cache) == fresh
    assert again.images == 0  # every chunk it needed was stored
    # asking for more samples scores only the chunks past the stored ones, then stores them too
    more = dataclasses.replace(config, n_samples=len(data))
    longer = Counting(tiny_model())
    assert ex.select_eligible(longer, data, more, chunk=7, cache=cache) == ex.select_eligible(
        tiny_model(), data, more, chunk=7)
    assert 0 < longer.images <= len(data) - first.images
    assert torch.load(cache, weights_only=True)["scores"].shape == (len(data), C)


def test_scan_cache_names_victim_dataset_and_starting_point(tmp_path):
    model = tiny_model()
    exact = CONFIG.attack(model, (0.0, 1.0))
    reference = dataclasses.replace(CONFIG, options={"parametrisation": "reference"})
    keys = [("v1", "d1", exact, "cpu"), ("v2", "d1", exact, "cpu"), ("v1", "d2", exact, "cpu"),
            ("v1", "d1", reference.attack(model, (0.0, 1.0)), "cpu"),
            ("v1", "d1", CONFIG.attack(model, (0.0, 2.0)), "cpu"), ("v1", "d1", exact, "cuda")]
    paths = {ex.scan_cache(tmp_path, *key) for key in keys}
    assert len(paths) == 6


@pytest.mark.parametrize("damage", ["truncated", "other_dataset", "nan"])
def test_a_damaged_scan_cache_is_scanned_again_with_a_warning(tmp_path, damage):
    data = TinySet(n=40)
    cache = tmp_path / "scan.pt"
    fresh = ex.select_eligible(tiny_model(), data, CONFIG, chunk=7)
    ex.select_eligible(tiny_model(), data, CONFIG, chunk=7, cache=cache)
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:20])
    else:
        payload = torch.load(cache, weights_only=True)
        if damage == "other_dataset":
            payload["n_dataset"] = 41
        else:
            payload["scores"][0, 0] = float("nan")
        torch.save(payload, cache)
    counted = Counting(tiny_model())
    with pytest.warns(UserWarning, match="scan cache .* scanning again"):
        assert ex.select_eligible(counted, data, CONFIG, chunk=7, cache=cache) == fresh
    assert counted.images > 0


def test_runs_of_one_victim_share_its_scan(tmp_path, monkeypatch):
    calls = []
    real = ex.select_eligible

    def spy(*args, **kw):
        calls.append(kw.get("cache"))
        return real(*args, **kw)

    monkeypatch.setattr(ex, "select_eligible", spy)
    go(root=tmp_path)
    go(dataclasses.replace(CONFIG, method="tkml_ap_u"), root=tmp_path)
    assert len(calls) == 2 and calls[0] == calls[1] and calls[0].exists()
    assert calls[0].parent == tmp_path / "_scans"


def test_attack_eligible_attacks_exactly_the_planned_samples_and_stores_nothing(tmp_path, monkeypatch):
    from tkmia.attacks import TkMIA
    from tkmia.experiments import ExperimentConfig, attack_eligible, select_eligible

    monkeypatch.setenv("TKMIA_HOME", str(tmp_path))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 6)).eval()
    with torch.no_grad():  # every image ranks the labels 0, 1, ..., 5
        model[1].weight.mul_(0.01)
        model[1].bias.copy_(torch.tensor([5.0, 4, 3, 2, 1, 0]))
    images = torch.rand(12, 3, 4, 4)
    labels = torch.zeros(12, 6)
    labels[:, :3] = 1.0  # Y = {0, 1, 2}: S = {0} is in the top-1 and |Y| >= 1 + |S|
    labels[::3] = torch.tensor([0.0, 1, 1, 1, 0, 0])  # S = {} : never eligible
    dataset = type("Data", (), {"images": images, "labels": labels, "__len__": lambda self: 12})()
    config = ExperimentConfig(method="tkmia", scheme="global", k=1, n_samples=5, max_iter=20, lr=0.01,
                              weight_decay=1e-4, classes=(0,), options={})
    result, ids = attack_eligible(config, model, dataset, record_history=True)
    assert ids == select_eligible(model, dataset, config) == [1, 2, 4, 5, 7]  # the first 5, in order
    direct = TkMIA(model, 1, max_iter=20, lr=0.01, weight_decay=1e-4, record_history=True)(
        images[ids], labels[ids], config.selection(), ids=torch.tensor(ids))
    assert torch.equal(result.adv_images, direct.adv_images) and torch.equal(result.success, direct.success)
    assert result.eligible.all() and "scores" in result.history
    assert not any(tmp_path.iterdir())  # nothing stored
    none = ExperimentConfig(**{**config.to_dict(), "classes": (5,)})
    with pytest.raises(ValueError, match="no sample of the 12 is eligible for tkmia with k=1"):
        attack_eligible(none, model, dataset)
