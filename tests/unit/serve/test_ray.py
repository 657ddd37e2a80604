"""``adaptlab serve --ray``: the server's app on Ray Serve, against a Ray instance started here
(two CPUs, loopback) once for the module: the tiny classifier run served as its run folder and
as a registered version (two model ids), answering what ``adaptlab predict`` answers;
``/ready``; the replica and autoscaling settings read back from Ray Serve; each model kept on
the replica holding it (multiplexing); no Ray process left after shutdown. Without Ray these
tests skip, except under CI (``.ci/run`` installs the extra). The settings, their mapping to
Ray's options, and the error without Ray are tested either way."""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pydantic import ValidationError
from tests.unit.optional import free_port, require_extra
from tests.unit.serve.conftest import SLOW, Gate
from tests.unit.serve.test_cli_serve import CLEAN_EXITS
from typer.testing import CliRunner

from adaptlab import predict
from adaptlab.cli import app as cli
from adaptlab.registry import Registry
from adaptlab.serve import ray_deployment
from adaptlab.serve.ray_deployment import (
    APPLICATION,
    DEPLOYMENT,
    INSTALL,
    MODEL_HEADER,
    REPLICA_HEADER,
    RayServeError,
    RaySettings,
    ReplicaApp,
    deployment_options,
    model_catalog,
)
from adaptlab.serve.settings import ServeSettings

DEPLOY_DEADLINE_S = 180.0
STOP_DEADLINE_S = 60.0
TEXTS = ["my card pin does not work", "send a sepa transfer to my payee"]
REGISTERED = "intent@champion"


# --------------------------------------------------------------------------- without Ray


def test_a_fixed_count_or_autoscaling_maps_to_rays_options() -> None:
    settings = ServeSettings(max_concurrency=2, max_queue=3, shutdown_timeout_s=7)
    fixed = deployment_options(RaySettings(replicas=3, replica_cpus=0.5), settings)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"]["num_cpus"] == 0.5
    # the apps a replica holds (3 by default) admit (2 + 3) each: Ray sends one more
    assert fixed["max_ongoing_requests"] == 16 and fixed["graceful_shutdown_timeout_s"] == 7
    scaled = deployment_options(
        RaySettings(min_replicas=0, max_replicas=4, target_ongoing_requests=1.5), settings
    )
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "target_ongoing_requests": 1.5,
    }
    only_most = deployment_options(RaySettings(max_replicas=2), settings)["autoscaling_config"]
    assert only_most == {"min_replicas": 1, "max_replicas": 2}
    assert deployment_options(RaySettings(), settings)["num_replicas"] == 1


def test_the_environment_replicas_need_is_forwarded_and_no_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_TOKEN", "secret")
    options = deployment_options(RaySettings(), ServeSettings())
    forwarded = options["ray_actor_options"]["runtime_env"]["env_vars"]
    assert forwarded["ADAPTLAB_CACHE"] == str(tmp_path) and "HF_TOKEN" not in forwarded


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"replicas": 2, "max_replicas": 3}, "replicas"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas"),
        ({"min_replicas": 2}, None),  # max follows min
        ({"replicas": 0}, "replicas"),
        ({"replica_cpus": 0}, "replica_cpus"),
        ({"models_per_replica": 0}, "models_per_replica"),
    ],
)
def test_settings_are_checked_naming_the_field(fields: dict[str, Any], named: str | None) -> None:
    if named is None:
        assert RaySettings(**fields).autoscaling_bounds == (2, 2)
        return
    with pytest.raises(ValidationError, match=named):
        RaySettings(**fields)


