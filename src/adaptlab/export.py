"""Export a finished run or a registered version in the forms other tools load.

``adaptlab export TARGET --format hf|peft|onnx OUT`` loads the model through
:func:`adaptlab.predict.open_model` (the path ``predict`` and the server take, so what is
exported is what they answer with) and writes:

- ``hf``: a folder plain ``transformers`` loads. A generator with weights of its own: the
  merged model (safetensors), its tokenizer with the chat template, and a generation config
  with the run's greedy decoding (``AutoModelForCausalLM``). An encoder classifier: no
  transformers class pools by the mean for BERT-style encoders, so the folder holds the
  encoder (``AutoModel``), its tokenizer, the label map in ``config.json``, the head
  (``head.safetensors``) and ``classifier.json`` describing the pooling and the head's layers;
  its ``README.md`` has the dozen lines that give the probabilities.
- ``peft``: the run's PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``),
  with the base model named by its hub name, for ``PeftModel.from_pretrained`` and vLLM's
  ``--lora-modules``; an encoder classifier's head and label map beside it.
- ``onnx``: an encoder classifier as one graph, token ids and attention mask in,
  probabilities out, with its tokenizer and label map (also in the graph's metadata).

A classifier is exported when it follows the
:class:`~adaptlab.strategies.base.PooledClassifier` protocol; a generator when its strategy
trains (its profile's method is not ``none``): what it is decides, never its strategy's name.
Anything else is refused with what its artefact is and which formats it has. ``OUT`` must be
new or empty; everything is written into a temporary sibling, checked (safetensors, JSON and
ONNX only: nothing pickled) and renamed into place, so a failed export leaves nothing.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors.torch import save_file
from torch import nn

from adaptlab import __version__
from adaptlab.evaluate.generation import stop_token_ids
from adaptlab.evaluate.grounding import RetrievalAugmented
from adaptlab.models.bundled import BUNDLED, canonical_name
from adaptlab.models.encoder import ClassifierParts, PooledEncoder
from adaptlab.models.onnx_encoder import export_token_graph
from adaptlab.paths import writable_folder, write_text_atomic
from adaptlab.predict import LoadedModel, open_model
from adaptlab.runs import (
    CHECKPOINT,
    CONFIG,
    COST,
    ERROR,
    EVAL,
    GENERATIONS,
    MANIFEST,
    METRICS,
    PREDICTIONS,
)
from adaptlab.safeload import check_before_load
from adaptlab.strategies.base import Generator, PooledClassifier, get_strategy

Format = Literal["hf", "peft", "onnx"]
FORMATS: tuple[str, ...] = get_args(Format)
ADAPTER_DIR = "adapter"
"""The run folder's PEFT adapter (the run-folder contract: ``model/`` or ``adapter/``)."""
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_FILE = "head.safetensors"
CLASSIFIER_FILE = "classifier.json"
LABELS_FILE = "labels.json"
ONNX_FILE = "model.onnx"
README = "README.md"
VLLM_DEFAULT_MAX_RANK = 16
"""vLLM refuses adapters of a higher rank unless started with ``--max-lora-rank``."""
_RUN_RECORDS = {MANIFEST, EVAL, COST, CONFIG, PREDICTIONS, GENERATIONS, METRICS, ERROR, CHECKPOINT}
"""A run folder's records; what else it holds is the strategy's artefact."""


class ExportError(ValueError):
    """The run cannot be exported in the format asked, or not into that folder; the message
    says why and what can be done."""


@dataclass(frozen=True)
class ExportResult:
    """What ``export`` wrote."""

    format: str
    folder: Path
    source: str
    """What was exported: the run folder, or the registered version (``intent:3``)."""
    files: tuple[str, ...]
    """The files written, relative to ``folder``."""
    notes: tuple[str, ...]
    """What a user of the export must know (where it differs from the run, what it lacks)."""


def export(
    target: str | Path, format: str, out: Path, registry: Path | None = None
) -> ExportResult:
    """Write ``target`` (a finished run folder or ``NAME[@ALIAS|:VERSION]``) in ``format`` into
    the new or empty folder ``out``; :class:`ExportError` when it cannot be."""
    if format not in FORMATS:
        raise ExportError(f"format '{format}': expected one of {', '.join(FORMATS)}")
    _require_new_or_empty(out)
    with open_model(target, registry) as loaded:
        write = _writer(loaded, format)
        notes = _write_new_folder(out, lambda staging: write(loaded, staging, out.resolve()))
    files = tuple(sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()))
    return ExportResult(format, out, loaded.source, files, tuple(notes))


