"""Fake sets, detector training, leave-one-out honesty and the registry, on the tiny profile.

Reads the session's trained project (tests/integration/conftest.py: the real `retrain` flow, once);
a test that changes a project works on its own copy of it."""

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from gandefect.config import GATED_CONDITIONS, load_config
from gandefect.data.conditions import CONDITIONS
from gandefect.data.fakes import read_fakes, write_fake_set
from gandefect.data.snapshot import read_manifest
from gandefect.detect import components
from gandefect.evaluate.detection import auc
from gandefect.lifecycle.registry import load_detector
from gandefect.stages.detectors import load_labeled
from tests.conftest import copy_project, make_image_folder, run_cli
from tests.integration.conftest import BUILDS, FAMILIES, LOSSES

pytestmark = pytest.mark.slow


def _client(root):
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def test_fake_sets_cover_every_generator_and_take_the_real_encoding_path(trained):
    root = trained.root
    cfg = load_config(root / "params.yaml")
    fakes = read_fakes(cfg)
    aligned = {"ddpm-aligned", "rectflow-aligned"}  # real train images refined by each diffusion member
    bank = {f"component-{kind}" for kind in components.KINDS}  # real train images through each kind of up-sampling
    expected = set(LOSSES) | {f"{loss}-epoch1" for loss in LOSSES} | set(FAMILIES) | aligned | bank
    assert set(fakes["generator"]) == expected
    assert set(fakes["split"]) == {"train", "val", "test"}
    twins = fakes[fakes["generator"].isin(aligned)]
    assert set(twins["split"]) == {"train"} and set(twins["family"]) == {
        "diffusion"
    }  # training only, held out with their model
    assert set(fakes.loc[fakes["generator"].isin(["lsgan", "lsgan-epoch1"]), "family"]) == {"dcgan"}
    made = fakes[fakes["generator"].isin(bank)]
    assert set(made["split"]) == {"train"} and set(made["family"]) == {components.FAMILY}
    sample = Image.open(root / "data" / "fakes" / fakes["path"].iloc[0])
    real = Image.open(cfg.real_dir / read_manifest(cfg.real_dir)["path"].iloc[0])
    assert (sample.format, sample.mode, sample.size) == (real.format, real.mode, real.size)


def test_train_detectors_registers_winner_and_judge_and_writes_the_report(trained):
    root, stage = trained.root, trained.flow.detector
    assert (str(stage.version), str(stage.judge)) == ("1", "1")
    client = _client(root)
    detector = client.get_model_version("gandefect-detector", "1")
    judge = client.get_model_version("gandefect-judge", "1")
    assert {detector.tags["family"], judge.tags["family"]} == {"cnn", "spectral"}
    assert detector.tags["family"] == stage.winner
    assert 0 < float(detector.tags["threshold"]) < 1
    report = root / "reports" / "detectors"
    for name in [
        "detectors.md",
        "robustness.png",
        "wild.png",
        "reliability.png",
        "roc-cnn.png",
        "roc-spectral.png",
        "errors-cnn.png",
        "errors-spectral.png",
    ]:
        assert (report / name).stat().st_size > 0, name
    text = (report / "detectors.md").read_text()
    assert "auc_unseen_min" in text and "Verdicts in the wild" in text and "| jpeg75 " in text and "ece" in text
    run = client.get_run(detector.tags["run_id"])
    conditions = list(CONDITIONS)  # every registered condition is evaluated
    families = BUILDS
    for key in [
        "auc_seen",
        "ap_seen",
        "auc_unseen_min",
        "auc_unseen_mean",
        "ece",
        "ece_jpeg75",
        "acc_real",
        "acc_fake",
        "fpr_real_max",
        "tpr_wild_min",
        "tpr_unseen_min",
        *[f"auc_unseen_{f}" for f in families],
        *[f"tpr_unseen_wild_{f}" for f in families],
        *[f"{m}_{c}" for c in conditions for m in ("auc", "fpr_real", "tpr_fake", "uncertain_real")],
        *[f"tpr_fake_{c}_{g}" for c in conditions for g in ("hinge", "vae", "wgan-epoch1")],
        *[f"tpr_unseen_{c}_{f}" for c in conditions for f in families],
        *[f"tpr_fake_wild_{g}" for g in ("hinge", "vae", "wgan-epoch1")],
    ]:
        assert key in run.data.metrics, key
    metrics = run.data.metrics
    assert metrics["fpr_real_max"] == max(metrics[f"fpr_real_{c}"] for c in GATED_CONDITIONS)
    assert run.data.tags["data_version"].endswith(".dir") and run.data.tags["fakes_version"].endswith(".dir")


