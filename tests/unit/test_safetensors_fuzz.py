"""safetensors headers fuzzed with hypothesis: typed errors only, bounded in time and memory.

What adaptlab reads back from a run folder (``predictions.safetensors``, heads, indexes) goes
through :meth:`RunFolder.read_prediction_arrays` or the same check-then-load path. Whatever the
bytes, the outcome is the arrays or a :class:`RunError` naming the file: never a traceback from
inside safetensors, a hang, or an allocation the header asked for but the file does not hold.
"""

from __future__ import annotations

import json
import resource
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from adaptlab.runs import PREDICTIONS, RunError, RunFolder

# Each example must finish well inside this; a header that made the loader allocate or scan
# what it claims (exabyte shapes, 2**63 header lengths) would blow through it.
SECONDS_PER_EXAMPLE = 2.0
# Peak RSS may grow by this much over the whole fuzz run (the arrays here are a few KB).
MAX_RSS_GROWTH_BYTES = 256 * 1024 * 1024

DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "X9", ""]


def _valid_file() -> bytes:
    arrays = {
        "probabilities": np.full((4, 3), 1 / 3, dtype=np.float32),
        "gold": np.arange(4, dtype=np.int64),
        "indices": np.arange(4, dtype=np.int64),
    }
    path = Path("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp") / "fuzz-base.safetensors"
    save_file(arrays, str(path))
    data = path.read_bytes()
    path.unlink()
    return data


BASE = _valid_file()
BASE_HEADER_LENGTH = struct.unpack("<Q", BASE[:8])[0]
BASE_HEADER: dict[str, Any] = json.loads(BASE[8 : 8 + BASE_HEADER_LENGTH])
BASE_BODY = BASE[8 + BASE_HEADER_LENGTH :]

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
_entry = st.fixed_dictionaries(
    {
        "dtype": st.one_of(st.sampled_from(DTYPES), _json_leaf),
        "shape": st.one_of(
            st.lists(st.integers(min_value=-2, max_value=2**62), max_size=4), _json_leaf
        ),
        "data_offsets": st.one_of(
            st.lists(st.integers(min_value=-2, max_value=2**64), min_size=0, max_size=3),
            _json_leaf,
        ),
    }
)
_headers = st.dictionaries(
    st.sampled_from(["probabilities", "gold", "indices", "__metadata__", "x"]),
    st.one_of(_entry, _json_leaf, st.dictionaries(st.text(max_size=4), st.text(max_size=4))),
    max_size=4,
)


def _file(header: bytes, body: bytes, declared: int | None = None) -> bytes:
    length = len(header) if declared is None else declared
    return struct.pack("<Q", length % 2**64) + header + body


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["header", "length", "flip", "truncate", "bytes", "entry"]))
    if kind == "header":  # a whole new JSON header over the real body
        header = json.dumps(draw(_headers)).encode()
        return _file(header, BASE_BODY)
    if kind == "entry":  # one real entry changed, the rest intact
        header = dict(BASE_HEADER)
        header[draw(st.sampled_from(sorted(header)))] = draw(_entry)
        return _file(json.dumps(header).encode(), BASE_BODY)
    if kind == "length":  # the header length field lies
        declared = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, len(BASE) + 16)))
        return struct.pack("<Q", declared) + BASE[8:]
    if kind == "flip":  # a few bytes changed anywhere
        data = bytearray(BASE)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "truncate":
        return BASE[: draw(st.integers(0, len(BASE) - 1))]
    return draw(st.binary(max_size=512))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    folder = RunFolder(tmp_path_factory.mktemp("fuzz") / "run")
    folder.reset()
    return folder


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


@settings(
    max_examples=300,
    deadline=None,  # timed below, with a bound that means something on a loaded 2-core box
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(data=corrupted())
def test_corrupt_headers_give_a_run_error_or_arrays(run_folder: RunFolder, data: bytes) -> None:
    (run_folder.path / PREDICTIONS).write_bytes(data)
    start = time.perf_counter()
    try:
        arrays = run_folder.read_prediction_arrays()
    except RunError as exc:
        assert PREDICTIONS in str(exc)
    else:
        assert "indices" in arrays and all(isinstance(a, np.ndarray) for a in arrays.values())
    assert time.perf_counter() - start < SECONDS_PER_EXAMPLE


@pytest.mark.fault
@settings(
    max_examples=2_000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(data=corrupted())
def test_two_thousand_corruptions(run_folder: RunFolder, data: bytes) -> None:
    """The fault tier's longer run of the same property."""
    test_corrupt_headers_give_a_run_error_or_arrays.hypothesis.inner_test(run_folder, data)  # type: ignore[attr-defined]


def test_the_fuzzing_stays_bounded_in_memory(run_folder: RunFolder) -> None:
    """The whole fuzz run again under a peak-RSS bound: no header made the loader allocate
    what it claimed."""
    before = _peak_rss_bytes()
    test_corrupt_headers_give_a_run_error_or_arrays(run_folder)
    assert _peak_rss_bytes() - before < MAX_RSS_GROWTH_BYTES


def test_an_intact_file_reads_back(run_folder: RunFolder) -> None:
    """Control: the base file itself is valid, so the corruptions are what is being refused."""
    (run_folder.path / PREDICTIONS).write_bytes(BASE)
    arrays = run_folder.read_prediction_arrays()
    np.testing.assert_array_equal(arrays["indices"], np.arange(4))


def _entry_file(shape: list[int], offsets: list[int]) -> bytes:
    entry = {"indices": {"dtype": "I64", "shape": shape, "data_offsets": offsets}}
    return _file(json.dumps(entry).encode(), b"\0" * 32)


@pytest.mark.parametrize(
    "data",
    [
        _entry_file([2**62], [0, 32]),
        _entry_file([4], [0, 2**64 - 1]),
        struct.pack("<Q", 2**63) + b"{}",
        struct.pack("<Q", 100_000_001) + b"{" + b" " * 64,
    ],
    ids=["exabyte shape", "offset past the end", "2**63 header length", "header over 100 MB"],
)
def test_headers_that_claim_more_than_the_file_holds(run_folder: RunFolder, data: bytes) -> None:
    (run_folder.path / PREDICTIONS).write_bytes(data)
    with pytest.raises(RunError, match=PREDICTIONS):
        run_folder.read_prediction_arrays()
