"""Natural colour photographs for denoising and plug-and-play deblurring: scikit-learn's two bundled 427×640
photographs (``sklearn.datasets.load_sample_images``, no download), cut into seeded square patches — the stand-in
for the BSDS500 images of Murari, "The Plug-and-Play Method", "Use in a Deblurring Task"."""

from __future__ import annotations

import torch

from core.datasets import PHOTO_DATASETS
from core.spec import PhotosDenoisingSpec
from evaluation.datasets.base import Dataset, register_dataset

PHOTOS = PHOTO_DATASETS["photos_denoising"]
DEFAULT_PATCH = PhotosDenoisingSpec.model_fields["patch"].default  # the declared shape is the default patch's
UNIT = (0.0, 1.0)


def photo(filename: str) -> torch.Tensor:
    """One of scikit-learn's sample photographs as a (3, H, W) float32 image in [0, 1]."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    names = [path.rsplit("/", 1)[-1].rsplit("\\", 1)[-1] for path in bunch.filenames]
    if filename not in names:
        raise ValueError(f"scikit-learn's sample images are {names}, not {filename!r}")
    image = bunch.images[names.index(filename)]  # (H, W, 3) uint8
    return torch.tensor(image).permute(2, 0, 1).to(torch.float32) / 255.0


def random_patches(image: torch.Tensor, n: int, side: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` side × side patches of a (C, H, W) image at uniformly random top-left corners drawn by ``gen``:
    (n, C, side, side)."""
    _, height, width = image.shape
    rows = torch.randint(0, height - side + 1, (n,), generator=gen)
    cols = torch.randint(0, width - side + 1, (n,), generator=gen)
    return torch.stack(
        [image[:, r : r + side, c : c + side] for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
    )


def photos_denoising(
    n_train: int = 2000, n_test: int = 200, patch: int = DEFAULT_PATCH, seed: int = 0, noise: float = 0.1
) -> Dataset:
    """Training: ``n_train`` patches of the training photograph (china.jpg), input = clean + ``noise``·N(0, I)
    clipped to [0, 1], target = clean; test: ``n_test`` patches of the test photograph (flower.jpg, never seen in
    training), corrupted the same way by its own generator (seed + 1). Inputs and targets (N, 3, P, P)."""
    gen = torch.Generator().manual_seed(seed)
    test_gen = torch.Generator().manual_seed(seed + 1)
    clean_train = random_patches(photo(PHOTOS.train_photo), n_train, patch, gen)
    clean_test = random_patches(photo(PHOTOS.test_photo), n_test, patch, test_gen)
    x_train = (clean_train + noise * torch.randn(clean_train.shape, generator=gen)).clamp(0, 1)
    x_test = (clean_test + noise * torch.randn(clean_test.shape, generator=test_gen)).clamp(0, 1)
    return Dataset(x_train, clean_train, x_test, clean_test, num_classes=0, valid_range=UNIT, task="denoising")


@register_dataset(
    "photos_denoising", task="denoising", input_shape=(PHOTOS.channels, DEFAULT_PATCH, DEFAULT_PATCH), valid_range=UNIT
)
def load_photos_denoising(spec) -> Dataset:
    return photos_denoising(spec.n_train, spec.n_test, spec.patch, spec.seed, spec.noise)
