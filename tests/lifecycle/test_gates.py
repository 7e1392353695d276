"""The model suite over the generator x metric table (real Great Expectations, no registry)."""

import numpy as np
import pytest

from gandefect.config import GATED_CONDITIONS, load_config
from gandefect.evaluate.figures import Figures, wilson
from gandefect.lifecycle.gates import _reasons, improvements, metrics_table, not_judged, run_suite, spec_for
from gandefect.names import REPAIRER_MODEL
from tests.conftest import REPO

GATED = list(GATED_CONDITIONS)
CHAMPION = {
    "auc_seen": 0.99,
    "auc_unseen_min": 0.95,
    "pixel_ap": 0.8,
    "iou": 0.6,
    "ece": 0.02,
    "ece_jpeg75": 0.02,
    "auc_gen_hinge": 0.99,
    "auc_gen_lsgan": 0.98,
    "tpr_fake_wild_hinge": 0.95,
    "tpr_fake_wild_lsgan": 0.92,
    **{f"fpr_real_{c}": 0.01 for c in GATED},
}


def _judge(candidate, champion=CHAMPION, model="gandefect-detector", recorded=None):
    spec = spec_for(load_config(REPO / "params.yaml", "default"), model)
    table = metrics_table(spec, candidate, champion, recorded)
    return table, run_suite(spec, table), _reasons(table)


def test_an_equal_candidate_passes_and_the_table_has_one_row_per_generator_and_metric():
    table, report, reasons = _judge(dict(CHAMPION))
    assert report.success and not reasons
    assert set(table["row"]) >= {"hinge:auc_gen", "lsgan:auc_gen", "all:pixel_ap", "all:ece"}


def test_forgetting_an_old_generator_fails_even_when_the_new_one_is_learned():
    candidate = {**CHAMPION, "auc_gen_lsgan": 0.90, "auc_gen_newgan": 0.99}
    _, report, reasons = _judge(candidate)
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


REPAIRER_CHAMPION = {
    "psnr_mask": 12.0,
    "psnr_gain": 2.0,
    "outside_mask_change": 0.0,
    "repaired_generators": 1,
    "fid_ratio_hinge": 0.65,
    "fid_ratio_lsgan": 1.0,
    "repaired_fid_ratio_hinge": 0.65,
}


def test_the_repairer_gate_judges_fid_ratio_per_generator_lower_is_better():
    table, report, reasons = _judge(dict(REPAIRER_CHAMPION), REPAIRER_CHAMPION, REPAIRER_MODEL)
    assert report.success and not reasons
    assert set(table["row"]) == {
        "all:psnr_gain",
        "all:outside_mask_change",
        "all:psnr_mask",
        "all:repaired_generators",
        "hinge:fid_ratio",
        "lsgan:fid_ratio",
        "hinge:repaired_fid_ratio",
    }
    worse = {**REPAIRER_CHAMPION, "fid_ratio_hinge": 1.2, "outside_mask_change": 3.0, "psnr_mask": 11.0}
    _, report, reasons = _judge(worse, REPAIRER_CHAMPION, REPAIRER_MODEL)
    assert not report.success
    assert "hinge:fid_ratio = 1.2000, needs at most 1.0000" in reasons
    assert "all:outside_mask_change = 3.0000, needs at most 0.0000" in reasons
    assert any(r.startswith("all:psnr_mask = 11.0000, worse than the champion's 12.0000") for r in reasons)
    assert not any(r.startswith("lsgan") for r in reasons)


def test_the_repairer_must_improve_the_generators_it_applies_to_and_repair_at_least_one():
    """lsgan is refused as whole-image (ratio 1.00, no `repaired_fid_ratio` row): that passes;
    hinge, which the loop rewrites, must come down to the profile's bound, not merely not get worse."""
    unimproved = {**REPAIRER_CHAMPION, "fid_ratio_hinge": 0.95, "repaired_fid_ratio_hinge": 0.95}
    _, report, reasons = _judge(unimproved, None, REPAIRER_MODEL)
    assert not report.success and reasons == ["hinge:repaired_fid_ratio = 0.9500, needs at most 0.7000"]
    nothing = {k: v for k, v in REPAIRER_CHAMPION.items() if "repaired" not in k} | {"repaired_generators": 0}
    _, report, reasons = _judge(nothing, None, REPAIRER_MODEL)
    assert not report.success and reasons == ["all:repaired_generators = 0.0000, needs at least 1.0000"]
    rgb = spec_for(load_config(REPO / "params.yaml", "rgb64"), REPAIRER_MODEL)  # the data set's own bound
    assert (
        rgb.ceiling["repaired_fid_ratio"] == 0.9
        and run_suite(rgb, metrics_table(rgb, unimproved, None)).success is False
    )
    assert run_suite(rgb, metrics_table(rgb, {**unimproved, "repaired_fid_ratio_hinge": 0.85}, None)).success


