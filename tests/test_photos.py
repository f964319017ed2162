"""The photos dataset on a fixture written in the Debian packages' on-disk layout."""

from __future__ import annotations

import colorsys
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tkmia.data import load_dataset
from tkmia.data import photos as ph

N_CLASSES = len(ph.CLASSES)


def _hue(label: int) -> float:
    return label / N_CLASSES


def _stamp(path: Path, label: int, rng: np.random.Generator, flat: bool = False) -> None:
    """A noisy disc of the class's hue (a "photo"), or a flat one (a "drawing"), with a .txt."""
    size = 48
    r, g, b = colorsys.hsv_to_rgb(_hue(label), 0.9, 0.9)
    rgb = np.empty((size, size, 3))
    rgb[:] = (r * 255, g * 255, b * 255)
    if not flat:
        rgb += rng.normal(0, 4, rgb.shape)
    yy, xx = np.mgrid[:size, :size]
    alpha = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2 - 2) ** 2) * 255
    rgba = np.dstack([np.clip(rgb, 0, 255), alpha]).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)
    path.with_suffix(".txt").write_text(f"{path.stem}\nA photo of class {label}.\n")


def _background(path: Path, rng: np.random.Generator, flat: bool = False) -> None:
    """A grey photo-like background (no saturated colour), or a flat drawing."""
    grey = np.full((90, 120, 1), 128.0) if flat else rng.normal(128, 30, (90, 120, 1))
    rgb = np.repeat(np.clip(grey, 0, 255), 3, axis=2).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(path)


