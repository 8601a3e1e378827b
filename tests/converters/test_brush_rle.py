"""Label Studio brush RLE (converters.brush): byte identity with the SDK's encoder on every mask, and a decoder that
refuses hostile data before doing work for it (issue 19 items 4 and 11, issue 22 item 8)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from label_studio_sdk.converter.brush import decode_rle as sdk_decode_rle
from label_studio_sdk.converter.brush import encode_rle as sdk_encode_rle
from label_studio_sdk.converter.brush import mask2rle

from converters.brush import (
    BrushRleError,
    binary_mask_to_rle,
    decode_rle,
    encode_rle,
    mask_to_rle,
    max_rle_bytes,
    read_header,
)

# Run lengths around every boundary of the format: 1 (a literal), 8 / 9, 16 / 17, 256 / 257 (field sizes 3, 4,
# 8, 16 bits) and 65,536 / 65,537 (one 16-bit chunk, then a second).
BOUNDARY_RUNS = [1, 2, 3, 7, 8, 9, 15, 16, 17, 255, 256, 257, 65535, 65536, 65537, 131072, 131073]


@st.composite
def run_arrays(draw: st.DrawFn, max_runs: int = 12) -> np.ndarray:
    """1-D uint8 arrays made of runs whose lengths sit on the format's boundaries (or anywhere)."""
    lengths = draw(st.lists(st.one_of(st.sampled_from(BOUNDARY_RUNS), st.integers(1, 600)), min_size=1,
                            max_size=max_runs))
    values = draw(st.lists(st.integers(0, 255), min_size=len(lengths), max_size=len(lengths)))
    return np.repeat(np.array(values, dtype=np.uint8), lengths)


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    """2-D uint8 masks: 1xN, Nx1, odd sizes, empty (all 0), full, random noise, a few values, long runs."""
    height = draw(st.integers(1, 40))
    width = draw(st.integers(1, 40)) if height > 1 else draw(st.integers(1, 20000))
    kind = draw(st.sampled_from(["noise", "binary", "blocks", "constant"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "constant":
        return np.full((height, width), draw(st.sampled_from([0, 255, 1, 128])), np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, (height, width), dtype=np.uint8)
    if kind == "binary":
        return np.where(rng.random((height, width)) < draw(st.floats(0, 1)), 255, 0).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    for _ in range(draw(st.integers(1, 4))):
        top, left = rng.integers(0, height), rng.integers(0, width)
        mask[top : top + rng.integers(1, height + 1), left : left + rng.integers(1, width + 1)] = rng.integers(0, 256)
    return mask


@settings(max_examples=150, deadline=None, derandomize=True)
@given(masks())
@example(np.zeros((1, 1), np.uint8))
@example(np.full((1, 1), 255, np.uint8))
@example(np.zeros((128, 128), np.uint8))  # one run of 65,536 values: exactly one chunk
@example(np.full((129, 128), 255, np.uint8))  # past one chunk
@example(np.zeros((1, 16385), np.uint8))  # 65,540 values: a chunk and a short remainder in a 16-bit field
@example(np.full((2, 32), 255, np.uint8))  # one run of 256 values: the 8-bit field's longest
@example(np.zeros((3, 5), np.uint8))  # 60 values: the bits end on a byte boundary, the SDK pads a zero byte
def test_mask_encoder_is_byte_identical_to_the_sdk(mask: np.ndarray) -> None:
    ours = mask_to_rle(mask)
    assert ours == mask2rle(mask)
    assert all(type(byte) is int for byte in ours)
    # brush_region's path: any non-zero pixel painted 255, from a bool or an integer mask.
    painted = mask2rle(np.where(mask != 0, 255, 0).astype(np.uint8))
    assert binary_mask_to_rle(mask) == binary_mask_to_rle(mask != 0) == painted
    assert np.array_equal(decode_rle(ours, expected_values=mask.size * 4), np.repeat(mask.ravel(), 4))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(run_arrays())
@example(np.zeros(256, np.uint8))  # the longest run of the 8-bit field
@example(np.zeros(257, np.uint8))
@example(np.full(16, 7, np.uint8))
@example(np.full(17, 7, np.uint8))
def test_value_encoder_is_byte_identical_to_the_sdk_across_run_boundaries(values: np.ndarray) -> None:
    ours = encode_rle(values)
    assert ours == sdk_encode_rle(values)
    assert np.array_equal(decode_rle(ours), values)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(hnp.arrays(np.uint8, st.integers(1, 300), elements=st.integers(0, 3)))
def test_decoder_agrees_with_the_sdk_decoder(values: np.ndarray) -> None:
    rle = sdk_encode_rle(values)
    assert np.array_equal(decode_rle(rle), sdk_decode_rle(rle))


def test_encoders_refuse_what_the_sdk_cannot_encode() -> None:
    with pytest.raises(BrushRleError, match="empty"):
        mask_to_rle(np.zeros((0, 4), np.uint8))
    with pytest.raises(BrushRleError, match="uint8"):
        mask_to_rle(np.zeros((2, 2), np.int64))
    with pytest.raises(BrushRleError, match="1-D uint8"):
        encode_rle(np.zeros((2, 2), np.uint8))


def _mask_rle(height: int = 64, width: int = 64) -> list[int]:
    mask = np.zeros((height, width), np.uint8)
    mask[10:20, 10:30] = 255
    return mask2rle(mask)


def test_padding_past_any_encoding_is_refused_before_decoding() -> None:
    rle = _mask_rle()
    longest = max_rle_bytes(64 * 64 * 4)
    # One 27-bit token (repeat flag, field index, 16-bit field, 8-bit word) per value, the header, padding.
    assert longest == (53 + 64 * 64 * 4 * 27 + 7) // 8 + 1 == 55304
    assert len(rle) < longest
    padded = rle + [0] * (longest - len(rle))  # exactly the limit: decoded (trailing zeros are padding)
    assert np.array_equal(decode_rle(padded, 64 * 64 * 4), decode_rle(rle, 64 * 64 * 4))
    with pytest.raises(BrushRleError, match=rf"is {longest + 1} bytes, longer than any encoding of its 16384 values"):
        decode_rle([*padded, 0])
    # The length is checked before the items are looked at: a megabyte of junk costs nothing.
    with pytest.raises(BrushRleError, match="longer than any encoding"):
        decode_rle(rle + ["junk"] * 1_000_000)


def test_word_sizes_over_8_bits_are_refused() -> None:
    rle = _mask_rle()
    for word_bits in (9, 16, 32):
        changed = list(rle)
        # Bits 32..36 hold word size - 1: the 5 high bits of byte 4.
        changed[4] = (changed[4] & 0b111) | ((word_bits - 1) << 3)
        assert read_header(changed)[1] == word_bits
        with pytest.raises(BrushRleError, match=f"word size is {word_bits} bits"):
            decode_rle(changed)
    # Narrower words are the format's own (the SDK's encoder writes 8 bits whatever its wordsize says).
    narrow = _stream(4, 2, "0" "00" "011" "01" "00" "01" "11")  # one literal token of 4 two-bit words
    assert decode_rle(narrow).tolist() == [1, 0, 1, 3]


def test_truncated_or_overshooting_data_is_refused() -> None:
    rle = _mask_rle()
    with pytest.raises(BrushRleError, match="ends early"):
        decode_rle(rle[:-3])
    with pytest.raises(BrushRleError, match="shorter than its 53-bit header"):
        decode_rle(rle[:6])
    with pytest.raises(BrushRleError, match="encodes 16384 values, expected 16"):
        decode_rle(rle, expected_values=16)
    with pytest.raises(BrushRleError, match="overshoots"):  # a literal token of 3 values where 2 are declared
        decode_rle(_stream(2, 8, "0" "00" "010" + "00000001" * 3))
    # A repeat token past the end is cut there, as Label Studio's and the SDK's decoders do.
    assert decode_rle(_stream(2, 8, "1" "00" "111" "00000101")).tolist() == [5, 5]


def _stream(values: int, word_bits: int, tokens: str) -> list[int]:
    """A hand-made RLE: the header for ``values`` values of ``word_bits`` bits, field sizes 3, 4, 8, 16."""
    bits = f"{values:032b}{word_bits - 1:05b}" + "0010" "0011" "0111" "1111" + tokens
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
