"""Build a network from a model spec (``core.spec.ModelSpec``, read by attribute): the one public verb over the
family registry (:mod:`models.families`)."""

from __future__ import annotations

from torch import nn

from models.families import FAMILY_BUILDERS


def build_model(model_spec) -> nn.Module:
    """Build the network a model spec describes.

    Args:
        model_spec: a ``core.spec.ModelSpec`` with ``input_dim`` and ``output_dim`` set (the runner fills
            them from the dataset).
    Returns:
        an ``nn.Module`` mapping inputs (N, input_dim…) to logits (N, output_dim).
    Raises:
        ValueError: dimensions missing or an unknown family.
    """
    if model_spec.input_dim is None or model_spec.output_dim is None:
        raise ValueError("model spec needs input_dim and output_dim (filled from the dataset by the runner)")
    build = FAMILY_BUILDERS.get(model_spec.family)
    if build is None:
        raise ValueError(f"unknown model family {model_spec.family!r}; registered: {sorted(FAMILY_BUILDERS)}")
    return build(model_spec)
