"""The loop on a CUDA device: bf16 autocast under "auto", CUDA memory reported, resume.

Not run here (no GPU on the CPU runners): `pytest -m gpu tests/unit/train` on a GPU machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from adaptlab_tests_train_tiny_task import (
    make_config,
    make_task,
    synthetic_examples,
    tiny_classifier,
    trainable_state,
)

from adaptlab.train.loop import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_bf16_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    config = make_config(num_epochs=2, gradient_accumulation_steps=2, bf16="auto")
    examples = synthetic_examples(40)

    model = tiny_classifier(dropout=0.1)
    result = train(make_task(model, examples), config, tmp_path / "straight", show_progress=False)
    assert result.peak_cuda_bytes is not None and result.peak_cuda_bytes > 0
    assert model.classifier.weight.device.type == "cuda"
    assert model.classifier.weight.dtype == torch.float32  # autocast, not bf16 weights
    expected = trainable_state(model)

    run_dir = tmp_path / "resumed"
    train(make_task(tiny_classifier(dropout=0.1), examples), config, run_dir, stop_after_steps=3)
    model = tiny_classifier(dropout=0.1)
    train(make_task(model, examples), config, run_dir, resume=True, show_progress=False)
    for name, value in trainable_state(model).items():
        # CUDA kernels are not guaranteed bitwise deterministic run to run.
        torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-4, msg=name)
