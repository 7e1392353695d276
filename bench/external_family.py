"""Make a folder of images from a generator family the zoo lacks, for `gandefect ingest-fakes`.

Eight families, one of them adversarial and one autoregressive:
  - `flow` (the default): a flow-matching model (rectified flow, Liu et al. 2023; Lipman et
    al. 2023), the diffusion family's simplest member: a small U-Net learns the velocity
    x1 - x0 that carries Gaussian noise x0 to a real train image x1 along straight paths, and
    samples integrate it from noise with a few Euler steps (4 by default, as fast few-step
    samplers do). No transposed convolution, no discriminator. Its defects are a few-step
    sampler's: soft, slightly blurred strokes, faint background noise, broken or merged
    strokes. About 7 minutes on 2 CPU cores (2,000 batches of 64); `--checkpoint FILE` keeps
    the trained net, so other step counts sample without retraining. With 16 steps the
    samples are nearly real: the default champion catches 0.40 of them, and a candidate
    trained on them 0.53, at the served threshold.
  - `ddpm`: a denoising diffusion model (Ho et al. 2020) on the same small U-Net with bilinear
    up-sampling, 300 linear-beta timesteps and ancestral sampling (every step stochastic), the
    way small DDPMs are first written: another network and sampler than the zoo's `ddpm`.
  - `shufflevae`: a convolutional VAE whose decoder up-samples by sub-pixel convolution
    (conv, then PixelShuffle), decoded from z ~ N(0, I): another decoder than the zoo's `vae`
    (bilinear resizing). About 2 minutes on 2 CPU cores.
  - `strokes`: a procedural renderer, as synthetic-data generators make images:
    each digit is a hand-written polyline template under a random affine map and stroke
    width, drawn anti-aliased at 4x and reduced as MNIST's digits were (20x20 box, centred by
    mass in 28x28). Its defects are what rendering leaves: even stroke width, straight
    segments, exact joints. Not fitted to any data.
  - `mixup`: a nonparametric generator, as interpolation generators make
    images: each sample is a convex blend t * a + (1 - t) * b of two real train images (t
    uniform in [0.3, 0.7]). Its defects are two superimposed, half-bright digits on
    otherwise real pixels: no up-sampling trace at all. (Blending an image with its *nearest*
    neighbour instead gives images a detector cannot tell from real ones: a candidate trained
    on them lost 0.14 of AUC on every other generator and was refused by the gate.)
  - `stylegan`: a style-based GAN (StyleGAN2's generator at small scale): a mapping MLP, a
    learnt constant, nearest-neighbour doublings, modulated and demodulated convolutions with
    per-pixel noise, trained with the logistic loss and lazy R1. About 6 minutes.
  - `pixelcnn`: an autoregressive model (PixelCNN, van den Oord et al. 2016): masked
    convolutions predict each pixel's 256 grey levels from the pixels before it, and samples
    are drawn pixel by pixel. No up-sampling, no decoder, no denoiser. The slowest family
    here: sampling runs the net once per pixel (`--steps 1000 --width 32` is what was measured).
  - `ppca`: probabilistic PCA (Tipping & Bishop 1999), a linear Gaussian latent model fitted
    in closed form and sampled as mean + W z (the decoder's mean, as a VAE's samples are
    shown; `--noise-scale 1` adds the model's isotropic noise): blurry, ghosted digits.

    .venv/bin/python bench/external_family.py OUT_DIR [--family flow|ddpm|shufflevae|stylegan|pixelcnn|strokes|mixup|ppca] [--n 500] [--seed 7]
    .venv/bin/gandefect ingest-fakes OUT_DIR --generator flow
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gandefect.config import load_config
from gandefect.data.datasets import load_pngs
from gandefect.data.snapshot import read_manifest


def fit_ppca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Maximum-likelihood PPCA: (mean, W (k, d), noise variance) of rows x (n, d)."""
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s**2 / len(x)
    noise = float(var[k:].mean())
    w = vt[:k] * np.sqrt(np.maximum(var[:k] - noise, 0.0))[:, None]
    return mean, w, noise


def ppca(images: np.ndarray, n: int, rng: np.random.Generator, components: int, noise_scale: float) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    mean, w, noise = fit_ppca(flat, components)
    z = rng.standard_normal((n, components))
    samples = mean + z @ w + rng.standard_normal((n, mean.size)) * np.sqrt(noise) * noise_scale
    return samples.reshape(n, *images.shape[1:])


