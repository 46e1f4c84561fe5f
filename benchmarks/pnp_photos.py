"""Plug-and-play deblurring of scikit-learn's two whole 427×640 colour photographs with a trained denoiser (a
script, not a test)::

    robustlab run examples/photos-pnp-lipschitz-conv.json --out runs/photos-pnp
    python benchmarks/pnp_photos.py runs/photos-pnp [--sigma 0.01] [--iterations 50] [--blur motion]

Each photograph x is observed as y = Kx + σ·N(0, I) (K the preset's motion blur, per channel) and reconstructed by
:func:`evaluation.pnp.plug_and_play` (Murari, "The Plug-and-Play Method", "Use in a Deblurring Task"), the
checkpoint's network as the denoiser D applied tile by tile (:class:`TiledDenoiser`). Prints the PSNR of the
observation and of the reconstruction per photograph, the denoiser's Lipschitz bound and whether the iteration is
averaged. china.jpg is the photograph the training patches came from; flower.jpg was never seen in training.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from core.datasets import PHOTO_DATASETS  # noqa: E402
from core.metrics import metric_key  # noqa: E402
from evaluation.datasets import photo  # noqa: E402
from evaluation.pnp import plug_and_play  # noqa: E402

PAD_VALUE = 0.5  # mid-grey outside the photograph


class TiledDenoiser(nn.Module):
    """A denoiser trained on P×P patches applied to a whole image: pad with the constant ``PAD_VALUE`` to multiples
    of P, apply the network to the disjoint P×P tiles, crop back. Lip(this) ≤ Lip(network): x ↦ (x, c) is an
    isometry, the tiles are disjoint blocks (‖D(x) − D(z)‖² = Σ_t ‖D(x_t) − D(z_t)‖² ≤ L²Σ_t ‖x_t − z_t‖²) and
    cropping is a restriction, so plug-and-play's convergence guarantee carries over."""

    def __init__(self, network: nn.Module, patch: int):
        super().__init__()
        self.network, self.patch = network, patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        p = self.patch
        rows, cols = math.ceil(height / p), math.ceil(width / p)
        padded = nn.functional.pad(x, (0, cols * p - width, 0, rows * p - height), value=PAD_VALUE)
        tiles = padded.reshape(n, c, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, p, p)
        out = self.network(tiles).reshape(n, rows, cols, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(n, c, rows * p, cols * p)[:, :, :height, :width]

    def lipschitz_bound(self) -> float:
        return models.lipschitz_bound(self.network)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a `robustlab run --out` directory (or .safetensors) of a photos denoiser")
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--blur", default="motion", choices=["motion", "gaussian", "none"])
    parser.add_argument("--relaxation", type=float, default=0.5)
    args = parser.parse_args()
    spec = models.read_model_spec(args.checkpoint)
    if getattr(spec, "head", None) != "image" or spec.input_shape is None:
        sys.exit(f"{args.checkpoint}: not an image-to-image network (model.head 'image'), got {spec.family}")
    channels, patch, _ = spec.input_shape
    denoiser = TiledDenoiser(models.load(args.checkpoint), patch).eval()
    facts = PHOTO_DATASETS["photos_denoising"]
    print(f"denoiser: {spec.family}, {patch}×{patch} tiles, Lipschitz bound {denoiser.lipschitz_bound():.6f}")
    print(f"blur {args.blur}, σ = {args.sigma:g}, {args.iterations} iterations, λ = {args.relaxation:g}")
    for name in (facts.train_photo, facts.test_photo):
        clean = photo(name).unsqueeze(0)
        start = time.perf_counter()
        metrics, info = plug_and_play(
            denoiser, clean, [args.sigma], args.iterations, args.blur, relaxation=args.relaxation, batch_size=1
        )
        m = {kind: metrics[metric_key(kind, args.sigma)] for kind in ("pnp_input_psnr", "pnp_psnr", "pnp_monotone",
                                                                      "pnp_residual")}  # fmt: skip
        seen = "training photograph" if name == facts.train_photo else "unseen photograph"
        print(
            f"{name:11s} ({seen}): PSNR observed {m['pnp_input_psnr']:.2f} dB → reconstructed "
            f"{m['pnp_psnr']:.2f} dB; averaged {info['averaged']}, monotone "
            f"{m['pnp_monotone']:.0f}, last relative step {m['pnp_residual']:.2e} "
            f"({time.perf_counter() - start:.1f} s)"
        )


if __name__ == "__main__":
    main()
