"""A user's folder of any shape (tests/folder_shapes.py) through ingest and the detector stage's data
paths, in the tiny profile: it is ingested, or refused with a message that names the problem before
anything stored changes; the detector stage trains on what came in and reports every figure the
data cannot support as missing, with its reason. Never a traceback.

The shapes are drawn by Hypothesis; in CI derandomized (the same shapes every run), and
HYPOTHESIS_PROFILE=explore draws new ones (tests/conftest.py)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from PIL import Image

from gandefect.config import load_config
from gandefect.data import snapshot, sources
from gandefect.data.fakes import write_fake_set
from gandefect.errors import BadInputError
from gandefect.evaluate.localization import localize
from gandefect.lifecycle import validation
from gandefect.stages import detectors
from gandefect.stages.localize import run_build_spliced
from tests.conftest import make_image_folder, write_params
from tests.folder_shapes import FolderShape, examples, folder_shapes, write

SHAPES = settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SETTINGS = st.fixed_dictionaries(
    {
        "image_size": st.sampled_from([16, 28, 64]),
        "mode": st.sampled_from(["L", "RGB"]),
        "resize": st.sampled_from(["crop", "pad"]),
    }
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A project whose snapshot already holds a user's earlier images (each example starts from a copy)."""
    root = tmp_path_factory.mktemp("stored")
    cfg = load_config(write_params(root))
    snapshot.ingest(
        cfg, [sources.resolve_source(str(make_image_folder(root / "earlier", 40, seed=9)))], enough_for_the_flow=True
    )
    return root


@SHAPES
@given(shape=folder_shapes(), data=SETTINGS, replace=st.booleans())
def test_any_folder_is_ingested_whole_or_refused_with_the_reason_and_nothing_stored_is_lost(
    stored, tmp_path_factory, shape: FolderShape, data, replace
):
    work = tmp_path_factory.mktemp("shape")
    root = work / "project"
    shutil.copytree(stored, root)
    cfg = load_config(write_params(root, data=data))
    folder = write(shape, work / "folder")
    before = _files(cfg.real_dir)
    try:
        result = snapshot.ingest(cfg, [sources.resolve_source(str(folder))], replace=replace, enough_for_the_flow=True)
    except BadInputError as exc:
        note(str(exc))
        event(f"ingest refused: {str(exc).split(':')[0] if 'too few' in str(exc) else 'nothing usable'}")
        assert _files(cfg.real_dir) == before, "a refused ingest changed the stored snapshot"
        assert any(k in str(exc) for k in ("no image files", "no usable images", "too few distinct images", "empty")), (
            exc
        )
        return
    # ingested: every image it kept is one the data suite accepts, and there are enough for the flow
    event("ingested")
    table = snapshot.image_table(cfg.real_dir)
    report = validation.validate_table(cfg, table)
    assert report.success, [(c.expectation, c.column, c.summary) for c in report.failures]
    assert result.total >= cfg.validation.min_images and result.counts["train"] >= cfg.gan.batch_size
    assert len(result.quarantined) >= shape.broken + shape.other_files  # listed, with why, not dropped silently
    kept = snapshot.read_manifest(cfg.real_dir)
    earlier = sources.resolve_source(str(stored / "earlier")).name
    assert set(kept["source"]) == {sources.resolve_source(str(folder)).name} | (set() if replace else {earlier})


GENERATORS = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from(["varied", "collapsed", "two"])), min_size=1, max_size=4
)


def _samples(n: int, kind: str, size: int, mode: str, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    distinct = {"varied": n, "collapsed": 1, "two": 2}[kind]  # a collapsed generator draws one image again and again
    pool = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode) for _ in range(max(1, distinct))]
    return [pool[i % len(pool)] for i in range(n)]


@settings(
    max_examples=examples(12),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(n_real=st.integers(20, 70), generators=GENERATORS, data=SETTINGS)
def test_the_detector_stage_trains_on_any_small_data_and_names_every_figure_it_cannot_compute(
    tmp_path_factory, n_real, generators, data
):
    root = tmp_path_factory.mktemp("stage")
    cfg = load_config(write_params(root, data=data, gates={"min_samples": 5}))
    try:
        snapshot.ingest(
            cfg,
            [sources.resolve_source(str(make_image_folder(root / "real", n_real, seed=n_real)))],
            enough_for_the_flow=True,
        )
    except BadInputError as exc:
        event("refused at ingest: too few")
        assert "too few distinct images" in str(exc)
        return
    for i, (n, kind) in enumerate(generators):
        if n:
            write_fake_set(
                cfg, f"gen{i}", _samples(n, kind, cfg.data.image_size, cfg.data.mode, i), f"generator:gen{i}"
            )
    try:
        data_ = detectors.prepare_eval_data(cfg)
        run_build_spliced(cfg, version=False)
        figures = []
        for family in ("cnn", "spectral"):
            det = detectors.fit_detector(cfg, family, data_.train, data_.val_mix, data_.val_groups)
            metrics, _ = detectors.evaluate_detector(cfg, det, data_)
            metrics.update(localize(cfg, det))
            loo, _ = detectors.leave_one_out(cfg, family, data_)
            metrics.update(loo)
            detectors.summarize_unseen(metrics, set())
            figures.append(metrics)
    except BadInputError as exc:  # refused with the reason (e.g. no fake sample in val): never a crash
        note(str(exc))
        event(f"refused: {str(exc)[:40]}")
        assert "need real and generated images in train and val" in str(exc) or "no fake sets" in str(exc), exc
        return
    event("trained and judged" + (", with missing figures" if any(m.missing for m in figures) else ""))
    for metrics in figures:
        nan = {k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v)}
        assert nan == set(metrics.missing), nan ^ set(metrics.missing)  # every missing figure says why
        assert all(reason for reason in metrics.missing.values())
        for g in data_.generators:  # every generator of today's data has its figures, or their reason
            assert f"auc_gen_{g}" in metrics and f"tpr_fake_wild_{g}" in metrics
