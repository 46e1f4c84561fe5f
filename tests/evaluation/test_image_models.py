"""The image backbone through the runner: a job of each family trains and is evaluated (certificates from its sound
bound, PGD), its checkpoint reloads bit-identically; what the data decide (input shape, per-channel statistics) is
filled into the model spec; bad image options are 422s naming the field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import models
from core.metrics import metric_key
from core.spec import JobSpec, ModelSpec
from evaluation import runner
from evaluation.datasets import Dataset

STAGES = [{"channels": 4, "depth": 1}, {"channels": 8, "depth": 1}]


def job(family: str) -> JobSpec:
    model = {"family": family, "conv": True, "stages": STAGES, "normalization": {"mean": [0.3], "std": [0.4]}}
    if family == "lipschitz":
        model["activation"] = "relu"
    return JobSpec.model_validate({
        "name": f"digits-{family}-image",
        "dataset": {"name": "digits", "n_train": 64, "n_test": 32},
        "model": model,
        "train": {"epochs": 2, "lr": 0.01, "batch_size": 32},
        "evaluate": {"pgd": {"norm": ["L2"], "eps": [0.1], "steps": 5}, "certified": {"eps": [0.05, 0.1]}},
    })  # fmt: skip


@pytest.mark.parametrize("family", ["explicit", "implicit", "hamiltonian", "lipschitz"])
def test_an_image_job_of_every_family_runs_and_its_checkpoint_reloads(family, tmp_path):
    result = runner.run_job(job(family), out_dir=tmp_path)
    m = result.metrics
    assert 0 < m["lipschitz_bound"] < float("inf")
    assert m["certified_l2_acc@0.1"] <= m["pgd_l2_acc@0.1"] <= m["clean_acc"]
    if family == "lipschitz":  # every part but the normalisation has norm 1: the bound is 1/std
        assert m["lipschitz_bound"] <= 1 / 0.4 * (1 + 1e-5)
    loaded = models.load(tmp_path)
    x = torch.rand(5, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model.eval()(x), rtol=0, atol=0)
    assert models.read_model_spec(tmp_path).stages[1].channels == 8


def images(n: int, shape=(2, 6, 6)) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, *shape, generator=gen), torch.randint(0, 3, (n,), generator=gen)
    return Dataset(x, y, x, y, num_classes=3, valid_range=(0.0, 1.0))


def test_the_runner_fills_the_input_shape_of_image_data():
    spec = ModelSpec.model_validate({"family": "explicit", "conv": True, "stages": STAGES})
    filled = runner.fill_model_spec(spec, images(4), "upload")
    assert filled.input_shape == [2, 6, 6] and filled.input_dim == 72 and filled.output_dim == 3
    net = models.build_model(filled)
    assert net(images(4).x_train).shape == (4, 3)
    flat = runner.fill_model_spec(spec, images(4, (36,)), "upload")
    assert flat.input_shape is None  # flat data: one channel of a square image


def test_a_bad_image_for_the_stages_fails_naming_the_field():
    spec = ModelSpec.model_validate({"family": "explicit", "conv": True, "stages": STAGES * 2})  # 3 unshuffles
    with pytest.raises(ValueError, match="model.stages"):
        runner.fill_model_spec(spec, images(4), "upload")  # 6×6 → 3×3: odd, no second unshuffle


def test_dataset_normalization_needs_published_statistics():
    spec = ModelSpec.model_validate({"family": "lipschitz", "conv": True, "stages": STAGES,
                                     "normalization": "dataset"})  # fmt: skip
    with pytest.raises(ValueError, match="publishes no per-channel statistics"):
        runner.fill_model_spec(spec, images(4), "upload")
    with pytest.raises(ValueError, match="filled with the dataset's statistics by the runner"):
        models.build_model(spec.model_copy(update={"input_dim": 72, "output_dim": 3, "input_shape": [2, 6, 6]}))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"family": "explicit", "stages": STAGES}, "model.stages applies to conv models only"),
        ({"family": "explicit", "conv": True, "normalization": {"mean": [0.1], "std": [0.2]}},
         "model.normalization applies to the image backbone only"),
        ({"family": "explicit", "conv": True, "stages": STAGES, "channels": 4}, "model.channels does not apply"),
        ({"family": "implicit", "conv": True, "stages": STAGES, "depth": 3}, "model.depth does not apply"),
        ({"family": "lipschitz", "conv": True, "stages": STAGES, "input_dim": 72, "input_shape": [2, 6, 6],
          "normalization": {"mean": [0.1], "std": [0.2]}}, "normalization has 1 channels, the input has 2"),
        ({"family": "explicit", "conv": True, "stages": STAGES, "input_dim": 70}, "model.stages needs image inputs"),
        ({"family": "explicit", "conv": True, "stages": STAGES, "input_dim": 72, "input_shape": [2, 6, 5]},
         "has 60 entries, not input_dim 72"),
        ({"family": "hamiltonian", "conv": True, "stages": [{"channels": 3}]}, "3 is odd"),
        ({"family": "explicit", "conv": True, "stages": []}, "stages"),
        ({"family": "explicit", "conv": True, "stages": STAGES, "downsample": "pool"}, "downsample"),
        ({"family": "explicit", "conv": True, "stages": STAGES, "normalization": {"mean": [0.1], "std": [0.0]}},
         "normalization.std must lie in"),
        ({"family": "explicit", "conv": True, "input_dim": 12, "input_shape": [3, 2, 2]},
         "without model.stages takes single-channel images"),
        ({"family": "ode", "conv": True, "stages": STAGES}, "conv applies to families"),
    ],
)  # fmt: skip
def test_bad_image_options_are_rejected_naming_the_field(fields, message):
    with pytest.raises(ValidationError, match=message):
        ModelSpec.model_validate(fields)


def test_old_conv_specs_keep_their_hash_and_new_options_stay_out_of_it():
    old = {"name": "c", "dataset": {"name": "digits"}, "model": {"family": "explicit", "conv": True, "channels": 4}}
    spec = JobSpec.model_validate(old)
    canonical = spec.canonical_json()
    for name in ("stages", "downsample", "normalization", "input_shape"):
        assert f'"{name}"' not in canonical
    staged = JobSpec.model_validate({**old, "model": {"family": "explicit", "conv": True, "stages": STAGES}})
    assert '"stages"' in staged.canonical_json() and staged.spec_hash() != spec.spec_hash()


@pytest.mark.parametrize("family", ["explicit", "implicit", "hamiltonian", "lipschitz"])
def test_the_cost_estimate_counts_the_stages(family):
    from core.budget import estimate

    stages = [{"channels": 8, "depth": 2}, {"channels": 16, "depth": 3}]
    spec = JobSpec.model_validate({"name": "s", "dataset": {"name": "digits"},
                                   "model": {"family": family, "conv": True, "stages": stages}})  # fmt: skip
    net = models.build_model(spec.model.model_copy(update={"input_dim": 64, "output_dim": 10}))
    real = sum(p.numel() for p in net.parameters())
    assert real <= estimate(spec).parameters <= 2 * real
    assert spec.model.step_count() == 5
    deeper = JobSpec.model_validate({**spec.model_dump(), "model": {**spec.model.model_dump(), "stages": stages * 2}})
    assert estimate(deeper).eval_work > estimate(spec).eval_work


def test_the_state_regularizers_follow_the_stages_through_the_downsampling():
    spec = job("implicit").model_dump()
    spec["train"]["regularizers"] = {
        "stochastic": {"sigma": 0.05, "weight": 0.01},
        "fixed_point": 0.01,
        "field_norm": 0.01,
        "divergence": 0.01,
        "stability_trace": 0.01,
    }
    spec["evaluate"] = {"certified": {"eps": [0.05]}}
    result = runner.run_job(JobSpec.model_validate(spec))
    for name in ("reg_fixed_point", "reg_field_norm", "reg_stability_trace"):
        assert result.metrics[name] > 0, name
    assert result.metrics["reg_divergence"] != 0  # a divergence has either sign


def _published_image_minis() -> list[Path]:
    """The CPU mini presets on the published image datasets (the photos preset has its own test, test_photos)."""
    from core.datasets import IMAGE_DATASETS

    found = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*-conv-mini.json"))
    return [p for p in found if json.loads(p.read_text())["dataset"]["name"] in IMAGE_DATASETS]


MINIS = _published_image_minis()


@pytest.mark.parametrize("path", MINIS, ids=lambda p: p.stem)
def test_a_mini_image_preset_runs_end_to_end_on_the_published_formats(path, image_data_dir, tmp_path):
    """Each CPU mini preset as shipped, on the generated files (their split sizes: the only change)."""
    from image_files import SIZES

    from core.datasets import IMAGE_DATASETS

    data = json.loads(path.read_text())
    name = data["dataset"]["name"]
    data["dataset"]["n_train"], data["dataset"]["n_test"] = SIZES[name]
    result = runner.run_job(JobSpec.model_validate(data), out_dir=tmp_path)
    m, facts = result.metrics, IMAGE_DATASETS[name]
    l2 = metric_key("certified_l2_acc", data["evaluate"]["certified"]["eps"][0])
    assert 0 <= m[l2] <= m["clean_acc"] and math.isfinite(m["lipschitz_bound"])
    stored = models.read_model_spec(tmp_path)
    assert stored.input_shape == list(facts.input_shape)
    assert (stored.normalization.mean, stored.normalization.std) == (list(facts.mean), list(facts.std))
    if stored.family == "lipschitz":  # lift, steps, unshuffle + 1×1 conv, pooling and head of norm 1
        assert m["lipschitz_bound"] <= (1 + 1e-5) / min(facts.std)


@pytest.mark.parametrize(
    ("dataset", "model", "message"),
    [
        ("cifar10", {"family": "explicit", "conv": True, "channels": 4}, "without model.stages takes single-channel"),
        ("spirals", {"family": "explicit", "conv": True, "stages": STAGES}, "model.stages needs image inputs"),
        ("mnist", {"family": "lipschitz", "conv": True, "stages": STAGES * 2}, r"stage 4 needs pixel-unshuffle .* 7×7"),
        ("cifar10", {"family": "explicit", "conv": True, "stages": STAGES,
                     "normalization": {"mean": [0.5], "std": [0.2]}}, "normalization has 1 channels, the input has 3"),
        ("digits", {"family": "lipschitz", "conv": True, "stages": STAGES, "normalization": "dataset"},
         "needs a dataset with published per-channel statistics"),
    ],
)  # fmt: skip
def test_an_image_model_that_does_not_fit_its_dataset_is_a_422_naming_the_field(dataset, model, message):
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate({"name": "j", "dataset": {"name": dataset}, "model": model})
    fits = {"family": "explicit", "conv": True, "stages": STAGES, "normalization": "dataset"}
    assert JobSpec.model_validate({"name": "j", "dataset": {"name": "cifar10"}, "model": fits}).model.input_dim is None
