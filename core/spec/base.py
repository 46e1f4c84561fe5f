"""What every part of the spec shares: the strict base model, the size limits and the bounded number types."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

MAX_FEATURES = 4096
MAX_DEPTH = 1000
MAX_SAMPLES = 1_000_000
MAX_EPOCHS = 100_000
MAX_LIST = 64
DIGITS_IMAGES = 1797  # scikit-learn's bundled 8×8 digits
# width² · depth · epochs · n_train: a coarse budget on the work one job may ask for (≈ flops / few).
MAX_WORK = 5e15

NonNegFloat = Annotated[float, Field(ge=0.0, le=1e3, allow_inf_nan=False)]
PosFloat = Annotated[float, Field(gt=0.0, le=1e3, allow_inf_nan=False)]
# Names of the solver registries in models.solvers (a test keeps the two in step; the spec stays torch-free).
ForwardSolverName = Literal["fixed_point", "anderson", "gradient_descent", "ncg_fr", "ncg_pr"]
BackwardSolverName = Literal["gmres", "neumann", "fixed_point"]


class StrictModel(BaseModel):
    """Unknown fields and loose types are errors: ``strict`` takes no ``true`` for a number and no ``"10"`` for
    one (an integer is still a valid float; a float is no integer)."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False, strict=True)

    #: Fields added after spec hashes were first stored. The canonical form (:func:`canonical_dump`, the input of
    #: the spec hash) leaves each out while it holds its default, so adding an option never changes the hash, and
    #: so the identity, of a stored spec that does not use it. Every new field goes here.
    added_fields: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_added_defaults(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if self.added_fields and isinstance(info.context, dict) and info.context.get(CANONICAL):
            fields = type(self).model_fields
            for name in self.added_fields:
                if name in data and getattr(self, name) == fields[name].get_default(call_default_factory=True):
                    del data[name]
        return data


CANONICAL = "canonical"


def canonical_dump(model: BaseModel) -> dict:
    """``model`` as JSON-ready data with every default filled in, except the :attr:`StrictModel.added_fields` that
    hold their default: the form that spec hashes are computed from."""
    return model.model_dump(mode="json", context={CANONICAL: True})


def bounded_unique(values: list[float], what: str) -> list[float]:
    """The sorted distinct ``values``, at most ``MAX_LIST`` of them."""
    if len(values) > MAX_LIST:
        raise ValueError(f"at most {MAX_LIST} {what} values")
    return sorted(set(values))
