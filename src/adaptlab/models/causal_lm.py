"""Causal language models: load one by name, render chat prompts, score candidate answers.

Scoring asks how likely the model finds each of a fixed set of answers after a prompt, which
is how a generative model becomes a classifier that can never answer outside the label set.
Three things keep it cheap on a CPU:

- the part of the prompt shared by every request (instruction, label list) is encoded once
  into a KV cache (:class:`PromptCache`) and reused; each call restores it afterwards;
- the candidate answers are merged into a token trie (:class:`TokenTree`), so answers sharing
  their first tokens ("card arrival", "card linking") compute those tokens once;
- the request's own tokens and the trie go through the model in ONE forward pass with a
  tree attention mask (each trie token sees the prompt and its own ancestors only), the
  shared-prefix trick of tree-based speculative decoding (SpecInfer, Miao et al. 2023, §4).
  Unlike copying the prompt's cache once per answer, memory does not grow with the answers.

Two scores: the summed log-likelihood of each answer (every trie node with children is fed),
and its probability under decoding constrained to the answers (only nodes up to the last
branch are fed: below it the answer is forced). The second is a distribution by construction.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaptlab.models.bundled import ModelNotAvailable, loadable, unavailable_message
from adaptlab.safeload import PRETRAINED_SAFE, WEIGHTS_SAFE


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

        location = loadable(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                location, revision=revision, **PRETRAINED_SAFE
            )
            model: nn.Module = AutoModelForCausalLM.from_pretrained(
                location, revision=revision, **WEIGHTS_SAFE
            )
        except OSError as exc:
            raise ModelNotAvailable(unavailable_message(name, exc)) from exc
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
        """Nodes with children, in order: what summed scoring feeds the model. A leaf's own
        output would predict nothing (with an end-of-turn token closing every answer, the
        leaves are a quarter of the trie)."""
        return sorted({parent for parent in self.parents if parent >= 0})

    @functools.cached_property
    def branching(self) -> list[int]:
        """Nodes where the answers part, with their ancestors, in order: what constrained
        scoring feeds the model. Below the last branch an answer's tokens are forced; for
        banking77's 77 labels under SmolLM2's tokenizer that is 23 nodes instead of 228."""
        children = [0] * len(self.tokens)
        for parent in self.parents:
            if parent >= 0:
                children[parent] += 1
        needed: set[int] = set()
        for node in (n for n, count in enumerate(children) if count > 1):
            while node >= 0 and node not in needed:
                needed.add(node)
                node = self.parents[node]
        return sorted(needed)

    @functools.cached_property
    def prefix_free(self) -> bool:
        """No sequence is another's prefix or duplicate (each ends on its own leaf), as when
        every answer ends with an end-of-turn token."""
        ends = [path[-1] for path in self.paths]
        return len(set(ends)) == len(ends) and not set(ends) & set(self.inner)

    @functools.cached_property
    def membership(self) -> torch.Tensor:
        """``(sequences, nodes)``: 1 where a node spells part of a sequence."""
        matrix = torch.zeros(len(self.paths), len(self.tokens), dtype=torch.float64)
        for row, path in enumerate(self.paths):
            matrix[row, path] = 1.0
        return matrix

    @functools.cached_property
    def sibling_group(self) -> torch.Tensor:
        """``(nodes,)``: the same number for nodes that share a parent."""
        groups = {parent: i for i, parent in enumerate(dict.fromkeys(self.parents))}
        return torch.tensor([groups[parent] for parent in self.parents])

    def sees(self, fed: Sequence[int]) -> torch.Tensor:
        """``(fed, fed)`` booleans: fed node j attends to k when k is j or an ancestor (the
        fed nodes must include their ancestors)."""
        visible = torch.eye(len(self.tokens), dtype=torch.bool)
        for node, parent in enumerate(self.parents):  # parents come first: their rows are done
            if parent >= 0:
                visible[node] |= visible[parent]
        return visible[list(fed)][:, list(fed)]


class PromptCache:
    """The KV cache of a fixed prompt prefix, shared by every call that scores answers."""

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
        # Each call appends to the shared cache and crops it back: calls must not interleave
        # (a server may predict from several threads).
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.lm.model.parameters()).device

    def log_likelihoods(self, context_ids: Sequence[int], tree: TokenTree) -> torch.Tensor:
        """``(sequences,)`` float64: log P(sequence | prefix + context), summed over its tokens."""
        return tree.membership @ self.node_log_probs(context_ids, tree, tree.inner)

    def constrained_log_probs(self, context_ids: Sequence[int], tree: TokenTree) -> torch.Tensor:
        """``(sequences,)`` float64: log-probability of each sequence when decoding may only
        follow the tree, i.e. the model's next-token probabilities renormalised over the
        tokens allowed at each branch (forced tokens count 1). ``exp`` sums to one."""
        if not tree.prefix_free:
            raise ValueError(
                "constrained scoring needs answers of which none is a prefix of another; "
                "end each with an end-of-turn token"
            )
        scores = self.node_log_probs(context_ids, tree, tree.branching)
        scores = torch.nan_to_num(scores, nan=0.0)  # unscored nodes are forced: log 1
        group = tree.sibling_group
        peak = torch.full((int(group.max()) + 1,), -torch.inf, dtype=scores.dtype)
        peak = peak.scatter_reduce(0, group, scores, reduce="amax")
        total = torch.zeros_like(peak).index_add_(0, group, (scores - peak[group]).exp())
        return tree.membership @ (scores - peak[group] - total.log()[group])

    @torch.inference_mode()
    def node_log_probs(
        self, context_ids: Sequence[int], tree: TokenTree, fed: Sequence[int]
    ) -> torch.Tensor:
        """``(nodes,)`` float64: log p(node's token | prefix + context + its ancestors) for
        every node whose parent is in ``fed`` or is the context; NaN for the others.

        One forward pass over the context and the ``fed`` nodes (closed under ancestors).
        """
        if not context_ids:
            raise ValueError("the context must have at least one token to predict the answers")
        with self._lock:
            logits = self._forward(context_ids, tree, fed)
        log_probs = torch.log_softmax(logits.double(), dim=-1).cpu()
        log_probs = torch.cat([log_probs, torch.full_like(log_probs[:1], torch.nan)])
        row = {node: 1 + i for i, node in enumerate(fed)}
        unscored = len(log_probs) - 1  # the NaN row
        rows = [0 if p < 0 else row.get(p, unscored) for p in tree.parents]
        return log_probs[rows, tree.tokens]

    def _forward(
        self, context_ids: Sequence[int], tree: TokenTree, fed: Sequence[int]
    ) -> torch.Tensor:
        """``(1 + len(fed), vocab)`` logits at the last context token and the fed nodes."""
        context = len(context_ids)
        try:
            output = self.lm.model(
                input_ids=torch.tensor(
                    [[*context_ids, *(tree.tokens[node] for node in fed)]], device=self.device
                ),
                position_ids=self._positions(context, tree, fed),
                attention_mask=self._mask(context, tree, fed),
                past_key_values=self.cache,
                use_cache=True,
                # Logits only where they predict something: the last context token, fed nodes.
                logits_to_keep=1 + len(fed),
            )
        finally:
            # The forward pass appended the request to the shared cache: take it back off.
            self.cache.crop(-(self.cache.get_seq_length() - self.prefix_length))
        logits: torch.Tensor = output.logits[0]
        return logits

    def _positions(self, context: int, tree: TokenTree, fed: Sequence[int]) -> torch.Tensor:
        # Trie nodes at the same depth share a position: each continues the same context.
        start = self.prefix_length
        positions = list(range(start, start + context))
        positions += [start + context + tree.depths[node] for node in fed]
        return torch.tensor([positions], device=self.device)

    def _mask(self, context: int, tree: TokenTree, fed: Sequence[int]) -> torch.Tensor:
        """Additive ``(1, 1, new, prefix + new)`` mask: everything sees the prefix, the context
        is causal, and a tree node sees the whole context and its own ancestors."""
        new = context + len(fed)
        visible = torch.zeros(new, self.prefix_length + new, dtype=torch.bool)
        visible[:, : self.prefix_length] = True
        visible[:, self.prefix_length : self.prefix_length + context] = torch.ones(
            new, context, dtype=torch.bool
        ).tril()
        visible[context:, self.prefix_length + context :] = tree.sees(fed)
        dtype = next(self.lm.model.parameters()).dtype
        mask = torch.zeros(visible.shape, dtype=dtype)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        return mask[None, None].to(self.device)
