"""Real-dataset loaders on tiny fixtures written in each dataset's on-disk format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tkmia.data import COCO2014, NUSWIDE, VOC2012, load_dataset
from tkmia.data import voc as voc_module


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("TKMIA_HOME", str(tmp_path / "home"))


def _jpeg(path, seed, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _voc_xml(objects):
    body = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(difficult)}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
        f"<xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        for name, difficult in objects
    )
    return f"<annotation><folder>VOC2012</folder><size><width>40</width><height>30</height>" \
        f"<depth>3</depth></size>{body}</annotation>"  # fmt: skip


@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "voc"
    base = root / "VOCdevkit" / "VOC2012"
    annotations = {
        "2008_000001": [("dog", False), ("person", False)],
        "2008_000002": [("aeroplane", False), ("car", True)],  # car is difficult
        "2008_000003": [("tvmonitor", False), ("tvmonitor", False), ("sofa", False)],
    }
    (base / "Annotations").mkdir(parents=True)
    for i, (name, objs) in enumerate(annotations.items()):
        (base / "Annotations" / f"{name}.xml").write_text(_voc_xml(objs))
        _jpeg(base / "JPEGImages" / f"{name}.jpg", i)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "train.txt").write_text("2008_000001\n2008_000002\n")
    (base / "ImageSets" / "Main" / "val.txt").write_text("2008_000003\n")
    return root


def test_voc_labels_ignore_difficult_objects(voc_root):
    ds = VOC2012(voc_root, "train", image_size=16)
    classes = voc_module.CLASSES
    assert list(classes) == sorted(classes) and len(classes) == 20
    assert len(ds) == 2
    image, labels = ds[0]
    assert image.shape == (3, 16, 16) and 0 <= float(image.min()) <= float(image.max()) <= 1
    assert {classes[j] for j in labels.nonzero().flatten().tolist()} == {"dog", "person"}
    assert {classes[j] for j in ds.labels[1].nonzero().flatten().tolist()} == {"aeroplane"}


def test_voc_through_the_factory_and_voc2012_folder(voc_root):
    ds = load_dataset("voc2012", "val", root=voc_root, image_size=8)
    assert ds.labels.sum().item() == 2  # tvmonitor once, sofa
    direct = VOC2012(voc_root / "VOCdevkit" / "VOC2012", "val", image_size=8)
    assert torch.equal(direct.labels, ds.labels)


@pytest.fixture
def coco_root(tmp_path):
    root = tmp_path / "coco"
    categories = [{"id": cid, "name": f"class{cid}", "supercategory": "x"} for cid in (90, 1, 3, 2)]
    images = [
        {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "width": 40, "height": 30},
        {"id": 5, "file_name": "COCO_val2014_000000000005.jpg", "width": 40, "height": 30},
    ]
    annotations = [
        {"id": 1, "image_id": 5, "category_id": 90, "area": 10.0, "bbox": [0, 0, 2, 5],
         "iscrowd": 0, "segmentation": []},
        {"id": 2, "image_id": 5, "category_id": 1, "area": 5000.0, "bbox": [0, 0, 40, 30],
         "iscrowd": 0, "segmentation": []},
        {"id": 3, "image_id": 7, "category_id": 3, "area": 100.0, "bbox": [0, 0, 10, 10],
         "iscrowd": 0, "segmentation": []},
    ]  # fmt: skip
    (root / "annotations").mkdir(parents=True)
    blob = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(blob))
    for i, img in enumerate(images):
        _jpeg(root / "val2014" / img["file_name"], i)
    return root


def test_coco_classes_in_category_id_order(coco_root):
    ds = COCO2014(coco_root, "val", image_size=12)
    assert ds.category_ids == [1, 2, 3, 90]
    assert ds.classes == ("class1", "class2", "class3", "class90")
    assert ds.ids == [5, 7]
    # image 5: a small (area 10) and a large object: both count
    assert ds.labels.tolist() == [[1, 0, 0, 1], [0, 0, 1, 0]]
    image, labels = ds[1]
    assert image.shape == (3, 12, 12) and labels.tolist() == [0, 0, 1, 0]


@pytest.fixture
def nus_root(tmp_path):
    root = tmp_path / "nus"
    concepts = ["animal", "beach", "sky"]
    (root / "Concepts81.txt").parent.mkdir(parents=True)
    (root / "Concepts81.txt").write_text("\n".join(concepts) + "\n")
    files = ["actor\\0001_2124494179.jpg", "beach\\0002_100.jpg", "sky\\0003_200.jpg"]
    (root / "ImageList").mkdir()
    (root / "ImageList" / "TestImagelist.txt").write_text("\r\n".join(files) + "\r\n")
    labels = {"animal": [1, 0, 0], "beach": [0, 1, 1], "sky": [1, 0, 1]}
    folder = root / "Groundtruth" / "TrainTestLabels"
    folder.mkdir(parents=True)
    for c, values in labels.items():
        (folder / f"Labels_{c}_Test.txt").write_text("".join(f"{v} \n" for v in values))
    for i, f in enumerate(files[:2]):  # the third image is missing on disk
        _jpeg(root / "Flickr" / f.replace("\\", "/"), i)
    return root


def test_nuswide_labels_and_missing_images(nus_root):
    ds = NUSWIDE(nus_root, "test", image_size=10)
    assert ds.classes == ("animal", "beach", "sky")
    assert ds.files == ["actor/0001_2124494179.jpg", "beach/0002_100.jpg"]
    assert ds.labels.tolist() == [[1, 0, 1], [0, 1, 0]]
    assert ds[0][0].shape == (3, 10, 10)
    everything = NUSWIDE(nus_root, "test", image_size=10, skip_missing=False)
    assert len(everything) == 3


@pytest.mark.parametrize(
    "name, hint",
    [("voc2012", "VOCtrainval_11-May-2012"), ("coco2014", "cocodataset.org"),
     ("nuswide", "Concepts81.txt")],
)  # fmt: skip
def test_missing_data_names_the_path_and_what_to_get(tmp_path, name, hint):
    split = "test" if name == "nuswide" else "val"
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, split, root=tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and hint in message


def test_missing_default_root_names_tkmia_home(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        load_dataset("voc2012", "train")
    assert str(tmp_path / "home" / "voc2012") in str(info.value)


def test_bad_split_is_named(voc_root):
    with pytest.raises(ValueError, match="split='test'"):
        VOC2012(voc_root, "test")