def mixup(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    a, b = rng.integers(len(images), size=(2, n))
    t = rng.uniform(0.3, 0.7, size=(n,) + (1,) * (images.ndim - 1))
    return t * images[a] + (1 - t) * images[b]


# digit skeletons in a unit box (x right, y down), one or two polylines each
TEMPLATES = {
    0: [[(0.5, 0.0), (0.15, 0.2), (0.1, 0.6), (0.35, 1.0), (0.7, 0.95), (0.9, 0.5), (0.8, 0.1), (0.5, 0.0)]],
    1: [[(0.35, 0.2), (0.6, 0.0), (0.55, 1.0)]],
    2: [[(0.1, 0.25), (0.4, 0.0), (0.8, 0.1), (0.8, 0.4), (0.1, 1.0), (0.9, 1.0)]],
    3: [[(0.1, 0.1), (0.6, 0.0), (0.8, 0.25), (0.4, 0.5), (0.85, 0.7), (0.6, 1.0), (0.1, 0.9)]],
    4: [[(0.7, 1.0), (0.7, 0.0), (0.05, 0.7), (0.95, 0.7)]],
    5: [[(0.85, 0.0), (0.25, 0.0), (0.2, 0.45), (0.7, 0.45), (0.85, 0.75), (0.55, 1.0), (0.1, 0.9)]],
    6: [[(0.75, 0.0), (0.3, 0.35), (0.15, 0.8), (0.45, 1.0), (0.8, 0.8), (0.6, 0.55), (0.2, 0.7)]],
    7: [[(0.1, 0.0), (0.9, 0.0), (0.4, 1.0)]],
    8: [
        [
            (0.5, 0.5),
            (0.15, 0.25),
            (0.5, 0.0),
            (0.85, 0.25),
            (0.5, 0.5),
            (0.1, 0.75),
            (0.5, 1.0),
            (0.9, 0.75),
            (0.5, 0.5),
        ]
    ],
    9: [[(0.8, 0.3), (0.5, 0.5), (0.2, 0.3), (0.5, 0.0), (0.8, 0.3), (0.7, 1.0)]],
}


def strokes(n: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    from PIL import ImageDraw

    big, box = 4 * 20, 20
    out = np.zeros((n, size, size), np.float64)
    for i in range(n):
        canvas = Image.new("L", (big, big))
        draw = ImageDraw.Draw(canvas)
        angle, shear = np.deg2rad(rng.uniform(-15, 15)), rng.uniform(-0.3, 0.3)
        sx, sy = rng.uniform(0.55, 1.0), rng.uniform(0.8, 1.0)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array(
            [[sx, shear], [0, sy]]
        )
        width = int(rng.integers(7, 15))  # at 4x: 1.75-3.5 pixels at 20x20
        for line in TEMPLATES[int(rng.integers(10))]:
            pts = (np.array(line) - 0.5) @ rot.T * (big - 2 * width) + big / 2
            draw.line([tuple(p) for p in pts], fill=255, width=width, joint="curve")
        digit = np.asarray(canvas.resize((box, box), Image.LANCZOS), np.float64)
        ys, xs = np.nonzero(digit > 0)
        w = digit[ys, xs]
        cy, cx = (ys * w).sum() / w.sum(), (xs * w).sum() / w.sum()
        top, left = int(round(size / 2 - cy)), int(round(size / 2 - cx))  # noqa: RUF046 - numpy scalars
        top, left = min(max(top, 0), size - box), min(max(left, 0), size - box)
        out[i, top : top + box, left : left + box] = digit
    return out


def _tensor(images: np.ndarray) -> torch.Tensor:
    """uint8-range images (N, H, W[, C]) as a (N, C, H, W) batch in [-1, 1]."""
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    return x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)


def _pixels(batches: list[torch.Tensor]) -> np.ndarray:
    """Sampled batches in [-1, 1] back to uint8-range images (N, H, W[, C])."""
    samples = (torch.cat(batches).clamp(-1, 1) + 1) * 127.5
    samples = samples[:, 0] if samples.shape[1] == 1 else samples.permute(0, 2, 3, 1)
    return samples.numpy().astype(np.float64)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on `loss`."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class VelocityNet(torch.nn.Module):
    """A small U-Net v(x, t): two resolutions below the image's, time added to every block."""

    def __init__(self, channels: int, width: int = 32, upsample: str = "nearest"):
        super().__init__()
        nn = torch.nn
        w, self.upsample = width, upsample

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, 1, 1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
                nn.Conv2d(cout, cout, 3, 1, 1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
            )

        self.time = nn.Sequential(nn.Linear(32, 4 * w), nn.SiLU(), nn.Linear(4 * w, 4 * w))
        self.t_proj = nn.ModuleList([nn.Linear(4 * w, c) for c in (w, 2 * w, 2 * w, 2 * w, w)])
        self.enc1, self.enc2, self.mid = block(channels, w), block(w, 2 * w), block(2 * w, 2 * w)
        self.dec2, self.dec1 = block(4 * w, 2 * w), block(3 * w, w)
        self.out = nn.Conv2d(w, channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(torch.linspace(0, 6, 16))
        emb = self.time(torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], 1))
        p = [proj(emb)[:, :, None, None] for proj in self.t_proj]
        f = torch.nn.functional
        h1 = self.enc1(x) + p[0]
        h2 = self.enc2(f.avg_pool2d(h1, 2)) + p[1]
        h3 = self.mid(f.avg_pool2d(h2, 2)) + p[2]
        u2 = f.interpolate(h3, size=h2.shape[2:], mode=self.upsample)
        d2 = self.dec2(torch.cat([u2, h2], 1)) + p[3]
        u1 = f.interpolate(d2, size=h1.shape[2:], mode=self.upsample)
        d1 = self.dec1(torch.cat([u1, h1], 1)) + p[4]
        return self.out(d1)


