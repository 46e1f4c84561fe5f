"""The leaderboard and compare endpoints on PostgreSQL: filters, ε/σ, sort asc/desc, keyset cursor pagination
(stable and complete, ties included), the row contents, and ``/compare``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_helpers import tiny_spec

from db.seed import seed_leaderboard

pytestmark = pytest.mark.services

N_JOBS = 240


@pytest.fixture
def seeded(pg_db: str):
    # values rounded to 0.01: many ties, which the (value, job id) keyset must order and page correctly
    return seed_leaderboard(pg_db, N_JOBS, seed=7, quantum=0.01)


def expected(seeded, metric: str, descending: bool = True, **filters) -> list[tuple[float, str]]:
    rows = [
        (job.metrics[metric], job.id)
        for job in seeded
        if metric in job.metrics and all(getattr(job, k) == v for k, v in filters.items())
    ]
    return sorted(rows, reverse=descending)


def all_pages(client: TestClient, params: dict, limit: int) -> list[dict]:
    entries, cursor, pages = [], None, 0
    while True:
        r = client.get(
            "/api/v1/leaderboard", params={**params, "limit": limit} | ({"cursor": cursor} if cursor else {})
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["entries"]) <= limit
        entries += body["entries"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return entries
        assert pages < 1000


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_pages_are_complete_ordered_and_ranked(pg_client: TestClient, seeded, order: str) -> None:
    params = {"metric": "pgd_linf_acc@0.1", "dataset": "spirals", "order": order}
    entries = all_pages(pg_client, params, limit=7)
    want = expected(seeded, "pgd_linf_acc@0.1", order == "desc", dataset="spirals")
    assert [(e["value"], e["job_id"]) for e in entries] == want  # every row once, in (value, id) order
    assert [e["rank"] for e in entries] == list(range(1, len(want) + 1))
    assert len({v for v, _ in want}) < len(want)  # the data has ties


def test_filters_combine(pg_client: TestClient, seeded) -> None:
    params = {"metric": "clean_acc", "dataset": "digits", "family": "implicit", "task": "classification"}
    entries = all_pages(pg_client, params, limit=50)
    assert [(e["value"], e["job_id"]) for e in entries] == expected(
        seeded, "clean_acc", dataset="digits", family="implicit"
    )
    assert entries and {(e["dataset"], e["family"]) for e in entries} == {("digits", "implicit")}
    body = pg_client.get("/api/v1/leaderboard", params={**params, "task": "regression"}).json()
    assert body["entries"] == [] and body["next_cursor"] is None


def test_sort_by_any_metric_ascending(pg_client: TestClient, seeded) -> None:
    body = pg_client.get("/api/v1/leaderboard", params={"metric": "lipschitz_bound", "order": "asc", "limit": 5}).json()
    assert [(e["value"], e["job_id"]) for e in body["entries"]] == expected(seeded, "lipschitz_bound", False)[:5]
    assert body["metric"] == "lipschitz_bound" and body["order"] == "asc" and body["next_cursor"]


def test_cursor_is_stable_when_rows_arrive_between_pages(pg_client: TestClient, seeded, finish) -> None:
    params = {"metric": "clean_acc", "limit": 10}
    first = pg_client.get("/api/v1/leaderboard", params=params).json()
    finish(tiny_spec("newcomer"), {"clean_acc": 1.0})  # ranks first, after page 1 was served
    second = pg_client.get("/api/v1/leaderboard", params={**params, "cursor": first["next_cursor"]}).json()
    want = expected(seeded, "clean_acc")
    assert [(e["value"], e["job_id"]) for e in first["entries"] + second["entries"]] == want[:20]
    assert [e["rank"] for e in second["entries"]] == list(range(11, 21))


def test_eps_and_sigma_parameters(pg_client: TestClient, seeded) -> None:
    def ids(**params) -> list[str]:
        r = pg_client.get("/api/v1/leaderboard", params={"limit": 15, **params})
        assert r.status_code == 200, r.text
        return [e["job_id"] for e in r.json()["entries"]]

    assert ids(metric="pgd_linf_acc", eps=0.1) == ids(metric="pgd_linf_acc@0.1") == ids(metric="pgd_linf_acc@0.10")
    assert ids(metric="gaussian_acc", sigma=0.1) == ids(metric="gaussian_acc@0.1")
    assert ids(metric="certified_l2_acc", eps="1e-1") == [i for _, i in expected(seeded, "certified_l2_acc@0.1")[:15]]
    assert ids(metric="pgd_linf_acc", eps=0.2) == []  # no job measured ε = 0.2
    for bad in ({"metric": "pgd_linf_acc@0.1", "eps": 0.2}, {"metric": "gaussian_acc", "eps": 0.1, "sigma": 0.1}):
        assert pg_client.get("/api/v1/leaderboard", params=bad).status_code == 422


def test_cursor_must_match_the_query(pg_client: TestClient, seeded) -> None:
    cursor = pg_client.get("/api/v1/leaderboard", params={"limit": 3}).json()["next_cursor"]
    for params in ({"cursor": cursor, "order": "asc"}, {"cursor": cursor, "dataset": "digits"}, {"cursor": "x%%"}):
        r = pg_client.get("/api/v1/leaderboard", params={"limit": 3, **params})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"], r.text


def test_entry_has_model_hyper_parameters_and_robustness_numbers(pg_client: TestClient, finish) -> None:
    spec = tiny_spec("theta-net", model={"family": "implicit", "width": 16, "depth": 6, "h": 0.5, "theta": 0.75})
    metrics = {
        "clean_acc": 0.9, "gaussian_acc@0.1": 0.85, "gaussian_acc@0.3": 0.7, "pgd_linf_acc@0.05": 0.6,
        "pgd_l2_acc@0.05": 0.65, "certified_l2_acc@0.05": 0.4, "lipschitz_bound": 3.0,
    }  # fmt: skip
    job_id = finish(spec, metrics)
    (entry,) = pg_client.get("/api/v1/leaderboard").json()["entries"]
    assert (entry["job_id"], entry["name"], entry["family"], entry["dataset"]) == (
        job_id,
        "theta-net",
        "implicit",
        "spirals",
    )
    assert (entry["width"], entry["depth"], entry["theta"], entry["h"]) == (16, 6, 0.75, 0.5)
    hp = entry["hyper_parameters"]
    assert hp["activation"] == "tanh" and hp["epochs"] == 30 and hp["solver"] == "anderson/gmres"
    assert entry["clean_acc"] == 0.9 and entry["gaussian_acc"] == {"0.1": 0.85, "0.3": 0.7}
    assert entry["pgd_linf_acc"] == {"0.05": 0.6} and entry["pgd_l2_acc"] == {"0.05": 0.65}
    assert entry["certified_l2_acc"] == {"0.05": 0.4} and entry["metrics"] == metrics
    assert entry["created_at"] and entry["finished_at"]


def test_compare_side_by_side(pg_client: TestClient, finish) -> None:
    a = finish(tiny_spec("a"), {"clean_acc": 0.9, "pgd_linf_acc@0.05": 0.5})
    b = finish(tiny_spec("b", model={"family": "lipschitz", "depth": 3}), {"clean_acc": 0.8, "lipschitz_bound": 1.0})
    queued = pg_client.post("/api/v1/jobs", json=tiny_spec("c")).json()["id"]
    r = pg_client.get("/api/v1/compare", params={"jobs": f"{b}, {a},{queued},{a}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [j["job_id"] for j in body["jobs"]] == [b, a, queued] and body["jobs"][2]["status"] == "queued"
    assert body["jobs"][0]["hyper_parameters"]["depth"] == 3
    assert body["metrics"] == {
        "clean_acc": [0.8, 0.9, None], "lipschitz_bound": [1.0, None, None], "pgd_linf_acc@0.05": [None, 0.5, None],
    }  # fmt: skip

    r = pg_client.get("/api/v1/compare", params={"jobs": f"{a},nope-1,nope-2"})
    assert r.status_code == 404 and "nope-1" in r.json()["detail"] and "nope-2" in r.json()["detail"]
    assert a not in r.json()["detail"]
    assert pg_client.get("/api/v1/compare", params={"jobs": " , "}).status_code == 422
    assert pg_client.get("/api/v1/compare").status_code == 422


def test_regression_leaderboard_sorts_ascending_by_mse_and_groups_the_regression_numbers(
    pg_client: TestClient, finish
) -> None:
    def regression(name: str) -> dict:
        return tiny_spec(name, task="regression", dataset={"name": "sine", "n_train": 21, "n_test": 20})

    def metrics(mse: float) -> dict[str, float]:
        return {
            "clean_mse": mse, "clean_psnr": 20 - mse, "gaussian_mse@0.1": 2 * mse, "gaussian_psnr@0.1": 18 - mse,
            "gaussian_psnr_std@0.1": 0.1, "pgd_linf_mse@0.05": 3 * mse, "pgd_l2_mse@0.05": 2.5 * mse,
            "certified_linf_mse@0.05": 5 * mse, "certified_l2_mse@0.05": 4 * mse,
            "certified_l2_deviation_mse@0.05": 0.01, "lipschitz_bound": 2.0,
        }  # fmt: skip

    ids = {mse: finish(regression(f"sine-{mse}"), metrics(mse)) for mse in (0.3, 0.1, 0.2)}
    finish(tiny_spec("classifier"), {"clean_acc": 0.9, "gaussian_acc@0.1": 0.8})
    r = pg_client.get("/api/v1/leaderboard", params={"task": "regression", "metric": "clean_mse", "order": "asc"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["metric"], body["order"], body["task"]) == ("clean_mse", "asc", "regression")
    entries = body["entries"]
    assert [(e["value"], e["job_id"]) for e in entries] == [(m, ids[m]) for m in (0.1, 0.2, 0.3)]
    assert [e["rank"] for e in entries] == [1, 2, 3] and {e["task"] for e in entries} == {"regression"}
    best = entries[0]
    assert best["clean_mse"] == 0.1 and best["clean_psnr"] == 19.9 and best["clean_acc"] is None
    assert best["gaussian_mse"] == {"0.1": 0.2} and best["gaussian_psnr"] == {"0.1": 17.9}
    assert best["pgd_linf_mse"] == {"0.05": 3 * 0.1} and best["pgd_l2_mse"] == {"0.05": 0.25}
    assert best["certified_linf_mse"] == {"0.05": 0.5} and best["certified_l2_mse"] == {"0.05": 0.4}
    assert best["gaussian_acc"] == {} and best["pgd_linf_acc"] == {} and best["metrics"] == metrics(0.1)
    # ε given separately, and the classification entries still have no regression numbers
    worst = pg_client.get(
        "/api/v1/leaderboard", params={"task": "regression", "metric": "certified_l2_mse", "eps": 0.05, "limit": 1}
    ).json()["entries"]
    assert [e["job_id"] for e in worst] == [ids[0.3]]
    (classifier,) = pg_client.get("/api/v1/leaderboard", params={"task": "classification"}).json()["entries"]
    assert classifier["clean_mse"] is None and classifier["gaussian_psnr"] == {} and classifier["clean_acc"] == 0.9


def test_the_json_is_the_documented_models_json(pg_client: TestClient, pg_db: str, finish) -> None:
    """The route serialises the read model's rows (db.leaderboard.LeaderboardEntry) without validating them again:
    the bytes must be exactly those of the documented Leaderboard model read back from them, and of the page built
    from the rows the query returns — ode (h from t_final), implicit, explicit (θ = 0), lipschitz, regression,
    integral metric values (floats on the wire)."""
    from pydantic import TypeAdapter

    from api.schemas import Leaderboard
    from db.leaderboard import leaderboard
    from db.session import session_scope

    regression = {"task": "regression", "dataset": {"name": "sine", "n_train": 21, "n_test": 20}}
    finish(tiny_spec("explicit"), {"clean_acc": 0.9, "gaussian_acc@0.1": 0.8, "lipschitz_bound": 2.0})
    finish(
        tiny_spec("ode", model={"family": "ode", "width": 8, "depth": 4, "t_final": 1.0}),
        {"clean_acc": 1.0, "pgd_linf_acc@0.05": 0.5, "certified_l2_acc@0.05": 0.25, "lipschitz_bound": 3.0},
    )
    finish(
        tiny_spec("implicit", model={"family": "implicit", "width": 16, "depth": 6, "h": 0.5, "theta": 0.75}),
        {"clean_acc": 0.7, "pgd_l2_acc@0.05": 0.6, "lipschitz_bound": 1.5},
    )
    finish(tiny_spec("lipschitz", model={"family": "lipschitz", "depth": 3}), {"lipschitz_bound": 1.0})
    finish(tiny_spec("flagged"), {"clean_acc": 0.8, "robust_linf_acc@0.1": 0.5, "reliability_flags": 1.0},
           {"reliability": {"flags": [CHEAP_FLAG], "checked": ["cheap_attack_only"], "unreliable": True}})  # fmt: skip
    finish(
        tiny_spec("sine", **regression),
        {"clean_mse": 0.1, "clean_psnr": 20.0, "gaussian_psnr@0.1": 18.0, "pgd_l2_mse@0.05": 0.3, "lipschitz_bound": 4},
    )
    for params in ({"metric": "lipschitz_bound", "order": "asc"}, {"limit": 2}, {"metric": "clean_mse"}):
        r = pg_client.get("/api/v1/leaderboard", params=params)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
        limit = params.get("limit", 20)
        with session_scope(pg_db) as s:
            rows = leaderboard(
                s, metric=params.get("metric", "clean_acc"), descending=params.get("order") != "asc", limit=limit
            )
        board = Leaderboard(
            metric=params.get("metric", "clean_acc"),
            order=params.get("order", "desc"),
            limit=limit,
            entries=rows,
            next_cursor=r.json()["next_cursor"],
        )
        assert r.content == TypeAdapter(Leaderboard).dump_json(board)
        assert r.content == TypeAdapter(Leaderboard).dump_json(Leaderboard.model_validate_json(r.content))
    assert len(r.json()["entries"]) == 1  # the regression job, the only one with clean_mse


CHEAP_FLAG = {"flag": "cheap_attack_only", "reason": "only PGD with the cross-entropy ran for pgd_linf_acc@0.1"}
SUITE = {"attacks": ["apgd-ce", "apgd-cw", "fab-t"], "steps": 100, "queries": 5000, "restarts": 1,
         "library": "torchattacks 3.5.1"}  # fmt: skip
PGD = {"Linf": {"attack": "PGD", "library": "torchattacks 3.5.1", "steps": 10, "restarts": 1}}


def test_rows_and_exports_carry_the_best_known_figure_what_ran_and_the_flags(pg_client: TestClient, finish) -> None:
    """The headline robust_<norm>_acc@ε on leaderboard rows beside the attacks' own figures, the reliability flags
    with their reasons on the rows and in both exports, and autoattack_acc only where the full standard suite ran."""
    import csv
    import io

    overstated = {"flag": "cheap_attack_overstates", "reason": "PGD is more than 1.0 % above the suite"}
    strong = finish(
        tiny_spec("strong"),
        {"clean_acc": 0.9, "pgd_linf_acc@0.1": 0.8, "autoattack_linf_acc@0.1": 0.7, "robust_linf_acc@0.1": 0.65,
         "reliability_flags": 1.0},
        {"autoattack": {"Linf": SUITE | {"protocol": "standard"}}, "pgd": PGD,
         "reliability": {"flags": [overstated], "checked": [], "unreliable": True}},
    )  # fmt: skip
    reduced = finish(
        tiny_spec("reduced"),
        {"clean_acc": 0.9, "autoattack_linf_acc@0.1": 0.75, "robust_linf_acc@0.1": 0.75, "reliability_flags": 0.0},
        {"autoattack": {"Linf": SUITE | {"protocol": "custom", "steps": 10}},
         "reliability": {"flags": [], "checked": [], "unreliable": False}},
    )  # fmt: skip
    cheap = finish(
        tiny_spec("cheap"),
        {"clean_acc": 0.9, "pgd_linf_acc@0.1": 0.85, "robust_linf_acc@0.1": 0.85, "reliability_flags": 1.0},
        {"pgd": PGD, "reliability": {"flags": [CHEAP_FLAG], "checked": [], "unreliable": True}},
    )
    params = {"metric": "robust_linf_acc@0.1"}
    entries = pg_client.get("/api/v1/leaderboard", params=params).json()["entries"]
    assert [e["job_id"] for e in entries] == [cheap, reduced, strong]
    by_id = {e["job_id"]: e for e in entries}
    assert by_id[strong]["robust_linf_acc"] == {"0.1": 0.65} and by_id[strong]["pgd_linf_acc"] == {"0.1": 0.8}
    assert by_id[strong]["autoattack_linf_acc"] == {"0.1": 0.7}
    assert by_id[strong]["flags"] == [overstated] and by_id[cheap]["flags"] == [CHEAP_FLAG]
    assert by_id[reduced]["flags"] == []

    models = pg_client.get("/api/v1/leaderboard", params=params | {"format": "robustbench"}).json()
    rb = {m["job_id"]: m for m in models}
    assert rb[strong]["autoattack_acc"] == rb[strong]["reported"] == "65.00" and rb[strong]["unreliable"] is True
    assert rb[strong]["attack"].startswith("AutoAttack standard suite (apgd-ce, apgd-cw, fab-t; 100 steps")
    assert "+ PGD-Linf (torchattacks), 10 steps, 1 restart; best known per sample" in rb[strong]["attack"]
    assert "cheap_attack_overstates (PGD is more than 1.0 % above the suite)" in rb[strong]["footnote"]
    assert rb[reduced]["autoattack_acc"] is None and rb[reduced]["reported"] == "75.00"
    assert rb[reduced]["attack"].startswith("reduced AutoAttack-style suite") and rb[reduced]["flags"] == []
    assert rb[cheap]["autoattack_acc"] is None and rb[cheap]["attack"] == "PGD-Linf (torchattacks), 10 steps, 1 restart"
    assert rb[cheap]["flags"] == [CHEAP_FLAG] and "not AutoAttack" in rb[cheap]["footnote"]

    text = pg_client.get("/api/v1/leaderboard", params=params | {"format": "csv"}).text
    rows = {r["job_id"]: r for r in csv.DictReader(io.StringIO(text))}
    assert rows[strong]["autoattack_acc"] == "0.65" and rows[strong]["robust_acc"] == "0.65"
    assert rows[reduced]["autoattack_acc"] == rows[cheap]["autoattack_acc"] == ""
    assert rows[cheap]["flags"] == f"cheap_attack_only: {CHEAP_FLAG['reason']}" and rows[reduced]["flags"] == ""
    assert rows[cheap]["attack"] == rb[cheap]["attack"] and rows[strong]["threat_model"] == "Linf"
