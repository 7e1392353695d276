"""One typed configuration, read once from params.yaml and passed down.

params.yaml holds the base values, a `profiles` mapping of named overrides (`tiny` for
tests, `default`, `full`) and `profile`, the one that is active unless the caller names
another.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gandefect.errors import ConfigError
from gandefect.names import PARAMS_FILE


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_BASE = 8  # the generators' smallest feature map is at most this many pixels a side


def size_plan(size: int) -> tuple[int, int]:
    """(base size, number of 2x up-samplings) the generators build a `size` image with: halve
    while even and above MAX_BASE (28 -> 7 doubled twice, 32 -> 8 twice, 64 -> 8 three times)."""
    base, ups = size, 0
    while base % 2 == 0 and base > MAX_BASE:
        base, ups = base // 2, ups + 1
    return base, ups


def _sizes_near(size: int) -> str:
    ok = [s for s in range(16, 4 * size + 64) if size_plan(s)[0] <= MAX_BASE and size_plan(s)[1] >= 1]
    return ", ".join(str(s) for s in sorted(ok, key=lambda s: (abs(s - size), s))[:4])


class DataConfig(_Section):
    # what `gandefect run` ingests: null = the snapshot's own sources, refreshed (`default_source`
    # fills an empty snapshot); a built-in name or a folder = exactly that source, and the flow
    # stops when the snapshot holds others
    source: str | None = None
    default_source: str = "mnist5k"  # mnist5k (gray digits, labelled) or photos (colour crops, no labels)
    image_size: int = Field(28, ge=8, le=1024)
    mode: Literal["L", "RGB"] = "L"
    resize: Literal["crop", "pad"] = "crop"
    max_images: int | None = Field(None, ge=1)
    splits: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
    real_dir: str = "data/real"

    @property
    def shape(self) -> tuple[int, ...]:
        """One stored image's array shape: (size, size) gray, (size, size, 3) colour."""
        return (self.image_size, self.image_size) if self.mode == "L" else (self.image_size, self.image_size, 3)

    @model_validator(mode="after")
    def _splits_are_fractions(self) -> DataConfig:
        if set(self.splits) != {"train", "val", "test"}:
            raise ValueError("data.splits must name exactly train, val and test")
        if any(f < 0 for f in self.splits.values()) or abs(sum(self.splits.values()) - 1) > 1e-6:
            raise ValueError("data.splits fractions must be >= 0 and sum to 1")
        return self


class ValidationConfig(_Section):
    min_images: int = Field(100, ge=1)
    split_tolerance: float = Field(0.03, ge=0, le=1)
    class_balance_tolerance: float = Field(0.5, ge=0, le=1)
    report_dir: str = "reports"


class TrackingConfig(_Section):
    uri: str = "sqlite:///mlflow.db"
    artifact_root: str = "mlartifacts"


class VersioningConfig(_Section):
    enabled: bool = True
    remote_name: str = "gandefect"
    remote_url: str = ".dvc-remote"


class GANConfig(_Section):
    """The GAN zoo, the source of fakes: one MLflow run and registered generator per member."""

    losses: list[str] | None = None  # names in gandefect.gan.losses; None: every registered loss
    # generators built another way than the DCGANs (gandefect.gan.families), held out family by
    # family; None: every registered family
    families: list[str] | None = None
    generator_steps: int = Field(700, ge=1)  # generator updates per GAN (nonsaturating, hinge)
    # Budgets by quality: the least number of updates after which a member meets the zoo's targets
    # (fid_ratio <= 0.10 and class_entropy_ratio >= 0.9) at that and the next measurement, every
    # 100 updates (bench/gan_budgets.py on the default data), keeping its FID within 10 % of what
    # the detectors were validated on. minimax, wgan and mlpgan are sources of defective fakes by
    # design, at the budget they are cheap at; vae is blurry by design; wgan-gp and resizegan meet
    # the targets earlier but their FID rose in the flow at the lower budget, so they keep these.
    # Critic losses pay n_critic discriminator steps per generator update.
    generator_steps_by_loss: dict[str, int] = {
        "minimax": 200,
        "lsgan": 1800,
        "wgan": 150,
        "wgan-gp": 1000,
        "vae": 600,
        "mlpgan": 1500,
        "resizegan": 700,
        "ddpm": 3000,  # sampled from its weights' moving average
        "rectflow": 1000,
    }
    batch_size: int = Field(32, ge=2)
    z_dim: int = Field(64, ge=1)
    g_width: int = Field(16, ge=1)
    d_width: int = Field(16, ge=1)
    early_epochs: list[int] = [1]  # generators kept after these epochs as extra, cruder fakes
    checkpoint_every: int = Field(100, ge=1)
    eval_samples: int = Field(1000, ge=10)
    grid_samples: int = Field(64, ge=1)
    checkpoint_dir: str = "models/gans"

    def steps_for(self, loss: str) -> int:
        return self.generator_steps_by_loss.get(loss, self.generator_steps)


