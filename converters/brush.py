"""Label Studio's brush RLE: a vectorised encoder byte-identical to the SDK's, and a bounded decoder.

The format (``label_studio_sdk.converter.brush``, after thi-ng's ``rle-pack``) is a bit stream: 32 bits
``num`` (how many values it decodes to: H x W x 4 for an RGBA brush), 5 bits ``word size - 1``, four 4-bit
``run-length field size - 1``; then tokens until ``num`` values are out. A token is 1 bit ``repeat``, 2 bits
choosing one of the four field sizes, the field (``count - 1``), then one word repeated ``count`` times
(repeat) or ``count`` words (literal). The writer pads with zeros to whole bytes.

:func:`mask_to_rle` / :func:`encode_rle` produce exactly the bytes of the SDK's ``mask2rle`` /
``encode_rle`` (word size 8, field sizes 3, 4, 8, 16; runs over 65,536 values split into 65,536-value
chunks; a whole zero byte of padding when the bits end on a byte boundary, as the SDK writes), but with
numpy instead of one Python string operation per run: see ``docs/CONVERTERS.md`` for the measured speed-up.

:func:`decode_rle` reads untrusted data (webhooks, exports): the list's length is checked against what
its header can need before anything is decoded, word sizes over 8 bits are refused (Label Studio's
values are bytes), and the work is one step per token plus numpy fills: never one step per bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BrushRleError", "binary_mask_to_rle", "decode_rle", "encode_rle", "mask_to_rle", "max_rle_bytes"]

#: Bits of the header: num (32), word size - 1 (5), four field sizes - 1 (4 each).
HEADER_BITS = 32 + 5 + 4 * 4
#: What the SDK's (and so Label Studio's exported) brushes use.
WORD_BITS = 8
FIELD_SIZES = (3, 4, 8, 16)
# The longest run one token holds (a 16-bit count field).
_CHUNK = 1 << 16
# num is a 32-bit field.
_MAX_VALUES = (1 << 32) - 1
_HEADER = (
    f"{WORD_BITS - 1:05b}" + "".join(f"{size - 1:04b}" for size in FIELD_SIZES)
)


class BrushRleError(ValueError):
    """Brush RLE that cannot be decoded or encoded; the message says why."""


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Label Studio RLE of a 2-D ``uint8`` mask, each value written to all 4 RGBA channels: the SDK's
    ``mask2rle(mask)``, byte for byte."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise BrushRleError(f"mask must be a 2-D uint8 array, got shape {mask.shape} dtype {mask.dtype}")
    # Repeating every value 4 times makes each run 4 times as long: no need to build the 4x array.
    values, lengths = _runs(mask.ravel())
    return _encode_runs(values, lengths * 4, mask.size * 4)


def binary_mask_to_rle(mask: np.ndarray) -> list[int]:
    """Label Studio RLE of a 2-D mask whose non-zero pixels are painted (255 in all 4 channels): the SDK's
    ``mask2rle(np.where(mask != 0, 255, 0).astype(np.uint8))``, byte for byte, without building that array."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise BrushRleError(f"mask must be a 2-D array, got shape {mask.shape}")
    painted = mask if mask.dtype == np.bool_ else mask != 0
    values, lengths = _runs(painted.view(np.uint8).ravel())
    return _encode_runs(values * np.uint8(255), lengths * 4, mask.size * 4)


def encode_rle(values: np.ndarray) -> list[int]:
    """Label Studio RLE of a 1-D ``uint8`` array: the SDK's ``encode_rle(values)``, byte for byte."""
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype != np.uint8:
        raise BrushRleError(f"values must be a 1-D uint8 array, got shape {values.shape} dtype {values.dtype}")
    run_values, lengths = _runs(values)
    return _encode_runs(run_values, lengths, values.size)


def max_rle_bytes(values: int, word_bits: int = WORD_BITS, field_sizes: Sequence[int] = FIELD_SIZES) -> int:
    """The most bytes any encoding of ``values`` values can take: one one-value token per value with the
    largest field, plus the padding (the SDK writes up to a whole zero byte)."""
    token_bits = 1 + 2 + max(field_sizes) + word_bits
    return (HEADER_BITS + values * token_bits + 7) // 8 + 1


def read_header(rle: Sequence[int]) -> tuple[int, int, tuple[int, ...]]:
    """``(num, word_bits, field_sizes)`` of an RLE list whose first 7 items are bytes."""
    if len(rle) * 8 < HEADER_BITS:
        raise BrushRleError(f"brush rle is {len(rle)} bytes, shorter than its {HEADER_BITS}-bit header")
    head = int.from_bytes(bytes(rle[:7]), "big") >> (7 * 8 - HEADER_BITS)
    fields = head & ((1 << 21) - 1)
    sizes = tuple(((fields >> shift) & 0xF) + 1 for shift in (12, 8, 4, 0))
    return head >> 21, ((fields >> 16) & 0x1F) + 1, sizes


