"""Open questions on victims and data (tkmia.book.chapters.victim_questions): the small ResNet and ViT, the
MultiShapes label-cardinality parameter, the judging functions, transfer, pseudo labels, figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from tkmia.book.chapters import victim_questions as qv
from tkmia.book.chapters import victim_questions_plots as vq
from tkmia.data import load_dataset
from tkmia.data.multishapes import MultiShapes, generate, params_checksum
from tkmia.models import SmallResNet, SmallViT, build_model
from tkmia.plots.theme import MIN_FONT_PX, panels_per_row, smallest_font_px
from tkmia.profiles import load_profile
from tkmia.training import predict
from tkmia.victims import victim_key


@pytest.mark.parametrize("model", [SmallResNet(20, width=8), SmallViT(20, image_size=32, patch=4, dim=24)])
def test_small_models_map_images_to_scores_with_input_gradients(model):
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    scores = model.eval()(images)
    assert scores.shape == (3, 20)
    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_build_model_makes_the_new_architectures_from_a_profile():
    for arch, cls in (("small_resnet", SmallResNet), ("small_vit", SmallViT)):
        profile = load_profile("tiny", model={"arch": arch})
        model = build_model(profile)
        assert isinstance(model, cls)
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 20)
    with pytest.raises(ValueError, match="not a multiple of patch"):
        SmallViT(20, image_size=30, patch=4)
    with pytest.raises(ValueError, match="takes 32x32"):
        SmallViT(20, image_size=32, patch=4, dim=24)(torch.rand(1, 3, 48, 48))


def test_mean_labels_sets_the_label_count_and_is_its_own_cache_entry(tmp_path):
    for m in (2, 6):
        _, labels = generate("test", 300, image_size=32, mean_labels=m)
        counts = labels.sum(1)
        assert set(counts.tolist()) <= {m - 1, m, m + 1}
        assert abs(float(counts.mean()) - m) < 0.2
    # the default's checksum does not move, a variant has its own
    assert params_checksum("test", 10, 32, 0) == params_checksum("test", 10, 32, 0, None)
    assert params_checksum("test", 10, 32, 0, 4) != params_checksum("test", 10, 32, 0)
    data = MultiShapes("test", n_images=6, image_size=32, root=tmp_path, mean_labels=4)
    assert (tmp_path / f"{data.checksum}.pt").exists()
    again = MultiShapes("test", n_images=6, image_size=32, root=tmp_path, mean_labels=4)
    assert torch.equal(data.images, again.images) and "mean_labels=4" in repr(data)
    with pytest.raises(ValueError, match="mean_labels=1"):
        generate("test", 2, image_size=32, mean_labels=1)


def test_profile_variants_keep_the_default_key_and_change_it_when_asked():
    base = load_profile("default")
    assert victim_key(qv.variant_profile(base)) == victim_key(base)
    archs = ("compact_cnn", "small_resnet", "small_vit")
    keys = {victim_key(qv.variant_profile(base, arch=a)) for a in archs}
    assert len(keys) == 3
    variant = qv.variant_profile(base, train_images=500, epochs=2, mean_labels=6)
    assert (variant.dataset.sizes["train"], variant.train.epochs, variant.dataset.mean_labels) == (500, 2, 6)
    assert variant.dataset.sizes["test"] == base.dataset.sizes["test"]
    with pytest.raises(ValueError, match="mean_labels"):
        load_profile("voc2012", dataset={"mean_labels": 4})


def test_judge_follows_the_global_rule_on_given_labels():
    clean = torch.tensor([[4.0, 3, 2, 1, 0], [4.0, 3, 2, 1, 0], [4.0, 3, 2, 1, 0]])
    # sample 0: S={0} replaced by true label 3 -> imperceptible; sample 1: by false label 4 -> success only;
    # sample 2: S not removed
    adv = torch.tensor([[0.0, 3, 2, 5, 1], [0.0, 3, 2, 1, 5], [4.0, 3, 2, 1, 0]])
    labels = torch.tensor([[1.0, 1, 0, 1, 0]] * 3)
    specified = torch.tensor([[1.0, 0, 0, 0, 0]] * 3)
    out = qv.judge(clean, adv, labels, specified, k=2)
    assert out["applicable"].tolist() == [True, True, True]
    assert out["success"].tolist() == [True, True, False]
    assert out["imperceptible"].tolist() == [True, False, False]
    assert out["delta_precision_at_k"].tolist() == [0.0, -0.5, 0.0]
    # |Y| < k + |S|: not applicable
    few = torch.tensor([[1.0, 1, 0, 0, 0]])
    assert not qv.judge(clean[:1], adv[:1], few, specified[:1], 2)["applicable"][0]


def test_ready_mask_looks_for_a_spare_true_label_just_below_the_top_k():
    scores = torch.tensor([[5.0, 4, 3, 2, 1, 0]] * 2)
    specified = torch.tensor([[1.0, 0, 0, 0, 0, 0]] * 2)
    ready_at_3 = torch.tensor([[1.0, 1, 1, 0, 0, 0]])  # spare label 2 at rank 3 = k + |S|
    ready_at_5 = torch.tensor([[1.0, 1, 0, 0, 1, 0]])  # spare label 4 at rank 5 > k + |S|
    labels = torch.cat([ready_at_3, ready_at_5])
    assert qv.ready_mask(scores, labels, specified, k=2).tolist() == [True, False]


def test_pseudo_labels_top_m_and_threshold():
    scores = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
    assert qv.pseudo_labels(scores, "top", 2).tolist() == [[1.0, 0.0, 1.0, 0.0]]
    assert qv.pseudo_labels(scores, "threshold", 0.5).tolist() == [[1.0, 0.0, 1.0, 0.0]]
    assert qv.pseudo_labels(scores, "threshold", 0.85).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="rule='oracle'"):
        qv.pseudo_labels(scores, "oracle", 1)
    with pytest.raises(ValueError, match="probability"):
        qv.pseudo_labels(scores, "threshold", 1.5)


@pytest.mark.slow
def test_transfer_diagonal_equals_the_white_box_runs(tiny_home):
    profile = load_profile("tiny")
    victims, runs = {}, {}
    for arch in ("compact_cnn", "small_resnet"):
        victims[arch], _ = qv.budget_victim(profile, arch=arch)
        variant = qv.variant_profile(profile, arch=arch)
        runs[("tkmia", arch)] = qv.attack_victim(variant, victims[arch], "tkmia", n_samples=6, save_images=6)
    frame = qv.transfer_frame(runs, victims)
    assert len(frame) == 4 and set(frame["target"]) == set(victims)
    for (_, arch), run_ in runs.items():
        row = frame[(frame["source"] == arch) & (frame["target"] == arch)].iloc[0]
        assert row["applicable"] == 1.0  # every attacked sample was eligible on its own victim
        assert row["success_rate"] == pytest.approx(run_.records["success"].mean())
        assert row["imperceptible_rate"] == pytest.approx(run_.records["imperceptible"].mean())
    with pytest.raises(ValueError, match="save_images"):
        partial = qv.attack_victim(qv.variant_profile(profile, arch="compact_cnn"), victims["compact_cnn"],
                                   "tkml_ap_u", n_samples=6, save_images=2)
        qv.transfer_frame({("tkml_ap_u", "compact_cnn"): partial}, victims)


@pytest.mark.slow
def test_victim_summaries_are_the_records_summarised(tiny_home):
    """quality_frame, cardinality_frame and no_truth_frame against their records, counted by hand."""
    profile = load_profile("tiny")
    model, meta = qv.budget_victim(profile)
    summary, _ = qv.quality_frame({"tiny": (model, meta["eval"]["map"], profile)}, n_samples=6)
    records = qv.attack_victim(profile, model, "tkmia", n_samples=6).records
    row = summary.iloc[0]
    assert row["n"] == len(records) == int(records["eligible"].sum())
    assert row["success_rate"] == pytest.approx(records["success"].mean())
    assert row["imperceptible_rate"] == pytest.approx(records["imperceptible"].mean())
    delta = (records["adv_precision_at_k"] - records["clean_precision_at_k"]).mean()
    assert row["delta_precision_at_k"] == pytest.approx(delta)
    k = int(records["k"].iloc[0])
    scores, labels = predict(model, load_dataset(profile, profile.dataset.eval_split))
    rooms = qv.cardinality_frame(profile, scores, labels, records, 3, k).set_index("room")
    for room, group in records.groupby(records["labels"].map(len) - k):
        assert rooms.loc[room, "attacked"] == len(group)
        assert rooms.loc[room, "success_rate"] == pytest.approx(group["success"].mean())
        won = group[group["success"]]
        assert rooms.loc[room, "pert_l2_255"] == pytest.approx(won["pert_l2_255"].mean(), nan_ok=True)
    assert rooms["attacked"].sum() == len(records)
    rules, _ = qv.no_truth_frame(profile, model, [("truth", 0)], n_samples=6)
    truth = rules.iloc[0]  # the true labels: the attacker's verdict is the truth's
    assert truth["attacked"] == len(records) and truth["truly_eligible"] == 1.0
    assert truth["success_rate"] == pytest.approx(records["success"].mean())
    assert truth["imperceptible_yield"] == pytest.approx(records["imperceptible"].mean())


def test_figures_are_legible():
    transfer = pd.DataFrame([{"method": m, "source": s, "target": t, "success_rate": 0.5,
                              "delta_precision_at_k": -0.1}
                             for m in ("tkmia", "tkml_ap_u") for s in "abc" for t in "abc"])
    card = pd.DataFrame({"mean_labels": [2, 2, 4, 4], "room": [-1, 0, 1, 2], "eligible": [0, 0, 0.5, 0.8],
                         "success_rate": [float("nan"), float("nan"), 0.9, 1.0],
                         "imperceptible_rate": [float("nan"), float("nan"), 0.5, 0.7],
                         "pert_l2_255": [float("nan"), float("nan"), 30.0, 25.0]})
    quality = pd.DataFrame({"map": [0.5, 0.8, 0.98], "success_rate": [1, 1, 1],
                            "imperceptible_rate": [0.2, 0.5, 0.8],
                            "delta_precision_at_k": [-0.2, -0.1, 0], "ready": [0.3, 0.6, 0.9]})
    rules = pd.DataFrame({"attacker_labels": ["true labels", "top-4", "p ≥ 0.5"],
                          "believed_success": [1.0, 1.0, float("nan")],
                          "success_rate": [1.0, 0.8, float("nan")],
                          "imperceptible_rate": [0.6, 0.3, float("nan")],
                          "imperceptible_yield": [0.6, 0.2, float("nan")]})
    with pytest.raises(ValueError, match="plot_no_truth needs the columns"):
        vq.plot_no_truth(rules.drop(columns="success_rate"))
    for figure in (vq.plot_transfer(transfer), vq.plot_cardinality(card), vq.plot_quality(quality),
                   vq.plot_no_truth(rules)):
        assert smallest_font_px(figure) >= MIN_FONT_PX - 1e-6
        assert panels_per_row(figure) <= 3
        plt.close(figure)


def test_verdicts_follow_the_numbers():
    summary = pd.DataFrame({"victim": ["a", "b"], "map": [0.6, 0.98], "imperceptible_rate": [0.2, 0.8],
                            "ready": [0.3, 0.9]})
    per_sample = pd.DataFrame({"ready": [True, True, False, False],
                               "imperceptible": [True, True, False, True]})
    words = qv.quality_verdict(summary, per_sample)
    assert words["trend"] == "rises" and words["mechanism"] == "carries the imperceptible attacks"
    assert words["claim"] == "should be expected to be lower than on MultiShapes"
    flipped = qv.quality_verdict(summary.assign(imperceptible_rate=[0.8, 0.2]), per_sample)
    assert flipped["trend"] == "falls"
    narrow = qv.quality_verdict(summary.assign(map=[0.25, 0.3], imperceptible_rate=[0.1, 0.12]),
                                per_sample)
    assert narrow["trend"] == "does not change much" and narrow["claim"].startswith("cannot be read")
    rules = pd.DataFrame({"attacker_labels": ["true labels", "top-4"], "imperceptible_rate": [0.5, 0.5],
                          "imperceptible_yield": [0.5, 0.1], "truly_eligible": [1.0, 0.2],
                          "success_rate": [1.0, 0.9]})
    assert qv.no_truth_verdict(rules, 0.9)["word"] == "little of it remains"
    close = rules.assign(imperceptible_yield=[0.5, 0.45])
    assert qv.no_truth_verdict(close, 0.9)["word"] == "most of it remains"
    nothing = pd.DataFrame({"attacker_labels": ["true labels", "p ≥ 0.5"], "attacked": [10, 0],
                            "imperceptible_rate": [0.5, float("nan")],
                            "imperceptible_yield": [0.5, float("nan")],
                            "truly_eligible": [1.0, float("nan")], "success_rate": [1.0, float("nan")]})
    assert qv.no_truth_verdict(nothing, 0.3)["word"].startswith("no predicted-label attacker")


@pytest.mark.slow
def test_snapshots_are_the_weights_after_each_epoch_and_the_last_is_the_victim(tiny_home):
    from tkmia.experiments import model_fingerprint
    from tkmia.victims import load_snapshot, load_victim, victim_dir

    profile = load_profile("tiny")
    victim, meta = load_victim(profile, progress=False)
    assert meta["snapshots"] == list(range(1, profile.train.epochs + 1))
    last, last_meta = load_snapshot(profile, profile.train.epochs)
    assert model_fingerprint(last) == model_fingerprint(victim)
    assert last_meta["eval"]["map"] == pytest.approx(meta["eval"]["map"])
    first, _ = load_snapshot(profile, 1)
    assert model_fingerprint(first) != model_fingerprint(victim)
    victims = qv.quality_victims(profile, [profile.train.epochs, 1, 1])
    assert list(victims) == ["epoch 1", f"epoch {profile.train.epochs}"]
    for bad in (0, profile.train.epochs + 1, 1.0, True):
        with pytest.raises(ValueError, match="epoch="):
            load_snapshot(profile, bad)
    snapshot = victim_dir(profile) / "epoch-001.pt"
    kept = snapshot.read_bytes()
    snapshot.unlink()  # in the shared home: put back below, for the tests that run after this one
    try:
        with pytest.raises(ValueError, match="no weights after epoch 1.*--force"):
            load_snapshot(profile, 1)
    finally:
        snapshot.write_bytes(kept)


@pytest.mark.slow
def test_finetuned_victim_starts_from_the_profile_victim_and_is_keyed_by_it(tiny_home, tmp_path):
    from tkmia.victims import init_profile, load_victim, training_config, victim_dir, victim_key

    base = load_profile("tiny")
    start, _ = load_victim(base, progress=False)
    tuned = qv.variant_profile("tiny", mean_labels=6, epochs=1, finetune=True)
    assert tuned.train.init == "tiny" and init_profile(tuned).name == "tiny"
    assert training_config(tuned)["train"]["init"] == victim_dir(base).name
    scratch = qv.variant_profile("tiny", mean_labels=6, epochs=1)
    assert "init" not in training_config(scratch)["train"]
    assert victim_key(tuned) != victim_key(scratch)
    # one epoch at a tiny learning rate stays close to the start; from scratch it does not
    near = tuned.replace(train={"lr": 1e-9, "schedule": "constant"})
    model, _ = load_victim(near, progress=False)
    for name, tensor in start.state_dict().items():
        if tensor.is_floating_point() and "running" not in name:
            assert torch.allclose(model.state_dict()[name], tensor, atol=1e-5), name
    with pytest.raises(ValueError, match="needs the profile by name"):
        qv.variant_profile(base, finetune=True)
    with pytest.raises(ValueError, match="train.init='nosuch'"):
        load_victim(base.replace(train={"init": "nosuch"}), progress=False)
    import yaml

    chained = tmp_path / "chained.yaml"
    chained.write_text(yaml.safe_dump({**tuned.to_dict(), "name": "chained"}))
    with pytest.raises(ValueError, match="itself fine-tuned"):
        training_config(base.replace(train={"init": str(chained)}))


def test_transfer_verdict_compares_the_transformer_in_plain_words():
    rows = [{"method": m, "source": s, "target": t,
             "success_rate": 1.0 if s == t else (0.0 if t == "small_vit" else 0.04),
             "imperceptible_rate": (0.12 if s != "small_vit" else 0.04) if s == t else 0.0,
             "delta_precision_at_k": 0.0}
            for m in ("tkmia", "tkml_ap_u") for s in qv.ARCH_NAMES for t in qv.ARCH_NAMES]
    words = qv.transfer_verdict(pd.DataFrame(rows))
    assert words["vit_word"] == ("behaves differently (white-box imperceptible success lower than on the "
                                 "convolutional victims)")
    flat = [{**r, "imperceptible_rate": 0.12 if r["source"] == r["target"] else 0} for r in rows]
    same = qv.transfer_verdict(pd.DataFrame(flat))
    assert same["vit_word"] == "behaves like the convolutional victims"
    weaker = pd.DataFrame([{**r, "success_rate": 0.5} if r["source"] == r["target"] == "small_vit" else r
                           for r in rows])
    assert qv.transfer_verdict(weaker)["vit_word"] == (
        "behaves differently (white-box success lower than on the convolutional victims; white-box "
        "imperceptible success lower than on the convolutional victims)")
    assert words["transfers"] == "does not" and words["vit_in"] == "0%" and words["cnn_in"] == "4.0%"


def test_multishapes_chapters_fall_back_to_default_on_another_dataset_and_say_so():
    assert qv.multishapes_profile("tiny") == ("tiny", "")
    profile, note = qv.multishapes_profile("photos")
    assert profile == "default"
    assert "'photos' (dataset photos) is not a MultiShapes profile" in note and "'default'" in note
    with pytest.raises(ValueError, match="fallback='photos' is not a MultiShapes profile"):
        qv.multishapes_profile("voc2012", fallback="photos")
