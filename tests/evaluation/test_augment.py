"""``train.augment``: every augmented image is a zero-padded shifted crop (and maybe a mirror) of its original,
drawn from the training seed's generator; training with it is reproducible; only images can be augmented."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from core.spec import AugmentSpec, JobSpec, TrainSpec
from evaluation.datasets import Dataset
from evaluation.training import augment_images, train_classifier

CPU = torch.device("cpu")


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` (C, H, W) moved down by ``dy`` and right by ``dx`` pixels, zeros coming in (loops: independent of
    the vectorised crop under test)."""
    out = torch.zeros_like(image)
    _, height, width = image.shape
    for r in range(height):
        for c in range(width):
            if 0 <= r - dy < height and 0 <= c - dx < width:
                out[:, r, c] = image[:, r - dy, c - dx]
    return out


def explain(original: torch.Tensor, augmented: torch.Tensor, padding: int) -> list[tuple[int, int, bool]]:
    """Every (dy, dx, mirrored) with |dy|, |dx| ≤ padding that turns ``original`` into ``augmented``."""
    found = []
    for mirrored in (False, True):
        source = original.flip(2) if mirrored else original
        for dy in range(-padding, padding + 1):
            for dx in range(-padding, padding + 1):
                if torch.equal(shifted(source, dy, dx), augmented):
                    found.append((dy, dx, mirrored))
    return found


def test_each_image_is_one_shifted_zero_padded_crop_or_its_mirror() -> None:
    x = torch.rand(64, 3, 6, 5, generator=torch.Generator().manual_seed(0)) + 0.1  # no zero pixel: shifts differ
    out = augment_images(x, 2, True, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    moves = []
    for original, augmented in zip(x, out, strict=True):
        found = explain(original, augmented, 2)
        assert len(found) == 1, found
        moves.append(found[0])
    assert {m[2] for m in moves} == {False, True}  # some mirrored, some not
    assert len({m[:2] for m in moves}) > 10  # many of the 25 shifts drawn
    crop_only = augment_images(x, 2, False, torch.Generator().manual_seed(1))
    assert all(not explain(o, a, 2)[0][2] for o, a in zip(x[:8], crop_only[:8], strict=True))
    flip_only = augment_images(x, 0, True, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, o) or torch.equal(a, o.flip(2)) for o, a in zip(x, flip_only, strict=True))


def test_the_draws_follow_the_generator() -> None:
    x = torch.rand(32, 1, 8, 8)
    first = augment_images(x, 3, True, torch.Generator().manual_seed(5))
    assert torch.equal(first, augment_images(x, 3, True, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, augment_images(x, 3, True, torch.Generator().manual_seed(6)))


def tiny_images(n: int = 24) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 6, 6, generator=gen)
    y = torch.arange(n) % 3
    x[torch.arange(n), 0, y, y] = 1.0
    return Dataset(x, y, x[:6], y[:6], num_classes=3, valid_range=(0.0, 1.0))


def trained(augment: AugmentSpec | None) -> torch.Tensor:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    spec = TrainSpec(epochs=3, lr=0.05, batch_size=8, augment=augment)
    train_classifier(model, tiny_images(), spec, CPU)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_with_augmentation_is_reproducible_and_sees_other_images() -> None:
    augment = AugmentSpec(crop_padding=2, flip=True)
    assert torch.equal(trained(augment), trained(augment))
    assert not torch.equal(trained(augment), trained(None))


def test_only_images_are_augmented() -> None:
    flat = tiny_images()
    flat = Dataset(flat.x_train.flatten(1), flat.y_train, flat.x_test.flatten(1), flat.y_test, num_classes=3)
    model = torch.nn.Linear(36, 3)
    spec = TrainSpec(epochs=1, augment=AugmentSpec(flip=True))
    with pytest.raises(
        ValueError, match=r"train.augment needs images \(N, C, H, W\); this dataset's inputs are \(36,\)"
    ):
        train_classifier(model, flat, spec, CPU)
    job = {"name": "x", "dataset": {"name": "digits"}, "model": {"family": "explicit"}}
    with pytest.raises(ValidationError, match="train.augment needs an image dataset .*not 'digits'"):
        JobSpec.model_validate({**job, "train": {"augment": {"crop_padding": 4, "flip": True}}})
    with pytest.raises(ValidationError, match="crop_padding"):
        JobSpec.model_validate({**job, "train": {"augment": {"crop_padding": -1}}})
    plain = JobSpec.model_validate(job)
    assert plain.train.augment is None and "augment" not in plain.canonical_json()