def test_the_catalog_names_models_as_the_plain_server_does(
    classifier_run: Path, tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    Registry(root, create=True).promote(
        classifier_run, "intent", approver="ana@bank", reason="best", alias="champion"
    )
    catalog = model_catalog([str(classifier_run), REGISTERED], root)
    assert catalog == {"frozen": str(classifier_run.resolve()), REGISTERED: REGISTERED}
    with pytest.raises(RayServeError, match="two models are named 'frozen'"):
        model_catalog([str(classifier_run), str(classifier_run)], root)
    with pytest.raises(Exception, match="nope"):
        model_catalog(["nope@champion"], root)
    with pytest.raises(Exception, match="no such run folder"):
        model_catalog([str(tmp_path / "missing")], root)


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray: ImportError
    with pytest.raises(RayServeError, match=r"pip install 'adaptlab\[ray\]'"):
        ray_deployment.import_ray()


def test_the_command_checks_its_ray_options(
    classifier_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    without = runner.invoke(cli, ["serve", str(classifier_run), "--ray-replicas", "2"])
    assert without.exit_code == 2 and "--ray" in without.output
    both = ["serve", str(classifier_run), "--ray", "--ray-replicas", "2", "--ray-max-replicas", "3"]
    mixed = runner.invoke(cli, both)
    assert mixed.exit_code == 2 and "replicas" in mixed.output
    any_port = runner.invoke(cli, ["serve", str(classifier_run), "--ray", "--port", "0"])
    assert any_port.exit_code == 2 and "--port 0" in any_port.output
    monkeypatch.setitem(sys.modules, "ray", None)
    missing = runner.invoke(cli, ["serve", str(classifier_run), "--ray"])
    assert missing.exit_code == 2 and "adaptlab[ray]" in missing.output
    assert "Traceback" not in missing.output


class Multiplexer:
    """Ray Serve's multiplexer as a replica sees it, without Ray: the held model, else the
    model opened, the least recently used one closed first past ``limit`` (popped, then its
    ``__del__`` awaited, as Ray does)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.models: OrderedDict[str, Any] = OrderedDict()
        self.replica: ReplicaApp | None = None
        self.lock = asyncio.Lock()

    async def __call__(self, name: str) -> Any:
        if name in self.models:
            self.models.move_to_end(name)
            return self.models[name]
        async with self.lock:
            if name not in self.models:
                if len(self.models) >= self.limit:
                    _, oldest = self.models.popitem(last=False)
                    await oldest.__del__()
                assert self.replica is not None
                self.models[name] = await self.replica.open(name)
        return self.models[name]


ROUTED: contextvars.ContextVar[str] = contextvars.ContextVar("routed", default="")


def replica_of(catalog: dict[str, str], registry: Path, limit: int) -> tuple[ReplicaApp, Any]:
    """A replica's app on a :class:`Multiplexer`, and an ASGI app in front of it that reads the
    routing header as Ray's proxy does."""
    multiplexer = Multiplexer(limit)
    replica = ReplicaApp(
        catalog,
        ServeSettings(max_concurrency=1),
        registry,
        open_model=multiplexer,
        requested_model=ROUTED.get,
        replica="r1",
    )
    multiplexer.replica = replica

    async def proxy(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers", []))
        ROUTED.set(headers.get(MODEL_HEADER.encode(), b"").decode())
        await replica(scope, receive, send)

    return replica, proxy


def test_a_replica_routes_by_header_or_body_and_closes_models_without_failing_requests(
    classifier_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gate: Gate
) -> None:
    """The replica's dispatch without Ray, one model held at a time: each request reaches the
    model it names, the replica's own routes describe what it holds, and a model closed to open
    another first finishes the request it is answering."""
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "registry"
    Registry(root, create=True).promote(
        classifier_run, "intent", approver="ana@bank", reason="best", alias="champion"
    )
    catalog = model_catalog([str(classifier_run), REGISTERED], root)
    replica, proxy = replica_of(catalog, root, limit=1)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=proxy)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert (await client.get("/ready")).status_code == 503  # holds no model yet
            for name in catalog:
                body = {"model": name, "input": TEXTS}
                answer = await client.post("/v1/classify", json=body)
                assert answer.status_code == 200 and answer.json()["model"] == name
                assert answer.headers[REPLICA_HEADER] == "r1"
            assert list(replica.held) == [REGISTERED]
            cards = (await client.get("/v1/models")).json()["data"]
            assert cards[0] == {
                "id": "frozen",
                "object": "model",
                "owned_by": "adaptlab",
                "root": catalog["frozen"],
            }
            assert cards[1]["id"] == REGISTERED and cards[1]["root"] == "intent:1"
            metrics = (await client.get("/metrics")).text
            assert f'adaptlab_requests_total{{model="{REGISTERED}"' in metrics
            # the header alone picks the model; a body naming another is refused
            routed = {MODEL_HEADER: REGISTERED}
            assert (await client.get("/ready", headers=routed)).status_code in (200, 503)
            body = {"model": "frozen", "input": "x"}
            refused = await client.post("/v1/classify", json=body, headers=routed)
            assert refused.status_code == 422 and "must agree" in refused.text
            unknown = await client.post("/v1/classify", json={"model": "nope", "input": "x"})
            assert unknown.status_code == 404 and REGISTERED in unknown.text
            # On the held model, one slow request computing and one queued behind it (one slot),
            # then a request for the other model, which makes the replica close this one.
            held = {"model": REGISTERED, "input": SLOW}
            slow = asyncio.create_task(client.post("/v1/classify", json=held))
            while not gate.entered.is_set():
                await asyncio.sleep(0.01)
            queued = asyncio.create_task(client.post("/v1/classify", json=held))
            await asyncio.sleep(0.2)
            other = asyncio.create_task(
                client.post("/v1/classify", json={"model": "frozen", "input": "x"})
            )
            await asyncio.sleep(0.2)
            assert not other.done()  # the held model is closing: it waits for both
            gate.open()
            answers = [await slow, await queued, await other]
            assert [answer.status_code for answer in answers] == [200, 200, 200]
            assert list(replica.held) == ["frozen"]

    asyncio.run(scenario())


# --------------------------------------------------------------------------- on Ray


@dataclass
class Deployed:
    url: str
    catalog: dict[str, str]
    ray_settings: RaySettings


def _descendants() -> set[psutil.Process]:
    return set(psutil.Process().children(recursive=True))


def _deploy_within(deadline_s: float, *args: Any) -> None:
    """:func:`ray_deployment.deploy`, failing the test past ``deadline_s`` (Ray waits without
    end for a replica it cannot place)."""
    failure: list[BaseException] = []

    def deploying() -> None:
        try:
            ray_deployment.deploy(*args)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=deploying, daemon=True)
    thread.start()
    thread.join(deadline_s)
    assert not thread.is_alive(), f"the deployment did not start within {deadline_s} s"
    if failure:
        raise failure[0]


@pytest.fixture(scope="module")
def deployed(classifier_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """The classifier served twice (its folder, its registered version) by two replicas that
    hold one model each, autoscaling up to three; Ray and every process it started are gone
    after the module."""
    require_extra("ray.serve", INSTALL)
    folder = tmp_path_factory.mktemp("ray")
    root = folder / "registry"
    Registry(root, create=True).promote(
        classifier_run, "intent", approver="ana@bank", reason="best", alias="champion"
    )
    settings = ServeSettings(port=free_port(), max_concurrency=2, max_queue=4)
    ray_settings = RaySettings(
        min_replicas=2,
        max_replicas=3,
        target_ongoing_requests=2,
        replica_cpus=0.5,
        models_per_replica=1,
    )
    catalog = model_catalog([str(classifier_run), REGISTERED], root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTLAB_CACHE", str(folder / "cache"))  # where replicas check out
        # The encoder's ONNX graph, cached once here: replicas starting together would each
        # build it, and the build is not safe across processes (models/onnx_encoder.py).
        with predict.open_model(classifier_run):
            pass
        # Processes of other fixtures (a session's MLflow server) are not Ray's to end.
        before = _descendants()
        started = ray_deployment.start_ray(num_cpus=2, log_to_driver=False)
        assert started, "a Ray instance was already running in the test process"
        ray_processes: set[psutil.Process] = set()
        try:
            _deploy_within(DEPLOY_DEADLINE_S, catalog, root, settings, ray_settings)
            ray_processes = _descendants() - before
            yield Deployed(f"http://127.0.0.1:{settings.port}", catalog, ray_settings)
        finally:
            ray_processes |= _descendants() - before
            ray_deployment.stop(started_here=True)
            _gone, alive = psutil.wait_procs(list(ray_processes), timeout=STOP_DEADLINE_S)
            assert not alive, f"Ray left processes behind: {alive}"


@pytest.fixture(scope="module")
def client(deployed: Deployed) -> Iterator[httpx.Client]:
    def no_server_error(response: httpx.Response) -> None:
        allowed = response.request.url.path == "/ready" and response.status_code == 503
        assert response.status_code < 500 or allowed, (response.request.url, response.read())

    hooks = {"response": [no_server_error]}
    with httpx.Client(base_url=deployed.url, timeout=60, event_hooks=hooks) as opened:
        yield opened


def test_both_models_answer_what_predict_answers(
    client: httpx.Client, deployed: Deployed, classifier_run: Path
) -> None:
    with predict.open_model(classifier_run) as loaded:
        wanted = predict.classify(loaded, TEXTS, top_k=3)
        labels = list(loaded.label_names)
    for name in deployed.catalog:
        routed = {MODEL_HEADER: name}
        for headers in (routed, {}):  # routed by Ray, or only named in the body
            answer = client.post(
                "/v1/classify", json={"model": name, "input": TEXTS}, headers=headers
            )
            body = answer.json()
            assert answer.status_code == 200 and body["model"] == name, body
            for item, prediction in zip(body["data"], wanted, strict=True):
                assert item["label"] == prediction.label and item["labels"] == labels
                probabilities = [prediction.probabilities[n] for n in labels]
                assert item["probs"] == pytest.approx(probabilities, abs=1e-6)


def ready(client: httpx.Client, headers: dict[str, str], seconds: float = 60) -> Any:
    """``/ready``'s answer once 200 (a model just opened warms up first)."""
    deadline = time.monotonic() + seconds
    while (answer := client.get("/ready", headers=headers)).status_code != 200:
        assert answer.status_code == 503, answer.text
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.1)
    return answer.json()


def test_ready_health_and_the_models_listed(client: httpx.Client, deployed: Deployed) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    replica = ready(client, {})  # the models the answering replica holds, one by the settings
    assert replica["status"] == "ready" and len(replica["models"]) == 1
    assert set(replica["models"]) <= set(deployed.catalog)
    registered = ready(client, {MODEL_HEADER: REGISTERED})
    assert registered["models"] == [REGISTERED]
    listed = client.get("/v1/models").json()["data"]
    assert [card["id"] for card in listed] == list(deployed.catalog)
    assert all(card["object"] == "model" and card["owned_by"] == "adaptlab" for card in listed)


def test_errors_keep_the_plain_servers_shape(client: httpx.Client, deployed: Deployed) -> None:
    unknown = client.post("/v1/classify", json={"model": "nope", "input": "x"})
    assert unknown.status_code == 404
    assert "frozen" in unknown.json()["error"]["message"]
    assert REGISTERED in unknown.json()["error"]["message"]
    disagree = client.post(
        "/v1/classify", json={"model": "frozen", "input": "x"}, headers={MODEL_HEADER: REGISTERED}
    )
    assert disagree.status_code == 422 and disagree.json()["error"]["param"] == "model"
    invalid = client.post("/v1/classify", json={"model": "frozen", "input": []})
    assert invalid.status_code == 422 and invalid.json()["error"]["param"] == "input"
    large = client.post("/v1/classify", json={"model": "frozen", "input": "x" * 2_000_000})
    assert large.status_code == 413
    foreign = client.get("/health", headers={"host": "example.com"})
    assert foreign.status_code == 400


def test_replica_settings_reach_ray_serve(deployed: Deployed) -> None:
    from ray import serve
    from ray.serve.context import _get_global_client

    status = serve.status().applications[APPLICATION].deployments[DEPLOYMENT]
    assert str(status.status).endswith("HEALTHY")
    assert sum(status.replica_states.values()) == 2  # min_replicas
    # Ray Serve's public status has the counts only; the applied config is in its details.
    details = _get_global_client().get_serve_details()
    config = details["applications"][APPLICATION]["deployments"][DEPLOYMENT]["deployment_config"]
    scaling = config["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (2, 3)
    assert scaling["target_ongoing_requests"] == 2
    assert config["ray_actor_options"]["num_cpus"] == 0.5
    assert config["max_ongoing_requests"] == (2 + 4) * 1 + 1


def test_each_model_stays_on_the_replica_holding_it(client: httpx.Client) -> None:
    """One model per replica: were requests not routed by model, the two would take turns on
    both replicas, each request closing the other's model."""

    def replica_of(name: str) -> str:
        answer = client.post(
            "/v1/classify", json={"model": name, "input": "hi"}, headers={MODEL_HEADER: name}
        )
        assert answer.status_code == 200, answer.text
        return answer.headers[REPLICA_HEADER]

    names = ["frozen", REGISTERED]
    # Each held somewhere. Ray's router learns which replica holds a model asynchronously (the
    # replica tells the controller, which tells the router): on a busy machine that took more
    # than a second, and a request sent before it lands anywhere. So wait, boundedly, until
    # two rounds in a row agree and the models sit on different replicas; then measure.
    deadline = time.monotonic() + 30.0
    while True:
        first = {name: replica_of(name) for name in names}
        again = {name: replica_of(name) for name in names}
        settled = first == again and len(set(first.values())) == len(names)
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    seen: dict[str, set[str]] = {name: set() for name in names}
    for _ in range(6):
        for name in names:
            seen[name].add(replica_of(name))
    assert all(len(replicas) == 1 for replicas in seen.values()), seen
    assert seen["frozen"] != seen[REGISTERED], seen


@pytest.mark.integration
def test_the_command_deploys_on_ray_until_interrupted(classifier_run: Path, tmp_path: Path) -> None:
    """``adaptlab serve RUN --ray`` as a user runs it: its own local Ray, answers on loopback,
    and Ctrl+C takes the deployment and Ray down, exiting as the plain server does (130)."""
    require_extra("ray.serve", INSTALL)
    port = free_port()
    command = [sys.executable, "-c", "from adaptlab.cli import main; main()", "serve"]
    options = ["--ray", "--ray-replicas", "1", "--ray-replica-cpus", "0.5", "--port", str(port)]
    process = subprocess.Popen(
        [*command, str(classifier_run), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "ADAPTLAB_CACHE": str(tmp_path / "cache")},
        start_new_session=True,  # its whole group is ended if the test fails midway
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")))
    reader.start()
    serving = f"on Ray Serve at http://127.0.0.1:{port}/v1"
    ray_processes: set[psutil.Process] = set()
    try:
        deadline = time.monotonic() + DEPLOY_DEADLINE_S
        # Ctrl+C before the command says it serves interrupts the deployment instead.
        while not any(serving in line for line in lines):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        assert client_ready(f"http://127.0.0.1:{port}")
        classified = httpx.post(
            f"http://127.0.0.1:{port}/v1/classify",
            json={"model": "frozen", "input": TEXTS[0]},
            timeout=30,
        )
        assert classified.status_code == 200 and classified.json()["data"][0]["label"]
        ray_processes = set(psutil.Process(process.pid).children(recursive=True))
        process.send_signal(signal.SIGINT)
        process.wait(STOP_DEADLINE_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        reader.join(30)
    output = "".join(lines)
    assert process.returncode in CLEAN_EXITS and "Traceback" not in output, output
    assert "replicas 1 RUNNING" in output and "drift monitoring" in output
    _gone, alive = psutil.wait_procs(list(ray_processes), timeout=STOP_DEADLINE_S)
    assert not alive, f"Ray left processes behind: {alive}"


def client_ready(url: str) -> bool:
    with httpx.Client(base_url=url, timeout=30) as opened:
        return bool(ready(opened, {})["status"] == "ready")