class FeaturesConfig(_Section):
    """The domain feature net, the space for FID and precision/recall (gandefect.evaluate.features):
    `labelled` (a classifier of the class labels), `contrastive` (self-supervised, no labels)
    or `auto` (labelled where every train and test image has a label, else contrastive)."""

    space: Literal["auto", "labelled", "contrastive"] = "auto"
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)
    n_features: int = Field(128, ge=2)
    min_accuracy: float = Field(0.98, ge=0, le=1)  # labelled: below this the run is flagged, not failed
    contrastive_epochs: int = Field(15, ge=1)
    contrastive_batch_size: int = Field(128, ge=4)
    temperature: float = Field(0.2, gt=0)


class CNNDetectorConfig(_Section):
    width: int = Field(32, ge=2)
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)
    p_process: float = Field(0.8, ge=0, le=1)  # training images sent through a random processing chain
    p_splice: float = Field(0.5, ge=0, le=1)  # share of (real, fake) pairs turned into spliced training images
    p_process_spliced: float = Field(0.3, ge=0, le=1)  # ... of which processed (less: sharper defect maps)
    focal_gamma: float = Field(2.0, ge=0)  # focal loss on the image logit (0: plain cross-entropy)
    # what a batch is drawn over: `image` (every training image alike) or `family` (real images half
    # of the draws, each generator family an equal share of the rest, however many samples it has)
    balance: Literal["image", "family"] = "family"
    # the image score: `linear` (a half-space) or `radial` (a ball around the real images; anything
    # outside it, in any direction, is generated)
    head: Literal["linear", "radial"] = "linear"
    # the leave-one-family-out models (one per family): the served recipe, so that they describe
    # the served model
    loo_width: int = Field(32, ge=2)
    # members of the served model: this many nets of the recipe, each from its own initialisation,
    # trained on the same batches, their logits averaged (the leave-one-out models keep one); more
    # than one did not steady the threshold (docs/benchmarks.md)
    members: int = Field(1, ge=1)
    loo_epochs: int = Field(6, ge=1)
    # incremental learning (Marra et al. 2019): a retrained candidate starts from the champion's
    # weights when the champion is a CNN of the same shape, and fine-tunes on today's whole
    # training set (old generators and new alike) for `finetune_epochs` at `finetune_lr`
    warm_start: bool = True
    finetune_epochs: int = Field(5, ge=1)
    finetune_lr: float = Field(5e-4, gt=0)
    # ... with this share of its training images processed (null: `p_process`); a first model
    # keeps `p_process`, so this changes only what a keep-up retrain learns
    finetune_p_process: float | None = Field(1.0, ge=0, le=1)
    # learning without forgetting (Li & Hoiem 2017): while fine-tuning, the champion's own outputs
    # on real images and on the generators it was trained on are soft targets of this weight
    # (0: off), so a few hundred images of a new family move its verdicts on the old ones less
    distill: float = Field(1.0, ge=0)
    # ... and the share of the generated draws that go to generators the champion never saw
    # (null: each family weighs alike, the new one like an old one); family balance only
    new_share: float | None = Field(None, gt=0, lt=1)


class SpectralDetectorConfig(_Section):
    C: float = Field(0.05, gt=0)  # inverse L2 strength of the logistic regression
    window: int = Field(12, ge=4)  # sliding-window size for the defect map (pixels)
    stride: int = Field(2, ge=1)
    windows_per_image: int = Field(4, ge=1)  # random crops per training image for the window classifier
    p_process: float = Field(0.8, ge=0, le=1)  # training images sent through a random processing chain


# the conditions that choose the served threshold and are gated (the rest are reported): all but
# the harshest JPEG, the up-scaled file and added noise
GATED_CONDITIONS = (
    "png",
    "jpeg95",
    "jpeg90",
    "jpeg75",
    "jpeg60",
    "jpeg90x75",
    "webp80",
    "blur0.5",
    "blur1.0",
    "resize",
    "rgbjpeg85",
)


