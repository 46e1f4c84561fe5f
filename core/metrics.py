"""The metric catalog: one record per metric kind, and the one place that parses and formats ``kind@level``.

Metric names are flat: a *kind* (``pgd_linf_acc``), optionally ``@`` and a *level* (``pgd_linf_acc@0.1``: ε = 0.1).
A kind measured at two levels (randomized smoothing: noise σ and radius ε) carries the first in its name, as
``_sigma<σ>`` (its record's ``param``): ``smoothed_certified_l2_acc_sigma0.25@0.5`` is the smoothed classifier of
σ = 0.25 certified at ε = 0.5, one curve per σ. :func:`metric_key` writes every name and :func:`parse` (with
:func:`split`, :func:`base_kind`) reads it back, here only; :data:`NAME_PATTERN` is the grammar the API checks.
Everything that shows, sorts, plots, gates or exports a metric reads its facts here::

    from core import metrics
    metrics.direction("gaussian_acc_std@0.3")     # "lower": a spread, not an accuracy
    metrics.label("pgd_linf_acc@0.1")             # "PGD L∞ ε=0.1"
    metrics.format_value("clean_acc", 0.93)       # "93.0 %"
    sorted(names, key=metrics.sort_key)           # clean, Gaussian, attacks, certificates, … by level
    metrics.summary_columns(runs, task)           # the columns a sweep table or leaderboard entry shows

Classification is summarised by accuracies (clean, Gaussian per σ, the best-known robust accuracy — the headline,
per sample the minimum over every attack — and each attack's own per ε, certified L2 per ε);
regression and denoising by clean MSE and PSNR, Gaussian PSNR per σ (MSE where no PSNR was measured), the worst MSE
PGD finds per ε (a lower bound on the worst case) and the certified MSE bound per ε (an upper bound).
Torch-free: every layer imports it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower"]
Unit = Literal["fraction", "dB", "seconds", "per_second", "count", "number"]
Norm = Literal["Linf", "L2"]
CLASSIFICATION: tuple[str, ...] = ("classification",)
REGRESSION: tuple[str, ...] = ("regression", "denoising")
EVERY_TASK: tuple[str, ...] = CLASSIFICATION + REGRESSION
LEVEL_SYMBOLS = {"sigma": "σ", "eps": "ε", "q": "q"}
#: a kind's second level, written into its name: ``<kind><tag><value>@<level>`` (``…_acc_sigma0.25@0.5``)
PARAM_TAGS = {"sigma": "_sigma"}
_NUMBER = r"[0-9.eE+-]+"
#: every metric name robustlab writes (the API's ``metric`` query is checked against it)
NAME_PATTERN = rf"^[A-Za-z0-9_]+(({'|'.join(PARAM_TAGS.values())}){_NUMBER})?(@{_NUMBER})?$"
#: a metric name or a glob of them (``pgd_*``, ``smoothed_*_sigma0.25@*``), as the CI gate's policy takes them
GLOB_PATTERN = r"^[A-Za-z0-9_.+*?\[\]-]+(@[A-Za-z0-9_.+*?-]+)?$"
#: the per-job plots (a kind's ``plot``) and the files a job writes them to, in the order the job page shows them
PLOT_FILE = {"gaussian": "plot_gaussian.png", "eps": "plot_eps.png", "radius": "plot_radius.png", "pnp": "plot_pnp.png"}


@dataclass(frozen=True)
class Chart:
    """How a figure of one kind against its level is labelled (the compare page's overlays, the sweep's plot):
    ``title``, ``x`` (the level's axis) and ``y`` labels; ``start``: the metric each curve starts from at level 0
    (``clean_acc`` under attack), if any; ``overlay``: its compare-page overlay's name (``?kind=``), if any."""

    title: str
    x: str
    y: str
    start: str | None = None
    overlay: str | None = None


SIGMA_AXIS = "noise standard deviation σ (input units)"


@dataclass(frozen=True)
class MetricKind:
    """What one kind of metric means and how it is shown.

    Attributes:
        name: the kind, the part of a metric name before ``@``.
        tasks: the tasks whose jobs report it.
        level: what the ``@`` level is (``"sigma"``: Gaussian noise σ, ``"eps"``: perturbation budget ε, ``"q"``: a
            quantile), or ``None`` for a metric without a level.
        better: ``"higher"`` or ``"lower"`` is better: the leaderboard's default order, the compare page's bold
            value and the CI gate's meaning of a "drop" all follow it.
        label: long label (the web page's column header, before ``σ=…`` / ``ε=…``).
        short: short label for narrow tables.
        unit: ``fraction`` (shown in percent), ``dB``, ``seconds``, ``per_second`` (a rate), ``count`` or
            ``number``.
        plot: the per-job plot the kind is drawn on (``gaussian``, ``eps``, ``radius``, ``pnp``), if any.
        legend: the plot's legend entry; says whether the number is an attack's (a bound from one side) or a
            certificate's (a sound bound from the other).
        summary: whether it is one of the task's summary columns (sweep tables, leaderboard entries).
        column: whether the web leaderboard shows it as a column by default (the ranking metric always is).
        norm: the threat model of an attack's or a certificate's kind (``Linf``, ``L2``).
        style: ``(colour, marker, line style)`` of its curve on its per-job plot (matplotlib names); a kind with a
            second level draws its first curve so and the others in :data:`MORE_COLOURS`.
        chart: how a figure of this kind against its level is labelled (:class:`Chart`).
        param: a second level written into the kind's name (``"sigma"``: ``<name>_sigma<σ>``), or ``None``.
        note: what the number certifies or measures, in a sentence, for the job page (certificates say what they
            hold for: the network itself, or a smoothed classifier with some probability).
    """

    name: str
    tasks: tuple[str, ...]
    level: Literal["sigma", "eps", "q"] | None
    better: Direction
    label: str
    short: str
    unit: Unit = "number"
    plot: str | None = None
    legend: str = ""
    summary: bool = False
    column: bool = False
    norm: Norm | None = None
    style: tuple[str, str, str] | None = None
    chart: Chart | None = None
    param: Literal["sigma"] | None = None
    note: str = ""


LIPSCHITZ_NOTE = (
    "Lipschitz margins certify the network itself, deterministically: no L2 perturbation of size ε changes its "
    "class (exact weight norms, a sound lower bound on its robust accuracy)."
)
SMOOTHING_NOTE = (
    "Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019) certifies the smoothed classifier g(x) = "
    "argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), not the network f, and each certificate holds with probability "
    "≥ 1 − α over the Monte-Carlo draws."
)
#: colours of the second, third … curve of a kind drawn once per second level (σ)
MORE_COLOURS = ("tab:olive", "tab:brown", "tab:pink", "darkgreen", "navy")


def _kinds(*kinds: MetricKind) -> dict[str, MetricKind]:
    return {k.name: k for k in kinds}


#: every metric kind robustlab reports, in table order (clean, noise, attacks, certificates, bounds, training, cost)
CATALOG: dict[str, MetricKind] = _kinds(
    # ------------------------------------------------------------------------------------------- classification
    MetricKind("clean_acc", CLASSIFICATION, None, "higher", "clean", "clean", "fraction", summary=True, column=True),
    MetricKind("gaussian_acc", CLASSIFICATION, "sigma", "higher", "Gauss", "gauss", "fraction", "gaussian",
               "accuracy (mean ± std)", summary=True, column=True,
               chart=Chart("Accuracy under Gaussian noise", SIGMA_AXIS, "accuracy (mean over draws)",
                           overlay="gaussian")),
    MetricKind("gaussian_acc_std", CLASSIFICATION, "sigma", "lower", "Gauss std", "gauss sd", "fraction"),
    MetricKind("robust_linf_acc", CLASSIFICATION, "eps", "higher", "robust L∞", "rob∞", "fraction", "eps",
               "best known L∞ (every attack, per sample)", summary=True, column=True, norm="Linf",
               style=("black", "x", "-")),
    MetricKind("robust_l2_acc", CLASSIFICATION, "eps", "higher", "robust L2", "rob2", "fraction", "eps",
               "best known L2 (every attack, per sample)", summary=True, column=True, norm="L2",
               style=("tab:gray", "+", "-")),
    MetricKind("pgd_linf_acc", CLASSIFICATION, "eps", "higher", "PGD L∞", "pgd∞", "fraction", "eps",
               "PGD L∞ (attack: upper bound on robust acc.)", summary=True, column=True, norm="Linf",
               style=("tab:red", "o", "-"), chart=Chart("Accuracy under PGD L∞ (attack: upper bound)",
               "perturbation budget ε (L∞, input units)", "accuracy", "clean_acc", "pgd_linf")),
    MetricKind("pgd_l2_acc", CLASSIFICATION, "eps", "higher", "PGD L2", "pgd2", "fraction", "eps",
               "PGD L2 (attack: upper bound on robust acc.)", summary=True, column=True, norm="L2",
               style=("tab:blue", "s", "-"), chart=Chart("Accuracy under PGD L2 (attack: upper bound)",
               "perturbation budget ε (L2, input units)", "accuracy", "clean_acc", "pgd_l2")),
    MetricKind("autoattack_linf_acc", CLASSIFICATION, "eps", "higher", "AutoAttack L∞", "aa∞", "fraction", "eps",
               "AutoAttack L∞ (attack ensemble: upper bound)", summary=True, norm="Linf",
               style=("tab:orange", "D", "-")),
    MetricKind("autoattack_l2_acc", CLASSIFICATION, "eps", "higher", "AutoAttack L2", "aa2", "fraction", "eps",
               "AutoAttack L2 (attack ensemble: upper bound)", summary=True, norm="L2", style=("tab:purple", "v", "-")),
    MetricKind("certified_l2_acc", CLASSIFICATION, "eps", "higher", "cert. L2", "cert2", "fraction", "eps",
               "certified L2, Lipschitz (the network; sound lower bound)", summary=True, column=True, norm="L2",
               style=("tab:green", "^", "-"), chart=Chart("Certified L2 accuracy (sound: lower bound)",
               "certified radius ε (L2, input units)", "certified accuracy", "clean_acc", "certified_l2"),
               note=LIPSCHITZ_NOTE),
    MetricKind("reliability_flags", CLASSIFICATION, None, "lower", "reliability flags", "flags", "count"),
    MetricKind("certified_radius_q", CLASSIFICATION, "q", "higher", "cert. radius", "radius", "number", "radius"),
    MetricKind("smoothed_certified_l2_acc", CLASSIFICATION, "eps", "higher", "smoothed cert. L2", "sm cert2",
               "fraction", "eps", "certified L2, smoothing (g; prob. ≥ 1 − α)", norm="L2",
               style=("tab:cyan", "P", "--"), chart=Chart("Smoothed classifier's certified L2 accuracy (prob. ≥ 1 − α)",
               "certified radius ε (L2, input units)", "certified accuracy", "smoothed_clean_acc"),
               param="sigma", note=SMOOTHING_NOTE),
    MetricKind("smoothed_clean_acc", CLASSIFICATION, "sigma", "higher", "smoothed clean", "sm clean", "fraction",
               note="Smoothed clean accuracy: PREDICT of Cohen et al. returns the true class (abstentions count as "
                    "wrong)."),
    MetricKind("smoothed_abstain_rate", CLASSIFICATION, "sigma", "lower", "smoothed abstain", "sm abstain",
               "fraction", note="Smoothed abstain rate: CERTIFY abstained, its lower confidence bound on p_A ≤ ½."),
    MetricKind("smoothed_radius_q", CLASSIFICATION, "q", "higher", "smoothed radius", "sm radius", "number",
               param="sigma"),
    MetricKind("train_acc", CLASSIFICATION, None, "higher", "train acc.", "train acc", "fraction"),
    # ------------------------------------------------------------------------------------- regression, denoising
    MetricKind("clean_mse", REGRESSION, None, "lower", "clean MSE", "clean MSE", summary=True, column=True),
    MetricKind("clean_psnr", REGRESSION, None, "higher", "clean PSNR", "clean PSNR", "dB", summary=True),
    MetricKind("input_psnr", REGRESSION, None, "higher", "input PSNR", "in psnr", "dB"),
    MetricKind("rollout_mse", REGRESSION, None, "lower", "rollout MSE", "rollout"),
    MetricKind("train_mse", REGRESSION, None, "lower", "train MSE", "train mse"),
    MetricKind("gaussian_psnr", REGRESSION, "sigma", "higher", "Gauss PSNR", "gauss PSNR", "dB", "gaussian",
               "PSNR (mean ± std)", summary=True,
               chart=Chart("PSNR under Gaussian noise", SIGMA_AXIS, "PSNR (dB, mean over draws)")),
    MetricKind("gaussian_psnr_std", REGRESSION, "sigma", "lower", "Gauss PSNR std", "g psnr sd", "dB"),
    MetricKind("gaussian_mse", REGRESSION, "sigma", "lower", "Gauss MSE", "gauss MSE", "number", "gaussian",
               "MSE (mean ± std)", summary=True, column=True,
               chart=Chart("MSE under Gaussian noise", SIGMA_AXIS, "MSE (mean over draws)", overlay="gaussian_mse")),
    MetricKind("gaussian_mse_std", REGRESSION, "sigma", "lower", "Gauss MSE std", "g mse sd"),
    MetricKind("gaussian_input_psnr", REGRESSION, "sigma", "higher", "noisy input PSNR", "in psnr", "dB", "gaussian",
               "noisy input (no model)"),
    MetricKind("pgd_linf_mse", REGRESSION, "eps", "lower", "PGD L∞ MSE", "pgd∞ MSE", "number", "eps",
               "PGD L∞ (attack: lower bound on worst case)", summary=True, column=True, norm="Linf",
               style=("tab:red", "o", "-"), chart=Chart("Worst MSE found by PGD L∞ (attack: lower bound)",
               "perturbation budget ε (L∞, input units)", "MSE", "clean_mse", "pgd_linf_mse")),
    MetricKind("pgd_l2_mse", REGRESSION, "eps", "lower", "PGD L2 MSE", "pgd2 MSE", "number", "eps",
               "PGD L2 (attack: lower bound on worst case)", summary=True, norm="L2", style=("tab:blue", "s", "-")),
    MetricKind("certified_linf_mse", REGRESSION, "eps", "lower", "cert. L∞ MSE", "cert∞ MSE", "number", "eps",
               "certified L∞ (sound upper bound)", summary=True, norm="Linf", style=("tab:red", "v", "--")),
    MetricKind("certified_l2_mse", REGRESSION, "eps", "lower", "cert. L2 MSE", "cert2 MSE", "number", "eps",
               "certified L2 (sound upper bound)", summary=True, column=True, norm="L2", style=("tab:blue", "^", "--")),
    MetricKind("certified_l2_deviation_mse", REGRESSION, "eps", "lower", "cert. L2 deviation MSE", "cert2 dev"),
    MetricKind("pnp_psnr", REGRESSION, "sigma", "higher", "PnP PSNR", "pnp psnr", "dB", "pnp", "PnP reconstruction"),
    MetricKind("pnp_input_psnr", REGRESSION, "sigma", "higher", "PnP observation PSNR", "pnp in", "dB", "pnp",
               "observation y"),
    MetricKind("pnp_residual", REGRESSION, "sigma", "lower", "PnP last step", "pnp step"),
    MetricKind("pnp_monotone", REGRESSION, "sigma", "higher", "PnP monotone", "pnp mono", "count"),
    MetricKind("pnp_averaged", REGRESSION, None, "higher", "PnP averaged", "pnp avg", "count"),
    MetricKind("pnp_denoiser_lipschitz", REGRESSION, None, "lower", "PnP denoiser Lipschitz", "pnp lip"),
    # ------------------------------------------------------------------------------------------ every task
    MetricKind("lipschitz_bound", EVERY_TASK, None, "lower", "Lipschitz bound", "lip", column=True),
    MetricKind("train_loss", EVERY_TASK, None, "lower", "train loss", "loss"),
    MetricKind("train_seconds", EVERY_TASK, None, "lower", "train time", "train s", "seconds"),
    MetricKind("train_images_per_second", EVERY_TASK, None, "higher", "training throughput (samples/s)", "img/s",
               "per_second"),
    MetricKind("eval_seconds", EVERY_TASK, None, "lower", "evaluation time", "eval s", "seconds"),
    # the time of each registered evaluation (evaluation.registry.run_evaluations), one kind per evaluation name
    MetricKind("eval_seconds_gaussian", EVERY_TASK, None, "lower", "evaluation time: Gaussian noise", "gauss s",
               "seconds"),
    MetricKind("eval_seconds_attacks", CLASSIFICATION, None, "lower", "evaluation time: attacks", "attack s",
               "seconds"),
    MetricKind("eval_seconds_certified", EVERY_TASK, None, "lower", "evaluation time: certificates", "cert s",
               "seconds"),
    MetricKind("eval_seconds_smoothing", CLASSIFICATION, None, "lower", "evaluation time: randomized smoothing",
               "smooth s", "seconds"),
    MetricKind("eval_seconds_rollout", REGRESSION, None, "lower", "evaluation time: rollout", "rollout s", "seconds"),
    MetricKind("eval_seconds_pgd", REGRESSION, None, "lower", "evaluation time: PGD", "pgd s", "seconds"),
    MetricKind("eval_seconds_plug_and_play", REGRESSION, None, "lower", "evaluation time: plug-and-play", "pnp s",
               "seconds"),
    MetricKind("solver_forward_iterations", EVERY_TASK, None, "lower", "forward iterations", "fwd it", "count"),
    MetricKind("solver_forward_residual", EVERY_TASK, None, "lower", "forward residual", "fwd res"),
    MetricKind("solver_backward_iterations", EVERY_TASK, None, "lower", "backward iterations", "bwd it", "count"),
    MetricKind("solver_failures", EVERY_TASK, None, "lower", "solver failures", "fails", "count"),
    MetricKind("solver_train_forward_iterations", EVERY_TASK, None, "lower", "training: forward iterations",
               "train fwd it", "count"),
    MetricKind("solver_train_forward_residual", EVERY_TASK, None, "lower", "training: forward residual",
               "train fwd res"),
    MetricKind("solver_train_backward_iterations", EVERY_TASK, None, "lower", "training: backward iterations",
               "train bwd it", "count"),
    MetricKind("solver_train_backward_residual", EVERY_TASK, None, "lower", "training: backward residual",
               "train bwd res"),
    MetricKind("solver_train_failures", EVERY_TASK, None, "lower", "training: solver failures", "train fails",
               "count"),
)  # fmt: skip
ORDER = {name: i for i, name in enumerate(CATALOG)}

#: the Gaussian-noise kind a summary shows, first present wins (accuracy; else PSNR; else MSE)
GAUSSIAN_KINDS = ("gaussian_acc", "gaussian_psnr", "gaussian_mse")
#: every kind that is measured per level, for grouping ``kind@level`` into ``{level: value}``
LEVEL_KINDS = tuple(k.name for k in CATALOG.values() if k.level is not None and k.summary)
SCALAR_KINDS = tuple(k.name for k in CATALOG.values() if k.level is None and k.summary)
SUMMARY_KINDS: dict[str, tuple[str, ...]] = {
    task: tuple(k.name for k in CATALOG.values() if k.summary and task in k.tasks) for task in EVERY_TASK
}


# ---------------------------------------------------------------------------------------------------- names
def metric_key(kind: str, level: float | None = None, param: float | None = None) -> str:
    """Flat, parseable metric names: ``gaussian_acc@0.3``, ``pgd_linf_acc@0.1``, ``certified_l2_acc@0.05``; with
    ``param`` (a kind whose record has one): ``metric_key("smoothed_certified_l2_acc", 0.5, param=0.25)`` →
    ``smoothed_certified_l2_acc_sigma0.25@0.5``.

    Raises:
        ValueError: ``param`` for a kind that takes none.
    """
    if param is not None:
        record = CATALOG.get(kind)
        if record is None or record.param is None:
            raise ValueError(f"metric kind {kind!r} takes no second level")
        kind = f"{kind}{PARAM_TAGS[record.param]}{param:g}"
    return kind if level is None else f"{kind}@{level:g}"


def split(name: str) -> tuple[str, str]:
    """``"pgd_linf_acc@0.1"`` → ``("pgd_linf_acc", "0.1")``; ``"clean_acc"`` → ``("clean_acc", "")``. The kind keeps
    its second level: ``smoothed_certified_l2_acc_sigma0.25@0.5`` → ``("smoothed_certified_l2_acc_sigma0.25",
    "0.5")`` (one curve, one column group per σ)."""
    kind, _, level = name.partition("@")
    return kind, level


def kind_of(name: str) -> str:
    return split(name)[0]


_PARAM_RE = re.compile(rf"^(?P<base>[A-Za-z0-9_]+?)(?P<tag>{'|'.join(PARAM_TAGS.values())})(?P<value>{_NUMBER})$")


def base_kind(kind: str) -> tuple[str, str]:
    """A kind without its second level, and that level as written: ``smoothed_certified_l2_acc_sigma0.25`` →
    ``("smoothed_certified_l2_acc", "0.25")``; a kind without one (or not a catalog kind) → ``(kind, "")``."""
    if kind in CATALOG:
        return kind, ""
    found = _PARAM_RE.match(kind)
    if found is not None:
        record = CATALOG.get(found["base"])
        if record is not None and record.param is not None and PARAM_TAGS[record.param] == found["tag"]:
            try:
                float(found["value"])
            except ValueError:
                return kind, ""
            return found["base"], found["value"]
    return kind, ""


@dataclass(frozen=True)
class Parsed:
    """A metric name read back: its catalog ``base`` kind, the ``param`` (second level) and ``level`` as written
    (``""`` where there is none)."""

    base: str
    param: str
    level: str


def parse(name: str) -> Parsed:
    """``smoothed_certified_l2_acc_sigma0.25@0.5`` → ``Parsed("smoothed_certified_l2_acc", "0.25", "0.5")``;
    ``pgd_linf_acc@0.1`` → ``Parsed("pgd_linf_acc", "", "0.1")``."""
    kind, level = split(name)
    base, param = base_kind(kind)
    return Parsed(base, param, level)


def level_of(name: str) -> float:
    """The level of ``kind@level`` (``inf`` when there is none or it is not a number)."""
    try:
        return float(split(name)[1])
    except ValueError:
        return math.inf


def kind_info(name: str) -> MetricKind | None:
    """The catalog's record of a metric name's kind (``None``: not a kind robustlab reports)."""
    return CATALOG.get(base_kind(kind_of(name))[0])


# ---------------------------------------------------------------------------------------------------- facts
def direction(name: str) -> Direction | None:
    """``"higher"`` or ``"lower"`` (is better) for a metric name; ``None`` for a kind the catalog does not know."""
    kind = kind_info(name)
    return kind.better if kind else None


def default_order(name: str) -> Literal["asc", "desc"]:
    """How a ranking by this metric sorts by default: best first (unknown kinds: highest first)."""
    return "asc" if direction(name) == "lower" else "desc"


def best(name: str, values: Iterable[float]) -> float:
    """The best of ``values`` for this metric (the highest, or the lowest where lower is better)."""
    return min(values) if direction(name) == "lower" else max(values)


def is_fraction(name: str) -> bool:
    """Whether the metric is a fraction in [0, 1] (an accuracy or its spread), shown in percent."""
    kind = kind_info(name)
    return kind is not None and kind.unit == "fraction"


def is_timing(name: str) -> bool:
    """Whether the metric measures time or throughput (``train_seconds``, ``eval_seconds_<evaluation>``,
    ``train_images_per_second``): it differs between two runs of the same job, unlike the results."""
    kind = kind_info(name)
    return kind is not None and kind.unit in ("seconds", "per_second")


def label(name: str, short: bool = False) -> str:
    """``pgd_linf_acc@0.1`` → ``PGD L∞ ε=0.1``, ``gaussian_acc@0.3`` → ``Gauss σ=0.3``,
    ``smoothed_certified_l2_acc_sigma0.25@0.5`` → ``smoothed cert. L2 σ=0.25 ε=0.5``; unknown kinds as written."""
    parsed = parse(name)
    kind, level = CATALOG.get(parsed.base), parsed.level
    if kind is None:
        return name
    text = kind.short if short else kind.label
    if parsed.param and kind.param is not None:
        text = f"{text} {LEVEL_SYMBOLS[kind.param]}={parsed.param}"
    if level and kind.level is not None:
        return f"{text} {LEVEL_SYMBOLS[kind.level]}={level}"
    return f"{text}@{level}" if level else text


def format_value(name: str, value: float | None, unit: bool = True) -> str:
    """Fractions in percent (``93.0 %``; ``93.0`` without ``unit``), decibels and seconds with their unit,
    counts as integers, anything else to 4 significant digits; ``—`` for a missing value."""
    if value is None:
        return "—"
    kind = kind_info(name)
    kind_unit = kind.unit if kind else "number"
    if kind_unit == "fraction":
        return f"{100.0 * value:.1f}" + (" %" if unit else "")
    if kind_unit == "seconds":
        return f"{value:.2f}" + (" s" if unit else "")
    if kind_unit == "per_second":
        return f"{value:.4g}" + (" /s" if unit else "")
    if kind_unit == "dB":
        return f"{value:.2f}" + (" dB" if unit else "")
    if kind_unit == "count" and float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _number(text: str) -> float:
    try:
        return float(text) if text else -1.0
    except ValueError:
        return math.inf


def sort_key(name: str) -> tuple[int, str, float, float, str]:
    """Orders metric names as tables show them: by the catalog's kind order, then second level (σ), then level;
    unknown kinds last, by name."""
    parsed = parse(name)
    rank = ORDER.get(parsed.base, len(ORDER))
    return rank, parsed.base if rank == len(ORDER) else "", _number(parsed.param), _number(parsed.level), name


def is_column(name: str) -> bool:
    """Whether the web leaderboard shows this metric as a column by default."""
    kind = kind_info(name)
    return kind is not None and kind.column


def threat_model(name: str) -> Norm | None:
    """``"Linf"`` or ``"L2"``: the threat model of an attack's or a certificate's metric (``None`` for others)."""
    kind = kind_info(name)
    return kind.norm if kind else None


def plot_kinds(plot: str, task: str = "classification") -> list[MetricKind]:
    """The kinds a per-job plot draws for a task, in catalog order."""
    return [k for k in CATALOG.values() if k.plot == plot and task in k.tasks]


def notes(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(label, note)`` of each kind among ``names`` that has a note, in catalog order (the job page says with
    them what each certificate holds for)."""
    present = {kind.name for name in names if (kind := kind_info(name)) is not None and kind.note}
    return [(CATALOG[k].label, CATALOG[k].note) for k in CATALOG if k in present]


# ---------------------------------------------------------------------------------------------------- summaries
def summary_kinds(task: str | None = None) -> tuple[str, ...]:
    """The kinds that summarise ``task`` (``None``: every task's, classification first)."""
    if task is None:
        return tuple(dict.fromkeys(k for kinds in SUMMARY_KINDS.values() for k in kinds))
    return SUMMARY_KINDS.get(task, SUMMARY_KINDS["classification"])


def gaussian_kind(metrics_list: Iterable[Mapping[str, float]]) -> str | None:
    """The Gaussian-noise kind to show for these runs: ``gaussian_acc``, else ``gaussian_psnr``, else
    ``gaussian_mse`` (``None``: none measured)."""
    kinds = {kind_of(n) for m in metrics_list for n in m if "@" in n}
    return next((k for k in GAUSSIAN_KINDS if k in kinds), None)


def summary_columns(metrics_list: Iterable[Mapping[str, float]], task: str | None = None) -> list[str]:
    """The summary metrics present in any run, in a fixed order: the clean values, then each kind of
    :func:`summary_kinds` by level. Of the Gaussian kinds only :func:`gaussian_kind`'s is kept, so a regression
    table shows PSNR per σ (MSE where no PSNR was measured) and a classification table stays accuracy only."""
    metrics_list = list(metrics_list)
    names = set().union(*[set(m) for m in metrics_list])
    kinds = summary_kinds(task)
    gaussian = {k for k in GAUSSIAN_KINDS if k != gaussian_kind(metrics_list)}
    columns = [k for k in kinds if k in SCALAR_KINDS and k in names]
    for kind in kinds:
        if kind in SCALAR_KINDS or kind in gaussian:
            continue
        columns += sorted((n for n in names if "@" in n and kind_of(n) == kind), key=level_of)
    return columns


def group_levels(metrics: Mapping[str, float], kinds: Iterable[str] = LEVEL_KINDS) -> dict[str, dict[str, float]]:
    """``{"gaussian_psnr": {"0.1": 21.3, …}, …}`` for the given per-level kinds (each present, levels as written)."""
    wanted = set(kinds)
    grouped: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        kind, level = split(name)
        if level and kind in wanted:
            grouped.setdefault(kind, {})[level] = value
    return grouped


def param_series(metrics: Mapping[str, float], base: str) -> dict[str, list[tuple[float, float]]]:
    """``{"0.12": [(ε, value), …], "0.25": […]}``: the :func:`series` of each second level of a kind with one
    (``smoothed_certified_l2_acc``: one curve per σ), by increasing σ."""
    kinds: dict[str, str] = {}
    for name in metrics:
        parsed = parse(name)
        if parsed.base == base and parsed.param and parsed.level:
            kinds[parsed.param] = kind_of(name)
    return {param: series(metrics, kinds[param]) for param in sorted(kinds, key=float)}


def series(metrics: Mapping[str, float], kind: str) -> list[tuple[float, float]]:
    """``[(level, value), …]`` of the metrics named ``<kind>@<level>``, sorted by level."""
    points = []
    for name, value in metrics.items():
        found, level = split(name)
        if level and found == kind:
            try:
                points.append((float(level), float(value)))
            except ValueError:
                continue
    return sorted(points)


__all__ = [
    "CATALOG",
    "Chart",
    "GLOB_PATTERN",
    "MORE_COLOURS",
    "LEVEL_KINDS",
    "NAME_PATTERN",
    "PARAM_TAGS",
    "Parsed",
    "SCALAR_KINDS",
    "SUMMARY_KINDS",
    "PLOT_FILE",
    "MetricKind",
    "base_kind",
    "best",
    "default_order",
    "direction",
    "format_value",
    "gaussian_kind",
    "group_levels",
    "is_column",
    "is_fraction",
    "is_timing",
    "kind_info",
    "kind_of",
    "label",
    "level_of",
    "metric_key",
    "notes",
    "param_series",
    "parse",
    "plot_kinds",
    "series",
    "sort_key",
    "split",
    "summary_columns",
    "summary_kinds",
    "threat_model",
]
