"""The serving router as a user meets it: a real router process, a real ``mlflow server``, real signed
and approved tiny models (not the click-through model), real HTTP. One router for the module, driven
through its life: not ready, verified champion, refusals, canary, shadow, guardrail, lease, reload,
metrics, and SIGTERM with every request accounted for in the prediction log."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.serving import RouterProcess, ServingModels, example_rows

pytestmark = pytest.mark.integration
MODEL = "tiny-router"
SHADOW_CPU = max(os.sched_getaffinity(0))  # the router's shadow worker is placed there
SENT: list[str] = []  # every request id this module sent to /predict or V2: all must reach the log


@pytest.fixture(scope="module")
def models(mlflow_server, tmp_path_factory) -> ServingModels:
    return ServingModels(mlflow_server.url, tmp_path_factory.mktemp("serving-models"))


@pytest.fixture(scope="module")
def router(models, tmp_path_factory):
    process = RouterProcess(
        tmp_path_factory.mktemp("router"), models, MODEL, TOLLGATE_ROUTER_SHADOW_CPUS=str(SHADOW_CPU)
    )
    process.start()
    yield process
    process.stop()


def test_the_shadow_worker_runs_on_the_cpus_set_for_it(router):
    """TOLLGATE_ROUTER_SHADOW_CPUS reaches the worker the router spawns, and /status shows where it runs."""
    deadline = time.monotonic() + 120  # the spawned worker places itself once its interpreter is up
    while (cpus := router.status()["shadow"]["worker_cpus"]) != [SHADOW_CPU]:
        assert time.monotonic() < deadline, f"the shadow worker runs on CPUs {cpus}, not [{SHADOW_CPU}]"
        time.sleep(0.5)
    assert os.sched_getaffinity(router.process.pid) != {SHADOW_CPU} or os.cpu_count() == 1  # router unpinned


def predict(router: RouterProcess, rows, user: str | None = None, **kwargs) -> requests.Response:
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    SENT.append(request_id)
    body = {"rows": rows, **({"user_id": user} if user else {})}
    return requests.post(f"{router.url}/predict", json=body, headers={"x-request-id": request_id}, timeout=30)


def set_rollout(router: RouterProcess, **body) -> requests.Response:
    return requests.post(f"{router.url}/admin/rollout", json=body, headers=router.admin(), timeout=120)


def test_no_verified_champion_means_not_ready_with_the_reason(router, models):
    ready = requests.get(f"{router.url}/readyz", timeout=10)
    assert ready.status_code == 503 and "no champion" in ready.json()["reason"]
    answer = predict(router, example_rows(1))
    assert answer.status_code == 503 and "has no version with alias 'champion'" in answer.json()["error"]

    unapproved = models.register(MODEL, approve=False)  # signed, but nobody approved it
    models.set_alias(MODEL, "champion", unapproved)
    status = router.wait_for(lambda s: "champion" in s["refused"], "the unapproved champion refused")
    assert not status["ready"] and "no approved attestation" in status["reason"]
    assert requests.get(f"{router.url}/readyz", timeout=10).status_code == 503

    models.approve(MODEL, unapproved)  # the approval arrives: the same version is now served
    status = router.wait_for(lambda s: s["ready"], "the approved champion served")
    assert status["variants"]["champion"]["version"] == unapproved
    assert status["variants"]["champion"]["approved_by"] == "approver"


def test_verified_champion_answers_like_its_pyfunc(router, models):
    import mlflow.pyfunc
    import pandas as pd

    from tollgate.registry import names

    version = router.status()["variants"]["champion"]["version"]
    rows = example_rows(4)
    answer = predict(router, rows)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-tollgate-variant"] == "champion"
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").predict(pd.DataFrame(rows))
    assert answer.json()["predictions"] == pytest.approx(list(expected))
    tags = models.client.get_model_version(MODEL, version).tags
    status = router.status()
    assert status["variants"]["champion"]["signature_sha256"] == tags[names.TAG_SIGNATURE_SHA256]
    assert [c["name"] for c in status["input"]["columns"]] == ["x1", "x2", "segment", "count"]


@pytest.mark.parametrize(
    ("rows", "field", "words"),
    [
        ([{"x1": 1.0, "x2": 2.0, "segment": "a"}], "count", "missing"),
        ([{**example_rows(1)[0], "colour": "red"}], "colour", "does not have"),
        ([{**example_rows(1)[0], "x1": "high"}], "x1", "must be double"),
        ([{**example_rows(1)[0], "count": 1.5}], "count", "must be long"),
        ([{**example_rows(1)[0], "segment": None}], "segment", "null"),
        ("not rows", "rows", "non-empty list"),
    ],
)
def test_bad_input_gets_422_naming_the_field(router, rows, field, words):
    answer = predict(router, rows)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and words in answer.json()["error"]


def test_not_json_and_wrong_v2_datatype_get_422_and_the_router_lives_on(router):
    answer = requests.post(f"{router.url}/predict", data=b"{nope", timeout=10)
    assert answer.status_code == 422 and "not JSON" in answer.json()["error"]
    body = {"inputs": [{"name": "x1", "shape": [1], "datatype": "BYTES", "data": ["1"]}]}
    answer = requests.post(f"{router.url}/v2/models/{MODEL}/infer", json=body, timeout=10)
    assert answer.status_code == 422 and answer.json()["field"] == "x1" and "FP64" in answer.json()["error"]
    assert requests.get(f"{router.url}/livez", timeout=10).status_code == 200


def test_v2_infer_called_as_a_kserve_client_would(router):
    rows = example_rows(2)
    request_id = f"v2-{uuid.uuid4().hex[:8]}"
    SENT.append(request_id)
    v2_types = {"x1": "FP64", "x2": "FP64", "segment": "BYTES", "count": "INT64"}
    body = {
        "id": request_id,
        "inputs": [
            {"name": n, "shape": [2], "datatype": t, "data": [r[n] for r in rows]}
            for n, t in v2_types.items()
        ],
    }
    assert requests.get(f"{router.url}/v2/models/{MODEL}/ready", timeout=10).json()["ready"] is True
    meta = requests.get(f"{router.url}/v2/models/{MODEL}", timeout=10).json()
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == v2_types
    answer = requests.post(f"{router.url}/v2/models/{MODEL}/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    assert payload["id"] == request_id and payload["model_name"] == MODEL
    (output,) = payload["outputs"]
    assert output["shape"] == [2] and output["datatype"] == "FP64"
    assert output["data"] == pytest.approx(predict(router, rows).json()["predictions"])


def test_kserve_inference_client_gets_the_champion_answer(router):
    """KServe's own client (kserve.InferenceRESTClient, from the `make serving-tools` environment)."""
    import json
    import subprocess

    from tollgate.config import REPO_ROOT

    python = REPO_ROOT / ".venv-kserve" / "bin" / "python"
    assert python.exists(), "the KServe tool environment is missing: run `make serving-tools`"
    rows = example_rows(3)
    request_id = f"kserve-{uuid.uuid4().hex[:8]}"
    SENT.append(request_id)
    client = REPO_ROOT / "tests" / "fixtures" / "kserve_client.py"
    columns = json.dumps({n: [r[n] for r in rows] for n in rows[0]})
    result = subprocess.run(
        [str(python), "-P", str(client), router.url, MODEL, request_id],  # -P: no tests/fixtures on sys.path
        input=columns, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)
    assert answer["id"] == request_id and answer["model_name"] == MODEL
    (output,) = answer["outputs"]
    assert output["datatype"] == "FP64" and output["shape"] == [3]
    assert output["data"] == pytest.approx(predict(router, rows).json()["predictions"])


