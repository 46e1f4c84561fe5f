"""The job spec rejects bad input with a message naming the field."""

import json

import pytest
from pydantic import ValidationError

from core.spec import JobSpec

GOOD = {
    "name": "spirals-implicit",
    "dataset": {"name": "spirals", "n_train": 100, "n_test": 100},
    "model": {"family": "implicit", "width": 8, "depth": 4, "theta": 0.5},
    "train": {"epochs": 10},
    "evaluate": {"pgd": {"norm": "Linf", "eps": [0.1, 0.05]}, "certified": {"eps": [0.1]}},
}


def with_change(path, value):
    import copy

    spec = copy.deepcopy(GOOD)
    node = spec
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return spec


def test_good_spec_fills_defaults_and_normalises_lists():
    spec = JobSpec.model_validate(GOOD)
    assert spec.evaluate.pgd.norm == ["Linf"] and spec.evaluate.pgd.eps == [0.05, 0.1]
    assert spec.model.solver.tol == 1e-5 and spec.model.solver.max_iter == 50
    assert spec.queue() == "cpu"
    assert len(spec.spec_hash()) == 64 and spec.spec_hash() == JobSpec.model_validate(GOOD).spec_hash()


@pytest.mark.parametrize(
    "path,value,field",
    [
        (("model", "thta"), 1.0, "model.thta"),
        (("surprise",), 1, "surprise"),
        (("model", "theta"), 1.5, "model.theta"),
        (("model", "theta"), -0.1, "model.theta"),
        (("evaluate", "pgd", "eps"), [-0.1], "evaluate.pgd.eps.0"),
        (("evaluate", "certified", "eps"), [0.0], "evaluate.certified.eps.0"),
        (("evaluate", "gaussian"), {"sigmas": [-1.0]}, "evaluate.gaussian.sigmas.0"),
        (("train", "epochs"), 0, "train.epochs"),
        (("train", "epochs"), "many", "train.epochs"),
        (("model", "width"), 10**6, "model.width"),
        (("model", "depth"), 0, "model.depth"),
        (("dataset", "n_train"), 10**9, "dataset.n_train"),
        (("model", "family"), "transformer", "model.family"),
        (("model", "solver", "forward"), "newton", "model.solver.forward"),
        (("model", "spectral"), {"lower": 1.0, "upper": -1.0}, "model.spectral"),
        (("train", "lr"), float("nan"), "train.lr"),
        (("name",), "", "name"),
    ],
)
def test_bad_input_names_the_field(path, value, field):
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(with_change(path, value))
    locations = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    assert any(loc == field or loc.startswith(field) for loc in locations), locations


def test_absurd_total_work_is_rejected():
    spec = with_change(("model", "width"), 4096)
    spec["model"]["depth"] = 1000
    spec["train"]["epochs"] = 100000
    with pytest.raises(ValidationError, match="job too large"):
        JobSpec.model_validate(spec)


def test_theta_on_explicit_family_is_an_error():
    with pytest.raises(ValidationError, match="theta applies to family 'implicit'"):
        JobSpec.model_validate(with_change(("model",), {"family": "explicit", "theta": 0.5}))


@pytest.mark.parametrize(
    "path,value,field",
    [
        (("model", "width"), True, "model.width"),  # lax mode took it as width 1
        (("train", "epochs"), "10", "train.epochs"),  # lax mode took it as 10
        (("train", "lr"), "0.01", "train.lr"),
        (("model", "theta"), True, "model.theta"),
        (("dataset", "n_train"), 100.0, "dataset.n_train"),
        (("model", "shared_weights"), 1, "model.shared_weights"),
        (("model", "shared_weights"), "true", "model.shared_weights"),
        (("evaluate", "pgd", "eps"), ["0.1"], "evaluate.pgd.eps.0"),
        (("evaluate", "pgd", "steps"), False, "evaluate.pgd.steps"),
        (("train", "regularizers", "field_norm"), True, "train.regularizers.field_norm"),
    ],
)
def test_loose_types_are_rejected(path, value, field):
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(with_change(path, value))
    locations = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    assert any(loc == field or loc.startswith(field) for loc in locations), locations


def test_an_integer_is_still_a_float():
    spec = JobSpec.model_validate(with_change(("train", "lr"), 1))
    assert spec.train.lr == 1.0 and isinstance(spec.train.lr, float)


def _stored_shapes() -> list[dict]:
    """Every spec shape the project writes: the shipped examples (a sweep preset's base point), as given and as
    stored (defaults filled in), and the synthetic jobs of ``robustlab db seed``."""
    from pathlib import Path

    from db.seed import _spec
    from evaluation.sweep import split_sweep

    raw = [split_sweep(json.loads(p.read_text()))[0] for p in sorted(Path("examples").glob("*.json"))]
    stored = [JobSpec.model_validate(spec, strict=False).model_dump(mode="json") for spec in raw]
    seeded = [_spec(d, f, 8, 0) for d in ("spirals", "digits") for f in ("explicit", "implicit")]
    return raw + stored + seeded


def test_strict_types_keep_every_stored_spec_and_its_hash():
    """The strict schema accepts every shape the lax one stored, and hashes it as the lax one did (a job's spec
    hash is its identity for reuse and the leaderboard)."""
    shapes = _stored_shapes()
    assert len(shapes) > 30
    for data in shapes:
        lax = JobSpec.model_validate(data, strict=False)
        assert JobSpec.model_validate(data).spec_hash() == lax.spec_hash()
        assert JobSpec.model_validate_json(json.dumps(data)).spec_hash() == lax.spec_hash()