Writer = Callable[[LoadedModel, Path, Path], list[str]]
"""Writes ``loaded`` into the staging folder (the second path) for its final place (the third,
which READMEs name); returns the notes."""


def _writer(loaded: LoadedModel, format: str) -> Writer:
    """The writer for ``format``, or :class:`ExportError` saying why this run has none."""
    model = loaded.model
    available = formats_for(loaded)
    if format in available:
        if format == "peft":
            return _write_peft
        if format == "onnx":
            return _write_onnx
        return _write_hf_classifier if isinstance(model, PooledClassifier) else _write_hf_generator
    raise ExportError(f"cannot export {_describe(loaded)} as {format}: {_why_not(loaded, format)}")


def formats_for(loaded: LoadedModel) -> list[str]:
    """The export formats that apply to ``loaded``."""
    model = loaded.model
    formats: list[str] = []
    if loaded.record.eval.multi_label is not None:
        return formats  # sigmoid heads and per-label thresholds: not written by any format yet
    if isinstance(model, PooledClassifier) or (
        isinstance(model, Generator) and _has_own_weights(loaded)
    ):
        formats.append("hf")
    if (loaded.record.folder / ADAPTER_DIR / ADAPTER_CONFIG).is_file():
        formats.append("peft")
    if isinstance(model, PooledClassifier):
        formats.append("onnx")
    return formats


def _has_own_weights(loaded: LoadedModel) -> bool:
    """Whether the run's strategy trains (a profile method other than ``none``)."""
    profile = loaded.record.profile or get_strategy(loaded.record.strategy).profile
    return profile.method != "none"


def _describe(loaded: LoadedModel) -> str:
    record = loaded.record
    if loaded.source == str(record.folder):
        return f"run '{record.name}' (strategy {record.strategy})"
    return f"{loaded.source} (run '{record.name}', strategy {record.strategy})"


def _why_not(loaded: LoadedModel, format: str) -> str:
    model = loaded.model
    if loaded.record.eval.multi_label is not None:
        reason = (
            "it is a multi-label classifier (a probability per label, a threshold per label), "
            "which no export format writes yet"
        )
    elif format == "peft":
        reason = f"it saved no {ADAPTER_DIR}/ folder: a peft export holds the run's PEFT adapter"
    elif format == "onnx" and isinstance(model, Generator):
        reason = "it is a generator, and onnx exports hold encoder classifiers"
    elif isinstance(model, Generator):
        reason = (
            "it is a generator with no weights of its own (its strategy trains nothing): its "
            "base model answers, asked the way the run asks it"
        )
    else:
        reason = (
            f"its model ({type(model).__name__}) is not an encoder with a head on pooled "
            f"embeddings, which is what an {format} export holds"
        )
    available = formats_for(loaded)
    offer = (
        f"formats it has: {', '.join(available)}"
        if available
        else "no export format applies to it; use it through adaptlab ('adaptlab predict', "
        "'adaptlab serve')"
    )
    return f"{reason}. {_artefact(loaded)}; {offer}"


def _artefact(loaded: LoadedModel) -> str:
    record = loaded.record
    own = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in record.folder.iterdir()
        if p.name not in _RUN_RECORDS and not p.name.startswith(".")
    )
    held = ", ".join(own) if own else "nothing beyond its records"
    artefact = f"Its artefact is {held} in the run folder"
    if record.cost.raw.get("needs_base_model") is False:
        return artefact
    return f"{artefact}, used with the base model {canonical_name(record.manifest.base_model)}"


# --------------------------------------------------------------------------- the folder


def _require_new_or_empty(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: a file of that name is in the way; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"{out}: not empty; give a new or empty folder (nothing was changed)")
    writable_folder(out.resolve().parent)