def _changelog(root: Path, package: str, version: str) -> None:
    doc = root / "usr/share/doc" / package
    doc.mkdir(parents=True, exist_ok=True)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as f:
        f.write(f"{package} ({version}) unstable; urgency=medium\n")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per class: 5 objects (one with a ``_mirror`` copy) in its first folder, a flat drawing, a
    cartoon subfolder; per background category: 3 photos and one flat drawing."""
    base = tmp_path_factory.mktemp("debian")
    rng = np.random.default_rng(0)
    stamps = base / ph.STAMPS_DIR
    for label, folders in enumerate(ph.CLASS_FOLDERS.values()):
        folder = stamps / folders[0]
        for j in range(5):
            _stamp(folder / f"thing{chr(97 + j)}.png", label, rng)
        _stamp(folder / "thinga_mirror.png", label, rng)
        _stamp(folder / "drawing.png", label, rng, flat=True)
        _stamp(folder / "cartoon" / "toon.png", label, rng)
    for category in ph.BACKGROUND_CATEGORIES:
        for j in range(3):
            _background(base / ph.BACKGROUNDS_DIR / category / f"{category.lower()}{j}.jpg", rng)
        _background(base / ph.BACKGROUNDS_DIR / category / "drawn.gif", rng, flat=True)
    _changelog(base, "tuxpaint-stamps-default", "2022.06.04-1")
    _changelog(base, "scratch", "1.4.0.6~dfsg1-6.1")
    return base


def _make(root: Path, split: str, **kw) -> ph.Photos:
    kw = {"n_images": 40, "image_size": 64, "cache": None, **kw}
    return ph.Photos(split, root=root, **kw)


def test_drawings_and_cartoon_folders_are_left_out(root: Path) -> None:
    cutouts, backgrounds, record = ph._scan(str(root))
    names = {c.name.rsplit("/", 1)[-1] for c in cutouts}
    assert names == {"thinga", "thingb", "thingc", "thingd", "thinge", "thinga_mirror"}
    assert len(cutouts) == 6 * N_CLASSES
    assert not any("cartoon" in c.name for c in cutouts)
    assert len(backgrounds) == 3 * len(ph.BACKGROUND_CATEGORIES)
    assert not any(b.endswith(".gif") for b in backgrounds)
    assert sum(name.endswith("/drawing") for name in record["excluded_as_drawings"]) == N_CLASSES


def test_flat_colour_share_separates_photos_from_drawings() -> None:
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    drawing = Image.new("RGB", (64, 64), (200, 30, 30))
    assert ph.flat_colour_share(photo) < ph.FLAT_THRESHOLD <= ph.flat_colour_share(drawing)


@pytest.mark.parametrize(
    ("stem", "others", "family"),
    [
        ("measuring_tape_mirror", None, "measuring"),
        ("Strawberry2", None, "strawberry"),
        ("gnu-sitting", None, "gnu"),
        ("yellowpepper", {"pepper", "yellowpepper"}, "pepper"),
        ("little-penguin", {"little", "penguin"}, "penguin"),
        ("albino_peahen", {"albino", "hen"}, "albino"),  # short names never absorb
        ("001", None, "001"),
    ],
)
def test_object_family(stem: str, others: set[str] | None, family: str) -> None:
    assert ph.object_family(stem, others) == family


def test_novel_objects_sources_are_disjoint(root: Path) -> None:
    sides = ph.split_sources(root, "novel_objects", seed=0)
    train, test = sides["train"], sides["test"]
    assert not {c.name for c in train["cutouts"]} & {c.name for c in test["cutouts"]}
    fam = {(c.label, c.family) for c in train["cutouts"]}
    assert not fam & {(c.label, c.family) for c in test["cutouts"]}
    assert not set(train["backgrounds"]) & set(test["backgrounds"])
    for label in range(N_CLASSES):  # every class on both sides
        assert any(c.label == label for c in train["cutouts"])
        assert any(c.label == label for c in test["cutouts"])
    # the mirror copy stays with its original
    for side in (train, test):
        names = {c.name.rsplit("/", 1)[-1] for c in side["cutouts"] if c.label == 0}
        assert ("thinga" in names) == ("thinga_mirror" in names)
    # families, not files, are split 60/40: of 5 objects per class (one with a mirror), 2 on test
    for label in range(N_CLASSES):
        assert len({c.family for c in test["cutouts"] if c.label == label}) == 2
        assert len({c.family for c in train["cutouts"] if c.label == label}) == 3


def test_a_scene_draws_an_object_then_one_of_its_cutouts(root: Path) -> None:
    """thinga has two cut-outs (itself and its mirror); it must not be drawn twice as often."""
    ds = _make(root, "train", n_images=400, setting="novel_scenes")
    names = [name.rsplit("/", 1)[-1] for scene in ds.objects for _, name in scene["pasted"]]
    counts = {f: sum(n.removesuffix("_mirror") == f for n in names) for f in
              ("thinga", "thingb", "thingc", "thingd", "thinge")}
    assert counts["thinga"] < 1.5 * np.mean([counts[f] for f in counts if f != "thinga"])


def test_novel_scenes_share_cutouts_not_backgrounds(root: Path) -> None:
    sides = ph.split_sources(root, "novel_scenes", seed=0)
    assert sides["train"]["cutouts"] == sides["test"]["cutouts"]
    assert not set(sides["train"]["backgrounds"]) & set(sides["test"]["backgrounds"])


def test_scenes_use_only_their_side_s_sources(root: Path) -> None:
    sides = ph.split_sources(root, "novel_objects", seed=0)
    for split, side in (("train", "train"), ("val", "train"), ("test", "test")):
        data = _make(root, split)
        allowed = {c.name for c in sides[side]["cutouts"]}
        for scene in data.objects:
            assert scene["background"] in sides[side]["backgrounds"]
            assert {name for _, name in scene["pasted"]} <= allowed


def test_labels_equal_the_pasted_classes(root: Path) -> None:
    """Labels = classes in ``objects``, and = the hues visible in the pixels."""
    data = _make(root, "train", n_images=60)
    n_objects = []
    for image, labels, scene in zip(data.images, data.labels, data.objects):
        pasted = {ph.CLASSES.index(cls) for cls, _ in scene["pasted"]}
        assert len(pasted) == len(scene["pasted"])  # different classes
        assert set(torch.nonzero(labels).flatten().tolist()) == pasted
        rgb = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        hsv = np.asarray(Image.fromarray(rgb).convert("HSV"))
        saturated = hsv[..., 1] > 150
        hue_bins = np.round(hsv[..., 0][saturated] / 256 * N_CLASSES).astype(int) % N_CLASSES
        seen = {int(c) for c, n in zip(*np.unique(hue_bins, return_counts=True)) if n >= 20}
        assert seen == pasted
        n_objects.append(len(pasted))
    assert min(n_objects) >= 1 and max(n_objects) <= 5 and max(n_objects) >= 3


def test_compose_keeps_every_object_visible() -> None:
    rng = np.random.default_rng(0)
    background = Image.new("RGB", (80, 60), (128, 128, 128))
    yy, xx = np.mgrid[:30, :30]
    alpha = ((yy - 15) ** 2 + (xx - 15) ** 2 < 196).astype(np.uint8) * 255
    objects = []
    for label in range(5):
        rgb = np.broadcast_to(np.eye(3)[label % 3] * (100 + 35 * label), (30, 30, 3))
        rgba = np.dstack([rgb, alpha]).astype(np.uint8)
        objects.append((label, Image.fromarray(rgba, "RGBA")))
    for _ in range(10):
        scene, pasted, visible = ph.compose(background, objects, 64, rng)
        assert scene.shape == (64, 64, 3) and 0 <= scene.min() and scene.max() <= 1
        assert len(pasted) >= 1 and pasted == sorted(pasted)
        assert len(visible) == len(pasted) and min(visible) >= ph.MIN_VISIBLE
        pixels = np.round(scene * 255).astype(int).reshape(-1, 3)
        for label, obj in objects:  # an object's exact colour is in the scene iff it was pasted
            colour = np.asarray(obj)[15, 15, :3].astype(int)
            assert ((pixels == colour).all(1).sum() > 20) == (label in pasted)


def test_generation_is_deterministic_and_cached(root: Path, tmp_path: Path) -> None:
    a = _make(root, "test")
    b = _make(root, "test")
    assert a.checksum == b.checksum and torch.equal(a.images, b.images)
    assert _make(root, "test", seed=1).checksum != a.checksum
    assert _make(root, "train").checksum != a.checksum
    first = _make(root, "test", cache=tmp_path)
    assert len(list(tmp_path.glob("novel_objects-test-*.pt"))) == 1
    again = _make(root, "test", cache=tmp_path)
    assert again.checksum == first.checksum == a.checksum
    assert a.images.shape == (40, 3, 64, 64) and a.labels.shape == (40, N_CLASSES)
    assert a.images.dtype == torch.float32 and 0 <= float(a.images.min()) <= float(a.images.max()) <= 1


def test_metadata_records_packages_and_licences(root: Path) -> None:
    data = _make(root, "test", n_images=4)
    packages = data.metadata["packages"]
    assert packages["tuxpaint-stamps-default"] == {
        "version": "2022.06.04-1", "licence": "GPL-2", "used": "stamps (objects)"
    }
    assert packages["scratch"]["version"] == "1.4.0.6~dfsg1-6.1"
    assert packages["scratch"]["licence"] == "CC-BY-SA-3.0"
    assert sum(map(len, data.metadata["cutouts"].values())) == len(
        ph.split_sources(root, "novel_objects")["test"]["cutouts"]
    )


def test_source_table_counts(root: Path) -> None:
    table = ph.source_table(root)
    classes = table[~table["class"].str.startswith("background")]
    assert list(classes["class"]) == list(ph.CLASSES)
    assert (classes["train cut-outs"] + classes["test cut-outs"] == 6).all()


def test_missing_sources_say_what_to_get(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"apt-get download tuxpaint-stamps-default scratch"):
        ph.Photos("test", root=tmp_path, cache=None)
    with pytest.raises(FileNotFoundError, match=r"make photos-data"):
        ph.Photos("test", root=tmp_path, cache=None)


def test_a_class_without_photos_is_named(root: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / ph.STAMPS_DIR / ph.CLASS_FOLDERS["coin"][0])
    with pytest.raises(FileNotFoundError, match=r"\['coin'\]"):
        ph.Photos("test", root=copy, cache=None)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("which", ["stamp", "background"])
def test_a_damaged_image_is_one_line_naming_the_file(root: Path, tmp_path: Path, damage: str,
                                                     which: str) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    if which == "stamp":
        path = copy / ph.STAMPS_DIR / ph.CLASS_FOLDERS["coin"][0] / "thingb.png"
    else:
        category = ph.BACKGROUND_CATEGORIES[0]
        path = copy / ph.BACKGROUNDS_DIR / category / f"{category.lower()}1.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not an image at all")
    with pytest.raises(ValueError) as info:
        _make(copy, "test")
    message = str(info.value)
    assert str(path) in message and "truncated or corrupt" in message and "make photos-data" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "dev"}, r"split='dev'"),
        ({"setting": "novel"}, r"setting='novel'.*novel_objects"),
        ({"n_images": 0}, r"n_images=0"),
        ({"image_size": 8}, r"image_size=8"),
    ],
)
def test_bad_arguments_are_named(root: Path, kwargs: dict, match: str) -> None:
    kw = {"split": "test", "root": root, "cache": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        ph.Photos(kw.pop("split"), **kw)


def test_profile_loads_the_photos_dataset(root: Path, tmp_path: Path, monkeypatch) -> None:
    from tkmia.profiles import load_profile

    monkeypatch.setenv("TKMIA_HOME", str(tmp_path))  # the dataset cache goes there

    profile = load_profile("photos").replace(
        dataset={"sizes": {"train": 8, "val": 4, "test": 6}, "image_size": 64}
    )
    data = load_dataset(profile, "test", root)
    assert isinstance(data, ph.Photos) and len(data) == 6 and data.setting == "novel_objects"
    scenes = load_dataset(profile.replace(dataset={"setting": "novel_scenes"}), "test", root)
    assert scenes.setting == "novel_scenes"
    with pytest.raises(ValueError, match="dataset.setting"):
        profile.replace(dataset={"setting": "everything"})


@pytest.mark.parametrize("n_classes", [1, 3, 14])
def test_object_count_is_drawn_in_proportion_to_its_weight(n_classes: int) -> None:
    """n = 1..min(5, C) with probability proportional to OBJECT_COUNT_WEIGHTS (a chi-square test
    on 6000 draws, seeded; the statistic's 0.999 quantile with 4 degrees of freedom is 18.5)."""
    rng = np.random.default_rng(0)
    draws = np.array([ph.object_count(rng, n_classes) for _ in range(6000)])
    top = min(5, n_classes)
    assert draws.min() >= 1 and draws.max() <= top
    weights = np.asarray(ph.OBJECT_COUNT_WEIGHTS[:top], dtype=float)
    expected = 6000 * weights / weights.sum()
    observed = np.bincount(draws, minlength=top + 1)[1:]
    assert ((observed - expected) ** 2 / expected).sum() < 18.5


def test_object_count_needs_a_class() -> None:
    with pytest.raises(ValueError, match="n_classes=0"):
        ph.object_count(np.random.default_rng(0), 0)