def flow(
    images: np.ndarray,
    n: int,
    rng: np.random.Generator,
    steps: int,
    sample_steps: int,
    width: int,
    checkpoint: Path | None = None,
) -> np.ndarray:
    """Train a rectified-flow velocity net on `images` (uint8 range) for `steps` batches (or load
    it from `checkpoint` when that file exists; a new one is saved there), then integrate n
    samples from noise with `sample_steps` Euler steps."""
    torch.manual_seed(int(rng.integers(2**31)))
    x = _tensor(images)
    net = VelocityNet(x.shape[1], width)
    if checkpoint is not None and checkpoint.exists():
        net.load_state_dict(torch.load(checkpoint))
        steps = 0
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=max(1, steps))
    for step in range(steps):
        x1 = x[torch.randint(len(x), (64,))]
        x0 = torch.randn_like(x1)
        t = torch.rand(len(x1))
        xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * x1
        loss = torch.nn.functional.mse_loss(net(xt, t), x1 - x0)
        _step(opt, loss)
        sched.step()
        if (step + 1) % 500 == 0:
            print(f"flow: step {step + 1}/{steps}, loss {loss.item():.4f}", flush=True)
    if checkpoint is not None and steps:
        torch.save(net.state_dict(), checkpoint)
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, n, 256):
            z = torch.randn((min(256, n - i),) + tuple(x.shape[1:]))
            for k in range(sample_steps):
                z = z + net(z, torch.full((len(z),), k / sample_steps)) / sample_steps
            out.append(z)
    return _pixels(out)


def ddpm(
    images: np.ndarray,
    n: int,
    rng: np.random.Generator,
    steps: int,
    width: int,
    timesteps: int,
    checkpoint: Path | None = None,
) -> np.ndarray:
    """Train a denoising diffusion model (Ho et al. 2020: linear betas 1e-4..0.02 over `timesteps`,
    the net predicts the added noise) with bilinear up-sampling in its U-Net for `steps` batches
    (or load it from `checkpoint`), then draw n samples by ancestral sampling, every timestep
    stochastic: another network and another sampler than the zoo's `ddpm` (nearest up-sampling,
    EMA weights, deterministic DDIM in 25 steps)."""
    torch.manual_seed(int(rng.integers(2**31)))
    x = _tensor(images)
    net = VelocityNet(x.shape[1], width, upsample="bilinear")
    betas = torch.linspace(1e-4, 0.02, timesteps)
    alphas_bar = torch.cumprod(1 - betas, 0)
    if checkpoint is not None and checkpoint.exists():
        net.load_state_dict(torch.load(checkpoint))
        steps = 0
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=max(1, steps))
    for step in range(steps):
        x0 = x[torch.randint(len(x), (64,))]
        t = torch.randint(timesteps, (len(x0),))
        eps = torch.randn_like(x0)
        ab = alphas_bar[t][:, None, None, None]
        loss = torch.nn.functional.mse_loss(net(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t / timesteps), eps)
        _step(opt, loss)
        sched.step()
        if (step + 1) % 500 == 0:
            print(f"ddpm: step {step + 1}/{steps}, loss {loss.item():.4f}", flush=True)
    if checkpoint is not None and steps:
        torch.save(net.state_dict(), checkpoint)
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, n, 256):
            z = torch.randn((min(256, n - i),) + tuple(x.shape[1:]))
            for t in reversed(range(timesteps)):
                eps = net(z, torch.full((len(z),), t / timesteps))
                z = (z - betas[t] / (1 - alphas_bar[t]).sqrt() * eps) / (1 - betas[t]).sqrt()
                if t:
                    z = z + betas[t].sqrt() * torch.randn_like(z)
            out.append(z)
    return _pixels(out)


