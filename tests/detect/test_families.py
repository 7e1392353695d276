"""Detector families come from one registry built from the Config; the judge is chosen by rule."""

import numpy as np
import pytest

from gandefect.config import Config
from gandefect.detect import families
from gandefect.detect.cnn import CNNDetector
from gandefect.detect.spectral import SpectralDetector
from gandefect.errors import ConfigError
from gandefect.stages.detectors import FamilyResult
from gandefect.stages.detectors.held_out import loo_threads
from gandefect.stages.detectors.train import _judge

CFG = Config(
    seed=9,
    data={"mode": "RGB"},
    detect={
        "cnn": {
            "width": 8,
            "epochs": 2,
            "lr": 0.01,
            "loo_width": 4,
            "loo_epochs": 1,
            "finetune_epochs": 3,
            "finetune_lr": 0.001,
            "finetune_p_process": None,
        },
        "spectral": {"C": 0.5, "window": 8},
    },
)


def test_each_family_is_built_from_its_config_section():
    cnn = families.build(CFG, "cnn")
    assert isinstance(cnn, CNNDetector) and cnn.cfg == CFG.detect.cnn and (cnn.channels, cnn.seed) == (3, 9)
    held_out = families.build(CFG, "cnn", held_out=True)
    assert (held_out.cfg.width, held_out.cfg.epochs, held_out.cfg.lr) == (4, 1, 0.01)
    spectral = families.build(CFG, "spectral", held_out=True)
    assert isinstance(spectral, SpectralDetector) and spectral.cfg == CFG.detect.spectral and spectral.seed == 9


def test_a_cnn_started_from_a_champion_of_its_shape_fine_tunes():
    champion = families.build(CFG, "cnn")
    warm = families.build(CFG, "cnn", start=champion)
    assert (warm.cfg.epochs, warm.cfg.lr, warm.cfg.p_process) == (3, 0.001, CFG.detect.cnn.p_process)
    assert hasattr(warm, "started_from")
    processed = CFG.model_copy(
        update={
            "detect": CFG.detect.model_copy(
                update={"cnn": CFG.detect.cnn.model_copy(update={"finetune_p_process": 1.0})}
            )
        }
    )
    assert families.build(processed, "cnn", start=champion).cfg.p_process == 1.0  # a fine-tune's own share
    assert families.build(processed, "cnn").cfg.p_process == CFG.detect.cnn.p_process  # a first model keeps it
    assert families.build(CFG, "cnn", held_out=True, start=champion).cfg.epochs == 1  # never warm when held out
    other_shape = families.build(
        CFG.model_copy(update={"data": CFG.data.model_copy(update={"mode": "L"})}), "cnn", start=champion
    )
    assert other_shape.cfg == CFG.detect.cnn and not hasattr(other_shape, "started_from")


def test_the_configured_families_default_to_the_registry_and_unknown_ones_are_named(monkeypatch):
    assert families.selected(None) == list(families.FAMILIES) and {"cnn", "spectral"} <= set(families.FAMILIES)
    with pytest.raises(
        ConfigError, match=f"detect.families: unknown family vit; known: {', '.join(families.FAMILIES)}"
    ):
        families.selected(["cnn", "vit"])
    monkeypatch.setitem(families.FAMILIES, "toy", lambda cfg, held_out, start: SpectralDetector(seed=cfg.seed))
    assert families.build(CFG, "toy").seed == 9 and "toy" in families.selected(None)


def _result(family: str, tpr: float, fpr: float, auc: float) -> FamilyResult:
    return FamilyResult(family, None, {"tpr_wild_mean": tpr, "fpr_real_max": fpr, "auc_seen": auc}, np.array([]), 0.0)


def test_the_judge_is_the_best_ranked_family_after_the_winner():
    results = {
        f: _result(f, *m)
        for f, m in {"a": (0.9, 0.0, 0.99), "b": (0.5, 0.1, 0.90), "c": (0.6, 0.0, 0.80), "d": (0.6, 0.0, 0.70)}.items()
    }
    assert _judge(results, "a") == "c"  # 0.6 beats 0.4; then the clean AUC breaks c's tie with d
    assert _judge(results, "c") == "a"
    assert _judge({"a": results["a"]}, "a") is None


@pytest.mark.parametrize(
    ("n", "workers", "cores", "threads"),
    [
        (5, 2, 2, [1, 1, 1, 1, 2]),  # the fifth model ends the phase alone: both cores
        (4, 2, 2, [1, 1, 1, 1]),
        (3, 2, 16, [8, 8, 16]),
        (7, 3, 6, [2, 2, 2, 2, 2, 2, 6]),
        (5, 4, 4, [1, 1, 1, 1, 4]),
    ],
)
def test_the_held_out_models_that_end_the_phase_alone_share_the_cores(n, workers, cores, threads):
    assert loo_threads(n, workers, cores) == threads