def test_admin_without_the_token_is_refused(router):
    url = f"{router.url}/admin/rollout"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer guess"}, timeout=10).status_code == 403
    assert requests.post(f"{router.url}/admin/rollout/abort", json={}, timeout=10).status_code == 401
    assert requests.get(url, headers=router.admin(), timeout=10).status_code == 200


def test_tampered_challenger_refused_while_the_champion_keeps_serving(router, models):
    champion = router.status()["variants"]["champion"]["version"]
    tampered = models.register(MODEL)
    models.tamper(MODEL, tampered)
    answer = set_rollout(
        router, mode="canary", challenger_version=tampered, weight_bp=10_000, rollout_id="t1"
    )
    assert answer.status_code == 409 and "refused" in answer.json()["error"]
    status = router.status()
    assert status["refused"]["challenger"]["version"] == tampered
    assert any("do not match the signature" in p for p in status["refused"]["challenger"]["problems"])
    assert status["variants"]["challenger"] is None and status["rollout"]["mode"] == "off"
    for user in ("a", "b", "c"):
        served = predict(router, example_rows(1), user=user)
        assert served.status_code == 200 and served.json()["model_version"] == champion


def test_a_rejected_version_is_refused_as_challenger(router, models):
    from tollgate.registry import attestation, names

    rejected = models.register(MODEL, approve=False)
    digest = models.client.get_model_version(MODEL, rejected).tags[names.TAG_SIGNATURE_SHA256]
    decision = attestation.Decision(
        attestation.REJECTED, MODEL, rejected, digest, "approver", comment="worse AUC"
    )
    attestation.record(models.client, decision, models.decision_key)
    answer = set_rollout(router, mode="shadow", challenger_version=rejected, rollout_id="rejected-1")
    assert answer.status_code == 409 and "was rejected by approver: worse AUC" in answer.json()["error"]
    assert router.status()["variants"]["challenger"] is None