class WildConfig(_Section):
    """Conditions in the wild (gandefect.data.conditions): every one is evaluated; the `gated`
    ones choose the threshold, are judged by the model gate and make the served envelope."""

    conditions: list[str] | None = None  # names in gandefect.data.conditions; None: every registered one
    gated: list[str] = list(GATED_CONDITIONS)
    # the served threshold: the lowest at which no gated condition calls more than this share of
    # the validation reals fake
    fpr_target: float = Field(0.02, gt=0, lt=1)
    val_fakes_per_generator: int = Field(100, ge=1)  # in the validation mix (every real image is in it)

    @model_validator(mode="after")
    def _gated_are_evaluated(self) -> WildConfig:
        # the names themselves are checked against the registry where it is read (conditions.evaluated)
        if self.conditions is not None and not set(self.gated) <= set(self.conditions):
            raise ValueError("detect.wild.gated must be a subset of detect.wild.conditions")
        return self


class DetectConfig(_Section):
    fakes_per_generator: int = Field(2000, ge=1)  # final generators and external families
    fakes_per_early_generator: int = Field(400, ge=1)  # the crude early checkpoints
    families: list[str] | None = None  # names in gandefect.detect.families; None: every registered family
    leave_one_out: bool = True
    loo_fakes_per_generator: int = Field(2000, ge=1)  # training images per generator of a leave-one-out model
    # real train images refined by each diffusion member into its aligned set (training only; 0: none)
    aligned_per_generator: int = Field(1000, ge=0)
    # real train images reconstructed by each kind of generator up-sampling (gandefect.detect.components;
    # training only, 0: none), by autoencoders trained for `component_steps`
    components_per_kind: int = Field(0, ge=0)
    component_steps: int = Field(400, ge=1)
    cnn: CNNDetectorConfig = CNNDetectorConfig()
    spectral: SpectralDetectorConfig = SpectralDetectorConfig()
    wild: WildConfig = WildConfig()


class SplicedConfig(_Section):
    """The spliced-defect benchmark (real val/test images with generated regions)."""

    min_area: float = Field(0.05, gt=0, lt=1)
    max_area: float = Field(0.40, gt=0, le=1)
    kinds: list[Literal["rect", "blob"]] = ["rect", "blob"]
    dilate: int = Field(0, ge=0)  # pixels of dilation applied to predicted masks


class RepairConfig(_Section):
    """The inpainting repairer and the repair loop."""

    width: int = Field(16, ge=8)  # U-Net feature maps at full resolution (a multiple of 8)
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    hole_weight: float = Field(6.0, ge=0)
    adversarial_loss: str = "hinge"  # any entry of gandefect's loss registry
    adversarial_weight: float = Field(0.05, ge=0)
    mask_min_area: float = Field(0.02, gt=0, lt=1)  # random training masks
    mask_max_area: float = Field(0.6, gt=0, lt=1)
    iterations: int = Field(5, ge=1)  # k: passes of detect -> mask -> inpaint per image
    max_area: float = Field(0.5, gt=0, lt=1)  # most of an image one pass may rewrite
    # an image whose defect mask covers more than this is generated as a whole and left unchanged
    # (`whole-image`): above what the detector marks on local defects (docs/benchmarks.md)
    local_max_area: float = Field(0.6, gt=0, le=1)
    eval_samples: int = Field(300, ge=2)  # samples per generator in the repair evaluation
    # a generator the repair applies to: the loop changed at least this share of its evaluation
    # samples (the rest it refused as whole-image or found clean); the gate requires an improvement
    # there (`repaired_fid_ratio`), and that there is at least one (`repaired_generators`)
    applies_at: float = Field(0.5, gt=0, le=1)
    # the generative prior (gandefect.repair.prior): a zoo member that models the real images
    # refines the U-Net's fill, SDEdit-style from `prior_strength` of the way to noise, in
    # `prior_steps` x strength denoising steps with `prior_resample` round trips each (null: the U-Net alone)
    prior: str | None = "ddpm"
    prior_strength: float = Field(0.1, gt=0, le=1)
    prior_steps: int = Field(20, ge=1)
    prior_resample: int = Field(2, ge=0)
    reject_factor: int = Field(2, ge=1)  # generate --clean --reject: sample this many times n, keep the n best

    @model_validator(mode="after")
    def _check(self) -> RepairConfig:
        if self.width % 8:
            raise ValueError(f"repair.width must be a multiple of 8, got {self.width}")
        if self.mask_min_area > self.mask_max_area:
            raise ValueError("repair.mask_min_area must not exceed repair.mask_max_area")
        return self


