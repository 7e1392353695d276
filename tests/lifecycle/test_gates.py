"""The model suite over the generator x metric table (real Great Expectations, no registry)."""

import numpy as np

from gandefect.config import load_config
from gandefect.lifecycle.gates import REPAIRER, _reasons, metrics_table, run_suite, spec_for
from tests.conftest import REPO

GATED = ["png", "jpeg95", "jpeg90", "jpeg75", "jpeg60", "jpeg90x75", "webp80", "blur0.5", "blur1.0", "resize",
         "rgbjpeg85"]
CHAMPION = {"auc_seen": 0.99, "auc_unseen_min": 0.95, "pixel_ap": 0.8, "iou": 0.6, "ece": 0.02, "ece_jpeg75": 0.02,
            "auc_gen_hinge": 0.99, "auc_gen_lsgan": 0.98, "tpr_fake_wild_hinge": 0.95, "tpr_fake_wild_lsgan": 0.92,
            **{f"fpr_real_{c}": 0.01 for c in GATED}}


def _judge(candidate, champion=CHAMPION, model="gandefect-detector"):
    spec = spec_for(load_config(REPO / "params.yaml", "default"), model)
    table = metrics_table(spec, candidate, champion)
    return table, run_suite(spec, table), _reasons(table, spec.margin)


def test_an_equal_candidate_passes_and_the_table_has_one_row_per_generator_and_metric():
    table, report, reasons = _judge(dict(CHAMPION))
    assert report.success and not reasons
    assert set(table["row"]) >= {"hinge:auc_gen", "lsgan:auc_gen", "all:pixel_ap", "all:ece"}


def test_forgetting_an_old_generator_fails_even_when_the_new_one_is_learned():
    candidate = {**CHAMPION, "auc_gen_lsgan": 0.90, "auc_gen_newgan": 0.99}
    table, report, reasons = _judge(candidate)
    assert not report.success
    assert any(r.startswith("lsgan:auc_gen = 0.9000, worse than the champion's 0.9800") for r in reasons)
    assert not any(r.startswith("newgan") for r in reasons)


def test_a_generator_the_candidate_was_not_judged_on_fails():
    candidate = {k: v for k, v in CHAMPION.items() if k != "auc_gen_hinge"}
    _, report, reasons = _judge(candidate)
    assert not report.success and any("hinge:auc_gen = missing" in r for r in reasons)


def test_thresholds_apply_without_a_champion_and_lower_is_better_for_ece():
    candidate = {**CHAMPION, "ece": 0.3, "iou": 0.1}
    table, report, reasons = _judge(candidate, champion=None)
    assert not report.success and table["regression"].isna().all()
    assert "all:ece = 0.3000, needs at most 0.1000" in reasons
    assert "all:iou = 0.1000, needs at least 0.3000" in reasons
    assert np.isfinite(table.loc[table["row"] == "all:auc_seen", "headroom"]).all()


REPAIRER_CHAMPION = {"psnr_mask": 12.0, "psnr_gain": 2.0, "outside_mask_change": 0.0,
                     "fid_ratio_hinge": 0.65, "fid_ratio_lsgan": 0.67}


def test_the_repairer_gate_judges_fid_ratio_per_generator_lower_is_better():
    table, report, reasons = _judge(dict(REPAIRER_CHAMPION), REPAIRER_CHAMPION, REPAIRER)
    assert report.success and not reasons
    assert set(table["row"]) == {"all:psnr_gain", "all:outside_mask_change", "all:psnr_mask",
                                 "hinge:fid_ratio", "lsgan:fid_ratio"}
    worse = {**REPAIRER_CHAMPION, "fid_ratio_hinge": 1.2, "outside_mask_change": 3.0, "psnr_mask": 11.0}
    _, report, reasons = _judge(worse, REPAIRER_CHAMPION, REPAIRER)
    assert not report.success
    assert "hinge:fid_ratio = 1.2000, needs at most 1.0000" in reasons
    assert "all:outside_mask_change = 3.0000, needs at most 0.0000" in reasons
    assert any(r.startswith("all:psnr_mask = 11.0000, worse than the champion's 12.0000") for r in reasons)
    assert not any(r.startswith("lsgan") for r in reasons)


def test_a_compare_only_metric_neither_model_has_does_not_fail_the_gate():
    # leave_one_out: false gives no auc_unseen_min; in the tiny profile it has no threshold
    spec = spec_for(load_config(REPO / "params.yaml", "tiny"), "gandefect-detector")
    without = {k: v for k, v in CHAMPION.items() if k != "auc_unseen_min"}
    table = metrics_table(spec, without, without)
    reasons = _reasons(table, spec.margin)
    assert run_suite(spec, table).success and not reasons
    # ... but it still fails when the champion was judged on it
    assert any("auc_unseen_min = missing" in r for r in _reasons(metrics_table(spec, without, CHAMPION), spec.margin))
