"""``adaptlab rate``: a local web page where people rate two runs' answers blind.

One HTML page (inline CSS and script: it loads nothing from anywhere else, and its
Content-Security-Policy says so to the browser) asks for the rater's name, then shows one eval
request at a time with the two runs' answers as A and B, never by run name, and four choices.
The server, not the page, decides which answer is A (:func:`adaptlab.ratings.assignments`); the
page gets an opaque token for what it was shown and sends it back with the choice, so a choice
made on anything else is refused. The statistics are :func:`adaptlab.ratings.human_ratings_summary`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Strict

from adaptlab.ratings import (
    Assignment,
    PairAnswers,
    RatingError,
    RatingStore,
    assignments,
    checked_rater,
    default_pair,
    eval_requests,
    human_ratings_summary,
    read_pair,
)
from adaptlab.serve.network import LOOPBACK_NAMES, is_loopback, listening_socket

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Log = Callable[[str], None]


class RatingPost(BaseModel):
    """What the page sends for one choice."""

    model_config = ConfigDict(extra="forbid")

    rater: str
    item: Annotated[int, Strict()]
    token: str
    """The token the page was given with the item: the sides it showed."""
    choice: str
    """``A``, ``B``, ``tie`` or ``both_bad``."""


def rating_app(
    experiment_folder: Path,
    runs: tuple[str, str] | None = None,
    *,
    allowed_hosts: Sequence[str] = LOOPBACK_NAMES,
) -> FastAPI:
    """The rating page and its JSON API for two runs of ``experiment_folder`` (default:
    :func:`adaptlab.ratings.default_pair`), on the eval items both answered. Everything is
    read and checked here, before any request: :class:`RatingError` names what is missing."""
    if not experiment_folder.is_dir():
        raise RatingError(f"{experiment_folder}: not an experiment folder (no such folder)")
    answers = read_pair(experiment_folder, runs or default_pair(experiment_folder))
    requests = eval_requests(experiment_folder, answers)
    store = RatingStore.open(experiment_folder)  # only once it is known to be an experiment
    # FastAPI's /docs pages load their scripts from a CDN: this server has none of them.
    app = FastAPI(title="adaptlab rate", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.state.answers = answers
    app.state.store = store

    def next_state(rater: str) -> dict[str, Any]:
        return _next_state(store, answers, requests, rater)

    @app.exception_handler(RatingError)
    async def refused(request: Request, exc: RatingError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400, headers=PAGE_HEADERS)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = "; ".join(_reason(error) for error in exc.errors())
        return JSONResponse({"detail": reasons}, status_code=422, headers=PAGE_HEADERS)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers=PAGE_HEADERS)

    @app.get("/api/next")
    def next_item(rater: str) -> JSONResponse:
        return JSONResponse(next_state(checked_rater(rater)), headers=PAGE_HEADERS)

    @app.post("/api/ratings")
    def rate(post: RatingPost) -> JSONResponse:
        rater = checked_rater(post.rater)
        assignment = _assigned(rater, answers, post.item, post.token)
        store.record(assignment, assignment.run_choice(post.choice))
        return JSONResponse(next_state(rater), headers=PAGE_HEADERS)

    @app.get("/api/progress")
    def progress(rater: str) -> JSONResponse:
        done = store.progress(checked_rater(rater), answers).to_dict()
        return JSONResponse(done, headers=PAGE_HEADERS)

    @app.get("/api/summary")
    def summary() -> JSONResponse:
        payload = human_ratings_summary(experiment_folder) or {"pairs": []}
        return JSONResponse(payload, headers=PAGE_HEADERS)

    return app


def _next_state(
    store: RatingStore,
    answers: PairAnswers,
    requests: dict[int, list[dict[str, str]]],
    rater: str,
) -> dict[str, Any]:
    """What the page shows ``rater`` next: their progress and the next unrated item, its
    request and the two answers as A and B, with the token of that assignment."""
    progress = store.progress(rater, answers).to_dict()
    assignment = store.next_item(rater, answers)
    if assignment is None:
        return {"done": True, "progress": progress}
    texts = dict(zip(answers.runs, answers.answers[assignment.item], strict=True))
    return {
        "done": False,
        "item": assignment.item,
        "token": assignment.token,
        "request": requests[assignment.item],
        "answers": {"A": texts[assignment.left], "B": texts[assignment.right]},
        "progress": progress,
    }


def _assigned(rater: str, answers: PairAnswers, item: int, token: str) -> Assignment:
    """The assignment ``rater`` was shown for ``item``, refused when the page showed another."""
    assignment = next((a for a in assignments(rater, answers) if a.item == item), None)
    if assignment is None:
        raise HTTPException(404, f"eval item {item} is not one of the items rated here")
    if token != assignment.token:
        raise HTTPException(
            409,
            "this item was shown with other answers or sides than the server assigned "
            "(a run was redone, or the page is stale): reload the page",
        )
    return assignment


def _reason(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ())[1:]) or "request"
    return f"{where}: {error.get('msg', 'invalid')}"


def serve_ratings(
    experiment_folder: Path,
    runs: tuple[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    log: Log = print,
) -> None:
    """Serve the rating page until interrupted (Ctrl+C). Bound to loopback by default: the page
    has no login, so anyone who can reach it can rate."""
    hosts = LOOPBACK_NAMES if host in LOOPBACK_NAMES else ("*",)
    app = rating_app(experiment_folder, runs, allowed_hosts=hosts)
    listener = listening_socket(host, port, RatingError)
    answers: PairAnswers = app.state.answers
    shown_host = f"[{host}]" if ":" in host else host
    if not is_loopback(host):
        log(f"warning: listening on {host}: anyone who can reach it can rate (there is no login)")
    log(
        f"Rating '{answers.runs[0]}' against '{answers.runs[1]}' on {len(answers.answers)} "
        f"eval items; ratings are saved in {app.state.store.path}"
    )
    log(f"Rating page: http://{shown_host}:{listener.getsockname()[1]}/ (Ctrl+C stops it)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[listener])


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>adaptlab rate</title>
<link rel="icon" href="data:,">
<style>
  :root { color-scheme: light; --line: #d0d4da; --muted: #5b6472; --accent: #1f5fbf; }
  body { font: 16px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 72rem;
         padding: 1rem 1.5rem 3rem; color: #1b1f24; }
  header { display: flex; justify-content: space-between; align-items: baseline; gap: 1rem; }
  h1 { font-size: 1.35rem; margin: 0.5rem 0; }
  h2 { font-size: 1.05rem; margin: 0 0 0.4rem; }
  #progress { font-weight: 600; font-variant-numeric: tabular-nums; }
  .meta { color: var(--muted); margin: 0.25rem 0 1rem; }
  pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0;
        font: 0.95rem/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; }
  .message { border-left: 3px solid var(--line); padding: 0.3rem 0.8rem; margin: 0 0 0.6rem; }
  .role { font-size: 0.8rem; text-transform: uppercase; letter-spacing: 0.05em;
          color: var(--muted); }
  .answers { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; margin: 1.2rem 0; }
  @media (max-width: 48rem) { .answers { grid-template-columns: 1fr; } }
  .answer { border: 1px solid var(--line); border-radius: 6px; padding: 0.8rem; }
  pre.empty::before { content: "(empty answer)"; color: var(--muted); font-style: italic; }
  .choices { display: flex; flex-wrap: wrap; gap: 0.6rem; }
  button { font: inherit; padding: 0.5rem 1rem; border: 1px solid var(--line);
           border-radius: 6px; background: #f5f7fa; cursor: pointer; }
  button:hover:not(:disabled) { border-color: var(--accent); }
  button:disabled { opacity: 0.5; cursor: wait; }
  button.link { border: none; background: none; padding: 0; color: var(--accent);
                text-decoration: underline; }
  kbd { font: 0.8rem ui-monospace, monospace; border: 1px solid var(--line);
        border-radius: 3px; padding: 0 0.3rem; background: #fff; }
  input { font: inherit; padding: 0.4rem 0.6rem; width: 18rem; max-width: 100%; }
  #error { color: #a4161a; font-weight: 600; }
  .note { color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>Which answer is better?</h1>
  <p id="progress" aria-live="polite"></p>
</header>
<section id="who">
  <form id="name-form">
    <label for="rater">Your name</label>
    <input id="rater" name="rater" maxlength="64" autocomplete="name" required>
    <button type="submit" id="start">Start rating</button>
  </form>
  <p class="note">Your ratings are saved under this name; the same name resumes where you
  stopped. The two answers are from two systems, shown in an order of their own each time.</p>
</section>
<main id="rating" hidden>
  <p class="meta">Rating as <strong id="rater-name"></strong>
    (<button type="button" class="link" id="change-name">change</button>) ·
    eval item <span id="item"></span></p>
  <section id="request" aria-label="The request"></section>
  <div class="answers">
    <section class="answer"><h2>A</h2><pre id="answer-a"></pre></section>
    <section class="answer"><h2>B</h2><pre id="answer-b"></pre></section>
  </div>
  <div class="choices">
    <button type="button" data-choice="A">A is better <kbd>1</kbd> <kbd>a</kbd></button>
    <button type="button" data-choice="B">B is better <kbd>2</kbd> <kbd>b</kbd></button>
    <button type="button" data-choice="tie">Tie <kbd>3</kbd> <kbd>t</kbd></button>
    <button type="button" data-choice="both_bad">Both bad <kbd>4</kbd> <kbd>x</kbd></button>
  </div>
</main>
<section id="finished" hidden>
  <h2>All rated</h2>
  <p id="finished-text"></p>
</section>
<p id="error" role="alert" hidden></p>
<script>
"use strict";
const STORED_NAME = "adaptlab.rate.rater";
const SHORTCUTS = {"1": "A", "a": "A", "2": "B", "b": "B", "3": "tie", "t": "tie",
                   "4": "both_bad", "x": "both_bad"};
const byId = (id) => document.getElementById(id);
let rater = null;
let current = null;
let busy = false;

async function call(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : "";
    throw new Error(detail || `the server answered ${response.status}`);
  }
  return body;
}

function showError(message) {
  byId("error").textContent = message || "";
  byId("error").hidden = !message;
}

function showText(element, text) {
  element.textContent = text;
  element.classList.toggle("empty", text === "");
}

function render(state) {
  byId("progress").textContent = `${state.progress.done} / ${state.progress.total} rated`;
  current = state.done ? null : state;
  byId("rating").hidden = state.done;
  byId("finished").hidden = !state.done;
  if (state.done) {
    byId("finished-text").textContent =
      `All ${state.progress.total} items are rated. Thank you, ${rater}!`;
    return;
  }
  byId("item").textContent = String(state.item);
  const request = byId("request");
  request.replaceChildren();
  for (const message of state.request) {
    const block = document.createElement("div");
    block.className = "message";
    const role = document.createElement("div");
    role.className = "role";
    role.textContent = message.role;
    const content = document.createElement("pre");
    showText(content, message.content);
    block.append(role, content);
    request.append(block);
  }
  showText(byId("answer-a"), state.answers.A);
  showText(byId("answer-b"), state.answers.B);
}

function setBusy(value) {
  busy = value;
  for (const button of document.querySelectorAll("[data-choice]")) button.disabled = value;
}

async function start(name) {
  const wanted = name.trim();
  if (!wanted) { showError("Enter your name first."); return; }
  showError("");
  try {
    const state = await call("api/next?rater=" + encodeURIComponent(wanted));
    rater = wanted;
    localStorage.setItem(STORED_NAME, rater);
    byId("rater-name").textContent = rater;
    byId("who").hidden = true;
    render(state);
  } catch (error) {
    showError(error.message);
  }
}

async function choose(choice) {
  if (busy || !current) return;
  setBusy(true);
  showError("");
  try {
    render(await call("api/ratings", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({rater, item: current.item, token: current.token, choice}),
    }));
  } catch (error) {
    showError(error.message);
  } finally {
    setBusy(false);
  }
}

byId("name-form").addEventListener("submit", (event) => {
  event.preventDefault();
  start(byId("rater").value);
});
byId("change-name").addEventListener("click", () => {
  current = null;
  byId("rating").hidden = true;
  byId("finished").hidden = true;
  byId("who").hidden = false;
  byId("rater").focus();
});
for (const button of document.querySelectorAll("[data-choice]")) {
  button.addEventListener("click", () => choose(button.dataset.choice));
}
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (target instanceof HTMLInputElement || event.ctrlKey || event.metaKey || event.altKey
      || event.repeat) return;
  const choice = SHORTCUTS[event.key.toLowerCase()];
  if (choice) {
    event.preventDefault();
    choose(choice);
  }
});
const saved = localStorage.getItem(STORED_NAME);
if (saved) {
  byId("rater").value = saved;
  start(saved);
}
</script>
</body>
</html>
"""