def test_a_compare_only_metric_neither_model_has_does_not_fail_the_gate():
    # in the tiny profile pixel_ap has no threshold: it is compared with the champion only
    spec = spec_for(load_config(REPO / "params.yaml", "tiny"), "gandefect-detector")
    without = {k: v for k, v in CHAMPION.items() if k != "pixel_ap"}
    table = metrics_table(spec, without, without)
    assert run_suite(spec, table).success and not _reasons(table)
    # ... but it fails when the champion is judged on it today
    assert any("pixel_ap = missing" in r for r in _reasons(metrics_table(spec, without, CHAMPION)))


def test_a_figure_the_data_cannot_support_is_named_with_its_reason_and_never_passed():
    from gandefect.lifecycle.gates import not_judged

    # a generator whose test samples are too few: both models lack its figures, for the same reason
    candidate, champion = Figures(CHAMPION, min_samples=10), Figures(CHAMPION, min_samples=10)
    for figures in (candidate, champion):
        figures.share("tpr_fake_wild_vae", np.ones(3, bool), "test samples of vae")
        figures.auc(
            "auc_gen_vae",
            np.r_[np.zeros(50, int), np.ones(3, int)],
            np.linspace(0, 1, 53),
            "real test images",
            "test samples of vae",
        )
    table, report, reasons = _judge(candidate, champion)
    rows = table.set_index("row")
    assert rows.loc["vae:auc_gen", "missing"] == (
        "candidate: 3 test samples of vae (a figure needs at least 10); "
        "champion: 3 test samples of vae (a figure needs at least 10)"
    )
    # the default gate has a floor on both: a floor it cannot check fails, with the reason
    assert not report.success
    assert any(
        r.startswith("vae:auc_gen is missing (candidate: 3 test samples of vae") and "cannot be checked" in r
        for r in reasons
    ), reasons
    # without a threshold (the tiny profile) the row is not judged, and says so
    spec = spec_for(load_config(REPO / "params.yaml", "tiny"), "gandefect-detector")
    table = metrics_table(spec, candidate, champion)
    assert run_suite(spec, table).success and not _reasons(table)
    assert (
        "vae:auc_gen: candidate: 3 test samples of vae (a figure needs at least 10); "
        "champion: 3 test samples of vae (a figure needs at least 10)" in not_judged(table)
    )


def test_the_table_shows_the_champion_on_todays_data_beside_its_recorded_figures_and_compares_only_today():
    recorded = {**CHAMPION, "auc_seen": 0.999, "pixel_ap": 0.95}  # judged on easier data at its promotion
    today = {**CHAMPION, "auc_gen_vae": 0.93, "tpr_fake_wild_vae": 0.40}
    candidate = {**CHAMPION, "auc_gen_vae": 0.997, "tpr_fake_wild_vae": 0.96}
    table, report, reasons = _judge(candidate, today, recorded=recorded)
    rows = table.set_index("row")
    assert {"champion_value", "champion_recorded"} <= set(table.columns)
    assert rows.loc["all:pixel_ap", "champion_value"] == 0.8 and rows.loc["all:pixel_ap", "champion_recorded"] == 0.95
    # 0.8 today against 0.95 recorded would be a regression; against today's 0.8 it is none
    assert report.success and not reasons
    assert np.isnan(rows.loc["vae:auc_gen", "champion_recorded"]) and rows.loc["vae:auc_gen", "champion_value"] == 0.93


def test_a_new_family_the_champion_misses_is_the_reason_to_promote():
    today = {**CHAMPION, "auc_gen_vae": 0.93, "tpr_fake_wild_vae": 0.40}
    candidate = {**CHAMPION, "auc_gen_vae": 0.997, "tpr_fake_wild_vae": 0.96}
    table, report, reasons = _judge(candidate, today)
    assert report.success and not reasons
    assert improvements(table) == ["champion misses `vae` (tpr_fake_wild 0.400, floor 0.850); candidate 0.960"]
    # no reason to promote when the champion already catches it
    assert improvements(_judge(candidate, {**today, "tpr_fake_wild_vae": 0.9})[0]) == []


