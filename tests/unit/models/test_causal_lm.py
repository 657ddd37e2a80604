"""Scoring answers with a causal LM: the cached, trie-packed pass equals naive scoring.

The model is a 2-layer Llama with hidden size 32 and a byte-level BPE tokenizer trained
in-process (a ChatML template, like SmolLM2's), saved as a local folder so it loads through
the same code path as a real model, in well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from adaptlab.models.bundled import ModelNotAvailable
from adaptlab.models.causal_lm import CausalLM, PromptCache, TokenTree

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "You are a text classifier. Read the user's message and reply with the category.",
    "Categories: cards transfers refunds card arrival exchange rate top up",
    "my card and the pin atm please, transfer iban wire payee refund merchant receipt",
]


def build_tiny_llm(folder: Path, chat_template: str | None = CHATML, vocab_size: int = 400) -> Path:
    """A random 2-layer Llama and its byte-level BPE tokenizer of ``vocab_size`` entries
    (another size gives other merges: another tokenizer), saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    fast.chat_template = chat_template
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.2,  # peaked next-token distributions: score differences are real
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> CausalLM:
    return CausalLM.load(str(build_tiny_llm(tmp_path_factory.mktemp("tiny-llama"))))


def naive_constrained(
    lm: CausalLM, prompt: Sequence[int], sequences: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Token by token: the model's next-token log-probabilities renormalised over the tokens
    that continue some sequence, one uncached forward pass per step."""
    scores = []
    with torch.inference_mode():
        for sequence in sequences:
            total = torch.tensor(0.0, dtype=torch.float64)
            for step, token in enumerate(sequence):
                done = list(sequence[:step])
                allowed = sorted({s[step] for s in sequences if list(s[:step]) == done})
                logits = lm.model(input_ids=torch.tensor([[*prompt, *done]])).logits[0, -1]
                log_probs = torch.log_softmax(logits.double(), dim=-1)
                total += log_probs[token] - torch.logsumexp(log_probs[allowed], dim=0)
            scores.append(total)
    return torch.stack(scores)


def naive_scores(
    lm: CausalLM, prompt: Sequence[int], sequences: Sequence[Sequence[int]]
) -> torch.Tensor:
    """One uncached forward pass per sequence over prompt + sequence."""
    scores = []
    with torch.inference_mode():
        for sequence in sequences:
            logits = lm.model(input_ids=torch.tensor([[*prompt, *sequence]])).logits[0]
            log_probs = torch.log_softmax(logits.double(), dim=-1)
            positions = range(len(prompt) - 1, len(prompt) - 1 + len(sequence))
            scores.append(sum(log_probs[p, t] for p, t in zip(positions, sequence, strict=True)))
    return torch.stack(scores)


def test_tree_merges_shared_leading_tokens() -> None:
    tree = TokenTree.build([[5, 6, 7], [5, 6], [5, 8], [9]])
    assert tree.tokens == [5, 6, 7, 8, 9]
    assert tree.parents == [-1, 0, 1, 0, -1]
    assert tree.depths == [0, 1, 2, 1, 0]
    assert tree.paths == [[0, 1, 2], [0, 1], [0, 3], [4]]
    assert tree.inner == [0, 1]  # nodes with children
    assert tree.branching == [0]  # where the answers part: after 5 comes 6 or 8
    assert tree.lengths == [3, 2, 2, 1]
    assert tree.sibling_group.tolist() == [0, 1, 2, 1, 0]
    assert tree.sees([0, 1]).tolist() == [[True, False], [True, True]]


def test_tree_refuses_empty_answers() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        TokenTree.build([[1], []])
    with pytest.raises(ValueError, match="at least one token"):
        TokenTree.build([])


SEQUENCES = [
    [[5, 6, 7], [5, 6], [5, 8], [9], [9, 10, 11, 12]],  # prefixes of each other, shared roots
    [[20], [21], [22]],  # single tokens: nothing but the context is fed
    [[30, 31, 32], [30, 31, 33, 34]],  # one shared root; a branch after two forced tokens
]


@pytest.fixture(scope="module")
def prompt(tiny_lm: CausalLM) -> tuple[list[int], list[int]]:
    prefix = tiny_lm.encode("You are a text classifier. Categories: cards transfers")
    return prefix, tiny_lm.encode("my card and the pin please")


@pytest.mark.parametrize("sequences", SEQUENCES)
def test_cached_tree_log_likelihoods_equal_naive_scoring(
    tiny_lm: CausalLM, prompt: tuple[list[int], list[int]], sequences: list[list[int]]
) -> None:
    prefix, context = prompt
    scored = PromptCache(tiny_lm, prefix).log_likelihoods(context, TokenTree.build(sequences))
    expected = naive_scores(tiny_lm, prefix + context, sequences)
    torch.testing.assert_close(scored, expected, atol=1e-4, rtol=0)
    assert scored.std() > 1e-2  # the random model does tell the answers apart


PREFIX_FREE = [
    [[5, 6, 7], [5, 6, 2], [5, 8], [9, 2], [9, 10, 11, 12]],  # like answers ending in <|im_end|>
    [[20], [21], [22]],
    [[30, 31, 32], [30, 31, 33, 34]],
]


@pytest.mark.parametrize("sequences", PREFIX_FREE)
def test_constrained_scores_equal_naive_constrained_decoding(
    tiny_lm: CausalLM, prompt: tuple[list[int], list[int]], sequences: list[list[int]]
) -> None:
    prefix, context = prompt
    scored = PromptCache(tiny_lm, prefix).constrained_log_probs(context, TokenTree.build(sequences))
    expected = naive_constrained(tiny_lm, prefix + context, sequences)
    torch.testing.assert_close(scored, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(scored.exp().sum(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("sequences", [[[5], [5, 6]], [[5, 6], [5, 6]]])
def test_constrained_scoring_refuses_answers_that_are_prefixes(
    tiny_lm: CausalLM, prompt: tuple[list[int], list[int]], sequences: list[list[int]]
) -> None:
    tree = TokenTree.build(sequences)
    assert not tree.prefix_free
    with pytest.raises(ValueError, match="prefix of another"):
        PromptCache(tiny_lm, prompt[0]).constrained_log_probs(prompt[1], tree)


def test_node_log_probs_leave_nodes_below_unfed_parents_unscored(
    tiny_lm: CausalLM, prompt: tuple[list[int], list[int]]
) -> None:
    prefix, context = prompt
    tree = TokenTree.build([[30, 31, 32], [30, 31, 33, 34]])
    scores = PromptCache(tiny_lm, prefix).node_log_probs(context, tree, fed=[0])
    assert not scores[:2].isnan().any()  # predicted by the context and by node 0
    assert scores[2:].isnan().all()


def test_cache_is_restored_after_each_call(tiny_lm: CausalLM) -> None:
    prefix = tiny_lm.encode("Categories: cards transfers refunds")
    cache = PromptCache(tiny_lm, prefix)
    tree = TokenTree.build([[5, 6], [7]])
    first = cache.log_likelihoods(tiny_lm.encode("a long message about my card"), tree)
    cache.constrained_log_probs(tiny_lm.encode("another"), tree)
    assert cache.cache.get_seq_length() == len(prefix)
    again = cache.log_likelihoods(tiny_lm.encode("a long message about my card"), tree)
    torch.testing.assert_close(first, again, atol=0, rtol=0)


def test_scoring_needs_a_context_and_a_prefix(tiny_lm: CausalLM) -> None:
    with pytest.raises(ValueError, match="prefix is empty"):
        PromptCache(tiny_lm, [])
    cache = PromptCache(tiny_lm, tiny_lm.encode("Categories"))
    with pytest.raises(ValueError, match="at least one token"):
        cache.log_likelihoods([], TokenTree.build([[5]]))


def test_chat_renders_the_template(tiny_lm: CausalLM) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    rendered = tiny_lm.chat(messages, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tiny_lm.encode("<|im_end|>") == [tiny_lm.tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_a_model_without_chat_template_is_refused(tmp_path: Path) -> None:
    lm = CausalLM.load(str(build_tiny_llm(tmp_path, chat_template=None)))
    with pytest.raises(ModelNotAvailable, match="no chat template"):
        lm.chat([{"role": "user", "content": "hi"}], add_generation_prompt=True)
