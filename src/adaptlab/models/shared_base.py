"""One loaded copy of a base model for every LoRA adapter trained on it.

A server holding several adapter runs of one base (``sft_lora``, ``rag_sft``, a canary's
candidate next to its champion) would otherwise load the base's weights once per run. Here the
first adapter of a base loads it and wraps it in a PEFT model; every later adapter of the same
base (name and revision) is added to that PEFT model under a name of its own
(``PeftModel.load_adapter``). Each run gets an :class:`AdapterView`: a module that makes its
adapter the active one and runs the shared model, under the base's lock, so two runs never
decode with each other's adapter. The adapters stay unmerged (merging one would change the
weights every other run reads): the answers are those of the run loaded alone without merging,
which equal the merged model's up to float rounding.

The lock is also what a server holds for one prediction at a time on these weights (the
tokenizer is shared too, and a Hugging Face fast tokenizer used from two threads fails):
:func:`weights_lock` finds it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from adaptlab.models.causal_lm import CausalLM


class AdapterView(nn.Module):
    """One adapter of a shared PEFT model: ``forward`` and ``generate`` make it the active
    adapter first, holding the base's lock for the whole call; anything else (the generation
    config, the parameters) is the shared model's."""

    def __init__(self, shared: nn.Module, adapter: str, lock: threading.RLock) -> None:
        super().__init__()
        self.shared = shared
        self.adapter = adapter
        self.lock = lock

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self._activate()
            return self.shared(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self._activate()
            return self.shared.generate(*args, **kwargs)  # type: ignore[operator]

    def _activate(self) -> None:
        shared: Any = self.shared
        if shared.active_adapter != self.adapter:
            shared.set_adapter(self.adapter)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["shared"], name)


@dataclass
class _Base:
    lm: CausalLM
    lock: threading.RLock = field(default_factory=threading.RLock)
    shared: Any = None
    """The PEFT model over ``lm.model``, once an adapter was loaded."""
    adapters: list[str] = field(default_factory=list)


class SharedBases:
    """The base models loaded so far, each once, by name and revision."""

    def __init__(self) -> None:
        self._bases: dict[tuple[str, str | None], _Base] = {}
        self._guard = threading.Lock()

    def adapted(self, base: str, adapter_folder: Path, revision: str | None = None) -> CausalLM:
        """``base`` (loaded now, or the copy loaded before) with the PEFT adapter saved in
        ``adapter_folder``, as a :class:`CausalLM` whose model is that adapter's view."""
        import peft

        with self._guard:
            key = (base, revision)
            if key not in self._bases:
                self._bases[key] = _Base(CausalLM.load(base, revision))
            entry = self._bases[key]
        with entry.lock:
            name = f"adapter_{len(entry.adapters)}"
            if entry.shared is None:
                entry.shared = peft.PeftModel.from_pretrained(
                    entry.lm.model, str(adapter_folder), adapter_name=name
                )
            else:
                entry.shared.load_adapter(str(adapter_folder), adapter_name=name)
            entry.adapters.append(name)
        view = AdapterView(entry.shared, name, entry.lock).eval()
        return CausalLM(entry.lm.name, entry.lm.tokenizer, view)

    def loaded(self) -> int:
        """How many base models are loaded."""
        return len(self._bases)


def weights_lock(lm: CausalLM) -> threading.RLock | None:
    """The lock of the shared base ``lm`` runs on, or None when ``lm`` has weights of its own."""
    model = lm.model
    return model.lock if isinstance(model, AdapterView) else None
