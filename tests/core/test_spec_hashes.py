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
