"""One typed configuration, read once from params.yaml and passed down.

params.yaml holds the base values, a `profiles` mapping of named overrides (`tiny` for
tests, `default`, `full`) and `profile`, the one that is active unless the caller names
another.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gandefect.errors import ConfigError

PARAMS_FILE = "params.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    source: str = "mnist5k"
    image_size: int = Field(28, ge=8, le=1024)
    mode: Literal["L", "RGB"] = "L"
    resize: Literal["crop", "pad"] = "crop"
    max_images: int | None = Field(None, ge=1)
    splits: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
    real_dir: str = "data/real"

    @model_validator(mode="after")
    def _splits_are_fractions(self) -> "DataConfig":
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


class Config(_Section):
    profile: str = "default"
    seed: int = 1234
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    tracking: TrackingConfig = TrackingConfig()
    versioning: VersioningConfig = VersioningConfig()
    root: Path = Path(".")

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


def _deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
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
        raise ConfigError(
            f"{params_path} not found: run gandefect from the project root or pass --params"
        )
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
    merged = _deep_merge(raw, profiles.get(name) or {})
    merged = _deep_merge(merged, overrides or {})
    merged["profile"] = name
    merged["root"] = params_path.resolve().parent
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{params_path} (profile {name}) is invalid:\n" + "\n".join(lines)) from exc
