"""Profiles: shipped files load, reference values, validation errors name the key."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from tkmia.profiles import Profile, list_profiles, load_profile


def test_shipped_profiles():
    assert list_profiles() == ["coco2014", "default", "nuswide", "photos", "photos_tiny", "tiny", "voc2012"]
    for name in list_profiles():
        profile = load_profile(name)
        assert isinstance(profile, Profile) and profile.name == name


def test_reference_values_of_the_paper_profiles():
    voc, coco, nus = (load_profile(n) for n in ("voc2012", "coco2014", "nuswide"))
    assert (voc.model.arch, voc.dataset.image_size, voc.attack.lr) == ("resnet50", 300, 5e-4)
    assert voc.selection.global_classes == (0, 1, 3, 5, 6, 13, 18) and voc.attack.k == 3
    assert voc.selection.presets["indoor"] == (4, 8, 10, 15, 17, 19)
    assert voc.selection.presets["person"] == (14,)
    assert (coco.model.arch, coco.dataset.image_size, coco.attack.lr) == ("resnet101", 448, 1e-3)
    assert coco.attack.k == 5
    assert coco.selection.global_classes == (62, 63, 64, 65, 66, 67, 68, 69, 70, 72, 78)
    assert (coco.selection.random.k, coco.selection.random.n_pert) == (5, 3)
    assert (nus.model.arch, nus.dataset.image_size, nus.attack.lr) == ("resnet101", 224, 1e-3)
    assert nus.selection.global_classes == (0, 7, 10, 14, 23, 25, 46, 47, 48, 51, 58, 68, 76)
    for p in (voc, coco, nus):
        assert p.attack.max_iter == 300 and p.attack.weight_decay == 1e-4


def test_profile_is_frozen_and_replace_validates():
    profile = load_profile("default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.name = "other"  # type: ignore[misc]
    changed = profile.replace(train={"epochs": 2}, attack__k=2)
    assert changed.train.epochs == 2 and changed.attack.k == 2 and profile.train.epochs != 2
    assert changed.train.lr == profile.train.lr
    with pytest.raises(ValueError, match="attack.k"):
        profile.replace(attack__k=0)


def _write(tmp_path, mutate):
    data = load_profile("default").to_dict()
    mutate(data)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda d: d["train"].update(epoch=3), r"unknown key 'train\.epoch'.*allowed keys: epochs"),
        (lambda d: d.update(colour="red"), r"unknown key 'colour'.*allowed keys: name"),
        (lambda d: d["attack"].pop("max_iter"), r"missing key 'attack\.max_iter'"),
        (lambda d: d.pop("grid"), r"missing key 'grid'"),
        (lambda d: d["selection"]["random"].pop("del_n"), r"missing key 'selection\.random\.del_n'"),
        (lambda d: d["dataset"].update(name="imagenet"), r"dataset\.name='imagenet'; allowed"),
        (lambda d: d["model"].update(arch="vgg"), r"model\.arch='vgg'; allowed"),
        (lambda d: d["selection"].update(global_classes=[0, 25]), r"global_classes.*\[25\]"),
        (lambda d: d["grid"].update(methods=["pgd"]), r"grid\.methods='pgd'"),
        (lambda d: d["attack"].update(box=[1.0, 0.0]), r"attack\.box"),
    ],
)
def test_validation_errors_name_the_key(tmp_path, mutate, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_profile(_write(tmp_path, mutate))


@pytest.mark.parametrize(
    "override, pattern",
    [({"train": {"epochs": "many"}}, r"train\.epochs='many'"),
     ({"train": {"flip": 1}}, r"train\.flip=1")],
)  # fmt: skip
def test_type_errors_name_the_key(override, pattern):
    with pytest.raises(TypeError, match=pattern):
        load_profile("default", **override)


def test_unknown_profile_name_lists_the_allowed():
    with pytest.raises(ValueError, match="default"):
        load_profile("imagenet")
    with pytest.raises(FileNotFoundError):
        load_profile("missing/profile.yaml")


def test_round_trip_through_yaml(tmp_path):
    profile = load_profile("nuswide")
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(profile.to_dict()))
    assert load_profile(path) == profile


def test_a_method_budget_replaces_max_iter_for_that_method_only():
    from tkmia.experiments import grid_configs

    prof = load_profile("default", attack={"max_iter_by_method": {"kfool": 40}})
    assert prof.attack.budget("kfool") == 40 and prof.attack.budget("tkmia") == prof.attack.max_iter
    assert load_profile("default").attack.max_iter_by_method == {}
    assert "max_iter_by_method" not in load_profile("default").to_dict()["attack"]  # cache keys stay
    assert prof.replace().attack.max_iter_by_method == {"kfool": 40}
    photos = {c.method: c.resolve(load_profile("photos")).max_iter
              for c in grid_configs("photos", schemes=["global"])}
    assert photos == {"tkmia": 300, "tkml_ap_u": 300, "ml_cw_u": 300, "kfool": 100}


@pytest.mark.parametrize("budgets, match", [({"kfoo": 9}, "max_iter_by_method key='kfoo'"),
                                            ({"kfool": 0}, r"max_iter_by_method.kfool=0; expected >= 1"),
                                            ({"kfool": 2.5}, "expected an integer")])
def test_a_bad_method_budget_is_named(budgets, match):
    with pytest.raises((ValueError, TypeError), match=match):
        load_profile("default", attack={"max_iter_by_method": budgets})