def test_a_candidate_better_on_the_new_family_but_worse_on_an_old_one_is_refused_on_that_slice():
    today = {**CHAMPION, "auc_gen_vae": 0.93, "tpr_fake_wild_vae": 0.40}
    candidate = {**CHAMPION, "auc_gen_vae": 0.997, "tpr_fake_wild_vae": 0.96, "tpr_fake_wild_lsgan": 0.86}
    table, report, reasons = _judge(candidate, today)
    assert not report.success
    assert reasons == ["lsgan:tpr_fake_wild = 0.8600, worse than the champion's 0.9200 by more than 0.0200"]
    # the improvement is reported, and does not override the regression
    assert improvements(table) == ["champion misses `vae` (tpr_fake_wild 0.400, floor 0.850); candidate 0.960"]


def test_leave_one_out_figures_are_floors_only_never_compared_with_the_champion():
    spec = spec_for(load_config(REPO / "params.yaml", "default"), "gandefect-detector")
    candidate = {**CHAMPION, "auc_unseen_min": 0.91}  # below the champion's 0.95, above the floor 0.9
    table = metrics_table(spec, candidate, CHAMPION, CHAMPION)
    row = table.set_index("row").loc["all:auc_unseen_min"]
    assert np.isnan(row["champion_value"]) and row["champion_recorded"] == 0.95
    assert not _reasons(table)
    assert _reasons(metrics_table(spec, {**candidate, "auc_unseen_min": 0.85}, CHAMPION)) == [
        "all:auc_unseen_min = 0.8500, needs at least 0.9000"
    ]


def test_a_family_the_champion_never_saw_does_not_count_in_the_leave_one_out_floor():
    from gandefect.stages.detectors import summarize_unseen

    def summary(new: set[str]) -> dict[str, float]:
        metrics = Figures({"auc_unseen_lsgan": 0.98, "auc_unseen_vae": 0.96, "auc_unseen_mixup": 0.79})
        summarize_unseen(metrics, new)
        return {k: metrics[k] for k in ("auc_unseen_min", "auc_unseen_mean", "auc_unseen_min_all")}

    assert summary(set()) == pytest.approx(
        {"auc_unseen_min": 0.79, "auc_unseen_mean": (0.98 + 0.96 + 0.79) / 3, "auc_unseen_min_all": 0.79}
    )
    assert summary({"mixup"}) == pytest.approx(
        {"auc_unseen_min": 0.96, "auc_unseen_mean": 0.97, "auc_unseen_min_all": 0.79}
    )


def test_a_held_out_family_without_test_samples_is_missing_with_its_reason_not_a_crash():
    from gandefect.stages.detectors import summarize_unseen

    metrics = Figures(min_samples=10)
    metrics.auc(
        "auc_unseen_vae",
        np.r_[np.zeros(40, int), np.ones(3, int)],
        np.linspace(0, 1, 43),
        "real test images",
        "test samples of vae",
    )
    metrics.share("tpr_unseen_wild_vae", np.ones(3, bool), "test samples of vae")
    summarize_unseen(metrics, set())
    assert np.isnan(metrics["auc_unseen_min"]) and np.isnan(metrics["tpr_unseen_min"])
    assert "3 test samples of vae (a figure needs at least 10)" in metrics.missing["auc_unseen_min"]
    metrics["auc_unseen_hinge"] = 0.97  # another family that could be measured: the summary is its figure
    summarize_unseen(metrics, set())
    assert metrics["auc_unseen_min"] == 0.97 and "auc_unseen_min" not in metrics.missing


def test_the_wilson_interval_holds_the_share_and_narrows_with_the_count():
    lo, hi = wilson(0.8, 40)
    assert 0.64 < lo < 0.8 < hi < 0.91
    lo2, hi2 = wilson(0.8, 4000)
    assert lo < lo2 < 0.8 < hi2 < hi and hi2 - lo2 < 0.03
    assert wilson(1.0, 20)[1] == 1.0 and wilson(0.0, 20)[0] == 0.0