def test_an_unapproved_new_champion_is_refused_and_the_last_good_one_served(router, models):
    good = router.status()["variants"]["champion"]["version"]
    unapproved = models.register(MODEL, approve=False)
    models.set_alias(MODEL, "champion", unapproved)
    status = router.wait_for(
        lambda s: (s["refused"].get("champion") or {}).get("version") == unapproved,
        "the new champion refused",
    )
    assert status["ready"] and status["variants"]["champion"]["version"] == good
    assert predict(router, example_rows(1)).json()["model_version"] == good
    models.set_alias(MODEL, "champion", good)


@pytest.fixture(scope="module")
def label_challenger(models) -> str:
    """A challenger whose pyfunc returns class labels (strings), not probabilities."""
    return models.register(MODEL, {"output": "label"}, approve=False)


def test_canary_is_sticky_when_the_weight_rises(router, label_challenger):
    users = [f"user-{i}" for i in range(120)]
    answer = set_rollout(
        router, mode="canary", challenger_version=label_challenger, weight_bp=2000, rollout_id="sticky-1"
    )
    assert answer.status_code == 200, answer.text

    def arms() -> dict[str, str]:
        return {u: predict(router, example_rows(1), user=u).headers["x-tollgate-variant"] for u in users}

    low = arms()
    assert low == arms(), "the same user moved between arms at the same weight"
    in_canary = {u for u, arm in low.items() if arm == "challenger"}
    assert 8 <= len(in_canary) <= 45, len(in_canary)
    served = predict(router, example_rows(1), user=sorted(in_canary)[0]).json()
    assert served["variant"] == "challenger" and served["predictions"] in (["yes"], ["no"])

    assert (
        set_rollout(
            router, mode="canary", challenger_version=label_challenger, weight_bp=6000, rollout_id="sticky-1"
        ).status_code
        == 200
    )
    high = arms()
    assert in_canary <= {u for u, arm in high.items() if arm == "challenger"}, "a canary user left the canary"
    assert len([a for a in high.values() if a == "challenger"]) > len(in_canary)


