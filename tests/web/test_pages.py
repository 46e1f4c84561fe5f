"""The web pages as a client without JavaScript sees them: plain HTTP GETs against a real server (and the app
in-process for the access policy). The rows, filters, sort links and cursor pages must be those of the JSON API;
job pages show status, progress, metrics and plots that load; compare pages put jobs side by side with curves; bad
input is an HTML error page, never a 500 or JSON."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx
import pytest
from web_helpers import N_SEEDED, PLOTTED, Site, add_regression_jobs, regression_metrics

from api.security import create_api_key
from cli.check import metric_direction
from core.protocol import current_protocol
from core.provenance import current_code
from db.migrate import upgrade
from db.session import session_scope

ROW = re.compile(r'<tr data-job-id="([0-9a-f-]+)">')
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def http(web_site: Site):
    with httpx.Client(base_url=web_site.base_url, timeout=30) as client:
        yield client


def page(http: httpx.Client, path: str, params: dict | None = None, status: int = 200) -> str:
    r = http.get(path, params=params)
    assert r.status_code == status, f"{path} {params}: {r.status_code}\n{r.text[:2000]}"
    assert r.headers["content-type"].startswith("text/html"), r.headers
    assert "<script" not in r.text.lower()  # no JavaScript anywhere
    return r.text


def api_ids(http: httpx.Client, **params) -> list[str]:
    r = http.get("/api/v1/leaderboard", params=params)
    assert r.status_code == 200, r.text
    return [e["job_id"] for e in r.json()["entries"]]


def links(text: str, anchor_id: str) -> str:
    match = re.search(rf'<a href="([^"]+)" id="{anchor_id}"', text)
    assert match, f"no link #{anchor_id}"
    return html.unescape(match.group(1))


def test_the_leaderboard_renders_the_api_rows_without_javascript(http: httpx.Client) -> None:
    text = page(http, "/", {"limit": 100})
    assert ROW.findall(text) == api_ids(http, limit=100)
    assert len(ROW.findall(text)) == N_SEEDED + len(PLOTTED) + 1  # + the real job
    assert '<form class="filters" method="get"' in text and 'name="family"' in text
    assert 'href="/static/style.css"' in text and http.get("/static/style.css").status_code == 200
    assert "web-implicit" in text and 'href="/jobs/' in text


def test_filters_sort_links_and_cursor_pages_follow_the_api(http: httpx.Client) -> None:
    text = page(http, "/", {"family": "implicit", "metric": "pgd_linf_acc@0.1", "order": "asc"})
    want = api_ids(http, family="implicit", metric="pgd_linf_acc@0.1", order="asc", limit=25)
    assert ROW.findall(text) == want and want
    assert set(re.findall(r'<td class="family">(\w+)</td>', text)) == {"implicit"}
    # the header of the ranking column toggles the order, another column sorts by its metric
    header = re.search(r'<a href="([^"]+)" data-metric="pgd_linf_acc@0.1"', text).group(1)
    assert "order=desc" in html.unescape(header) and "family=implicit" in html.unescape(header)
    other = html.unescape(re.search(r'<a href="([^"]+)" data-metric="clean_acc"', text).group(1))
    assert "metric=clean_acc" in other and "order=desc" in other
    lipschitz = html.unescape(re.search(r'<a href="([^"]+)" data-metric="lipschitz_bound"', text).group(1))
    assert "order=asc" in lipschitz  # lower is better
    # cursor pagination: page 2 is the API's page 2
    first = page(http, "/", {"limit": 5, "metric": "clean_acc"})
    second = page(http, links(first, "next-page"))
    api_first = http.get("/api/v1/leaderboard", params={"limit": 5}).json()
    api_second = api_ids(http, limit=5, cursor=api_first["next_cursor"])
    assert ROW.findall(second) == api_second and ">6</td>" in second
    assert links(second, "first-page").startswith("/?")


def test_a_job_page_shows_metrics_plots_and_spec(http: httpx.Client, web_site: Site) -> None:
    job_id = web_site.data.ids["web-implicit"]
    text = page(http, f"/jobs/{job_id}")
    assert 'http-equiv="refresh"' not in text and 'id="status">succeeded<' in text
    assert "PGD L∞ ε=0.1" in text and f"{100 * web_site.data.metrics['web-implicit']['pgd_linf_acc@0.1']:.1f} %" in text
    assert "&#34;family&#34;: &#34;implicit&#34;" in text or '"family": "implicit"' in html.unescape(text)
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert [s.rsplit("/", 1)[1] for s in sources] == ["plot_gaussian.png", "plot_eps.png", "plot_radius.png"]
    for src in sources:
        r = http.get(src)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(PNG)


def test_the_real_jobs_worker_plots_are_served(http: httpx.Client, web_site: Site) -> None:
    text = page(http, f"/jobs/{web_site.data.ids['web-real']}")
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert {"plot_gaussian.png", "plot_eps.png"} <= {s.rsplit("/", 1)[1] for s in sources}
    assert all(http.get(src).content.startswith(PNG) for src in sources)


def test_the_real_jobs_reliability_flags_show_on_its_page_and_row(http: httpx.Client, web_site: Site) -> None:
    """The tiny real job ran PGD only: its page and its leaderboard row say so, with the reason."""
    job_id = web_site.data.ids["web-real"]
    text = html.unescape(page(http, f"/jobs/{job_id}"))
    assert "Marked unreliable" in text and "<strong>cheap_attack_only</strong>: only PGD with the cross-entropy" in text
    board = html.unescape(page(http, "/", {"metric": "robust_linf_acc@0.05", "limit": 200}))
    row = board.split(f'data-job-id="{job_id}"', 1)[1].split("</tr>", 1)[0]
    assert "⚑ unreliable (1)" in row and "add evaluate.autoattack for the strong suite" in row


def _protocol_cells(text: str) -> dict[str, str]:
    """Row job id → the protocol cell's HTML."""
    rows = re.findall(r'<tr data-job-id="([0-9a-f-]+)">(.*?)</tr>', text, flags=re.S)
    return {job_id: re.search(r'<td class="protocol".*?</td>', row, flags=re.S).group(0) for job_id, row in rows}


