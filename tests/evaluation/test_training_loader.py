"""Training batches through ``torch.utils.data``: for an existing spec the DataLoader gives exactly the batches, in
the order, and the generator draws (augmentation, R_rnd noise, Hutchinson probes) of the loop before it, so stored
results do not change; worker processes change nothing; the per-epoch permutation follows ``train.seed``."""

from __future__ import annotations

import multiprocessing
import warnings

import pytest
import torch
from torch import nn

from core.spec import AugmentSpec, ModelSpec, TrainSpec
from evaluation.datasets import Dataset, two_spirals
from evaluation.training import augment_images, stochastic_state_penalty, train_classifier
from evaluation.training.data import EpochBatches, LoaderWorkersUnavailable, loader_workers, training_loader
from models import build_model
from models.regularizers import regularization_terms

CPU = torch.device("cpu")


def old_augment_images(x: torch.Tensor, crop_padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """A copy of the crop-and-flip as it stood before (commit c6dc1fe): pad, index, permute, then flip."""
    n, _, height, width = x.shape
    if crop_padding > 0:
        p = crop_padding
        padded = nn.functional.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)
        top = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        left = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        rows = (top[:, None] + torch.arange(height))[:, :, None]
        cols = (left[:, None] + torch.arange(width))[:, None, :]
        x = padded[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2).contiguous()
    if flip:
        mirrored = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
    return x


def old_loop(model: nn.Module, data: Dataset, spec: TrainSpec) -> None:
    """A copy of the training loop as it stood before the DataLoader (commit c6dc1fe, evaluation/training.py),
    classification, without its logging, with the augmentation of then: the reference the new loop's batches are
    held to."""
    gen = torch.Generator(device="cpu").manual_seed(spec.seed)
    x, y = data.x_train, data.y_train
    n = len(x)
    batch = spec.batch_size or n
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    stochastic = spec.regularizers.stochastic
    named = spec.regularizers.named()
    scale = spec.logit_scale
    augment = spec.augment
    model.train()
    for _epoch in range(1, spec.epochs + 1):
        order = torch.randperm(n, generator=gen) if batch < n else torch.arange(n)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = old_augment_images(xb, augment.crop_padding, augment.flip, gen)
            if spec.noise_sigma > 0:  # train.noise_sigma, as main added it to this loop (randomized smoothing)
                xb = xb + spec.noise_sigma * torch.randn(xb.shape, generator=gen, dtype=xb.dtype)
            if stochastic is not None:
                logits, states = model(xb, return_states=True)
                copies = xb.repeat(stochastic.streams, *([1] * (xb.dim() - 1)))
                noise = torch.randn(copies.shape, generator=gen) * stochastic.sigma
                _, noisy_states = model(copies + noise, return_states=True)
                penalty = stochastic_state_penalty(states, noisy_states, stochastic.power)
                loss = loss_fn(scale * logits, yb) + stochastic.weight * penalty
            elif named:
                logits, states = model(xb, return_states=True)
                loss = loss_fn(scale * logits, yb)
            else:
                loss = loss_fn(scale * model(xb), yb)
            if named:
                values = regularization_terms(model, states, {k: r.options() for k, r in named.items()}, gen)
                for name, value in values.items():
                    loss = loss + named[name].weight * value
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def tiny_images(n: int = 26) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 6, 6, generator=gen)
    y = torch.arange(n) % 3
    return Dataset(x, y, x[:6], y[:6], num_classes=3, valid_range=(0.0, 1.0))


def image_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 3))


def spirals_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(family="explicit", width=4, hidden=6, depth=2, h=0.3, input_dim=2, output_dim=2))


def recorded(train, model: nn.Module) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every input the model saw in training mode (each forward's first argument, in order) and the final weights."""
    seen: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].detach().clone()) if m.training else None
    )
    train(model)
    hook.remove()
    return seen, torch.cat([p.detach().flatten() for p in model.parameters()])


