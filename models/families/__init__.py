"""Model families, one module each; importing this package registers them all (:mod:`models.families.registry`).
A new family is one module here that registers its builder, plus its line below and its spec options."""

from models.families import hamiltonian, lipschitz, ode, residual, sll  # noqa: F401  (each registers its builder)
from models.families.registry import FAMILY_BUILDERS, register_family

__all__ = ["FAMILY_BUILDERS", "register_family"]
