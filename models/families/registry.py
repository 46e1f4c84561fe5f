"""The model-family registry: each family's module registers the function that builds its network.

::

    @register_family("hamiltonian")
    def build_hamiltonian(spec) -> nn.Module: ...

    build = FAMILY_BUILDERS["hamiltonian"]     # what models.build_model dispatches on ``spec.family``

A builder takes a ``core.spec.ModelSpec`` (read by attribute) with ``input_dim`` and ``output_dim`` set and returns
an ``nn.Module`` mapping inputs (N, input_dim…) to logits (N, output_dim). The spec's family names are checked
against this registry by a test, so a family is never accepted by the API and unknown to the worker.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

Builder = Callable[..., nn.Module]
FAMILY_BUILDERS: dict[str, Builder] = {}


def register_family(name: str) -> Callable[[Builder], Builder]:
    """Register ``build(spec) -> nn.Module`` as the builder of family ``name`` (once)."""

    def register(build: Builder) -> Builder:
        if name in FAMILY_BUILDERS:
            raise ValueError(f"model family {name!r} is registered twice")
        FAMILY_BUILDERS[name] = build
        return build

    return register


def repeat_steps(make: Callable[[], nn.Module], depth: int, shared: bool) -> list[nn.Module]:
    """``depth`` steps from ``make``: one module used ``depth`` times when the weights are shared."""
    if shared:
        step = make()
        return [step] * depth
    return [make() for _ in range(depth)]
