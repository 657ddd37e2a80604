"""Causal language models: load one by name, render chat prompts, score candidate answers.

Scoring asks how likely the model finds each of a fixed set of answers after a prompt, which
is how a generative model becomes a classifier that can never answer outside the label set.
Three things keep it cheap on a CPU:

- the part of the prompt shared by every request (instruction, label list) is encoded once
  into a KV cache (:class:`PromptCache`) and reused; each call restores it afterwards;
- the candidate answers are merged into a token trie (:class:`TokenTree`), so answers sharing
  their first tokens ("card arrival", "card linking") compute those tokens once;
- the request's own tokens and the whole trie go through the model in ONE forward pass with a
  tree attention mask (each trie token sees the prompt and its own ancestors only), the
  shared-prefix trick of tree-based speculative decoding (SpecInfer, Miao et al. 2023, §4).
  Unlike copying the prompt's cache once per answer, memory does not grow with the answers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptlab.models.bundled import ModelNotAvailable, _unavailable_message, resolve_model


@dataclass
class CausalLM:
    """A tokenizer and a causal LM in eval mode, loaded from a bundled, local or hub name."""

    name: str
    tokenizer: Any
    model: nn.Module

    @classmethod
    def load(cls, name: str, revision: str | None = None) -> CausalLM:
        """Load ``name``: the bundled SmolLM2 (converted once from its GGUF), a folder, or a
        hub name for online users."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        location = resolve_model(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
            model: nn.Module = AutoModelForCausalLM.from_pretrained(location, revision=revision)
        except OSError as exc:
            raise ModelNotAvailable(_unavailable_message(name, exc)) from exc
        model.eval()
        return cls(name, tokenizer, model)

    def encode(self, text: str) -> list[int]:
        # Chat templates write their special tokens into the text themselves; letting the
        # tokenizer add a BOS too would double it (transformers' apply_chat_template agrees).
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
        """``messages`` rendered by the model's chat template, as text."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelNotAvailable(
                f"model '{self.name}' has no chat template; use an instruction-tuned model"
            )
        rendered: str = self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return rendered

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass(frozen=True)
class TokenTree:
    """Token sequences merged into a trie; nodes are listed parents first.

    ``parents[j]`` is the node before node ``j`` (-1 for a first token, which the last
    context token predicts); ``paths[i]`` lists the nodes that spell sequence ``i``.
    """

    tokens: list[int]
    parents: list[int]
    depths: list[int]
    paths: list[list[int]]

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]]) -> TokenTree:
        if not sequences or any(len(s) == 0 for s in sequences):
            raise ValueError("every candidate answer needs at least one token")
        tokens: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        children: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
        paths = []
        for sequence in sequences:
            node, path = -1, []
            for depth, token in enumerate(sequence):
                if (node, token) not in children:
                    children[(node, token)] = len(tokens)
                    tokens.append(int(token))
                    parents.append(node)
                    depths.append(depth)
                node = children[(node, token)]
                path.append(node)
            paths.append(path)
        return cls(tokens, parents, depths, paths)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def lengths(self) -> list[int]:
        return [len(path) for path in self.paths]

    @functools.cached_property
    def inner(self) -> list[int]:
        """Nodes with children, in order. Only these are fed to the model: a leaf's own
        output would predict nothing (with an end-of-turn token closing every answer, the
        leaves are a quarter of the trie)."""
        return sorted({parent for parent in self.parents if parent >= 0})

    @functools.cached_property
    def parent_rows(self) -> list[int]:
        """For each node, the row of the scoring output that predicts it: row 0 is the last
        context token, row 1 + i the i-th inner node."""
        row = {node: 1 + i for i, node in enumerate(self.inner)}
        return [0 if parent < 0 else row[parent] for parent in self.parents]

    @functools.cached_property
    def membership(self) -> torch.Tensor:
        """``(sequences, nodes)``: 1 where a node spells part of a sequence."""
        matrix = torch.zeros(len(self.paths), len(self.tokens), dtype=torch.float64)
        for row, path in enumerate(self.paths):
            matrix[row, path] = 1.0
        return matrix

    def inner_sees(self) -> torch.Tensor:
        """``(inner, inner)`` booleans: inner node j attends to k when k is j or an ancestor
        (ancestors of an inner node are inner too)."""
        visible = torch.eye(len(self.tokens), dtype=torch.bool)
        for node, parent in enumerate(self.parents):  # parents come first: their rows are done
            if parent >= 0:
                visible[node] |= visible[parent]
        return visible[self.inner][:, self.inner]


class PromptCache:
    """The KV cache of a fixed prompt prefix, shared by every call to :meth:`score`."""

    def __init__(self, lm: CausalLM, prefix_ids: Sequence[int]) -> None:
        if not prefix_ids:
            raise ValueError("the cached prompt prefix is empty")
        self.lm = lm
        self.prefix_length = len(prefix_ids)
        with torch.inference_mode():
            output = lm.model(
                input_ids=torch.tensor([list(prefix_ids)], device=self.device), use_cache=True
            )
        self.cache = output.past_key_values

    @property
    def device(self) -> torch.device:
        return next(self.lm.model.parameters()).device

    @torch.inference_mode()
    def score(self, context_ids: Sequence[int], tree: TokenTree) -> torch.Tensor:
        """Summed log-likelihood of each of the tree's sequences after prefix + context.

        One forward pass over the context and the tree's inner nodes; float64, ``(sequences,)``.
        """
        if not context_ids:
            raise ValueError("the context must have at least one token to predict the answers")
        context = len(context_ids)
        inner_tokens = [tree.tokens[node] for node in tree.inner]
        try:
            output = self.lm.model(
                input_ids=torch.tensor([[*context_ids, *inner_tokens]], device=self.device),
                position_ids=self._positions(context, tree),
                attention_mask=self._mask(context, tree),
                past_key_values=self.cache,
                use_cache=True,
                # Logits only where they predict something: the last context token, inner nodes.
                logits_to_keep=1 + len(inner_tokens),
            )
        finally:
            # The forward pass appended the request to the shared cache: take it back off.
            self.cache.crop(-(self.cache.get_seq_length() - self.prefix_length))
        log_probs = torch.log_softmax(output.logits[0].double(), dim=-1).cpu()
        node_scores = log_probs[tree.parent_rows, tree.tokens]
        return tree.membership @ node_scores

    def _positions(self, context: int, tree: TokenTree) -> torch.Tensor:
        # Trie nodes at the same depth share a position: each continues the same context.
        start = self.prefix_length
        positions = list(range(start, start + context))
        positions += [start + context + tree.depths[node] for node in tree.inner]
        return torch.tensor([positions], device=self.device)

    def _mask(self, context: int, tree: TokenTree) -> torch.Tensor:
        """Additive ``(1, 1, new, prefix + new)`` mask: everything sees the prefix, the context
        is causal, and a tree node sees the whole context and its own ancestors."""
        new = context + len(tree.inner)
        visible = torch.zeros(new, self.prefix_length + new, dtype=torch.bool)
        visible[:, : self.prefix_length] = True
        visible[:, self.prefix_length : self.prefix_length + context] = torch.ones(
            new, context, dtype=torch.bool
        ).tril()
        visible[context:, self.prefix_length + context :] = tree.inner_sees()
        dtype = next(self.lm.model.parameters()).dtype
        mask = torch.zeros(visible.shape, dtype=dtype)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        return mask[None, None].to(self.device)
