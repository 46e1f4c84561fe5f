"""The metric catalog's records: one :class:`MetricKind` per metric kind (task, level, direction, labels, unit,
plot, legend, chart), in :data:`CATALOG`. :mod:`core.metrics` parses and formats names against them and is what
the rest of the code imports; a new metric is one record here."""

from __future__ import annotations

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
NUMBER = r"[0-9.eE+-]+"
#: every metric name robustlab writes (the API's ``metric`` query is checked against it)
NAME_PATTERN = rf"^[A-Za-z0-9_]+(({'|'.join(PARAM_TAGS.values())}){NUMBER})?(@{NUMBER})?$"
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