class ModelGateConfig(_Section):
    """One model's gate: thresholds on the candidate's metrics and non-regression against the champion.

    A metric named in `per_generator` is logged as `<metric>_<generator>` and judged per generator."""

    floor: dict[str, float] = {}  # the metric must be at least this
    ceiling: dict[str, float] = {}  # ... at most this (and lower is better when compared)
    compare: list[str] = []  # checked against the champion even without a threshold
    per_generator: list[str] = []
    margin: float = Field(0.02, ge=0)  # the candidate may trail the champion by at most this, per row
    # shares (tpr_*, fpr_real_*) with their test counts: a threshold is judged where the 95 % interval
    # at the threshold is at most this wide each side (else refused only when the whole interval
    # misses it, and the gate says so), and a slice may trail the champion by `se_multiple` of the
    # champion's standard error when that is more than `margin`
    ci_halfwidth: float = Field(0.1, gt=0, le=1)
    se_multiple: float = Field(1.96, ge=0)
    # a generator `ingest-fakes` brought with fewer than `few_shot_below` images (n_ingested_<g>)
    # is held to these per-generator floors instead of `floor`'s, and to rows `floor` lacks
    # (tpr_fake_png): a few hundred samples are what a user finds of a new generator
    few_shot_floor: dict[str, float] = {}
    few_shot_below: int = Field(1000, ge=0)

    @field_validator("floor", "ceiling", "few_shot_floor", mode="before")
    @classmethod
    def _null_removes_a_bound(cls, bounds: dict | None) -> dict:
        """`metric: null` removes that bound (a profile's mapping merges into the base one, so this
        is how a profile drops one bound and keeps the others)."""
        return {k: v for k, v in (bounds or {}).items() if v is not None}

    def few_shot(self, figures: Mapping[str, float], generator: str) -> bool:
        """Whether `generator` is a family ingested from a folder with fewer than `few_shot_below` images."""
        n = figures.get(f"n_ingested_{generator}")
        return bool(self.few_shot_floor) and n is not None and n < self.few_shot_below

    def floors_for(self, figures: Mapping[str, float], generator: str) -> dict[str, float]:
        """The floors `generator`'s rows are held to, given the figures that count its samples."""
        return {**self.floor, **self.few_shot_floor} if self.few_shot(figures, generator) else self.floor


class RepairerGateConfig(ModelGateConfig):
    floor: dict[str, float] = {
        "psnr_gain": 0.0,
        "repaired_generators": 1,
    }  # psnr_gain: in-mask PSNR minus the best baseline's (dB)
    ceiling: dict[str, float] = {"fid_ratio": 1.0, "outside_mask_change": 0.0, "repaired_fid_ratio": 0.7}
    compare: list[str] = ["psnr_mask"]
    per_generator: list[str] = ["fid_ratio", "repaired_fid_ratio"]
    margin: float = Field(0.25, ge=0)


class GatesConfig(ModelGateConfig):
    """The detector's gate (top level), the repairer's (`repairer`) and the promotion rule."""

    # the candidate detector's metric must be at least this
    floor: dict[str, float] = {
        "auc_gen": 0.9,  # AUC of real test images against each generator's test samples
        "auc_seen": 0.95,
        # worst leave-one-family-out AUC (clean); it needs retraining, so a floor only, never compared
        "auc_unseen_min": 0.9,
        "pixel_ap": 0.5,  # localization on the spliced benchmark
        "iou": 0.3,
        # per generator: its test samples called fake under the worst gated condition (the same for
        # a held-out family, tpr_unseen_wild_<family>, is logged and reported, not gated)
        "tpr_fake_wild": 0.85,
    }
    # ... and at most this: calibration, and the real test images called fake at the served
    # threshold under each gated condition (detect.wild.gated)
    ceiling: dict[str, float] = {
        "ece": 0.1,
        "ece_jpeg75": 0.1,
        **{f"fpr_real_{c}": 0.05 for c in GATED_CONDITIONS},
    }
    # a generator `ingest-fakes` brought with fewer than few_shot_below images is held to these
    # instead of the floor's per-generator bounds: called fake as PNG, and under the worst gated
    # condition (a few hundred samples are what a user finds of a new generator)
    few_shot_floor: dict[str, float] = {"tpr_fake_png": 0.85, "tpr_fake_wild": 0.7}
    compare: list[str] = ["auc_seen", "pixel_ap", "iou"]  # never worse than the champion on today's data
    per_generator: list[str] = ["auc_gen", "tpr_fake_wild"]  # logged as <metric>_<generator>: a row each
    repairer: RepairerGateConfig = RepairerGateConfig()
    auto_promote: bool = True  # a candidate that passes becomes champion (else only challenger)
    # a figure from fewer images of a class it needs is missing, with the reason (never passed)
    min_samples: int = Field(10, ge=1)


