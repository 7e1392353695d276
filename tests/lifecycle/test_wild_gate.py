"""The wild figures reach the model gate: a detector that calls JPEG-compressed real images fake is refused."""

import numpy as np

from gandefect.config import load_config
from gandefect.detect.common import Detector, Labeled
from gandefect.evaluate import wild
from gandefect.lifecycle.gates import _reasons, metrics_table, run_suite, spec_for
from tests.conftest import REPO
from tests.data.test_conditions import digits

GATED = load_config(REPO / "params.yaml", "default").detect.wild.gated


class CompressionSniffer(Detector):
    """Built to fail fpr_real_jpeg75: 'generated' means 'has gray levels a clean digit lacks', which
    JPEG ringing gives every compressed real image."""

    family = "toy"

    def fit(self, train, progress=None):
        return self

    def raw_scores(self, images):
        odd = (images > 8) & (images < 150)  # the synthetic digits hold only 0, 200 and 255
        return 40.0 * odd.reshape(len(images), -1).mean(axis=1) - 1.0

    def raw_maps(self, images):
        return np.zeros(images.shape[:3])


def test_a_detector_that_calls_jpeg_reals_fake_is_refused_with_the_reason():
    real = digits(30)
    fake = real.copy()
    fake[:, ::3, ::3] = 100  # a generator's trace: gray dots
    data = Labeled(
        np.concatenate([real, fake]), np.r_[np.zeros(30, int), np.ones(30, int)], np.r_[["real"] * 30, ["toy"] * 30]
    )
    detector = CompressionSniffer()
    detector.threshold = 0.5
    metrics = wild.evaluate_wild(detector, wild.build(data, list(GATED), "crop"))
    assert metrics["fpr_real_png"] == 0.0 and metrics["tpr_fake_png_toy"] == 1.0  # perfect on clean files
    assert metrics["fpr_real_jpeg75"] > 0.5
    wild.summarize(metrics, list(GATED), ["toy"])
    candidate = {
        "auc_seen": 1.0,
        "auc_unseen_min": 0.99,
        "pixel_ap": 0.9,
        "iou": 0.7,
        "ece": 0.01,
        "ece_jpeg75": 0.01,
        "auc_gen_toy": 1.0,
        **metrics,
    }
    spec = spec_for(load_config(REPO / "params.yaml", "default"), "gandefect-detector")
    table = metrics_table(spec, candidate, None)
    report = run_suite(spec, table)
    reasons = _reasons(table)
    assert not report.success
    assert any(r.startswith("all:fpr_real_jpeg75 = ") and "needs at most 0.0500" in r for r in reasons), reasons
    assert not any(r.startswith("all:fpr_real_png") for r in reasons)
