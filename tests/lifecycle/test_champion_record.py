"""The champion's figures per generator on today's data, its alerts, and score drift."""

import numpy as np

from gandefect.config import ModelGateConfig
from gandefect.evaluate import drift
from gandefect.lifecycle import champion_record

FLOORS = ModelGateConfig(floor={"auc_gen": 0.9, "tpr_fake_wild": 0.85})


def _figures(metrics):
    return champion_record.ChampionFigures("gandefect-detector", "3", "data1", "fakes1", "watch", metrics)


def test_a_generator_below_its_floor_is_an_alert_naming_it_and_its_family():
    metrics = {
        "auc_gen_lsgan": 0.99,
        "tpr_fake_wild_lsgan": 0.95,
        "auc_gen_vae": 0.93,
        "tpr_fake_wild_vae": 0.40,
        "auc_gen_vae-epoch1": 0.99,
        "tpr_fake_wild_vae-epoch1": 0.97,
        "auc_seen": 0.5,
    }
    table = champion_record.per_generator(metrics, FLOORS)
    assert list(table["generator"]) == ["lsgan", "vae", "vae-epoch1"]
    assert list(table["family"]) == ["lsgan", "vae", "vae"]
    assert champion_record.alerts(_figures(metrics), FLOORS) == [
        "gandefect-detector v3 misses `vae` (family vae): tpr_fake_wild 0.400 < 0.85"
    ]
    assert champion_record.alerts(_figures({**metrics, "tpr_fake_wild_vae": 0.9}), FLOORS) == []


def test_a_family_ingested_with_few_images_is_watched_against_the_few_shot_floor():
    gate = ModelGateConfig(floor={"tpr_fake_wild": 0.85}, few_shot_floor={"tpr_fake_wild": 0.70}, few_shot_below=1000)
    metrics = {"tpr_fake_wild_pixelcnn": 0.82, "n_ingested_pixelcnn": 500, "tpr_fake_wild_lsgan": 0.82}
    assert champion_record.alerts(_figures(metrics), gate) == [
        "gandefect-detector v3 misses `lsgan` (family lsgan): tpr_fake_wild 0.820 < 0.85"
    ]
    assert len(champion_record.alerts(_figures({**metrics, "n_ingested_pixelcnn": 1500}), gate)) == 2


def test_each_generator_row_says_how_many_samples_it_had_and_how_sure_its_figure_is():
    metrics = {
        "tpr_fake_wild_new": 0.80,
        "n_train_new": 400,
        "n_val_new": 50,
        "n_test_new": 50,
        "tpr_fake_wild_lsgan": 0.95,
    }
    table = champion_record.per_generator(metrics, FLOORS).set_index("generator")
    assert table.loc["new", "train/val/test"] == "400/50/50"
    lo, hi = (float(x) for x in table.loc["new", "tpr_fake_wild 95 %"].split("-"))
    assert 0.6 < lo < 0.8 < hi < 0.9
    assert table.loc["lsgan", "train/val/test"] == "?/?/?" and table.loc["lsgan", "tpr_fake_wild 95 %"] == ""


def test_the_record_round_trips(tmp_path):
    from gandefect.config import load_config
    from tests.conftest import REPO

    cfg = load_config(REPO / "params.yaml", "tiny")
    cfg.root = tmp_path
    figures = _figures({"auc_gen_lsgan": 0.99})
    champion_record.write(cfg, figures)
    assert champion_record.read(cfg, "gandefect-detector") == figures
    assert champion_record.read(cfg, "gandefect-repairer") is None


def test_scores_are_counted_in_the_buckets_prometheus_uses():
    assert drift.histogram(np.array([0.0, 0.05, 0.1, 0.15, 0.95, 1.0])) == [3, 1, 0, 0, 0, 0, 0, 0, 0, 2]


def test_a_metrics_page_is_read_back_into_bucket_counts_per_model_version():
    page = "\n".join(
        [
            "# HELP gandefect_detect_p_fake p_fake",
            *[
                f'gandefect_detect_p_fake_bucket{{le="{e}",model_version="3"}} {c}'
                for e, c in zip([*drift.BUCKETS, "+Inf"], [5, 6, 6, 6, 6, 6, 6, 6, 7, 10, 10])
            ],
            'gandefect_detect_p_fake_bucket{le="0.1",model_version="2"} 99.0',
            'gandefect_detect_verdicts_total{model_version="3",verdict="fake"} 4.0',
            'gandefect_detect_verdicts_total{model_version="3",verdict="real"} 6.0',
            'gandefect_detect_verdicts_total{model_version="2",verdict="real"} 50.0',
        ]
    )
    assert drift.parse_prometheus(page, match={"model_version": "3"}) == [5, 1, 0, 0, 0, 0, 0, 0, 1, 3]
    assert drift.parse_counter(page, match={"model_version": "3"}) == {"fake": 4.0, "real": 6.0}


def test_traffic_of_a_new_family_is_flagged_as_a_shift_and_like_validation_is_not():
    validation = drift.histogram(np.r_[np.full(90, 0.02), np.full(10, 0.98)])
    same = drift.compare(validation, 0.10, validation, 0.11)
    assert not same["shifted"] and same["psi"] < 0.01
    new_family = drift.histogram(np.r_[np.full(40, 0.3), np.full(60, 0.6)])  # scores where validation has none
    shifted = drift.compare(validation, 0.10, new_family, 0.60)
    assert shifted["shifted"] and shifted["psi"] > drift.SHIFT_PSI


def test_a_retrain_is_worth_starting_only_for_missed_generators_the_champion_never_trained_on():
    metrics = {"tpr_fake_wild_lsgan": 0.70, "tpr_fake_wild_newddpm": 0.30, "tpr_fake_wild_hinge": 0.95}
    figures = champion_record.ChampionFigures(
        "gandefect-detector", "3", "d", "f", "watch", metrics, trained_on=["hinge", "lsgan"]
    )
    assert champion_record.to_learn(figures, FLOORS) == ["newddpm"]  # lsgan is missed too, but its samples are not new
    figures.trained_on.append("newddpm")
    assert champion_record.to_learn(figures, FLOORS) == []
    assert champion_record.to_learn(_figures(metrics), FLOORS) == [
        "lsgan",
        "newddpm",
    ]  # a record written before trained_on


def test_watch_starts_no_retrain_where_a_newer_version_already_learned_from_the_same_data(tmp_path):
    """A candidate trained on today's data and fakes that is not champion (refused, or rolled
    back) would come out the same from a second retrain: watch names it instead of starting one."""
    import mlflow

    from gandefect.orchestrate.keep_up import _refused_on_this_data

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        client = mlflow.MlflowClient()
        client.create_registered_model("gandefect-detector")
        for tags in (
            {"data_version": "data1", "fakes_version": "fakes0"},
            {"data_version": "data1", "fakes_version": "fakes0"},
        ):
            client.create_model_version("gandefect-detector", str(tmp_path), tags=tags)
        champion = champion_record.ChampionFigures("gandefect-detector", "1", "data1", "fakes1", "watch", {})
        assert _refused_on_this_data(champion) is None  # v2 was trained before fakes1 was ingested
        client.create_model_version(
            "gandefect-detector", str(tmp_path), tags={"data_version": "data1", "fakes_version": "fakes1"}
        )
        assert int(_refused_on_this_data(champion).version) == 3
        assert (
            _refused_on_this_data(
                champion_record.ChampionFigures("gandefect-detector", "3", "data1", "fakes1", "watch", {})
            )
            is None
        )
    finally:
        mlflow.set_tracking_uri(None)