def test_shadow_does_not_change_responses(router, label_challenger):
    from tollgate.serving.predlog import read_log

    rows = example_rows(3)
    before = predict(router, rows, user="shadow-user")
    set_rollout(router, mode="off")
    plain = predict(router, rows, user="shadow-user").json()
    answer = set_rollout(router, mode="shadow", challenger_version=label_challenger, rollout_id="shadow-1")
    assert answer.status_code == 200, answer.text
    ids = []
    for _ in range(10):
        shadowed = predict(router, rows, user="shadow-user")
        ids.append(shadowed.headers["x-request-id"])
        assert shadowed.headers["x-tollgate-variant"] == "champion"
        assert shadowed.json()["predictions"] == plain["predictions"]
    assert before.status_code == 200
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        logged = read_log(router.storage_root)
        joined = logged[logged.request_id.isin(ids)]
        if len(joined) == len(ids):
            break
        time.sleep(0.3)
    assert len(joined) == len(ids)
    assert set(joined.shadow_version) == {label_challenger} and set(joined.shadow_status) == {"ok"}
    assert all(out in ('["yes", "yes", "yes"]', '["no", "no", "no"]') or "yes" in out or "no" in out
               for out in joined.shadow_output)  # fmt: skip
    set_rollout(router, mode="off")


def test_guardrail_aborts_a_failing_canary_within_5_seconds(router, models):
    failing = models.register(MODEL, {"fail_below": -5.0}, approve=False)  # fails on x1 < -5 only
    answer = set_rollout(
        router, mode="canary", challenger_version=failing, weight_bp=10_000, rollout_id="bad-1"
    )
    assert answer.status_code == 200, answer.text
    bad_rows = example_rows(1, start=-10.0)
    for i in range(10):  # the minimum the test router judges on
        served = predict(router, bad_rows, user=f"g{i}")
        assert served.status_code == 200 and served.headers["x-tollgate-variant"] == "champion"  # fallback
    breached = time.monotonic()
    status = router.wait_for(lambda s: s["rollout"]["mode"] == "off", "the guardrail abort", timeout=5)
    assert time.monotonic() - breached < 5
    assert "guardrail: canary error rate" in status["rollout"]["aborted_reason"]
    assert status["variants"]["challenger"] is None