def test_the_leaderboard_shows_each_protocol_marks_stale_entries_and_filters_them(
    http: httpx.Client, web_site: Site
) -> None:
    """Seeded rows stand for entries stored before protocol versions (stale, no weights); the real job is current."""
    protocol = current_protocol()
    text = page(http, "/", {"limit": 100})
    cells = _protocol_cells(text)
    seeded, real = {j.id for j in web_site.data.seeded}, web_site.data.ids["web-real"]
    assert f'data-protocol="{protocol}"' in cells[real] and "badge stale" not in cells[real]
    assert "no weights" not in cells[real]  # the worker kept them
    for job_id in seeded:
        assert 'data-protocol=""' in cells[job_id] and ">stale</span>" in cells[job_id]
        assert ">no weights</span>" in cells[job_id]
    assert protocol in text and "robustlab reevaluate --stale" in text

    current = page(http, "/", {"limit": 100, "current": "true"})
    assert ROW.findall(current) == api_ids(http, limit=100, current="true")
    assert real in ROW.findall(current) and not seeded & set(ROW.findall(current))
    assert 'id="f-current" checked' in current and ">stale</span>" not in current
    sort = html.unescape(re.search(r'<a href="([^"]+)" data-metric="clean_acc"', current).group(1))
    assert "current=true" in sort  # the filter stays on while sorting
    page(http, "/", {"current": "maybe"}, status=422)


def test_a_job_page_shows_its_provenance(http: httpx.Client, web_site: Site) -> None:
    import torch

    real = page(http, f"/jobs/{web_site.data.ids['web-real']}")
    assert f'id="protocol-version">{current_protocol()}<' in real and 'id="stale"' not in real
    assert current_code().identity in real and f"torch {torch.__version__}" in real
    assert "model.safetensors" in re.search(r'<dd id="weights">.*?</dd>', real, flags=re.S).group(0)
    stale = page(http, f"/jobs/{web_site.data.seeded[0].id}")
    assert 'id="stale"' in stale and "not recorded" in stale and "not kept" in stale
    assert "Cannot be re-evaluated" in stale and "kept no weights" in stale


def test_running_and_failed_jobs(http: httpx.Client, web_site: Site) -> None:
    running = page(http, f"/jobs/{web_site.data.ids['web-running']}")
    assert '<meta http-equiv="refresh" content="3">' in running
    assert "Epoch 12 / 30" in running and "ETA (training): about" in running and "<progress" in running
    failed = page(http, f"/jobs/{web_site.data.ids['web-failed']}")
    assert 'http-equiv="refresh"' not in failed and "TrainingDiverged: the loss is nan" in failed


