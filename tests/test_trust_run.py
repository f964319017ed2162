"""Results a researcher can trust (issue 9, run store and command line): the run key, re-planning,
eligibility on the attack's starting point, settings checked before any work, runs never pooled,
numpy inputs, and one-line errors."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from test_experiments import CONFIG, TinySet, comparable, go, tiny_model

from tkmia import experiments as ex
from tkmia import report
from tkmia.profiles import load_profile


def run_folders(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_dir() and p.parent != root)


# ----------------------------------------------------------------------------- the run key

FAST = dataclasses.replace(CONFIG, n_samples=3, max_iter=3, save_images=0)
RANDOM = dataclasses.replace(FAST, scheme="random", classes=None, n_pert=2, del_n=1, seed=0)

CHANGES = {
    "k": dict(config=dataclasses.replace(FAST, k=2)),
    "classes": dict(config=dataclasses.replace(FAST, classes=(0, 1, 2))),
    "lr": dict(config=dataclasses.replace(FAST, lr=0.1)),
    "max_iter": dict(config=dataclasses.replace(FAST, max_iter=2)),
    "weight_decay": dict(config=dataclasses.replace(FAST, weight_decay=2e-4)),
    "n_samples": dict(config=dataclasses.replace(FAST, n_samples=2)),
    "batch_size": dict(config=dataclasses.replace(FAST, batch_size=2)),
    "options": dict(config=dataclasses.replace(FAST, options={"lambda_mode": "gradient"})),
    "method": dict(config=dataclasses.replace(FAST, method="ml_cw_u")),
    "profile": dict(config=dataclasses.replace(FAST, profile="other")),
    "box": dict(box=(-0.5, 1.5)),
    "victim": dict(model="other"),
    "dataset": dict(dataset=TinySet(seed=1)),
    "seed (random)": dict(config=dataclasses.replace(RANDOM, seed=1), base=RANDOM),
    "n_pert (random)": dict(config=dataclasses.replace(RANDOM, n_pert=3), base=RANDOM),
    "del_n (random)": dict(config=dataclasses.replace(RANDOM, del_n=2), base=RANDOM),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_each_run_key_field_changed_alone_forces_a_recompute(tmp_path, monkeypatch, name):
    change = CHANGES[name]
    base = change.get("base", FAST)
    first = ex.run(base, model=tiny_model(), dataset=TinySet(), root=tmp_path, progress=False)
    calls = []
    original = ex.ExperimentConfig.attack
    monkeypatch.setattr(ex.ExperimentConfig, "attack",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    model = tiny_model()
    if change.get("model") == "other":
        with torch.no_grad():
            model[-1].bias.add_(0.01)
    second = ex.run(change.get("config", base), model=model, dataset=change.get("dataset", TinySet()),
                    root=tmp_path, progress=False, box=change.get("box"))
    assert second.path != first.path and calls, f"changing {name} reused the stored run"
    # and nothing changed: the stored run is reused
    calls.clear()
    again = ex.run(base, model=tiny_model(), dataset=TinySet(), root=tmp_path, progress=False)
    assert again.path == first.path and not calls


def test_kfool_key_leaves_out_the_optimiser_it_does_not_use():
    kfool = dataclasses.replace(CONFIG, method="kfool")
    assert kfool.key("v") == dataclasses.replace(kfool, lr=0.01, weight_decay=0.5).key("v")
    assert CONFIG.key("v") != dataclasses.replace(CONFIG, lr=0.01).key("v")
    with pytest.raises(ValueError, match="'momentum' is not an option of KFool"):
        dataclasses.replace(kfool, options={"momentum": 0.5}).validate()


@pytest.mark.slow
def test_split_and_profile_dataset_section_are_in_the_key(tiny_home, tmp_path):
    profile = tmp_path / "mine.yaml"
    text = (load_profile("tiny").to_dict())
    config = ex.ExperimentConfig(profile=str(profile), k=2, n_samples=2, max_iter=2)
    paths = []
    for dataset in ({}, {"eval_split": "val"}, {"root": str(tmp_path / "cache")}):
        data = json.loads(json.dumps(text))
        data["dataset"].update(dataset)
        profile.write_text(json.dumps(data))  # JSON is YAML
        paths.append(ex.run(config, progress=False).path)
    assert len(set(paths)) == 3


# ----------------------------------------------------------------------------- the plan


def test_force_replans(tmp_path):
    first = go(root=tmp_path)
    (first.path / "eligible.json").write_text(json.dumps({"samples": [1, 2], "n_dataset": 48}))
    (first.path / "records.parquet").unlink()
    redone = go(root=tmp_path, force=True)
    pd.testing.assert_frame_equal(comparable(redone.records), comparable(first.records))


class Renamed(TinySet):
    """A dataset whose checksum does not follow its contents (a stale cache, a reused name)."""

    checksum = "same-name"


def test_resume_checks_the_plan_against_the_dataset(tmp_path):
    part = ex.run(CONFIG, model=tiny_model(), dataset=Renamed(48), root=tmp_path, shard="0/2", progress=False)
    assert not part.complete
    with pytest.raises(ValueError, match=r"made for another dataset \(n_dataset=48.*has 40 samples"):
        ex.run(CONFIG, model=tiny_model(), dataset=Renamed(40), root=tmp_path, progress=False)


# ----------------------------------------------------------------------------- eligibility


class Counting(TinySet):
    """No ``.images`` attribute: samples are decoded one by one through ``__getitem__``."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self._images, self.fetched = self.images, []
        del self.images

    def __len__(self):
        return len(self._images)

    def __getitem__(self, i):
        self.fetched.append(int(i))
        return self._images[i], self.labels[i]


