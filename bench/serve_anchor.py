"""The anchor of ``bench/serve_load.py``: the same classifier behind a minimal FastAPI endpoint
that calls transformers directly, no adaptlab code.

It loads the folder ``adaptlab export RUN --format hf`` wrote (the encoder with
``AutoModel``, its tokenizer, the head from ``head.safetensors`` as ``classifier.json``
describes it) and answers ``POST /v1/classify`` with ``{"model", "input": str}`` in the
probabilities adaptlab's server returns. What any careful minimal server does is kept: one
prediction at a time (a fast tokenizer shared between threads fails), and ``TCP_NODELAY`` on
the listening socket (without it every keep-alive answer waits ~44 ms for a delayed ACK; see
``bench/RESULTS.md``). No admission control, metrics or request checks beyond FastAPI's own.

    python bench/serve_anchor.py EXPORTED_FOLDER --port 8001
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer


class Request(BaseModel):
    model: str
    input: str


def build(folder: Path) -> FastAPI:
    encoder = AutoModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    spec = json.loads((folder / "classifier.json").read_text(encoding="utf-8"))
    weights = load_file(str(folder / "head.safetensors"))
    lock = threading.Lock()
    app = FastAPI()

    def probabilities(text: str) -> list[float]:
        batch = tokenizer(
            [text], truncation=True, max_length=spec["max_length"], return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            x = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            x = torch.nn.functional.normalize(x, dim=-1)
            for layer in spec["layers"]:
                if layer["type"] == "relu":
                    x = torch.relu(x)
                else:
                    bias = weights[layer["bias"]] if layer["bias"] else None
                    x = torch.nn.functional.linear(x, weights[layer["weight"]], bias)
            return [float(p) for p in x.softmax(-1)[0]]

    @app.post("/v1/classify")
    def classify(request: Request) -> dict[str, object]:
        with lock:
            probs = probabilities(request.input)
        best = max(range(len(probs)), key=probs.__getitem__)
        return {"label": spec["label_names"][best], "probs": probs}

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", args.port))
    uvicorn.Server(uvicorn.Config(build(args.folder), log_level="warning")).run(sockets=[listener])


if __name__ == "__main__":
    main()