def _write_new_folder(out: Path, write: Callable[[Path], list[str]]) -> list[str]:
    """``write`` into a temporary sibling of ``out``, check what it wrote, rename it into
    place; on any failure the sibling is removed and ``out`` is as it was."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export.", dir=out.resolve().parent))
    try:
        notes = write(staging)
        # What other tools load must be as safe as what adaptlab loads: no pickle, no code.
        check_before_load(staging, "export")
        _readable(staging)
        _require_new_or_empty(out)  # again: the export took a while
        if out.is_dir():
            out.rmdir()  # empty (checked); rmdir never removes anything in it
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return notes


def _readable(folder: Path) -> None:
    """Modes as the umask gives new files: mkdtemp's folder (0700) and safetensors' files
    (0600) would hide the export from the user a server runs as."""
    mask = os.umask(0o022)  # reading the umask means setting it: set it straight back
    os.umask(mask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _write_json(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- classifiers


def _classifier_parts(model: Any) -> ClassifierParts:
    from transformers import PreTrainedModel

    parts: ClassifierParts = model.export_parts()
    if not isinstance(parts.encoder, PreTrainedModel):
        raise ExportError(
            f"the encoder is a {type(parts.encoder).__name__}, not a transformers model: "
            "merge its adapter first (a run loaded by adaptlab is merged)"
        )
    return parts


def _head_layers(head: nn.Module) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """``classifier.json``'s layer list and ``head.safetensors``' tensors of ``head`` (a
    linear layer, or a sequence of linear layers and ReLUs)."""
    modules = list(head) if isinstance(head, nn.Sequential) else [head]
    layers: list[dict[str, Any]] = []
    tensors: dict[str, torch.Tensor] = {}
    for position, module in enumerate(modules):
        if isinstance(module, nn.ReLU):
            layers.append({"type": "relu"})
        elif isinstance(module, nn.Linear):
            weight = f"layers.{position}.weight"
            tensors[weight] = module.weight.detach().float().cpu().contiguous()
            bias = None
            if module.bias is not None:
                bias = f"layers.{position}.bias"
                tensors[bias] = module.bias.detach().float().cpu().contiguous()
            layers.append({"type": "linear", "weight": weight, "bias": bias})
        else:
            raise ExportError(f"the head's layer {position} is a {type(module).__name__}")
    return layers, tensors


def _label_map(names: Sequence[str]) -> dict[str, Any]:
    return {
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
    }


def _write_head(
    loaded: LoadedModel, parts: ClassifierParts, folder: Path, *, weights: bool = True
) -> None:
    """``classifier.json`` (pooling, the head's layers, labels), ``labels.json`` and, with
    ``weights``, ``head.safetensors`` (an ONNX graph holds the head itself)."""
    model = loaded.model
    assert isinstance(model, PooledClassifier)
    layers, tensors = _head_layers(parts.head)
    if weights:
        save_file(tensors, str(folder / HEAD_FILE))
    names = list(model.label_names)
    head = {"layers": layers} if weights else {"graph": ONNX_FILE}
    spec = {
        "pooling": "mean",
        "normalize": True,
        **head,
        "output": "softmax",
        "label_names": names,
        **_label_map(names),
        "max_length": int(model.max_length),
        **_rejection(loaded),
        "base_model": canonical_name(loaded.record.manifest.base_model),
        "source": {
            "exported": loaded.source,
            "run": loaded.record.name,
            "strategy": loaded.record.strategy,
            "adaptlab": __version__,
        },
    }
    _write_json(folder / CLASSIFIER_FILE, spec)
    _write_json(folder / LABELS_FILE, {"label_names": names, **_label_map(names)})


def _rejection(loaded: LoadedModel) -> dict[str, Any]:
    """The run's out-of-scope rule, for whoever serves the export: reject a query whose
    largest in-scope probability is under ``threshold`` (or whose most probable column is
    ``column``) as ``label``; nothing for a run without one."""
    section = loaded.record.eval.out_of_scope
    if section is None:
        return {}
    return {
        "out_of_scope": {
            "label": section["label"],
            "score": section["score"],
            "threshold": section["threshold"],
            "column": section["out_of_scope_column"],
            "rule": section["rule"],
        }
    }


def _add_label_map(folder: Path, names: Sequence[str]) -> None:
    """``id2label``/``label2id`` in the folder's ``config.json``, where transformers (and
    tools reading an ONNX folder the way Optimum lays it out) look for them."""
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(_label_map(names))
    _write_json(path, config)


def _write_hf_classifier(loaded: LoadedModel, folder: Path, final: Path) -> list[str]:
    parts = _classifier_parts(loaded.model)
    parts.encoder.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]
    _add_label_map(folder, loaded.label_names)
    parts.tokenizer.save_pretrained(folder)
    _write_head(loaded, parts, folder)
    loading = (
        "encoder = AutoModel.from_pretrained(folder).eval()\n"
        "tokenizer = AutoTokenizer.from_pretrained(folder)"
    )
    _write_readme(folder, loaded, "hf", final, _classifier_readme(final, loading))
    return list(parts.notes)


_CLASSIFIER_SNIPPET = """```python
import json

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

folder = {folder}
{loading}
spec = json.load(open(f"{{folder}}/classifier.json"))
weights = load_file(f"{{folder}}/head.safetensors")


def probabilities(texts):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=spec["max_length"],
                      return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        x = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean pooling
        x = torch.nn.functional.normalize(x, dim=-1)
        for layer in spec["layers"]:
            if layer["type"] == "relu":
                x = torch.relu(x)
            else:
                bias = weights[layer["bias"]] if layer["bias"] else None
                x = torch.nn.functional.linear(x, weights[layer["weight"]], bias)
        return x.softmax(-1)  # columns: spec["label_names"]
```"""


def _classifier_readme(final: Path, loading: str) -> str:
    return _CLASSIFIER_SNIPPET.format(folder=repr(str(final)), loading=loading)


# --------------------------------------------------------------------------- generators


def _write_hf_generator(loaded: LoadedModel, folder: Path, final: Path) -> list[str]:
    from transformers import PreTrainedModel

    model = loaded.model
    assert isinstance(model, Generator)
    lm = model.lm
    weights: Any = lm.model
    if not isinstance(weights, PreTrainedModel):
        # QLoRA on a GPU keeps its adapter apart from the 4-bit base; merged, it is no longer
        # the model the run serves.
        raise ExportError(
            f"{_describe(loaded)} loads here as a {type(weights).__name__} (an adapter kept "
            "apart from its quantised base), not one transformers model: export it as peft, "
            "or as hf on a machine where it loads merged (without CUDA)"
        )
    weights.save_pretrained(folder, safe_serialization=True)
    lm.tokenizer.save_pretrained(folder)
    generation: Any = copy.deepcopy(weights.generation_config)
    # The run's decoding: greedy, stopping at its stop tokens, at most max_new_tokens.
    stops = list(stop_token_ids(lm))
    pad = lm.tokenizer.pad_token_id
    generation.update(
        do_sample=False,
        max_new_tokens=model.decoding.max_new_tokens,
        eos_token_id=stops,
        pad_token_id=stops[0] if pad is None else int(pad),
        temperature=None,
        top_p=None,
        top_k=None,
    )
    generation.save_pretrained(folder)
    notes = _generator_notes(model)
    snippet = _GENERATOR_SNIPPET.format(folder=repr(str(final)))
    _write_readme(folder, loaded, "hf", final, snippet, notes)
    return notes


def _generator_notes(model: Generator) -> list[str]:
    if isinstance(model, RetrievalAugmented):
        return [
            "the run answers from passages its retriever finds: the retrieval index (index/ in "
            "the run folder) and the prompt that shows the passages are not part of this "
            "export, which holds the model's weights only"
        ]
    probe = [{"role": "user", "content": "?"}]
    if model.conversations([probe]) != [probe]:
        return [
            "the run adds turns to each request before the model sees it (a system turn or "
            "examples): ask the exported model the same way to get the run's answers"
        ]
    return []


_GENERATOR_SNIPPET = """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