def test_compare_two_jobs_side_by_side_with_curves(http: httpx.Client, web_site: Site) -> None:
    a, b = web_site.data.ids["web-explicit"], web_site.data.ids["web-implicit"]
    text = page(http, "/compare", {"jobs": f"{a},{b}"})
    assert text.count('class="swatch"') == 2 and "web-explicit" in text and "web-implicit" in text
    assert '<tr data-metric="certified_l2_acc@0.1">' in text and 'class="num best"' in text
    sources = [html.unescape(s) for s in re.findall(r'<img src="([^"]+)"', text)]
    assert {re.search(r"kind=(\w+)", s).group(1) for s in sources} == {"gaussian", "pgd_linf", "pgd_l2", "certified_l2"}
    for src in sources:
        r = http.get(src)
        assert r.status_code == 200 and r.content.startswith(PNG), src
    # the leaderboard's checkboxes send ?jobs=a&jobs=b
    assert page(http, f"/compare?jobs={a}&jobs={b}") .count('class="swatch"') == 2  # fmt: skip


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/jobs/no-such-job", 404, "There is no job"),
        ("/jobs/no-such-job/plots/plot_eps.png", 404, "There is no job"),
        ("/?metric=no_such_metric", 422, "Unknown metric"),
        ("/?metric=clean_acc;drop", 422, "is not a metric name"),
        ("/?order=sideways", 422, "order"),
        ("/?limit=0", 422, "limit"),
        ("/?limit=500", 422, "limit: Input should be less than or equal to 200"),
        ("/?order=sideways&limit=x", 422, "order: one of 'asc' or 'desc'; limit: Input should be a valid integer"),
        ("/?cursor=garbage", 422, "cursor"),
        ("/?dataset=%00", 422, "NUL"),
        ("/?metric=<script>alert(1)</script>", 422, "is not a metric name"),  # escaped: page() finds no <script
        ("/compare?jobs=one", 422, "Compare 2 to 4 jobs (got 1)"),
        ("/compare?jobs=a,b,c,d,e", 422, "Compare 2 to 4 jobs (got 5)"),
        ("/compare?jobs=nope-1,nope-2", 404, "unknown job id(s): nope-1, nope-2"),
        ("/compare/plot.png?jobs=a,b&kind=bogus", 422, "kind: one of"),
    ],
)
def test_bad_requests_are_html_error_pages(http: httpx.Client, path: str, status: int, message: str) -> None:
    text = page(http, path, status=status)
    assert message in html.unescape(text) and "Back to the leaderboard" in text


def test_blank_form_fields_count_as_absent(http: httpx.Client) -> None:
    """The filter form sends ``dataset=`` for "any": a blank value is the parameter's default, not a 422."""
    blank = page(http, "/", {"dataset": "", "family": " ", "task": "", "order": "", "limit": "", "metric": ""})
    assert ROW.findall(blank) == ROW.findall(page(http, "/")) == api_ids(http, limit=25)


def test_plots_route_serves_only_pngs_of_the_job(http: httpx.Client, web_site: Site) -> None:
    job_id = web_site.data.ids["web-real"]
    for name in ("result.json", "model.safetensors", "..%2F..%2Frobustlab.db", "missing.png"):
        assert http.get(f"/jobs/{job_id}/plots/{name}").status_code == 404, name


