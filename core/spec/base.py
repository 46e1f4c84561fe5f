"""What every part of the spec shares: the strict base model, the size limits and the bounded number types."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_serializer,
    model_validator,
)

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
# Names of the solver registries in models.solvers (a test keeps the two in step; the spec stays torch-free), and
# AUTO_SOLVER: fixed_point forward / neumann backward where the θ-step is provably contractive (θh·Lip F < 1 from
# exact norms or sound bounds), anderson / gmres otherwise (models.solvers.auto). An opt-in value, not the default:
# a stored spec says "anderson" explicitly and must keep running it, and a default of "auto" would change the hash
# of every spec that leaves the solver out.
AUTO_SOLVER = "auto"
ForwardSolverName = Literal["auto", "fixed_point", "anderson", "gradient_descent", "ncg_fr", "ncg_pr"]
BackwardSolverName = Literal["auto", "gmres", "neumann", "fixed_point"]


class StrictModel(BaseModel):
    """Unknown fields and loose types are errors: ``strict`` takes no ``true`` for a number and no ``"10"`` for
    one (an integer is still a valid float; a float is no integer)."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False, strict=True)

    #: Fields added after spec hashes were first stored. The canonical form (:func:`canonical_dump`, the input of
    #: the spec hash) leaves each out while it holds its default, so adding an option never changes the hash, and
    #: so the identity, of a stored spec that does not use it. Every new field goes here.
    added_fields: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            self._dump_form(data)
            if isinstance(info.context, dict) and info.context.get(CANONICAL):
                self._canonical_form(data)
        return data

    def _dump_form(self, data: dict[str, Any]) -> None:
        """Complete this model's own dump ``data`` in place (every dump; nothing to add here)."""

    def _canonical_form(self, data: dict[str, Any]) -> None:
        """Turn this model's own dump ``data`` into its canonical form, in place: leave out the added fields
        that hold their default."""
        fields = type(self).model_fields
        for name in self.added_fields:
            if name in data and getattr(self, name) == fields[name].get_default(call_default_factory=True):
                del data[name]


CANONICAL = "canonical"


def canonical_dump(model: BaseModel) -> dict:
    """``model`` as JSON-ready data with every default filled in, except the :attr:`StrictModel.added_fields` that
    hold their default: the form that spec hashes are computed from."""
    return model.model_dump(mode="json", context={CANONICAL: True})


class Legacy(NamedTuple):
    """A field of the old flat record (one ``ModelSpec`` / ``DatasetSpec`` for every family / dataset) that a variant
    does not have: its old ``default`` and the ``message`` (``{variant}``: the variant's name) of the 422 when
    input gives it another value."""

    default: Any
    message: str
    #: the old record accepted any value here and ignored it: keep accepting one (a stored spec must still
    #: validate), carry it unused, and dump it as given, so the spec's hash does not change
    ignored: bool = False

    def holds_default(self, value: Any) -> bool:
        """Whether input ``value`` is the old default (as strict as the old field: ``0`` is no ``false``)."""
        default = self.default
        if isinstance(default, BaseModel):
            try:
                return type(default).model_validate(value) == default
            except ValueError:
                return False
        if isinstance(default, bool) or isinstance(value, bool) or default is None:
            return value is default
        if isinstance(default, int) and not isinstance(value, int):
            return False
        return isinstance(value, (int, float)) and value == default

    def canonical(self) -> Any:
        return self.json_form(self.default)

    def json_form(self, value: Any) -> Any:
        """``value`` (the default or an ignored input) as it was dumped by the old record."""
        if isinstance(self.default, BaseModel):
            return canonical_dump(type(self.default).model_validate(value))
        return value