class ServeConfig(_Section):
    """The BentoML service: its port, bento name and what it accepts from the public."""

    port: int = Field(3000, ge=1, le=65535)
    bento_name: str = Field("gandefect", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    max_upload_mb: float = Field(10.0, gt=0)  # request body; larger -> 413
    max_pixels: int = Field(25_000_000, ge=1)  # per image, checked before decoding; larger -> 400
    max_images: int = Field(64, ge=1)  # images per detect request


class Config(_Section):
    profile: str = "default"
    seed: int = 1234
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    tracking: TrackingConfig = TrackingConfig()
    versioning: VersioningConfig = VersioningConfig()
    gan: GANConfig = GANConfig()
    features: FeaturesConfig = FeaturesConfig()
    detect: DetectConfig = DetectConfig()
    spliced: SplicedConfig = SplicedConfig()
    repair: RepairConfig = RepairConfig()
    gates: GatesConfig = GatesConfig()
    serve: ServeConfig = ServeConfig()
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; null: torch's default
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where every model trains, is evaluated and served
    # bf16 autocast in training: auto (where the hardware computes it natively), fp32 or bf16 (forced)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    deterministic: bool = False  # torch's deterministic algorithms (bit-identical repeated CUDA runs)
    root: Path = Path(".")

    @model_validator(mode="after")
    def _models_take_the_size(self) -> Config:
        """Sizes the models cannot take fail here, before any work, with the reason."""
        size = self.data.image_size
        base, ups = size_plan(size)
        if base > MAX_BASE or ups < 1:
            raise ValueError(
                f"data.image_size {size}: the generators build an image by doubling a feature map of at most "
                f"{MAX_BASE} px at least once (size = base x 2^k, base <= {MAX_BASE}); {size} px would start from "
                f"{base} px{' with no doubling' if ups == 0 else f' doubled {ups} time(s)'}. Nearby sizes that "
                f"work: {_sizes_near(size)}"
            )
        if size < self.detect.spectral.window:
            raise ValueError(
                f"data.image_size {size} is smaller than the spectral detector's window "
                f"(detect.spectral.window {self.detect.spectral.window}): lower the window or "
                "raise the size"
            )
        return self

    def path(self, relative: str) -> Path:
        """Resolve a path from the config against the project root."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.root / p)

    @property
    def real_dir(self) -> Path:
        return self.path(self.data.real_dir)

    @property
    def report_dir(self) -> Path:
        return self.path(self.validation.report_dir)

    def to_params(self) -> dict:
        """The effective parameters, flat-ish and JSON-safe, for tracking."""
        return self.model_dump(mode="json", exclude={"root"})

    def params_hash(self) -> str:
        blob = json.dumps(self.to_params(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def registered(names: list[str] | None, registry: dict, setting: str, what: str) -> list[str]:
    """The entries of a registry that a setting names (None: every entry, in registry order); a
    ConfigError naming the known ones for an unknown name."""
    if names is None:
        return list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ConfigError(f"{setting}: unknown {what} {', '.join(unknown)}; known: {', '.join(registry)}")
    return list(names)


def _deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        # an empty mapping replaces (clears) the base one; a non-empty one merges into it
        if isinstance(value, dict) and value and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(
    params_file: str | Path = PARAMS_FILE,
    profile: str | None = None,
    overrides: dict | None = None,
) -> Config:
    """Read params.yaml, apply the named profile (or the file's own) and any overrides."""
    params_path = Path(params_file)
    if not params_path.is_file():
        raise ConfigError(f"{params_path} not found: run gandefect from the project root or pass --params")
    try:
        raw = yaml.safe_load(params_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{params_path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{params_path} must hold a mapping at the top level")
    profiles = raw.pop("profiles", {}) or {}
    name = profile or raw.get("profile", "default")
    if name not in profiles and name != "default":
        known = ", ".join(sorted(set(profiles) | {"default"}))
        raise ConfigError(f"unknown profile {name!r} in {params_path}; known: {known}")
    # the typed defaults are the values; params.yaml's base and then the profile are merged onto
    # them by the same rule, so a profile's mapping merges into a default the base does not repeat
    merged = _deep_merge(DEFAULTS, raw)
    merged = _deep_merge(merged, profiles.get(name) or {})
    merged = _deep_merge(merged, overrides or {})
    merged["profile"] = name
    merged["root"] = params_path.resolve().parent
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{params_path} (profile {name}) is invalid:\n" + "\n".join(lines)) from exc


DEFAULTS = Config().model_dump(mode="json", exclude={"root", "profile"})
