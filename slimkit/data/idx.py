"""IDX files (the MNIST / Fashion-MNIST format), gzip or raw, validated against their header."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from slimkit.errors import CorruptDataError, DataNotFoundError

__all__ = ["read_idx", "write_idx"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX array; raise CorruptDataError naming the file for a bad magic number, dims or size."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"IDX file {str(path)!r} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise CorruptDataError(f"{path}: gzip stream is corrupt or truncated ({e}); re-download the file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        magic = raw[:4].hex() or "missing"
        raise CorruptDataError(f"{path}: not an IDX file (magic number {magic}, expected 0000xxyy)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES or ndim == 0:
        raise CorruptDataError(f"{path}: unsupported IDX type code 0x{code:02x} or zero dimensions ({ndim})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise CorruptDataError(
            f"{path}: header says shape {dims} ({expected} data bytes) but the file has {len(raw) - header}: "
            "the file is truncated or corrupt; re-download it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write an IDX file (uint8 or other supported dtypes); gzip when the name ends in .gz."""
    path = Path(path)
    inv = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
    dt = array.dtype.newbyteorder("=")
    if dt not in inv:
        raise CorruptDataError(f"cannot write dtype {array.dtype} as IDX")
    code = inv[dt]
    body = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body += np.ascontiguousarray(array, dtype=np.dtype(_DTYPES[code])).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        body = gzip.compress(body)
    path.write_bytes(body)
    return path