def test_a_rollout_whose_lease_expires_is_aborted_by_the_router(router, label_challenger):
    answer = set_rollout(
        router, mode="canary", challenger_version=label_challenger, weight_bp=500, rollout_id="lease-1",
        lease_seconds=1, owner="evaluate_and_promote/run-1",
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    status = router.wait_for(lambda s: s["rollout"]["mode"] == "off", "the lease abort", timeout=10)
    assert "lease expired" in status["rollout"]["aborted_reason"]
    assert "evaluate_and_promote/run-1" in status["rollout"]["aborted_reason"]


def test_reload_under_a_request_loop_fails_no_request(router, models):
    old = router.status()["variants"]["champion"]["version"]
    failures: list[str] = []
    served: dict[str, int] = {}
    stop = threading.Event()

    def loop() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                request_id = f"loop-{uuid.uuid4().hex[:12]}"
                SENT.append(request_id)
                try:
                    answer = session.post(
                        f"{router.url}/predict", json={"rows": example_rows(2)},
                        headers={"x-request-id": request_id}, timeout=30,
                    )  # fmt: skip
                except requests.RequestException as err:
                    failures.append(repr(err))
                    continue
                if answer.status_code != 200:
                    failures.append(answer.text)
                else:
                    version = answer.json()["model_version"]
                    served[version] = served.get(version, 0) + 1

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        new = models.register(MODEL, {"weights": [2.0, 1.0]})
        models.set_alias(MODEL, "champion", new)
        router.process.send_signal(signal.SIGHUP)
        router.wait_for(lambda s: s["variants"]["champion"]["version"] == new, "the new champion", timeout=30)
        reload = requests.post(f"{router.url}/admin/reload", headers=router.admin(), timeout=60)
        assert reload.status_code == 200
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert served.get(old, 0) > 0 and served.get(new, 0) > 0, served


def test_model_copies_stay_bounded_across_reloads(router):
    """Every load writes a verified copy under <home>/serving/models; only the served models and the
    previous table's stay (a request that read the old table may still use them)."""
    cache = Path(router.env["TOLLGATE_HOME"], "serving", "models", MODEL)
    assert router.status()["variants"]["challenger"] is None
    for _ in range(2):  # without pruning, each forced reload leaves one more copy behind
        before = router.status()["variants"]["champion"]["loaded_at"]
        reload = requests.post(f"{router.url}/admin/reload", headers=router.admin(), timeout=60)
        assert reload.status_code == 200 and reload.json()["variants"]["champion"]["loaded_at"] > before
        copies = sorted(p.name for p in cache.iterdir())
        assert len(copies) == 2, copies  # the champion just loaded and the one it replaced
    served = predict(router, example_rows(1))
    assert served.status_code == 200
    assert sum(name.startswith(f"{served.json()['model_version']}-p") for name in copies) == 2


def test_metrics_parse_with_the_prometheus_parser(router):
    text = requests.get(f"{router.url}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {f.name: f.samples for f in families.values()}
    requests_by_variant = {s.labels["variant"] for s in samples["tollgate_router_requests"]}
    assert {"champion", "challenger"} <= requests_by_variant
    refusals = {s.labels["alias"]: s.value for s in samples["tollgate_router_verification_refusals"]
                if s.name.endswith("_total")}  # fmt: skip
    assert refusals["champion"] >= 1 and refusals["challenger"] >= 1
    champion = router.status()["variants"]["champion"]
    info = [s for s in samples["tollgate_router_model_info"] if s.labels["alias"] == "champion"]
    assert [(s.labels["version"], s.labels["signature_sha256"]) for s in info] == [
        (champion["version"], champion["signature_sha256"])
    ]
    assert "tollgate_router_shadow_queue_depth" in families and "tollgate_router_shadow_dropped" in families
    assert any(s.value > 0 for s in samples["tollgate_router_request_seconds"] if s.name.endswith("_count"))
    aborts = {s.labels["cause"] for s in samples["tollgate_router_rollout_aborts"] if s.value > 0}
    assert {"refused", "guardrail", "lease"} <= aborts


def test_replay_sends_dataset_rows_and_writes_delayed_labels(router, tmp_path):
    import pandas as pd

    from tollgate.serving import replay

    rows = pd.DataFrame(example_rows(12)).assign(user=[f"r{i % 4}" for i in range(12)], outcome=[0, 1] * 6)
    rows.to_parquet(tmp_path / "rows.parquet")
    code = replay.main([
        "--url", router.url, "--data-file", str(tmp_path / "rows.parquet"), "--rate", "100",
        "--max-requests", "10", "--label-column", "outcome", "--key-column", "user",
        "--label-delay-seconds", "60", "--storage-root", router.storage_root,
    ])  # fmt: skip
    assert code == 0
    (labels_file,) = Path(router.storage_root, "labels").rglob("*.parquet")
    labels = pd.read_parquet(labels_file)
    assert len(labels) == 10 and list(labels.label) == [0, 1] * 5  # bounded by --max-requests
    assert ((labels.available_at - labels.sent_at).dt.total_seconds().round() == 60).all()
    SENT.extend(labels.request_id)  # the SIGTERM test finds each of them in the prediction log
    with pytest.raises(replay.ReplayError, match="only sends to a router on this machine"):
        replay.check_target("http://10.1.2.3:8000")


def test_sigterm_flushes_the_log_with_every_request_accounted_for(router):
    from tollgate.serving.predlog import read_log

    for _ in range(30):  # a last burst right before the signal: still in memory when it comes
        assert predict(router, example_rows(1)).status_code == 200
    # uvicorn drains, runs the shutdown (shadow drained, log flushed), then re-raises the signal it caught
    assert router.terminate() in (0, -signal.SIGTERM)
    assert "prediction log flushed" in router.log.read_text()
    logged = read_log(router.storage_root)
    missing = set(SENT) - set(logged.request_id)
    assert not missing, f"{len(missing)} requests missing from the prediction log"
    assert logged.request_id.is_unique
    ok = logged[logged.status == 200]
    assert ok.served_version.notna().all() and ok.features_sha256.str.len().eq(64).all()
    # the model's own time is logged apart from the handler's, so the router's share can be read per request
    assert (ok.model_ms > 0).all() and (ok.model_ms <= ok.latency_ms).all()
    assert Path(router.storage_root, "predictions").is_dir()
    assert any(p.name.startswith("hour=") for p in Path(router.storage_root, "predictions").rglob("*"))
