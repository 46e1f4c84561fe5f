"""A spec's hash is its identity (job reuse, the leaderboard, provenance): reshaping the schema or adding an
option must not change the hash of a spec that does not use it, and every stored spec must still validate.

The fixtures were written by the schema as it stood before the spec moved into ``core/spec/``: each example's hash
(``example_spec_hashes.json``) and its full dump with every default filled in (``stored_specs.json``, the form the
database and ``result.json`` keep).
"""

import json
from pathlib import Path

import pytest
from pydantic import Field

from core.spec import JobSpec, StrictModel
from core.spec.base import canonical_dump
from evaluation.sweep import split_sweep

ROOT = Path(__file__).parent.parent.parent
HASHES = json.loads((ROOT / "tests/fixtures/example_spec_hashes.json").read_text())
STORED = json.loads((ROOT / "tests/fixtures/stored_specs.json").read_text())


def test_the_fixtures_cover_examples():
    assert set(STORED) == set(HASHES) and len(HASHES) >= 18


@pytest.mark.parametrize("name", sorted(HASHES))
def test_example_hash_is_unchanged(name):
    path = ROOT / "examples" / name
    if not path.exists():
        pytest.fail(f"example {name} was removed or renamed: its stored jobs lose their preset")
    base, _axes = split_sweep(json.loads(path.read_text()))
    assert JobSpec.model_validate(base).spec_hash() == HASHES[name]


@pytest.mark.parametrize("name", sorted(STORED))
def test_stored_spec_validates_with_its_old_hash(name):
    spec = JobSpec.model_validate(STORED[name])
    assert spec.spec_hash() == HASHES[name]
    assert JobSpec.model_validate_json(json.dumps(STORED[name])).spec_hash() == HASHES[name]


class _Old(StrictModel):
    a: int = 1


class _New(_Old):
    added_fields = frozenset({"b", "c"})
    b: int = 2
    c: list[int] = Field(default_factory=list)


def test_an_added_option_is_left_out_of_the_canonical_form_only_at_its_default():
    assert canonical_dump(_New()) == canonical_dump(_Old()) == {"a": 1}
    assert canonical_dump(_New(b=3)) == {"a": 1, "b": 3}
    assert canonical_dump(_New(c=[1])) == {"a": 1, "c": [1]}
    assert _New().model_dump() == {"a": 1, "b": 2, "c": []}  # the API still shows every default


# hashes written by the flat record (main at 22ddd72) of specs giving a solver to families without θ-steps: the
# record accepted it and ignored it, so such stored specs exist
IGNORED_SOLVER = {
    "ace9785931fb3830d6352d3780340ac2411905955ddb7bc1ac02a7d8a76615d5": {
        "name": "a", "dataset": {"name": "spirals"},
        "model": {"family": "explicit", "solver": {"forward": "fixed_point", "tol": 0.001}},
    },
    "5acd09a84eb48ba44bf68569d059526a97dc0ac14256ffb7820ddd94e71d4fba": {
        "name": "a", "dataset": {"name": "digits"},
        "model": {"family": "lipschitz", "solver": {"backward": "neumann"}},
    },
}  # fmt: skip


@pytest.mark.parametrize("old_hash", sorted(IGNORED_SOLVER))
def test_a_solver_the_old_record_ignored_still_validates_and_keeps_its_hash(old_hash):
    spec = JobSpec.model_validate(IGNORED_SOLVER[old_hash])
    assert spec.spec_hash() == old_hash
    again = JobSpec.model_validate(spec.model_dump(mode="json"))  # as the database stores and reads it
    assert again.spec_hash() == old_hash and again.model.model_dump() == spec.model.model_dump()