def test_the_pages_are_not_in_the_openapi_schema(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert all(p.startswith("/api/v1/") or p == "/healthz" for p in paths), sorted(paths)


# ---------------------------------------------------------------------------------------------------- access
def test_pages_follow_the_read_policy(web_site: Site, make_web_client) -> None:
    with session_scope(web_site.database_url) as session:
        _key, token = create_api_key(session, f"web-reader-{id(session)}", "read")
    job_id = web_site.data.ids["web-implicit"]
    private = make_web_client(web_site.database_url, web_site.artifacts_dir, auth="keys", public_read=False)
    for path in ("/", f"/jobs/{job_id}", f"/jobs/{job_id}/plots/plot_eps.png", "/compare?jobs=a,b"):
        r = private.get(path)
        assert r.status_code == 401 and r.headers["content-type"].startswith("text/html"), path
        assert 'name="key"' in r.text and "Bearer" in r.headers["www-authenticate"]
    assert private.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert private.get("/", headers={"Authorization": "Bearer rlk_00000000_wrong"}).status_code == 401
    # a browser keeps the key in a cookie: POST /login, then every page (and its images) reads
    bad = private.post("/login", data={"key": "rlk_00000000_wrong", "next": "/"}, follow_redirects=False)
    assert bad.status_code == 401 and "not valid" in bad.text
    login = private.post("/login", data={"key": token, "next": f"/jobs/{job_id}"}, follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == f"/jobs/{job_id}"
    assert (
        "httponly" in login.headers["set-cookie"].lower() and "samesite=strict" in login.headers["set-cookie"].lower()
    )
    assert private.get(f"/jobs/{job_id}").status_code == 200
    assert private.get(f"/jobs/{job_id}/plots/plot_eps.png").content.startswith(PNG)
    offsite = private.post("/login", data={"key": token, "next": "//evil.example/"}, follow_redirects=False)
    assert offsite.headers["location"] == "/"
    private.post("/logout")
    assert private.get("/").status_code == 401
    public = make_web_client(web_site.database_url, web_site.artifacts_dir, auth="keys", public_read=True)
    assert public.get("/").status_code == 200 and public.get(f"/jobs/{job_id}").status_code == 200


def test_screenshot_dir_is_gitignored() -> None:
    gitignore = (Path(__file__).resolve().parents[2] / ".gitignore").read_text().split()
    assert "test-output/" in gitignore


def test_regression_job_and_compare_pages_show_mse_and_psnr(tmp_path: Path, make_web_client) -> None:
    url, artifacts = f"sqlite:///{tmp_path / 'robustlab.db'}", tmp_path / "artifacts"
    upgrade(url)
    ids = add_regression_jobs(url, artifacts, {"sine-a": 0.02, "sine-b": 0.05})
    client = make_web_client(url, artifacts)
    a, b = ids["sine-a"], ids["sine-b"]
    metrics = regression_metrics(0.02)

    r = client.get(f"/jobs/{a}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r.text[:2000]
    text = r.text
    for name in ("clean_mse", "clean_psnr", "gaussian_psnr@0.1", "pgd_l2_mse@0.1", "certified_l2_mse@0.1"):
        assert f"<code>{name}</code>" in text and f"{metrics[name]:.4g}" in text, name
    assert "clean MSE" in text and "clean PSNR" in text and "Gauss PSNR σ=0.1" in text and "cert. L2 MSE ε=0.1" in text
    assert "clean_acc" not in text
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert [s.rsplit("/", 1)[1] for s in sources] == ["plot_gaussian.png", "plot_eps.png"]
    for src in sources:
        r = client.get(src)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(PNG)

    r = client.get("/compare", params={"jobs": f"{a},{b}"})
    assert r.status_code == 200, r.text[:2000]
    text = r.text
    assert text.count('class="swatch"') == 2 and "sine-a" in text and "sine-b" in text
    for name in ("clean_mse", "clean_psnr", "gaussian_psnr@0.3", "pgd_linf_mse@0.05", "certified_l2_mse@0.1"):
        assert f'<tr data-metric="{name}">' in text, name
    assert 'class="num best"' in text
    sources = [html.unescape(s) for s in re.findall(r'<img src="([^"]+)"', text)]
    assert {re.search(r"kind=(\w+)", s).group(1) for s in sources} == {"gaussian_mse", "pgd_linf_mse"}
    for src in sources:
        r = client.get(src)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(PNG), src


def _metric_options(text: str) -> list[str]:
    select = re.search(r'<select name="metric".*?</select>', text, re.S)
    assert select, "no metric select on the leaderboard page"
    return [html.unescape(v) for v in re.findall(r'<option value="([^"]+)"', select.group(0))]


def _web_ranks_as_the_gate_reads(get, metric_names: list[str]) -> None:
    """For every metric, the web leaderboard's default order is the API's order in the gate's direction of
    "better" (``lower`` → ascending), so a spread, an error or a bound is never ranked highest-first."""
    assert metric_names
    for metric in metric_names:
        direction = metric_direction(metric)
        assert direction in ("higher", "lower"), metric
        r = get("/", params={"metric": metric, "limit": 100})
        assert r.status_code == 200, (metric, r.text[:500])
        r_api = get(
            "/api/v1/leaderboard",
            params={"metric": metric, "limit": 100, "order": "asc" if direction == "lower" else "desc"},
        )
        assert r_api.status_code == 200, r_api.text
        assert ROW.findall(r.text) == [e["job_id"] for e in r_api.json()["entries"]], metric


def test_web_and_gate_agree_on_which_way_is_better_for_every_classification_metric(http: httpx.Client) -> None:
    names = _metric_options(page(http, "/"))
    assert {"gaussian_acc_std@0.3", "lipschitz_bound", "train_seconds", "clean_acc"} <= set(names)
    _web_ranks_as_the_gate_reads(http.get, names)


def test_web_and_gate_agree_on_which_way_is_better_for_every_regression_metric(tmp_path: Path, make_web_client):
    url, artifacts = f"sqlite:///{tmp_path / 'robustlab.db'}", tmp_path / "artifacts"
    upgrade(url)
    add_regression_jobs(url, artifacts, {"sine-a": 0.02, "sine-b": 0.05, "sine-c": 0.03})
    client = make_web_client(url, artifacts)
    names = _metric_options(client.get("/").text)
    assert {"gaussian_psnr_std@0.1", "gaussian_mse_std@0.1", "clean_psnr", "certified_l2_mse@0.1"} <= set(names)
    _web_ranks_as_the_gate_reads(client.get, names)
