"""Where models compute: the device setting (`device: auto | cpu | cuda`) and bfloat16 autocast
where the hardware computes it natively.

- `auto` takes the first CUDA GPU torch sees, else the CPU; `cuda` without one is a clear error.
- Models are trained and evaluated on the device and always stored on the CPU (a model
  registered on a GPU machine loads and serves anywhere).
- Random numbers that decide data (noise for samples and fake sets, shuffles, masks) are drawn
  on the CPU from seeded generators and then moved, so a fake set is the same on every device;
  per-step training noise is drawn on the device from its seeded global generator. A CUDA run
  is seeded but not bit-identical to a CPU run; `deterministic: true` makes repeated CUDA runs
  bit-identical (torch's deterministic algorithms), at some speed.
- Precision (`precision: auto | fp32 | bf16`): `auto` trains under bf16 autocast where the
  hardware computes bf16 natively: the CNN detector on CUDA and on CPUs with AVX512-BF16 or
  AMX (with channels-last convolutions, faster at the same quality), the GAN zoo on CUDA only
  (on a CPU the wgan-gp penalty's double backward gains nothing, and the non-saturating GAN's
  FID rose). `fp32` and `bf16` force one path on any machine, so both are tested everywhere:
  bf16 on a CPU without it is emulated, slow but correct. Weights stay float32 and models
  are served in float32.
- Batches made on the CPU (PIL processing chains) are made one step ahead in a background
  thread where a GPU or an idle core would otherwise wait for them (`batches_ahead`,
  `prefetched`): the same batches in the same order.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

from gandefect.errors import BadInputError

T = TypeVar("T")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
CPU = torch.device("cpu")


def resolve(setting: str = "auto") -> torch.device:
    """The torch device a `device` setting names on this machine."""
    if setting not in DEVICES:
        raise BadInputError(f"device must be one of {', '.join(DEVICES)}, got {setting!r}")
    if setting == "cpu":
        return CPU
    if torch.cuda.is_available():
        return torch.device("cuda")
    if setting == "cuda":
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise BadInputError(
            f"device: cuda was asked for, but torch {torch.__version__} ({built}) sees no CUDA "
            "GPU: set device to auto or cpu, or install a CUDA build of torch on a machine with "
            "an NVIDIA GPU and its driver"
        )
    return CPU


_own_cores: int | None = None  # the cores this process has to itself (None: the whole machine)


def setup(
    setting: str = "auto", deterministic: bool = False, threads: int | None = None, share: bool = False
) -> torch.device:
    """Resolve the device and apply the process-wide options once, at a stage's entry. `share`: the
    `threads` are this process's share of the cores, its siblings computing on the others."""
    global _own_cores
    device = resolve(setting)
    if threads:
        torch.set_num_threads(threads)
    _own_cores = threads if share and threads else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not deterministic  # float32 matmuls on tensor cores
        torch.backends.cudnn.allow_tf32 = not deterministic
        torch.backends.cudnn.benchmark = not deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo's names for the bf16 instructions


@functools.cache
def _cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX). oneDNN's own answer
    (`_is_mkldnn_bf16_supported`) is yes on every AVX-512 CPU, where it emulates bf16 through
    float32 conversions: the CNN detector trained at about half its float32 speed there
    (`bench/train_throughput.py --detector`)."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probes):
        return any(bool(probe()) for probe in probes if probe is not None)
    return any(flag in _cpu_flags() for flag in NATIVE_BF16_FLAGS)  # a torch without the probes


def _cpu_flags() -> set[str]:
    """The CPU's flags as the Linux kernel lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            return set(info.read().split())
    except OSError:
        return set()


def bf16_ok(device: torch.device = CPU) -> bool:
    """Whether `device` computes bfloat16 natively (so autocast to it pays)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return _cpu_bf16()


def use_bf16(precision: str, device: torch.device = CPU, on_cpu: bool = True) -> bool:
    """Whether a model computes under bf16 autocast on `device`: never with `fp32`, always with
    `bf16` (emulated where the hardware lacks it), and with `auto` where `device` computes it
    natively (on a CPU only for models where it pays: `on_cpu`)."""
    if precision not in PRECISIONS:
        raise BadInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    return bf16_ok(device) and (on_cpu or device.type != "cpu")


def channels_last(*modules: torch.nn.Module) -> None:
    """Put `modules` in channels-last layout: oneDNN's and cuDNN's fast convolution layout (faster
    per training step than NCHW on this project's small convolutions, float32 or bf16)."""
    for module in modules:
        module.to(memory_format=torch.channels_last)


def autocast(enabled: bool, device: torch.device = CPU):
    """bfloat16 autocast on `device` when `enabled`, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def batch(x: torch.Tensor, device: torch.device = CPU) -> torch.Tensor:
    """A batch on `device`, channels-last (the layout `channels_last` gives the modules)."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


@contextlib.contextmanager
def placed(module: torch.nn.Module, device: torch.device):
    """`module` on `device` for the block, back on the CPU after it (models are stored on the CPU)."""
    module.to(device)
    try:
        yield module
    finally:
        module.to(CPU)


def batches_ahead(device: torch.device = CPU) -> bool:
    """Whether a training loop should make its batches in a background thread (`prefetched`): on
    a GPU, which would otherwise wait for each batch, and on a CPU with a core that neither torch
    nor a sibling worker (`setup(share=True)`) computes on. Where the cores all compute, the
    thread only competes with them: on a 2-core CPU a fine-tune on both threads ran at 0.95x with
    it, and two models side by side on one thread each at 0.84-0.93x."""
    return device.type == "cuda" or torch.get_num_threads() < (_own_cores or os.cpu_count() or 1)


class _Raised:
    """An error the prefetching thread met, for the consumer to raise."""

    def __init__(self, error: Exception):
        self.error = error


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """`items` in their order, each made up to `depth` ahead by a background thread: a training
    step's batch (PIL processing chains, splices: numpy and Python) is made while the step before
    it computes, which releases the GIL. The items are the same as without it, provided nothing
    else draws from the random generators `items` uses meanwhile. An error in making an item is
    raised here; leaving the loop early stops the thread."""
    made: queue.Queue = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                made.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except Exception as error:  # noqa: BLE001 - any error is handed to the consumer, which raises it
            put(_Raised(error))

    thread = threading.Thread(target=make, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = made.get(timeout=1.0)
            except queue.Empty:
                if thread.is_alive():
                    continue
                raise RuntimeError("the thread making the batches stopped without an error") from None
            if item is end:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