def test_leave_one_out_detectors_never_saw_the_held_out_family(trained):
    root = trained.root
    client = _client(root)
    fakes = read_fakes(load_config(root / "params.yaml"))
    family = dict(zip(fakes["generator"], fakes["family"]))  # how each set's generator is built
    for name in ("gandefect-detector", "gandefect-judge"):
        run_id = client.get_model_version(name, "1").tags["run_id"]
        path = client.download_artifacts(run_id, "training_manifest.json")
        manifest = json.loads(Path(path).read_text())
        assert set(manifest["trained_on"]) == set(fakes["generator"])
        if name == "gandefect-judge":  # leave-one-out is run for the served family only
            assert manifest["leave_one_out"] == {}
            continue
        assert set(manifest["leave_one_out"]) == set(BUILDS)  # held out by how the generator is built
        for held, seen in manifest["leave_one_out"].items():
            assert seen and not any(family[g] == held for g in seen), (held, seen)


def test_leave_one_out_side_by_side_gives_the_serial_loop_s_figures(trained, monkeypatch):
    """The held-out models trained in worker processes give exactly the figures of the same models
    trained one after the other in this process (one torch thread in both), in the same order."""
    import torch

    from gandefect.stages import detectors
    from gandefect.stages.detectors import held_out

    cfg = load_config(trained.root / "params.yaml")
    cfg.detect.loo_fakes_per_generator = 40  # small models: the point is the equality
    data = detectors.prepare_eval_data(cfg)
    kept = {"dcgan", "vae", "resize-conv"}  # three held-out models (the DCGANs, the VAE, another build) on two workers
    for family in set(data.train.families) - {"real"} - kept:
        data.train = detectors.without_family(data.train, family)
    threads = torch.get_num_threads()
    monkeypatch.setattr(held_out, "loo_workers", lambda cfg, n, n_train: 2)
    monkeypatch.setattr(held_out.os, "cpu_count", lambda: 2)
    # one thread each, as the serial loop below (the last model would take both cores: the
    # figures of one model at two threads may round otherwise)
    monkeypatch.setattr(held_out, "loo_threads", lambda n, workers, cores: [1] * n)
    calls = []
    pooled, pooled_on = detectors.leave_one_out(cfg, "cnn", data, lambda *call: calls.append(call))
    # the phase is announced before its first model ends, then each finished model is counted
    assert calls == [("leave-one-out cnn", i, 3) for i in range(4)]
    monkeypatch.setattr(held_out, "loo_workers", lambda cfg, n, n_train: 1)
    torch.set_num_threads(1)
    try:
        serial, serial_on = detectors.leave_one_out(cfg, "cnn", data)
    finally:
        torch.set_num_threads(threads)
    assert list(pooled) == list(serial) and pooled_on == serial_on
    assert pooled == serial
    assert {k.removeprefix("auc_unseen_") for k in pooled if k.startswith("auc_unseen_")} == kept


def test_no_detector_can_read_format_traces(trained, tmp_path):
    """Real test images re-written through the fake-writing path score like real images."""
    root = trained.root
    cfg = load_config(root / "params.yaml")
    test = load_labeled(cfg, "test")
    real = test.images[test.labels == 0]
    cfg_tmp = cfg.model_copy(update={"root": tmp_path})
    written = write_fake_set(cfg_tmp, "reencoded-real", [Image.fromarray(a, "L") for a in real], "test")
    reencoded = np.stack([np.asarray(Image.open(p)) for p in sorted((written.path / "images").glob("*.png"))])
    for name in ("gandefect-detector", "gandefect-judge"):
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        det = load_detector(f"models:/{name}/1")
        p = np.r_[det.score(real), det.score(reencoded)]
        labels = np.r_[np.zeros(len(real)), np.ones(len(reencoded))]
        assert 0.4 <= auc(labels, p) <= 0.6


