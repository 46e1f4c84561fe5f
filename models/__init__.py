"""robustlab models: residual networks as integrators, their solvers and sound Lipschitz bounds.

Public surface::

    from models import build_model, load, save, lipschitz_bound
    net = build_model(spec.model)          # explicit / implicit θ-method / neural ODE / Hamiltonian / 1-Lipschitz
    bound = lipschitz_bound(net)           # sound upper bound on Lip₂(input → logits)

Modules: ``steps`` (explicit and θ-steps, implicit backward), ``solvers`` (forward / backward registries),
``residual`` (dense F), ``conv`` (convolutional F, exact conv norms), ``ode`` (the neural ODE of Reshniak & Webster),
``hamiltonian``, ``lipschitz_layers``, ``regularizers`` (R_fp, divergence, TV, R_F, R_λ, R_n by name).
"""

from models.build import build_model
from models.io import load, read_model_spec, save
from models.lipschitz import lipschitz_bound
from models.steps import LipschitzBoundUnavailable

__all__ = ["LipschitzBoundUnavailable", "build_model", "lipschitz_bound", "load", "read_model_spec", "save"]