CASES = {
    # batches of 8 over 26 images (the last one 2), crop and flip drawn per batch, SGD
    "augmented-images": (tiny_images, image_model, dict(epochs=3, lr=0.05, batch_size=8, optimizer="sgd",
                                                        augment=AugmentSpec(crop_padding=2, flip=True))),
    # Gaussian data augmentation after the crops and flips, from the same generator
    "noisy-images": (tiny_images, image_model, dict(epochs=2, lr=0.05, batch_size=8, noise_sigma=0.25,
                                                    augment=AugmentSpec(crop_padding=1, flip=True))),
    # R_rnd noise and Hutchinson probes from the same generator as the permutation
    "regularized-spirals": (lambda: two_spirals(40, 10), spirals_model,
                            dict(epochs=2, lr=0.02, batch_size=16, regularizers={"stochastic": {"sigma": 0.1},
                                                                                 "divergence": 0.01})),
    # one batch holding every sample: in order, no draw
    "full-batch": (tiny_images, image_model, dict(epochs=3, lr=0.05)),
}  # fmt: skip


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_batches_and_draws_are_those_of_the_old_loop(case: str, workers: int) -> None:
    make_data, make_model, options = CASES[case]
    data = make_data()
    spec = TrainSpec(**options, loader_workers=workers)
    old_inputs, old_weights = recorded(lambda m: old_loop(m, data, spec), make_model())
    new_inputs, new_weights = recorded(lambda m: train_classifier(m, data, spec, CPU), make_model())
    assert len(new_inputs) == len(old_inputs) > 0
    for old, new in zip(old_inputs, new_inputs, strict=True):
        assert torch.equal(old, new)
    assert torch.equal(old_weights, new_weights)


def test_each_epoch_is_a_fresh_permutation_of_the_seed() -> None:
    def epochs(seed: int, count: int = 3) -> list[list[int]]:
        sampler = EpochBatches(10, 4, torch.Generator().manual_seed(seed))
        return [torch.cat(list(sampler)).tolist() for _ in range(count)]

    first = epochs(0)
    assert first == epochs(0)  # the same seed, the same batches
    assert first != epochs(1)
    assert all(sorted(order) == list(range(10)) for order in first)  # every sample once per epoch
    assert first[0] != first[1]  # a new order every epoch
    assert [len(b) for b in EpochBatches(10, 4, torch.Generator())] == [4, 4, 2]
    assert torch.equal(next(iter(EpochBatches(5, 5, torch.Generator()))), torch.arange(5))


def test_the_loader_touches_neither_the_training_generator_nor_the_global_rng() -> None:
    """Its workers' base seed is drawn at every epoch's ``iter`` from the loader's own generator."""
    x, y = torch.rand(12, 3), torch.arange(12) % 2
    gen = torch.Generator().manual_seed(3)
    loader = training_loader(x, y, 12, gen, CPU, workers=0, seed=3)
    before, global_before = gen.get_state(), torch.get_rng_state()
    for _ in range(3):
        ((xb, yb),) = list(loader)
        assert torch.equal(xb, x) and torch.equal(yb, y)
    assert torch.equal(gen.get_state(), before) and torch.equal(torch.get_rng_state(), global_before)


@pytest.mark.parametrize(("padding", "flip"), [(4, True), (2, False), (0, True), (0, False), (5, True)])
@pytest.mark.parametrize("shape", [(128, 3, 32, 32), (64, 1, 28, 28), (9, 2, 5, 7)])
def test_the_one_gather_augmentation_gives_the_old_images_from_the_same_draws(shape, padding, flip) -> None:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
    old_gen, new_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(augment_images(x, padding, flip, new_gen), old_augment_images(x, padding, flip, old_gen))
    assert torch.equal(new_gen.get_state(), old_gen.get_state())  # the same number of draws


def _workers_in_a_daemon(queue) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        granted = loader_workers(2)
    queue.put((granted, [str(w.message) for w in caught if issubclass(w.category, LoaderWorkersUnavailable)]))


def test_a_daemonic_worker_process_gathers_batches_in_process() -> None:
    """A Celery prefork child is daemonic and may not start children: the loader falls back to 0 workers (the same
    batches) and says so; elsewhere the workers asked for are granted."""
    assert loader_workers(2) == 2 and loader_workers(0) == 0
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_workers_in_a_daemon, args=(queue,), daemon=True)
    child.start()
    granted, messages = queue.get(timeout=30)
    child.join(timeout=30)
    assert granted == 0 and len(messages) == 1 and "train.loader_workers = 2 ignored" in messages[0]
