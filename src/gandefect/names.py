"""Every name the lifecycle shares: MLflow experiments, registered models and their tags, DVC stages."""

from __future__ import annotations

# the project's parameter file, and the real-image sources built into the package
PARAMS_FILE = "params.yaml"
MNIST5K_SOURCE, PHOTOS_SOURCE = "mnist5k", "photos"
BUILT_IN_SOURCES = (MNIST5K_SOURCE, PHOTOS_SOURCE)

# MLflow experiments
DATA_EXPERIMENT = "gandefect-data"
GAN_EXPERIMENT = "gandefect-gans"
DETECTOR_EXPERIMENT = "gandefect-detectors"
REPAIRER_EXPERIMENT = "gandefect-repairers"
RETRAIN_EXPERIMENT = "gandefect-retrain"

# registered models
FEATURE_MODEL = "gandefect-features"
DETECTOR_MODEL = "gandefect-detector"
JUDGE_MODEL = "gandefect-judge"  # the runner-up family's model: the repair loop's independent referee
REPAIRER_MODEL = "gandefect-repairer"
SERVED_MODELS = [DETECTOR_MODEL, REPAIRER_MODEL]


def generator_model(name: str) -> str:
    """The registered model of one zoo member (a loss's DCGAN or another generator family)."""
    return f"gandefect-generator-{name}"


# the retrain flow's stages, in order (ingest always runs)
FLOW_STAGES = ["ingest", "gans", "detectors", "repairer", "bento"]

# model version tags
STAGE_KEY = "stage_key"  # the flow's cache key of the run that registered the version

# DVC stages (dvc.yaml) and the outputs that version them
INGEST_STAGE = "ingest"
FAKES_STAGE = "fakes"
FAKES_DIR = "data/fakes"
SPLICED_STAGE = "spliced"
SPLICED_DIR = "data/spliced"