folder = {folder}
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder).eval()


def answer(messages):  # [{{"role": "user", "content": "..."}}]
    batch = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)
    output = model.generate(**batch)  # greedy, with the run's settings (generation_config)
    return tokenizer.decode(output[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
```"""


# --------------------------------------------------------------------------- peft


def _write_peft(loaded: LoadedModel, folder: Path, final: Path) -> list[str]:
    source = loaded.record.folder / ADAPTER_DIR
    config = json.loads((source / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if config.get("modules_to_save"):
        raise ExportError(
            f"{source / ADAPTER_CONFIG}: the adapter saves whole modules "
            f"({config['modules_to_save']}), which vLLM does not load; export it as hf"
        )
    if not (source / ADAPTER_WEIGHTS).is_file():
        raise ExportError(f"{source}: no {ADAPTER_WEIGHTS} (PEFT's safetensors weights)")
    base = canonical_name(loaded.record.manifest.base_model)
    # The run recorded where its base was loaded from (a cache folder); others load it by name.
    config["base_model_name_or_path"] = base
    _write_json(folder / ADAPTER_CONFIG, config)
    shutil.copyfile(source / ADAPTER_WEIGHTS, folder / ADAPTER_WEIGHTS)
    notes = []
    if base in BUNDLED:
        notes.append(
            f"the run trained on adaptlab's bundled copy of {base} (the bundled SmolLM2 is "
            "dequantised from a Q4_1 GGUF): on the hub's weights the adapter's outputs can "
            "differ slightly from the run's"
        )
    quantization = loaded.record.cost.raw.get("quantization")
    if quantization:
        notes.append(
            f"the adapter was trained over the base quantised ({quantization}): load the base "
            "that way (bitsandbytes 4-bit) to match the run; over full-precision weights its "
            "outputs differ slightly"
        )
    if config.get("use_dora"):
        notes.append("a DoRA adapter: PEFT loads it; vLLM serves LoRA adapters only")
    elif int(config.get("r") or 0) > VLLM_DEFAULT_MAX_RANK:
        notes.append(f"rank {config['r']}: start vLLM with --max-lora-rank {config['r']}")
    if isinstance(loaded.model, PooledClassifier):
        parts = _classifier_parts(loaded.model)
        _write_head(loaded, parts, folder)
        notes.append(
            "an encoder classifier: load it with PEFT as the README shows (vLLM serves "
            "generators, not encoders)"
        )
        loading = (
            f"encoder = PeftModel.from_pretrained(AutoModel.from_pretrained({base!r}), "
            "folder).eval()\n"
            f"tokenizer = AutoTokenizer.from_pretrained({base!r})"
        )
        snippet = _classifier_readme(final, loading).replace(
            "from transformers import", "from peft import PeftModel\nfrom transformers import"
        )
    else:
        snippet = _PEFT_GENERATOR_SNIPPET.format(
            folder=repr(str(final)), base=repr(base), base_name=base, path=final, name=final.name
        )
    if isinstance(loaded.model, Generator):
        notes.extend(_generator_notes(loaded.model))
    _write_readme(folder, loaded, "peft", final, snippet, notes)
    return notes


_PEFT_GENERATOR_SNIPPET = """```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

folder = {folder}
tokenizer = AutoTokenizer.from_pretrained({base})
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base}), folder)
model = model.merge_and_unload().eval()  # or keep the adapter apart
```

With vLLM: `vllm serve {base_name} --enable-lora --lora-modules {name}={path}`, then ask for
the model `{name}`."""


# --------------------------------------------------------------------------- onnx


class _ProbabilityGraph(nn.Module):
    """Token ids and mask in, probabilities out: the whole classifier as one graph."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.pooled = PooledEncoder(encoder)
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.pooled(input_ids, attention_mask)), dim=-1)


def _write_onnx(loaded: LoadedModel, folder: Path, final: Path) -> list[str]:
    import onnx

    parts = _classifier_parts(loaded.model)
    model = loaded.model
    assert isinstance(model, PooledClassifier)
    parameter = next(parts.encoder.parameters())
    graph = _ProbabilityGraph(parts.encoder, parts.head.to(parameter.device)).eval()
    path = folder / ONNX_FILE
    export_token_graph(graph, path, "probabilities")
    proto = onnx.load(str(path))
    names = list(model.label_names)
    onnx.helper.set_model_props(
        proto,
        {
            "label_names": json.dumps(names, ensure_ascii=False),
            "max_length": str(int(model.max_length)),
            "source": loaded.source,
        },
    )
    onnx.save(proto, str(path))
    getattr(parts.encoder, "config").save_pretrained(folder)  # noqa: B009 (Module typing)
    _add_label_map(folder, names)
    parts.tokenizer.save_pretrained(folder)
    _write_head(loaded, parts, folder, weights=False)
    _write_readme(
        folder, loaded, "onnx", final, _ONNX_SNIPPET.format(folder=repr(str(final))), parts.notes
    )
    return list(parts.notes)


_ONNX_SNIPPET = """```python
import json

