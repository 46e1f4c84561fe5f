"""The job spec rejects bad input with a message naming the field."""

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