def decode_rle(rle: Sequence[int], expected_values: int | None = None) -> np.ndarray:
    """The ``uint8`` values of Label Studio RLE ``rle`` (a list of byte values).

    Raises :class:`BrushRleError` when the header does not declare ``expected_values`` values (when
    given), when the word size is over 8 bits, when the list is longer than any encoding of its declared
    values can be (checked before decoding), or when the data ends early or a literal run overshoots.
    Runs that overshoot the end are cut there, as Label Studio's and the SDK's decoders do.
    """
    num, word_bits, sizes = read_header(rle)
    if expected_values is not None and num != expected_values:
        raise BrushRleError(f"brush rle encodes {num} values, expected {expected_values}")
    if word_bits > WORD_BITS:
        raise BrushRleError(f"brush rle word size is {word_bits} bits; brush values are bytes (at most 8 bits)")
    longest = max_rle_bytes(num, word_bits, sizes)
    if len(rle) > longest:
        raise BrushRleError(
            f"brush rle is {len(rle)} bytes, longer than any encoding of its {num} values can be ({longest})"
        )
    try:
        data = bytes(rle)
    except (TypeError, ValueError) as error:
        raise BrushRleError(f"brush rle must be a list of byte values (ints in [0, 255]): {error}") from error
    return _decode(data, num, word_bits, sizes)


def _decode(data: bytes, num: int, word_bits: int, sizes: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(num, dtype=np.uint8)
    total_bits = len(data) * 8
    bits: np.ndarray | None = None  # unpacked lazily, for literal runs
    weights = 1 << np.arange(word_bits - 1, -1, -1, dtype=np.int64)

    def read(position: int, size: int) -> int:
        if position + size > total_bits:
            raise BrushRleError(f"brush rle ends early (needs bit {position + size}, has {total_bits})")
        start, stop = position >> 3, (position + size + 7) >> 3
        chunk = int.from_bytes(data[start:stop], "big")
        return (chunk >> (stop * 8 - position - size)) & ((1 << size) - 1)

    index, position = 0, HEADER_BITS
    while index < num:  # every token writes at least one value: at most num steps, each O(1) or a numpy slice
        head = read(position, 3)
        size = sizes[head & 3]
        stop = index + 1 + read(position + 3, size)
        position += 3 + size
        if head >> 2:
            out[index:stop] = read(position, word_bits)
            position += word_bits
        else:
            count = stop - index
            if stop > num:
                raise BrushRleError(f"brush rle: a literal run of {count} values overshoots the {num} declared")
            if count == 1:  # the SDK writes every lone value so: no numpy call for it
                out[index] = read(position, word_bits)
                position += word_bits
                index = stop
                continue
            if position + count * word_bits > total_bits:
                raise BrushRleError("brush rle ends early (inside a literal run)")
            if bits is None:
                bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
            words = bits[position : position + count * word_bits].reshape(count, word_bits)
            out[index:stop] = words @ weights
            position += count * word_bits
        index = stop
    return out


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.size == 0:
        raise BrushRleError("nothing to encode: the array is empty")
    ends = np.append(np.flatnonzero(values[1:] != values[:-1]), values.size - 1)
    lengths = np.diff(ends, prepend=-1)
    return values[ends], lengths


def _encode_runs(values: np.ndarray, lengths: np.ndarray, num: int) -> list[int]:
    if num > _MAX_VALUES:
        raise BrushRleError(f"{num} values do not fit the 32-bit count of Label Studio's RLE")
    values = values.astype(np.uint32)
    lengths = lengths.astype(np.int64)
    # Runs over 256 values use the 16-bit field, in chunks of at most 65,536 (the SDK's choice, kept
    # even where a shorter field would do for the last chunk).
    chunks = np.where(lengths > 256, (lengths - 1) // _CHUNK + 1, 1)
    run = np.repeat(np.arange(len(lengths)), chunks)
    last = np.zeros(len(run), dtype=bool)
    last[np.cumsum(chunks) - 1] = True
    long_field = np.where(last, lengths[run] - 1 - (chunks[run] - 1) * _CHUNK, _CHUNK - 1)
    length, value = lengths[run], values[run]
    count = (length - 1).astype(np.uint32)
    # Token bits: repeat flag, 2-bit field index, the field, the 8-bit value.
    tokens = np.select(
        [length == 1, length <= 8, length <= 16, length <= 256],
        [value, (1 << 13) | (count << 8) | value, (1 << 14) | (1 << 12) | (count << 8) | value,
         (1 << 18) | (2 << 16) | (count << 8) | value],
        (1 << 26) | (3 << 24) | (long_field.astype(np.uint32) << 8) | value,
    ).astype(np.uint32)
    widths = np.select([length <= 8, length <= 16, length <= 256], [14, 15, 19], 27).astype(np.int64)
    offsets = HEADER_BITS + np.cumsum(widths) - widths
    total = HEADER_BITS + int(widths.sum())
    bits = np.zeros(total + 8 - total % 8, dtype=np.uint8)  # the SDK pads 1..8 zero bits
    bits[:HEADER_BITS] = np.frombuffer((f"{num:032b}" + _HEADER).encode("ascii"), dtype=np.uint8) - ord("0")
    last_bit = offsets + widths - 1
    for shift in range(27):
        ones = np.flatnonzero((tokens >> shift) & 1)
        bits[last_bit[ones] - shift] = 1
    return np.packbits(bits).tolist()
