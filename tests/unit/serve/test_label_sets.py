"""``/v1/classify`` for the two deployed shapes of intent classification: a run that rejects
out-of-scope queries answers its out-of-scope label with ``rejected: true``, and a multi-label
run answers each text's label set in ``predicted_labels`` — each what ``adaptlab predict``
answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.serve.conftest import Server, _compare, serving
from tests.unit.strategies.test_multilabel_compare import _raw as multi_label_config
from tests.unit.strategies.test_out_of_scope_compare import OOS, _experiment

from adaptlab import predict
from adaptlab.serve.app import create_app
from adaptlab.serve.settings import ServeSettings

SETTINGS = ServeSettings()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> dict[str, Path]:
    open_root = tmp_path_factory.mktemp("serve-open")
    config = _experiment(open_root, tiny_encoder, ["knn"], {}, train_oos=False)
    multi_root = tmp_path_factory.mktemp("serve-multi")
    raw = multi_label_config(multi_root, tiny_encoder, ["knn"], {})
    raw["name"] = "multi"
    return {
        "open": _compare(open_root, config.model_dump()) / "runs" / "knn",
        "multi": _compare(multi_root, raw) / "runs" / "knn",
    }


@pytest.fixture(scope="module")
def server(runs: dict[str, Path]) -> Iterator[Server]:
    with serving(create_app([runs["open"]], SETTINGS), SETTINGS) as opened:
        opened.wait_ready()
        yield opened


def _texts(folder: Path) -> list[str]:
    import json

    rows = (folder.parents[1] / "data" / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in rows][:12]


def test_a_rejected_query_is_the_out_of_scope_label_marked_rejected(
    runs: dict[str, Path], server: Server
) -> None:
    texts = _texts(runs["open"])
    with predict.open_model(runs["open"]) as loaded:
        wanted = predict.classify(loaded, texts)
    assert any(p.rejected for p in wanted) and not all(p.rejected for p in wanted)
    with server.client() as client:
        body = client.post("/v1/classify", json={"model": "knn", "input": texts}).json()
    for item, prediction in zip(body["data"], wanted, strict=True):
        assert item["label"] == prediction.label
        assert item.get("rejected", False) == prediction.rejected
        assert (item["label"] == OOS) == prediction.rejected


def test_a_multi_label_run_answers_label_sets(runs: dict[str, Path]) -> None:
    texts = _texts(runs["multi"])
    with predict.open_model(runs["multi"]) as loaded:
        wanted = predict.classify(loaded, texts)
    assert {len(p.labels or ()) for p in wanted} != {1}  # some none or several
    with serving(create_app([runs["multi"]], SETTINGS), SETTINGS) as opened:
        opened.wait_ready()
        with opened.client() as client:
            body = client.post("/v1/classify", json={"model": "knn", "input": texts}).json()
    for item, prediction in zip(body["data"], wanted, strict=True):
        assert item["predicted_labels"] == list(prediction.labels or ())