def test_eligibility_is_judged_on_the_attack_starting_point_and_each_image_is_decoded_once(tmp_path):
    config = dataclasses.replace(CONFIG, n_samples=48, options={"parametrisation": "reference"})
    data, model = Counting(seed=1), tiny_model()
    found = ex.select_eligible(model, data, config)
    assert sorted(data.fetched) == list(range(48))  # each image once
    images, labels = data._images, data.labels
    start = config.attack(model).starting_point(images)
    with torch.no_grad():
        on_start = config.selection().select(model(start), labels, 3).eligible
        on_x = config.selection().select(model(images), labels, 3).eligible
    assert found == on_start.nonzero().flatten().tolist()
    assert not torch.equal(on_start, on_x)  # the case where judging on x was wrong
    # the run attacks exactly the planned samples, and the attack agrees they are eligible
    out = ex.run(dataclasses.replace(config, n_samples=10), model=model, dataset=TinySet(seed=1),
                 root=tmp_path, progress=False)
    assert out.records["eligible"].all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_model_fingerprint_in_half_precision(dtype):
    model = tiny_model()
    half = tiny_model().to(dtype)
    assert ex.model_fingerprint(half) == ex.model_fingerprint(tiny_model().to(dtype))
    assert ex.model_fingerprint(half) != ex.model_fingerprint(model)
    other = tiny_model().to(dtype)
    with torch.no_grad():
        other[0].weight[0, 0, 0, 0] += 1
    assert ex.model_fingerprint(other) != ex.model_fingerprint(half)


# ----------------------------------------------------------------------------- no work on bad settings