def test_a_slice_too_small_for_its_floor_is_named_and_refused_only_when_its_whole_interval_misses_it():
    new = {"auc_gen_newddpm": 0.95, "n_test_newddpm": 40, "n_test_real": 1000}
    candidate = {**CHAMPION, **new, "tpr_fake_wild_newddpm": 0.80}
    table, report, reasons = _judge(candidate)
    row = table[table["row"] == "newddpm:tpr_fake_wild"].iloc[0]
    assert row["small"] and row["n"] == 40 and row["ci_low"] < 0.8 and 0.85 < row["ci_high"]
    assert report.success and not reasons  # 0.80 of 40 could be 0.85: not refused ...
    said = [r for r in not_judged(table) if r.startswith("newddpm:tpr_fake_wild")]
    assert len(said) == 1 and "from 40 test images" in said[0] and "too few" in said[0]  # ... and not passed silently
    # far below: refused even from 40, with the interval in the reason
    table, report, reasons = _judge({**candidate, "tpr_fake_wild_newddpm": 0.50})
    assert not report.success
    assert any(
        r.startswith("newddpm:tpr_fake_wild = 0.5000 (95 % interval 0.35-0.65 of 40), needs at least 0.85")
        for r in reasons
    )
    # far above: passed from 40 and not listed
    table, report, reasons = _judge({**candidate, "tpr_fake_wild_newddpm": 1.0})
    assert report.success and not any(r.startswith("newddpm") for r in not_judged(table))
    # the same 0.80 from 400 images is refused like any slice, and the real slice is large enough to judge
    table, report, reasons = _judge({**candidate, "n_test_newddpm": 400})
    assert (
        not report.success
        and "newddpm:tpr_fake_wild = 0.8000 (95 % interval 0.76-0.84 of 400), needs at least 0.8500" in reasons
    )
    assert not table.loc[table["metric"].str.startswith("fpr_real"), "small"].any()


def test_the_regression_margin_follows_the_slices_standard_error():
    champion = {**CHAMPION, "tpr_fake_wild_lsgan": 0.90}
    candidate = {**CHAMPION, "tpr_fake_wild_lsgan": 0.86}
    # 100 test images: the champion's 0.90 has a standard error of 0.03, so 0.04 worse is noise
    table, report, reasons = _judge({**candidate, "n_test_lsgan": 100}, {**champion, "n_test_lsgan": 100})
    allowed = table.loc[table["row"] == "lsgan:tpr_fake_wild", "allowed"].item()
    assert allowed == pytest.approx(1.96 * 0.03, abs=1e-3) and report.success and not reasons
    # 5,000 images: the error is 0.004, the fixed margin (0.02) applies and 0.04 worse is refused
    table, report, reasons = _judge({**candidate, "n_test_lsgan": 5000}, {**champion, "n_test_lsgan": 5000})
    assert table.loc[table["row"] == "lsgan:tpr_fake_wild", "allowed"].item() == pytest.approx(0.02)
    assert not report.success and any(r.startswith("lsgan:tpr_fake_wild = 0.8600, worse") for r in reasons)


def test_a_family_ingested_with_few_images_is_held_to_the_few_shot_floors():
    # pixelcnn: 500 images brought by ingest-fakes, 200 test samples (large enough to judge)
    today = {**CHAMPION, "auc_gen_pixelcnn": 0.93, "tpr_fake_wild_pixelcnn": 0.12, "tpr_fake_png_pixelcnn": 0.19}
    learned = {
        **CHAMPION,
        "auc_gen_pixelcnn": 0.998,
        "tpr_fake_wild_pixelcnn": 0.82,
        "tpr_fake_png_pixelcnn": 0.93,
        "n_ingested_pixelcnn": 500,
        "n_test_pixelcnn": 200,
    }
    table, report, reasons = _judge(learned, today)
    assert report.success and not reasons
    rows = table.set_index("row")
    assert (
        rows.loc["pixelcnn:tpr_fake_wild", "threshold"] == 0.70
        and rows.loc["pixelcnn:tpr_fake_wild", "rule"] == "few-shot"
    )
    assert rows.loc["pixelcnn:tpr_fake_png", "threshold"] == 0.85  # a row only few-shot families have
    assert "lsgan:tpr_fake_png" not in rows.index and rows.loc["lsgan:tpr_fake_wild", "threshold"] == 0.85
    assert improvements(table) == [
        "champion misses `pixelcnn` (tpr_fake_wild 0.120, floor 0.700); candidate 0.820",
        "champion misses `pixelcnn` (tpr_fake_png 0.190, floor 0.850); candidate 0.930",
    ]
    # as PNG too few called fake: refused on that row
    _, report, reasons = _judge({**learned, "tpr_fake_png_pixelcnn": 0.70}, today)
    assert not report.success and any(r.startswith("pixelcnn:tpr_fake_png = 0.7000") for r in reasons)
    # the same figures from 2,000 ingested images, or from the zoo (no n_ingested), meet the usual floor
    for more in (
        {**learned, "n_ingested_pixelcnn": 2000},
        {k: v for k, v in learned.items() if k != "n_ingested_pixelcnn"},
    ):
        table, report, reasons = _judge(more, today)
        assert (
            not report.success
            and "pixelcnn:tpr_fake_wild = 0.8200 (95 % interval 0.76-0.87 of 200), needs at least 0.8500" in reasons
            and "pixelcnn:tpr_fake_png" not in set(table["row"])
        )