import onnxruntime
from transformers import AutoTokenizer

folder = {folder}
tokenizer = AutoTokenizer.from_pretrained(folder)
spec = json.load(open(f"{{folder}}/classifier.json"))
session = onnxruntime.InferenceSession(f"{{folder}}/model.onnx",
                                       providers=["CPUExecutionProvider"])


def probabilities(texts):
    batch = tokenizer(texts, padding=True, truncation=True, max_length=spec["max_length"],
                      return_tensors="np")
    feeds = {{"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}}
    return session.run(None, feeds)[0]  # columns: spec["label_names"]
```"""


# --------------------------------------------------------------------------- README


def _write_readme(
    folder: Path,
    loaded: LoadedModel,
    format: str,
    final: Path,
    snippet: str,
    notes: Sequence[str] = (),
) -> None:
    record = loaded.record
    lines = [
        f"# {record.name} ({record.strategy}), exported as {format}",
        "",
        f"Exported by adaptlab {__version__} from {loaded.source}; base model "
        f"{canonical_name(record.manifest.base_model)}.",
        "",
        "## Use",
        "",
        snippet,
        "",
    ]
    if notes:
        lines += ["## Notes", "", *(f"- {note}." for note in notes), ""]
    write_text_atomic(folder / README, "\n".join(lines))