class ShuffleVAE(torch.nn.Module):
    """A convolutional VAE whose decoder up-samples by sub-pixel convolution (a conv to 4x the
    channels, then PixelShuffle; Shi et al. 2016): the zoo's `vae` resizes bilinearly instead."""

    def __init__(self, channels: int, size: int, z_dim: int = 32, width: int = 32):
        super().__init__()
        nn = torch.nn
        self.base, w = size // 4, width
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * w * self.base**2, 2 * z_dim),
        )
        self.project = nn.Linear(z_dim, 2 * w * self.base**2)
        self.decoder = nn.Sequential(
            nn.Conv2d(2 * w, 4 * w, 3, 1, 1),
            nn.PixelShuffle(2),
            nn.ReLU(),
            nn.Conv2d(w, 4 * w, 3, 1, 1),
            nn.PixelShuffle(2),
            nn.ReLU(),
            nn.Conv2d(w, channels, 3, 1, 1),
            nn.Tanh(),
        )
        self.z_dim, self.width = z_dim, w

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.project(z).view(len(z), 2 * self.width, self.base, self.base))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return self.decode(mu + torch.randn_like(mu) * (0.5 * logvar).exp()), mu, logvar


def shufflevae(images: np.ndarray, n: int, rng: np.random.Generator, steps: int, width: int) -> np.ndarray:
    """Train a ShuffleVAE (Gaussian ELBO, beta 1, pixels in [-1, 1]) for `steps` batches of 64 and
    decode n draws of z ~ N(0, I): blurry digits with the sub-pixel decoder's periodic trace."""
    torch.manual_seed(int(rng.integers(2**31)))
    x = _tensor(images)
    if x.shape[2] % 4:
        raise SystemExit("shufflevae needs an image size divisible by 4")
    net = ShuffleVAE(x.shape[1], x.shape[2], width=width)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(steps):
        batch = x[torch.randint(len(x), (64,))]
        recon, mu, logvar = net(batch)
        rec = ((recon - batch) ** 2).flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
        _step(opt, rec + kl)
        if (step + 1) % 500 == 0:
            print(
                f"shufflevae: step {step + 1}/{steps}, reconstruction {rec.item():.1f}, kl {kl.item():.1f}", flush=True
            )
    net.eval()
    with torch.no_grad():
        return _pixels([net.decode(torch.randn(min(256, n - i), net.z_dim)) for i in range(0, n, 256)])


