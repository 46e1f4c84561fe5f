"""robustlab models: residual networks as integrators, their solvers and sound Lipschitz bounds.

Public surface::

    from models import build_model, load, save, lipschitz_bound
    net = build_model(spec.model)          # explicit ResNet or implicit θ-method network
    bound = lipschitz_bound(net)           # sound upper bound on Lip₂(input → logits)
"""

from models.build import build_model
from models.io import load, read_model_spec, save
from models.lipschitz import lipschitz_bound
from models.steps import LipschitzBoundUnavailable

__all__ = ["LipschitzBoundUnavailable", "build_model", "lipschitz_bound", "load", "read_model_spec", "save"]
