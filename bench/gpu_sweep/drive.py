"""Device-side driver: warm the embedding cache, then workers claim runs from a job list and
run them through adaptlab.compare.run_strategy (the real strategy code). Eval/embedding for the
fitted classifiers is done on the GPU in fp32 (patched here, src/ untouched)."""
import json, os, sys, time, traceback

import torch
from torch import nn

DEV = "cuda"
MODE = sys.argv[1]
EXP = sys.argv[2]


def setup():
    from adaptlab.compare import classification_task, prepare_experiment_data
    from adaptlab.config import load_config
    from adaptlab.strategies.base import no_progress

    exp = load_config(EXP)
    prepared = prepare_experiment_data(exp, no_progress, print)
    return exp, prepared, classification_task(prepared)


def patch():
    import adaptlab.models.encoder as enc

    orig = enc.EncoderClassifier.predict_proba
    state = {"checked": False}

    def pp(self, texts):
        if not state["checked"]:
            state["checked"] = True
            dev = next(self.model.parameters()).device
            try:
                orig(self, texts[:2])
                print(f"[check] unpatched EncoderClassifier.predict_proba OK (model on {dev})", flush=True)
            except Exception as exc:  # noqa: BLE001
                print(f"[check] unpatched EncoderClassifier.predict_proba FAILS (model on {dev}): "
                      f"{type(exc).__name__}: {str(exc)[:200]}", flush=True)
        self.model.to(DEV).eval()
        with torch.no_grad():
            logits = enc.run_batched(
                lambda i, m: self.model(i.to(DEV), m.to(DEV)).float().cpu(),
                self.tokenizer, texts, self.max_length, 256)
        return torch.softmax(logits.float(), dim=-1).numpy()

    def embed(self, texts):
        self.model.to(DEV).eval()

        def pooled(i, m):
            i, m = i.to(DEV), m.to(DEV)
            h = self.model(input_ids=i, attention_mask=m)[0]
            return nn.functional.normalize(enc.mean_pool(h, m), dim=-1).float().cpu()

        with torch.no_grad():
            v = enc.run_batched(pooled, self.tokenizer, texts, self.max_length, 256)
        return v.float().numpy()

    enc.EncoderClassifier.predict_proba = pp
    enc.FrozenEncoder.embed = embed


if MODE == "warm":
    from adaptlab.models.encoder import embed_texts, load_encoder

    exp, prepared, task = setup()
    tok, model = load_encoder(exp.model.base_model)
    model = model.to(DEV)

    class W(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return (self.m(input_ids=input_ids.to(DEV), attention_mask=attention_mask.to(DEV))[0].float().cpu(),)

    t = time.time()
    with torch.no_grad():
        e = embed_texts(exp.model.base_model, task.train_texts, exp.model.sequence_len, encoder=(tok, W(model)))
    import pickle
    try:
        with open("/tmp/task.pkl", "wb") as f:
            pickle.dump((prepared, task), f)
    except Exception as exc:  # noqa: BLE001
        print(f"[warm] pickle failed: {exc}", flush=True)
    print(f"[warm] {e.shape} train embeddings cached in {time.time()-t:.1f}s; train={len(task.train_texts)} eval={len(task.eval_texts)} labels={task.num_labels}", flush=True)
    sys.exit(0)

# worker
wid, jobs_file, claims, deadline, results = sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]), sys.argv[7]
torch.set_num_threads(int(os.environ.get("WORKER_THREADS", "2")))
patch()
from adaptlab.compare import run_strategy  # noqa: E402
from adaptlab.strategies.base import no_progress  # noqa: E402

from adaptlab.config import load_config  # noqa: E402
import pickle  # noqa: E402
try:
    exp = load_config(EXP)
    with open("/tmp/task.pkl", "rb") as f:
        prepared, task = pickle.load(f)
except Exception as exc:  # noqa: BLE001
    print(f"[w{wid}] pickle load failed ({exc}); preparing", flush=True)
    exp, prepared, task = setup()
for name in [l.strip() for l in open(jobs_file) if l.strip() and not l.startswith("#")]:
    try:
        os.mkdir(os.path.join(claims, name))
    except FileExistsError:
        continue
    if time.time() > deadline:
        print(f"[w{wid}] deadline: not starting {name}", flush=True)
        with open(results, "a") as f:
            f.write(f"{name}\tSKIPPED(deadline)\n")
        continue
    t = time.time()
    print(f"[w{wid}] start {name}", flush=True)
    try:
        folder = run_strategy(name, exp, prepared, task, no_progress, lambda s: print(f"[w{wid}] {s}", flush=True), force=True)
        ev = json.loads((folder.path / "eval.json").read_text())
        cost = json.loads((folder.path / "cost.json").read_text())
        m = ev["metrics"]
        line = (f"{name}\t{m['accuracy']*100:.2f}\tf1={m['macro_f1']*100:.2f}\tsteps={cost.get('train_steps')}"
                f"\ttrain_s={cost.get('train_wall_s')}\tfit_s={cost.get('fit_wall_s')}\twall={time.time()-t:.0f}")
    except Exception as exc:  # noqa: BLE001
        line = f"{name}\tFAILED\t{type(exc).__name__}: {str(exc)[:300]}"
        traceback.print_exc()
    print(f"[w{wid}] RESULT {line}", flush=True)
    with open(results, "a") as f:
        f.write(line + "\n")
