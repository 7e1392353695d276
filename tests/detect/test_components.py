"""The component bank (`gandefect.detect.components`): real images through each kind of generator
up-sampling keep their twin's content and carry the component's trace, not a copy."""

import pytest
import torch

from gandefect.detect import components


def _digits(size: int, channels: int) -> torch.Tensor:
    """Bright bars on a dark background, like the default data: one bar per place and direction."""
    images = []
    for r in range(1, size - 7, 2):
        for c in range(1, size - 7, 2):
            for vertical in (0, 1):
                x = -torch.ones(channels, size, size)
                x[:, r : r + 6, c : c + 2] = 1 if vertical else -1
                x[:, r : r + 2, c : c + 6] = -1 if vertical else 1
                images.append(x)
    return torch.stack(images)


@pytest.fixture(scope="module")
def reconstructions():
    x = _digits(16, 1)
    return x, {
        k: components.reconstruct(components.train_component(x, k, steps=200, seed=1), x) for k in components.KINDS
    }


@pytest.mark.parametrize("kind", components.KINDS)
def test_a_component_reconstruction_keeps_its_twin_s_content_and_is_not_the_twin(reconstructions, kind):
    x, recon = reconstructions[0], reconstructions[1][kind]
    assert recon.shape == x.shape and recon.min() >= -1 and recon.max() <= 1
    distances = torch.cdist(recon.flatten(1), x.flatten(1))
    assert torch.equal(distances.argmin(1), torch.arange(len(x)))  # nearest its own twin
    assert (recon - x).abs().flatten(1).amax(1).min() > 1 / 127.5  # ... drawn by the decoder: not one 8-bit copy


def test_each_kind_up_samples_its_own_way(reconstructions):
    """The same images through two kinds of decoder differ: the bank holds distinct traces."""
    recon = reconstructions[1]
    for a in components.KINDS:
        for b in components.KINDS:
            if a < b:
                assert (recon[a] - recon[b]).abs().mean() > 1e-3, (a, b)


@pytest.mark.parametrize("kind", components.KINDS)
def test_a_component_takes_colour_images(kind):
    x = _digits(16, 3)[:8]
    assert components.reconstruct(components.train_component(x, kind, steps=2, seed=1), x).shape == x.shape


def test_the_bank_is_seeded_and_skips_sizes_with_nothing_to_up_sample():
    x = _digits(16, 1)
    one = components.bank(x, per_kind=10, steps=20, seed=3)
    two = components.bank(x, per_kind=10, steps=20, seed=3)
    assert set(one) == set(components.KINDS) and all(len(v) == 10 for v in one.values())
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert components.bank(-torch.ones(10, 1, 15, 15), per_kind=5, steps=5, seed=3) == {}  # 15: odd, no 2x up-sampling
    assert not components.usable(15) and components.usable(28)