def test_evaluate_detector_and_external_fakes(trained, tmp_path):
    root = copy_project(trained.root, tmp_path / "project")
    proc = run_cli(root, "evaluate-detector", check=True)
    assert "auc_seen" in proc.stdout and "models:/gandefect-detector/1" in proc.stdout
    folder = make_image_folder(tmp_path / "external", n_good=12, n_corrupt=1)
    proc = run_cli(root, "ingest-fakes", str(folder), "--generator", "external-gan", check=True)
    assert "external-gan: 12 images" in proc.stdout and "1 unreadable" in proc.stdout
    bad = run_cli(root, "ingest-fakes", str(folder), "--generator", "bad/name")
    assert bad.returncode == 2 and "generator name" in bad.stderr


def test_spliced_benchmark_and_localization_metrics(trained, tmp_path):
    root = copy_project(trained.root, tmp_path / "project")
    proc = run_cli(root, "build-spliced", check=True)
    assert "spliced version:" in proc.stdout and ".dir" in proc.stdout
    cfg = load_config(root / "params.yaml")
    from gandefect.data.spliced import load_spliced

    images, masks, manifest = load_spliced(cfg, "test")
    assert len(images) == len(masks) == len(manifest) > 0
    assert manifest["area"].between(cfg.spliced.min_area, cfg.spliced.max_area).all()
    real = load_labeled(cfg, "test")
    first = manifest.iloc[0]
    original = real.images[: int((real.labels == 0).sum())]
    # outside its mask, a spliced image is exactly one of the real test images
    assert any(np.array_equal(images[0][~masks[0]], o[~masks[0]]) for o in original)
    proc = run_cli(root, "evaluate-localization", check=True)
    assert "pixel_ap" in proc.stdout and "iou" in proc.stdout
    metrics = json.loads((root / "reports" / "localization.json").read_text())
    assert 0 <= metrics["pixel_ap"] <= 1 and 0 <= metrics["iou"] <= 1 and first["kind"] in ("rect", "blob")


def test_detectors_carry_their_localization_threshold_and_metrics(trained):
    root = trained.root
    client = _client(root)
    detector = client.get_model_version("gandefect-detector", "1")
    assert 0 < float(detector.tags["map_threshold"]) < 1
    run = client.get_run(detector.tags["run_id"])
    for key in ["pixel_ap", "iou", "map_threshold"]:
        assert 0 <= run.data.metrics[key] <= 1, key
    assert run.data.tags["spliced_version"].endswith(".dir")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    det = load_detector("models:/gandefect-detector/1")
    assert det.map_threshold == pytest.approx(float(detector.tags["map_threshold"]), abs=1e-6)


