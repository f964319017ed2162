"""MultiShapes: determinism, caching, label statistics, the dataset API and the sample grid."""

from __future__ import annotations

import hashlib

import pytest
import torch

from tkmia.data import (
    MULTISHAPES_CLASSES,
    MultiShapes,
    generate,
    label_statistics,
    load_dataset,
    show_samples,
)
from tkmia.data import multishapes as ms


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("TKMIA_HOME", str(tmp_path / "home"))


def test_same_seed_gives_identical_tensors():
    a_images, a_labels = generate("test", 12, image_size=32, seed=3)
    b_images, b_labels = generate("test", 12, image_size=32, seed=3)
    assert torch.equal(a_images, b_images)
    assert torch.equal(a_labels, b_labels)


def test_different_seed_or_split_differs():
    base, _ = generate("test", 8, image_size=32, seed=0)
    other_seed, _ = generate("test", 8, image_size=32, seed=1)
    other_split, _ = generate("val", 8, image_size=32, seed=0)
    assert not torch.equal(base, other_seed)
    assert not torch.equal(base, other_split)


def test_smaller_split_is_a_prefix():
    small, small_labels = generate("train", 5, image_size=32)
    large, large_labels = generate("train", 9, image_size=32)
    assert torch.equal(small, large[:5])
    assert torch.equal(small_labels, large_labels[:5])


def test_known_pixels_do_not_drift():
    """A fingerprint of the generator: a change of rendering must bump GENERATOR_VERSION."""
    images, labels = generate("test", 4, image_size=48, seed=0)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 48, 48)
    assert ms.GENERATOR_VERSION == 1
    assert hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16] == "3253062adb2284d3"
    assert hashlib.sha256(labels.numpy().tobytes()).hexdigest()[:16] == "fdf60ab6242c6ae8"
    assert ms.params_checksum("test", 4, 48, 0) != ms.params_checksum("test", 4, 48, 1)


def test_label_statistics_of_the_test_split():
    _, labels = generate("test", 400, image_size=32)
    counts = labels.sum(1)
    assert counts.min() >= 1 and counts.max() <= 6
    assert (counts >= 4).float().mean() >= 0.4
    stats = label_statistics(labels)
    assert stats["share_4_or_more"] >= 0.4 and stats["max_labels"] <= 6
    # every class occurs
    assert bool((labels.sum(0) > 0).all())


def test_dataset_api_and_cache(tmp_path):
    ds = MultiShapes("val", n_images=6, image_size=32, seed=2, root=tmp_path / "cache")
    assert len(ds) == 6 and ds.classes == MULTISHAPES_CLASSES and len(ds.classes) == 20
    assert len(set(ds.classes)) == 20
    image, labels = ds[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert set(labels.unique().tolist()) <= {0.0, 1.0}
    files = list((tmp_path / "cache").glob("*.pt"))
    assert [f.stem for f in files] == [ds.checksum]
    again = MultiShapes("val", n_images=6, image_size=32, seed=2, root=tmp_path / "cache")
    assert torch.equal(again.images, ds.images)


def test_default_cache_location_is_tkmia_home(tmp_path):
    ds = load_dataset("multishapes", "test", n_images=4, image_size=32)
    assert (tmp_path / "home" / "multishapes" / f"{ds.checksum}.pt").is_file()


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"split": "holdout", "n_images": 2}, "split"),
        ({"split": "test", "n_images": 0}, "n_images"),
        ({"split": "test", "n_images": 2, "image_size": 8}, "image_size"),
        ({"split": "test", "n_images": 2, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        generate(**kwargs)


def test_show_samples_returns_a_figure(tmp_path):
    ds = MultiShapes("test", n_images=5, image_size=32)
    fig = show_samples(ds, n=5)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 5
    assert ds.classes[int(ds.labels[0].nonzero()[0])] in fig.axes[0].get_title()
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    with pytest.raises(ValueError, match="indices"):
        show_samples(ds, indices=[])


def test_numpy_integers_are_accepted(tmp_path):
    import numpy as np

    plain = MultiShapes("test", n_images=4, image_size=32, seed=1, root=tmp_path)
    numpy = MultiShapes("test", n_images=np.int64(4), image_size=np.int32(32), seed=np.int64(1),
                        root=tmp_path)
    assert numpy.checksum == plain.checksum and torch.equal(numpy.images, plain.images)
    assert type(numpy.image_size) is int and type(numpy.seed) is int
    show_samples(plain, n=np.int64(2))


def test_a_truncated_cache_file_is_rebuilt(tmp_path):
    first = MultiShapes("test", n_images=4, image_size=32, root=tmp_path)
    (cache,) = tmp_path.glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:40])
    with pytest.warns(UserWarning, match=f"dataset cache {cache} is unreadable .*; rebuilding it"):
        again = MultiShapes("test", n_images=4, image_size=32, root=tmp_path)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert torch.equal(MultiShapes("test", n_images=4, image_size=32, root=tmp_path).images, first.images)


def test_a_profile_name_is_resolved_by_the_caller_and_the_message_says_how():
    from tkmia.profiles import load_profile

    hint = r"'default' is not a dataset name.*load_dataset\(load_profile\('default'\)"
    with pytest.raises(ValueError, match=hint):
        load_dataset("default", "test")
    with pytest.raises(TypeError, match="expected a tkmia.profiles.Profile or a dataset name"):
        load_dataset(3, "test")
    profile = load_profile("tiny")
    ds = load_dataset(profile, "test", n_images=4)
    assert len(ds) == 4 and ds.images.shape[-1] == profile.dataset.image_size
