"""Bucket padding and splitting: rows keep their order, padding is zeros (b"" for strings), and is
dropped on the way back."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from runtimes.common.batching import pad_batch, split_batch


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.dtype(ml_dtypes.bfloat16), np.bool_])
def test_pad_stacks_requests_in_order_and_zero_fills(dtype: np.dtype) -> None:
    """Requests' rows are stacked in queue order and the bucket is filled with zero rows."""
    a = np.ones((2, 3), dtype)
    b = np.full((1, 3), 2, dtype) if dtype != np.bool_ else np.ones((1, 3), dtype)
    (padded,) = pad_batch([[a], [b]], bucket=4)
    assert padded.shape == (4, 3) and padded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(padded[:2], a)
    np.testing.assert_array_equal(padded[2:3], b)
    np.testing.assert_array_equal(padded[3], np.zeros(3, dtype))


def test_pad_handles_every_input_of_a_multi_input_model() -> None:
    """Each input is stacked separately, keeping its own dtype and trailing shape."""
    requests = [[np.ones((1, 2), np.float32), np.ones((1, 4, 4), np.int8)]] * 3
    x, y = pad_batch(requests, bucket=4)
    assert x.shape == (4, 2) and y.shape == (4, 4, 4) and y.dtype == np.int8
    assert x[:3].all() and not x[3].any()


def test_pad_skips_the_copy_when_one_request_fills_the_bucket() -> None:
    """A single request whose rows equal the bucket is passed through as is."""
    x = np.ones((4, 3), np.float32)
    assert pad_batch([[x]], bucket=4)[0] is x


def test_split_returns_each_requests_rows_and_drops_padding() -> None:
    """Each request gets back exactly its rows, in order; padding rows go to no one."""
    out = np.arange(8, dtype=np.float32).reshape(4, 2)
    first, second = split_batch([out], rows=[1, 2], bucket=4)
    np.testing.assert_array_equal(first[0], out[:1])
    np.testing.assert_array_equal(second[0], out[1:3])


def test_split_refuses_outputs_without_the_batch_first() -> None:
    """An executable whose output lacks the bucket's batch dimension is an error, not a mis-split."""
    with pytest.raises(RuntimeError, match="expected batch 4 first"):
        split_batch([np.zeros((2, 4))], rows=[2], bucket=4)


def test_pad_fills_string_rows_with_empty_bytes() -> None:
    """Object (BYTES / DT_STRING) inputs pad with b"", which TensorFlow converts, never with 0."""
    a = np.array([[b"a", b"bc"]], dtype=object)
    b = np.array([[b"", b"\xff"]], dtype=object)
    (padded,) = pad_batch([[a], [b]], bucket=4)
    assert padded.dtype == object and padded.shape == (4, 2)
    assert padded.tolist() == [[b"a", b"bc"], [b"", b"\xff"], [b"", b""], [b"", b""]]