@pytest.mark.parametrize(
    "change, match",
    [
        ({"options": {"nope": 1}}, "'nope' is not an option of TkMIA"),
        ({"options": {"lambda_mode": "bogus"}}, "lambda_mode must be one of"),
        ({"options": {"lr": 0.1}}, "'lr' is a setting of its own"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"device": "cuda:99"}, "cuda:99"),
        ({"device": "gpu"}, "not a torch device"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(tmp_path, change, match):
    with pytest.raises((ValueError, TypeError), match=match):
        go(dataclasses.replace(CONFIG, **change), root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_no_eligible_sample_is_a_clear_error_and_writes_nothing(tmp_path):
    data = TinySet()
    data.labels.zero_()
    with pytest.raises(ValueError, match="no sample of the dataset .48 samples. is eligible"):
        ex.run(CONFIG, model=tiny_model(), dataset=data, root=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_fewer_eligible_than_n_samples_runs_them_all_and_says_how_many(tmp_path):
    eligible = len(ex.select_eligible(tiny_model(), TinySet(), dataclasses.replace(CONFIG, n_samples=48)))
    with pytest.warns(UserWarning, match=f"n_samples=48 but only {eligible} samples"):
        out = go(dataclasses.replace(CONFIG, n_samples=48), root=tmp_path)
    assert len(out.records) == eligible < 48


# ----------------------------------------------------------------------------- numpy and YAML inputs


def test_numpy_integers_and_arrays_are_accepted():
    config = ex.ExperimentConfig(
        profile="tiny", k=np.int64(3), classes=np.array([0, 1, 2, 3]), lr=np.float64(0.2),
        max_iter=np.int32(25), weight_decay=np.float64(1e-4), n_samples=np.int64(10), batch_size=np.int16(3),
        save_images=np.int64(100),
    )
    assert config == CONFIG and config.key("v") == CONFIG.key("v")
    assert type(config.k) is int and config.classes == (0, 1, 2, 3)
    assert ex.parse_shard(np.array([1, 3])) == (1, 3)
    configs = ex.grid_configs("tiny", methods=["tkmia"], schemes=["global"], ks=np.array([2, 3]))
    assert [c.k for c in configs] == [2, 3]
    with pytest.raises(TypeError, match="classes must be an int, got 0.7"):
        ex.ExperimentConfig(classes=[0.7, 1.2])
    assert load_profile("tiny", attack__k=np.int64(2), attack__box=np.array([0.0, 1.0])).attack.k == 2


def test_yaml_numbers_without_a_dot_are_floats_and_bad_types_name_key_and_file(tmp_path):
    text = (load_profile("tiny").to_dict())
    path = tmp_path / "p.yaml"
    import yaml

    raw = yaml.safe_dump(text).replace("lr: 0.0005", "lr: 5e-4")
    assert "lr: 5e-4" in raw
    path.write_text(raw)
    assert load_profile(path).attack.lr == 5e-4
    path.write_text(raw.replace("lr: 5e-4", "lr: fast"))
    with pytest.raises(TypeError, match=r"p.yaml.*attack.lr='fast': expected a number"):
        load_profile(path)
    path.write_text("name: x\ndataset: [unclosed\n")
    with pytest.raises(ValueError, match=r"p.yaml' is not valid YAML at line 3"):
        load_profile(path)


# ----------------------------------------------------------------------------- reports never pool


def test_records_carry_their_settings_and_reports_never_pool(tmp_path):
    go(dataclasses.replace(CONFIG, lr=1e-5), root=tmp_path)
    go(dataclasses.replace(CONFIG, lr=2e-5), root=tmp_path)
    go(dataclasses.replace(CONFIG, lr=1e-5, batch_size=5), root=tmp_path)
    ex.run(dataclasses.replace(CONFIG, lr=1e-5), model=tiny_model(), dataset=TinySet(), root=tmp_path,
           progress=False, box=(-0.5, 1.5))
    records = report.load_records(tmp_path)
    assert set(ex.SETTING_COLUMNS) <= set(records)
    table = report.summarize(records)
    assert len(table) == 4 and (table["n"] == 10).all()
    assert {"lr", "batch_size", "box"} <= set(table) and "weight_decay" not in table
    text = report.format_table(table)
    assert "1e-05" in text and "2e-05" in text
    # records from run() carry the same columns, so a concatenation in memory does not pool either
    one = go(dataclasses.replace(CONFIG, lr=1e-5), root=tmp_path).records
    two = go(dataclasses.replace(CONFIG, lr=2e-5), root=tmp_path).records
    assert len(report.summarize(pd.concat([one, two]))) == 2


# ----------------------------------------------------------------------------- damaged run files


def test_damaged_batch_and_table_files_are_recomputed(tmp_path):
    first = go(root=tmp_path)
    (first.path / "batch_00001.parquet").write_bytes(b"PAR1 truncated")
    (first.path / "batch_00002.parquet").write_bytes(b"")
    (first.path / "records.parquet").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = go(root=tmp_path)
    pd.testing.assert_frame_equal(comparable(again.records), comparable(first.records))
    assert sum("recomputing that batch" in str(w.message) for w in caught) == 2
    (first.path / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json is unreadable"):
        ex.load_results(first.path)
    with pytest.warns(UserWarning, match="config.json is unreadable; rebuilding the run's table"):
        assert len(go(root=tmp_path).records) == 10  # a run rewrites it


def test_shard_from_env():
    assert ex.shard_from_env({}) is None
    assert ex.shard_from_env({"RANK": "1", "WORLD_SIZE": "3"}) == (1, 3)
    assert ex.shard_from_env({"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}) == (0, 2)
    assert ex.shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    with pytest.raises(ValueError, match="RANK='x'"):
        ex.shard_from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_a_shard_under_torchrun_env_runs_its_batches_only(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    part = go(root=tmp_path)
    assert part.batches == (2, 4) and not part.complete
    assert not (part.path / "records.parquet").exists()
    monkeypatch.setenv("RANK", "0")
    whole = go(root=tmp_path)
    assert whole.complete and len(whole.records) == 10


def test_identity_of_datasets():
    assert ex.dataset_identity(TinySet()) == ex.dataset_identity(TinySet())
    assert ex.dataset_identity(TinySet()) != ex.dataset_identity(TinySet(seed=1))
    assert ex.dataset_identity(Renamed()) == "same-name"


def test_validation_needs_no_victim():
    ex.ExperimentConfig(method="kfool", k=2, max_iter=3).validate()
    with pytest.raises(TypeError, match="kfool: overshoot must be a number"):
        dataclasses.replace(CONFIG, method="kfool", options={"overshoot": "big"}).validate()