class _UnionBase(type(BaseModel)):
    """Metaclass of a union's base: calling the base validates against the union (``ModelSpec(family="ode")`` is
    an ``OdeSpec``); calling a variant builds that variant."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        union = _UNIONS.get(cls)
        if union is not None and not args:
            return union.validate_python(kwargs)
        return super().__call__(*args, **kwargs)


_UNIONS: dict[type, TypeAdapter] = {}


class Variant(StrictModel, metaclass=_UnionBase):
    """One member of a discriminated union (model families on ``family``, datasets on ``name``).

    **Compatibility with the old flat record.** Before the unions, one record held every family's (every dataset's)
    options, and "applies to X only" validators kept the others at their defaults; stored specs are full dumps of
    it. ``legacy_flat`` lists, for a variant that existed then, the old fields it does not have, with their old
    default: input may still give each one holding that default (it is dropped), another value is a 422 naming the
    field, and the canonical form (:func:`canonical_dump`, the spec hash's input) adds each back with its default,
    so an unchanged spec keeps its hash. Variants added after the unions leave ``legacy_flat`` empty.

    The union's base (``ModelSpec``, ``DatasetSpec``) parses through the union once :func:`close_union` names it:
    ``Base(**fields)``, ``Base.model_validate(data)`` and ``Base.model_validate_json(text)`` return the variant."""

    legacy_flat: ClassVar[Mapping[str, Legacy]] = {}
    #: The field whose literal value picks the variant (``family``, ``name``).
    discriminator: ClassVar[str] = ""

    @classmethod
    def variant_name(cls) -> str:
        return typing.get_args(cls.model_fields[cls.discriminator].annotation)[0]

    #: the values of ``ignored`` legacy fields given with another value than the old default, as dumped
    _ignored_legacy: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _drop_legacy_flat(cls, data: Any, handler: ModelWrapValidatorHandler) -> Any:
        if not cls.legacy_flat or not isinstance(data, dict):
            return handler(data)
        data, ignored = dict(data), {}
        for name, legacy in cls.legacy_flat.items():
            if name in data and not legacy.holds_default(value := data.pop(name)):
                if not legacy.ignored:
                    raise ValueError(legacy.message.format(variant=cls.variant_name()))
                ignored[name] = legacy.json_form(value)
        model = handler(data)
        model._ignored_legacy = ignored
        return model

    def _dump_form(self, data: dict[str, Any]) -> None:
        data.update(self._ignored_legacy)  # every dump: reading it back gives the same spec and hash

    def _canonical_form(self, data: dict[str, Any]) -> None:
        super()._canonical_form(data)
        for name, legacy in self.legacy_flat.items():
            data[name] = self._ignored_legacy.get(name, legacy.canonical())

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        union = _UNIONS.get(cls)
        return super().model_validate(obj, **kwargs) if union is None else union.validate_python(obj, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes, **kwargs: Any) -> Any:
        union = _UNIONS.get(cls)
        return (
            super().model_validate_json(json_data, **kwargs)
            if union is None
            else union.validate_json(json_data, **kwargs)
        )


def close_union(base: type[Variant], *variants: type[Variant]) -> Any:
    """The discriminated union of ``variants`` (all subclasses of ``base``), for a field's annotation; from now on
    ``base`` parses through it. Returns the annotation."""
    assert all(issubclass(v, base) for v in variants)
    tag = base.discriminator

    def errors_at_the_fields(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Errors located as in the old flat record: ``model.width``, not ``model.implicit.width``; an unknown or
        missing tag at ``model.family``."""
        try:
            return handler(value)
        except ValidationError as exc:
            errors = []
            for error in exc.errors(include_url=False):
                loc = error["loc"]
                if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                    loc = (*loc, tag)
                elif loc and isinstance(value, dict) and loc[0] == value.get(tag):
                    loc = loc[1:]
                errors.append({**error, "loc": loc})
            raise ValidationError.from_exception_data(exc.title, errors) from None

    union = typing.Union[variants]  # noqa: UP007
    annotation = Annotated[union, Field(discriminator=tag), WrapValidator(errors_at_the_fields)]
    _UNIONS[base] = TypeAdapter(annotation, config=ConfigDict(title=base.__name__))
    return annotation


def variants_of(annotation: Any) -> dict[str, type[Variant]]:
    """``{name: variant}`` of a union made by :func:`close_union`."""
    return {v.variant_name(): v for v in typing.get_args(typing.get_args(annotation)[0])}


def bounded_unique(values: list[float], what: str) -> list[float]:
    """The sorted distinct ``values``, at most ``MAX_LIST`` of them."""
    if len(values) > MAX_LIST:
        raise ValueError(f"at most {MAX_LIST} {what} values")
    return sorted(set(values))