def test_the_flow_s_repairer_is_registered_evaluated_reported_and_repairs_from_the_cli(trained, tmp_path):
    root = trained.root  # `repair` writes to --out only
    assert str(trained.flow.repairer.version) == "1" and trained.flow.repairer.gate.passed is True
    metrics = json.loads((root / "reports" / "repair" / "repair.json").read_text())
    assert metrics["outside_mask_change"] == 0 and metrics["spliced_outside_mask_change"] == 0
    for key in [
        "psnr_mask",
        "psnr_mask_mean_fill",
        "psnr_mask_biharmonic",
        "fid_before_hinge",
        "fid_after_hinge",
        "judge_pfake_before_hinge",
        "judge_pfake_after_hinge",
    ]:
        assert np.isfinite(metrics[key]), key
    # the generators the repair applies to (changed at least repair.applies_at of their samples), counted and judged
    applied = {k.removeprefix("repaired_fid_ratio_") for k in metrics if k.startswith("repaired_fid_ratio_")}
    assert metrics["repaired_generators"] == len(applied)
    at = load_config(root / "params.yaml").repair.applies_at
    assert all(metrics[f"changed_{g}"] >= at for g in applied)
    for name in ["repair.md", "repair.csv", "repair-grid.png", "spliced-grid.png"]:
        assert (root / "reports" / "repair" / name).stat().st_size > 0, name
    client = _client(root)
    version = client.get_model_version("gandefect-repairer", "1")
    run = client.get_run(version.run_id)
    assert {"l1_hole", "g_adv", "d_loss", "psnr_mask", "outside_mask_change"} <= set(run.data.metrics)
    assert run.data.tags["data_version"].endswith(".dir") and "git_commit" in run.data.tags

    # repair two user files of other sizes and modes; then again inside a given mask
    cfg = load_config(root / "params.yaml")
    src = tmp_path / "in"
    src.mkdir()
    real = load_labeled(cfg, "test").images
    Image.fromarray(real[0]).resize((56, 56)).save(src / "a.png")
    Image.fromarray(real[1]).convert("RGB").save(src / "b.jpg", quality=95)
    proc = run_cli(root, "repair", str(src / "a.png"), str(src / "b.jpg"), "--out", str(tmp_path / "out"), check=True)
    assert "score_before" in proc.stdout
    table = __import__("pandas").read_csv(tmp_path / "out" / "repair.csv")
    assert list(table["image"].map(lambda p: p.rsplit("/", 1)[-1])) == ["a.png", "b.jpg"]
    for stem in ("a", "b"):
        assert Image.open(tmp_path / "out" / f"{stem}.png").size == (28, 28)
        assert Image.open(tmp_path / "out" / f"{stem}.mask.png").size == (28, 28)
    mask = np.zeros((28, 28), np.uint8)
    mask[8:20, 8:20] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(real[2]).save(src / "c.png")
    run_cli(
        root,
        "repair",
        str(src / "c.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "--out",
        str(tmp_path / "m"),
        check=True,
    )
    repaired = np.asarray(Image.open(tmp_path / "m" / "c.png"))
    assert np.array_equal(repaired[mask == 0], real[2][mask == 0])

    # bad masks and bad images: one clear line, exit 2, nothing written
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(tmp_path / "full.png")
    Image.fromarray(np.full((14, 28), 255, np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "junk.png").write_bytes(b"junk")
    for args, message in [
        (["--mask", str(tmp_path / "empty.png")], "empty"),
        (["--mask", str(tmp_path / "full.png")], "whole image"),
        (["--mask", str(tmp_path / "small.png")], "mask is 28x14 but the image is 28x28"),
        (["--mask", str(tmp_path / "junk.png")], "not a readable image"),
    ]:
        bad = run_cli(root, "repair", str(src / "c.png"), *args, "--out", str(tmp_path / "bad"))
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)
    bad = run_cli(root, "repair", str(tmp_path / "junk.png"), "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "not a readable image" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_generate_clean_repairs_samples_and_reject_keeps_the_least_suspicious(trained, tmp_path):
    root = trained.root  # generate writes to --out only
    proc = run_cli(root, "generate", "--generator", "hinge", "--n", "6", "--out", str(tmp_path / "raw"), check=True)
    assert "6 samples" in proc.stdout and len(list((tmp_path / "raw").glob("*.png"))) == 6
    proc = run_cli(
        root,
        "generate",
        "--generator",
        "hinge",
        "--n",
        "6",
        "--clean",
        "--reject",
        "--out",
        str(tmp_path / "clean"),
        check=True,
    )
    table = __import__("pandas").read_csv(tmp_path / "clean" / "generate.csv")
    cfg = load_config(root / "params.yaml")
    assert len(table) == 6 and "mean p_fake" in proc.stdout
    assert table["iterations"].between(0, cfg.repair.iterations).all()
    # --reject drew reject_factor x 6 samples (the same seed) and kept the 6 the served detector scores lowest
    from gandefect.lifecycle.served import load_served_detector
    from gandefect.lifecycle.zoo import sample_generator

    drawn = load_served_detector(cfg).score(sample_generator(cfg, "hinge", 6 * cfg.repair.reject_factor, cfg.seed))
    assert cfg.repair.reject_factor > 1
    # (the tiny detector scores these within 1e-6 of each other: the same numbers up to the last bits,
    # which two processes' oneDNN sums may round differently)
    assert sorted(table["score_before"]) == pytest.approx(sorted(drawn)[:6], abs=1e-8)
    assert table["score_before"].max() <= sorted(drawn)[6]
    # a repaired sample scores no higher than before (a pass that does not lower the score is undone)
    assert (table["score_after"] <= table["score_before"] + 1e-6).all()
    bad = run_cli(root, "generate", "--generator", "no-such-loss", "--n", "2", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "gandefect-generator-no-such-loss" in bad.stderr


def _alias(client, alias):
    return str(client.get_model_version_by_alias("gandefect-detector", alias).version)


def test_train_repairer_from_the_cli_registers_a_second_version_and_gates_it_against_the_champion(trained, tmp_path):
    root = copy_project(trained.root, tmp_path / "project")
    proc = run_cli(root, "train-repairer", check=True)
    assert "registered gandefect-repairer v2" in proc.stdout and "psnr_mask" in proc.stdout
    assert "model gate gandefect-repairer v2: passed" in proc.stdout
    client = _client(root)
    assert str(client.get_model_version_by_alias("gandefect-repairer", "champion").version) == "2"
    run = client.get_run(client.get_model_version("gandefect-repairer", "2").run_id)
    assert {"l1_hole", "g_adv", "d_loss", "psnr_mask", "outside_mask_change"} <= set(run.data.metrics)
    report = (root / "reports" / "gates" / "gandefect-repairer-v2.md").read_text()
    assert "Champion: v1" in report and "psnr_mask" in report


def test_model_gate_keeps_a_worse_candidate_out_promotes_a_better_one_and_rolls_back(trained, tmp_path):
    """v1 (the session's flow) passed the gate as the first champion. A detector that cannot
    learn (lr 1e-9) fails against it; once an operator forces it in, a normal detector beats
    it and takes over; rollback walks the champions back."""
    import yaml

    from gandefect.lifecycle import gates

    assert trained.flow.detector.gate.passed is True and str(trained.flow.detector.version) == "1"
    root = copy_project(trained.root, tmp_path / "project")
    client = _client(root)
    assert _alias(client, "champion") == "1"
    params_path = root / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["detect"]["leave_one_out"] = False  # the gate is the point here; leave-one-out is the flow's (above)
    params["profiles"]["tiny"]["detect"]["cnn"]["lr"] = 1e-9
    # from scratch: a candidate fine-tuned from v1 would know what v1 knows
    params["detect"].setdefault("cnn", {})["warm_start"] = False
    params["detect"]["families"] = ["cnn"]
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        worse = run_cli(root, "train-detectors", "--no-sample")
        assert worse.returncode == 4, worse.stdout + worse.stderr
        assert "registered gandefect-detector v2 (cnn)" in worse.stdout and "auc_seen" in worse.stdout
        assert "failed gate" in worse.stdout and "worse than the champion" in worse.stdout
        assert _alias(client, "champion") == "1"
        assert _alias(client, "challenger") == "1"
        version = client.get_model_version("gandefect-detector", "2")
        assert version.tags["family"] == "cnn"
        run_cli(root, "promote", "2", check=True)  # an operator's decision, not the gate's
        assert _alias(client, "champion") == "2"
        params["profiles"]["tiny"]["detect"]["cnn"]["lr"] = 0.002
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        better = run_cli(root, "train-detectors", "--no-sample", check=True)
        assert "model gate gandefect-detector v3: passed" in better.stdout
        assert _alias(client, "champion") == "3"
        report = (root / "reports" / "gates" / "gandefect-detector-v3.md").read_text()
        assert "Champion: v2" in report and "auc_gen" in report
    finally:
        params_path.write_text(original)
    proc = run_cli(root, "status", check=True)
    assert "gandefect-detector" in proc.stdout and "v3" in proc.stdout
    assert "champion v3 -> v2" in run_cli(root, "rollback", check=True).stdout
    assert "champion v2 -> v1" in run_cli(root, "rollback", check=True).stdout
    assert _alias(client, "champion") == "1"
    last = run_cli(root, "rollback")
    assert last.returncode == 2 and "no previous champion" in last.stderr
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    assert gates.alias_version("gandefect-detector", "champion") == "1"
