"""``robustlab check``: the CI robustness regression gate, by concern.

* :mod:`cli.check.policy` — the bounds (``--max-drop``, ``--min``, ``--max``, policy files), metric directions, alpha;
* :mod:`cli.check.inputs` — runs and sides: result files, ``--make-baseline`` baselines, in-process candidates;
* :mod:`cli.check.server` — the REST calls (baseline job ids and tags, candidate jobs, checkpoint uploads);
* :mod:`cli.check.statistics` — the tests (exact McNemar, paired bootstrap, t-test over runs, Holm);
* :mod:`cli.check.compare` — which test each bound gets, and the decision;
* :mod:`cli.check.reports` — terminal table, JUnit XML, Markdown summary;
* :mod:`cli.check.command` — the command line.
"""

from cli.check.command import check
from cli.check.compare import MetricCheck, Report, Stat, compare
from cli.check.files import CheckError
from cli.check.inputs import Run, Side, load_result_file, load_runs
from cli.check.policy import Policy, Rule, build_policy, metric_direction, parse_rule
from cli.check.reports import junit_xml, markdown_summary

__all__ = [
    "CheckError",
    "MetricCheck",
    "Policy",
    "Report",
    "Rule",
    "Run",
    "Side",
    "Stat",
    "build_policy",
    "check",
    "compare",
    "junit_xml",
    "load_result_file",
    "load_runs",
    "markdown_summary",
    "metric_direction",
    "parse_rule",
]