class ModulatedConv(torch.nn.Module):
    """A 3x3 convolution whose weights each sample's style scales per input channel, then
    demodulates to unit output variance (StyleGAN2's weight demodulation, Karras et al. 2020)."""

    def __init__(self, cin: int, cout: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.style = torch.nn.Linear(w_dim, cin)
        torch.nn.init.ones_(self.style.bias)
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # scaling the input by the style and the output by the demodulation equals convolving with
        # per-sample weights (StyleGAN2's non-fused form), as one convolution for the whole batch
        style = self.style(w)
        weight = self.weight / (self.weight[0].numel()) ** 0.5
        out = torch.nn.functional.conv2d(x * style[:, :, None, None], weight, padding=1)
        if self.demodulate:
            out = out * (style.pow(2) @ weight.pow(2).sum((2, 3)).T + 1e-8).rsqrt()[:, :, None, None]
        return out


class StyleGenerator(torch.nn.Module):
    """A style-based generator (Karras et al. 2019/2020): an MLP maps z to a style w, a learnt
    constant (size/4) is up-sampled by nearest neighbour twice, every layer a modulated
    convolution with per-pixel noise added, and the image comes from an unmodulated-demodulation
    1-channel layer. No transposed convolution, no resizing of an image, no latent reshaped by
    a linear layer: another generator than the zoo's DCGANs, resize-conv GAN and MLP GAN."""

    def __init__(self, channels: int, size: int, z_dim: int = 64, width: int = 32):
        super().__init__()
        nn = torch.nn
        self.mapping = nn.Sequential(
            nn.Linear(z_dim, z_dim), nn.LeakyReLU(0.2), nn.Linear(z_dim, z_dim), nn.LeakyReLU(0.2)
        )
        self.const = nn.Parameter(torch.randn(1, 2 * width, size // 4, size // 4))
        widths = [2 * width, 2 * width, width, width, width]
        self.convs = nn.ModuleList(ModulatedConv(a, b, z_dim) for a, b in zip(widths, widths[1:] + [width]))
        self.noise = nn.Parameter(torch.zeros(len(self.convs)))
        self.to_image = ModulatedConv(width, channels, z_dim, demodulate=False)
        self.z_dim = z_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.mapping(z)
        x = self.const.expand(len(z), -1, -1, -1)
        for i, conv in enumerate(self.convs):
            if i in (1, 3):  # two nearest-neighbour doublings: size/4 -> size
                x = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            x = conv(x, w)
            x = torch.nn.functional.leaky_relu(x + self.noise[i] * torch.randn_like(x[:, :1]), 0.2)
        return torch.tanh(self.to_image(x, w))


def stylegan(images: np.ndarray, n: int, rng: np.random.Generator, steps: int, width: int) -> np.ndarray:
    """Train a StyleGenerator against a strided-conv discriminator with the logistic loss and an
    R1 penalty on real images (StyleGAN2's objective) for `steps` batches of 64, then sample n."""
    torch.manual_seed(int(rng.integers(2**31)))
    nn, F = torch.nn, torch.nn.functional
    x = _tensor(images)
    if x.shape[2] % 4:
        raise SystemExit("stylegan needs an image size divisible by 4")
    g = StyleGenerator(x.shape[1], x.shape[2], width=width)
    d = nn.Sequential(
        nn.Conv2d(x.shape[1], width, 3, 1, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(4 * width * (x.shape[2] // 4) ** 2, 1),
    )
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.0, 0.99))
    for step in range(steps):
        real = x[torch.randint(len(x), (64,))].requires_grad_(step % 16 == 0)
        fake = g(torch.randn(64, g.z_dim))
        real_logits = d(real)
        loss_d = F.softplus(d(fake.detach())).mean() + F.softplus(-real_logits).mean()
        if step % 16 == 0:  # lazy R1 (gamma 1) every 16th step, weighted by 16, as StyleGAN2 does
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            loss_d = loss_d + 16 * 0.5 * grad.pow(2).flatten(1).sum(1).mean()
        _step(opt_d, loss_d)
        loss_g = F.softplus(-d(fake)).mean()
        _step(opt_g, loss_g)
        if (step + 1) % 500 == 0:
            print(
                f"stylegan: step {step + 1}/{steps}, loss D {loss_d.item():.3f}, loss G {loss_g.item():.3f}", flush=True
            )
    g.eval()
    with torch.no_grad():
        return _pixels([g(torch.randn(min(256, n - i), g.z_dim)) for i in range(0, n, 256)])


class MaskedConv(torch.nn.Conv2d):
    """A convolution that sees only the pixels before its centre in raster order (PixelCNN's
    mask A, which hides the centre too) or those and the centre (mask B)."""

    def __init__(self, mask: str, cin: int, cout: int, k: int):
        super().__init__(cin, cout, k, padding=k // 2)
        keep = torch.ones_like(self.weight)
        keep[:, :, k // 2, k // 2 + (mask == "B") :] = 0
        keep[:, :, k // 2 + 1 :] = 0
        self.register_buffer("keep", keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, self.weight * self.keep, self.bias, padding=self.padding)


class PixelCNN(torch.nn.Module):
    """An autoregressive model (PixelCNN, van den Oord et al. 2016): a 7x7 mask-A convolution,
    residual 3x3 mask-B blocks and a 256-way softmax per pixel and channel. The channels of one
    pixel are drawn independently given the pixels before it, a simplification for colour."""

    def __init__(self, channels: int, width: int = 32, blocks: int = 4):
        super().__init__()
        nn = torch.nn
        self.channels = channels
        self.stem = MaskedConv("A", channels, width, 7)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), MaskedConv("B", width, width, 3), nn.ReLU(), nn.Conv2d(width, width, 1))
            for _ in range(blocks)
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, 256 * channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        logits = self.head(h)
        return logits.view(len(x), 256, self.channels, *x.shape[2:])


def pixelcnn(images: np.ndarray, n: int, rng: np.random.Generator, steps: int, width: int) -> np.ndarray:
    """Train a PixelCNN by maximum likelihood (cross-entropy over the 256 grey levels) for `steps`
    batches of 64 and sample n images pixel by pixel in raster order. No up-sampling anywhere:
    its defects are an autoregressive model's, strokes that wander, break off or end in specks."""
    torch.manual_seed(int(rng.integers(2**31)))
    x = _tensor(images)
    levels = torch.from_numpy(np.clip(np.round(images), 0, 255).astype(np.int64))
    levels = levels[:, None] if levels.dim() == 3 else levels.permute(0, 3, 1, 2)
    net = PixelCNN(x.shape[1], width=width)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(steps):
        idx = torch.randint(len(x), (64,))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), levels[idx])
        _step(opt, loss)
        if (step + 1) % 500 == 0:
            print(f"pixelcnn: step {step + 1}/{steps}, bits per pixel {loss.item() / np.log(2):.3f}", flush=True)
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, n, 256):
            z = torch.zeros(min(256, n - i), *x.shape[1:])
            for r in range(z.shape[2]):
                # the masks never look below the current row, so rows after it need not be fed
                logits = net(z[:, :, : r + 1])[:, :, :, r]
                for c in range(z.shape[3]):
                    probs = logits[..., c].softmax(1).permute(0, 2, 1).reshape(-1, 256)
                    drawn = torch.multinomial(probs, 1).view(len(z), -1)
                    z[:, :, r, c] = drawn.float() / 127.5 - 1.0
                    if c + 1 < z.shape[3]:
                        logits = net(z[:, :, : r + 1])[:, :, :, r]
            out.append(z)
            print(f"pixelcnn: sampled {i + len(z)}/{n}", flush=True)
    return _pixels(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument(
        "--family",
        choices=["flow", "ddpm", "shufflevae", "stylegan", "strokes", "mixup", "ppca", "pixelcnn"],
        default="flow",
    )
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--components", type=int, default=24, help="ppca: latent dimensions")
    ap.add_argument("--noise-scale", type=float, default=0.0, help="ppca: times the fitted noise standard deviation")
    ap.add_argument(
        "--steps",
        type=int,
        default=2000,
        help="flow, ddpm, shufflevae, stylegan, pixelcnn: training batches (64 images each)",
    )
    ap.add_argument(
        "--width",
        type=int,
        default=24,
        help="flow, ddpm: the U-Net's feature maps at full resolution; shufflevae: its encoder's first layer; stylegan: its last layers; pixelcnn: every layer",
    )
    ap.add_argument("--sample-steps", type=int, default=4, help="flow: Euler steps per sample")
    ap.add_argument("--timesteps", type=int, default=300, help="ddpm: diffusion steps (each one a sampling step)")
    ap.add_argument("--checkpoint", type=Path, help="flow, ddpm: the net's file (loaded if it exists, else saved)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    cfg = load_config(args.params)
    real = read_manifest(cfg.real_dir)
    images = load_pngs(real.loc[real["split"] == "train", "path"], cfg.real_dir, cfg.data.shape).astype(np.float64)
    rng = np.random.default_rng(args.seed)
    if args.family == "flow":
        samples = flow(images, args.n, rng, args.steps, args.sample_steps, args.width, args.checkpoint)
    elif args.family == "ddpm":
        samples = ddpm(images, args.n, rng, args.steps, args.width, args.timesteps, args.checkpoint)
    elif args.family == "shufflevae":
        samples = shufflevae(images, args.n, rng, args.steps, args.width)
    elif args.family == "stylegan":
        samples = stylegan(images, args.n, rng, args.steps, args.width)
    elif args.family == "pixelcnn":
        samples = pixelcnn(images, args.n, rng, args.steps, args.width)
    elif args.family == "strokes":
        samples = strokes(args.n, rng, images.shape[1])
    elif args.family == "ppca":
        samples = ppca(images, args.n, rng, args.components, args.noise_scale)
    else:
        samples = mixup(images, args.n, rng)
    samples = np.clip(np.round(samples), 0, 255).astype(np.uint8)
    args.out.mkdir(parents=True, exist_ok=True)
    mode = "L" if samples.ndim == 3 else "RGB"
    for i, s in enumerate(samples):
        Image.fromarray(s, mode).save(args.out / f"{args.family}-{i:04d}.png")
    print(f"{args.n} {args.family} samples in {args.out}")


if __name__ == "__main__":
    main()
