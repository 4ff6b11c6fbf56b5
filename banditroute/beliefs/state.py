"""Learned state as data: arrays, their checks, and the file that holds them (a snapshot).

A part exports its state with ``state_arrays() -> {name: numpy array}`` and restores it with
``load_state_arrays(arrays)``, which checks every array (:func:`take`: present, shape, dtype,
finite) before it changes anything. A random generator is stored as its PCG64 state, six
unsigned 64-bit words (:func:`generator_state`), so that a restored part draws exactly what the
original would have drawn next.

The file (:func:`write_file`, :func:`read_file`) is a zip archive in numpy's ``.npz`` layout:
``snapshot.json``, the metadata (JSON), and one ``.npy`` array per piece of numeric state
(``belief/alpha.npy``, ``policy/A.npy``, ...). Why this layout rather than Parquet: the state is
a handful of arrays of different shapes (a (task, draw, profile) bank, (profile, dim, dim)
matrices, model bytes), which ``.npy`` stores exactly (dtype, shape, every bit of every float)
with no schema to maintain; the metadata stays readable (``unzip -p FILE snapshot.json``);
``numpy.load(FILE, allow_pickle=False)`` opens it too; and zip keeps a CRC-32 of every member.

Reading never executes code: the archive is opened with :mod:`zipfile`, the metadata parsed by
:func:`json.loads` into plain values, and each array read by ``numpy.lib.format.read_array``
with ``allow_pickle=False``, which refuses object arrays, the one way a pickle could hide in a
``.npy``; each member's CRC-32 is checked. Anything else (a pickle, a truncated or altered
file) is refused with a :class:`~banditroute.errors.ConfigError` naming the path.

>>> import pathlib, tempfile
>>> rng = np.random.default_rng(0); _ = rng.random()
>>> again = np.random.default_rng(1)
>>> set_generator_state(again, generator_state(rng))
>>> again.random() == rng.random()
True
>>> take({"alpha": np.ones((2, 3))}, "alpha", (2, 2), np.float64, owner="belief")
Traceback (most recent call last):
...
banditroute.errors.ConfigError: belief.alpha must be an array of shape (2, 2) and dtype float64, got 'shape (2, 3), dtype float64'
>>> path = pathlib.Path(tempfile.mkdtemp()) / "state.npz"
>>> write_file(path, {"kind": "example"}, {"x/a": np.arange(3.0)})
>>> meta, arrays = read_file(path)
>>> meta["kind"], arrays["x/a"].tolist()
('example', [0.0, 1.0, 2.0])
>>> _ = path.write_bytes(b"\\x80\\x04K\\x01.")  # a pickle
>>> read_file(path)
Traceback (most recent call last):
...
banditroute.errors.ConfigError: path is not a banditroute snapshot (not a zip archive of JSON metadata and .npy arrays; a pickle is never loaded, unless asked for with format='pickle'), got '...state.npz'
"""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["FORMAT", "FORMAT_VERSION", "generator_state", "pack_strings", "read_file", "set_generator_state", "take",
           "unpack_strings", "write_file"]

FORMAT = "banditroute-snapshot"
FORMAT_VERSION = 1
_META = "snapshot.json"
_MASK = (1 << 64) - 1


def generator_state(rng: np.random.Generator) -> np.ndarray:
    """The state of ``rng`` (a PCG64 generator, numpy's default) as six uint64 words."""
    state = rng.bit_generator.state
    if state.get("bit_generator") != "PCG64":
        raise ConfigError("generator", state.get("bit_generator"), "must be PCG64 to be stored as data")
    s, inc = int(state["state"]["state"]), int(state["state"]["inc"])
    return np.array([s >> 64, s & _MASK, inc >> 64, inc & _MASK, int(state["has_uint32"]), int(state["uinteger"])],
                    dtype=np.uint64)


def set_generator_state(rng: np.random.Generator, words: np.ndarray, *, owner: str = "generator") -> None:
    """Give ``rng`` the state :func:`generator_state` returned."""
    w = [int(x) for x in take({"rng": words}, "rng", (6,), np.uint64, owner=owner)]
    if w[4] not in (0, 1) or w[5] > 0xFFFFFFFF:
        raise ConfigError(f"{owner}.rng", w[4:], "is not a PCG64 state")
    rng.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": (w[0] << 64) | w[1],
                                                                    "inc": (w[2] << 64) | w[3]},
                               "has_uint32": w[4], "uinteger": w[5]}


def take(arrays: Mapping[str, np.ndarray], name: str, shape: tuple | None, dtype, *, owner: str) -> np.ndarray:
    """A copy of ``arrays[name]``, checked: present, of ``shape`` (None: any), of exactly
    ``dtype``, and finite if it holds floats. Raises :class:`ConfigError` naming
    ``<owner>.<name>``."""
    where = f"{owner}.{name}"
    if name not in arrays:
        raise ConfigError(where, problem="is missing from the stored state")
    a = arrays[name]
    dtype = np.dtype(dtype)
    if not isinstance(a, np.ndarray) or a.dtype != dtype or (shape is not None and a.shape != tuple(shape)):
        got = f"shape {a.shape}, dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
        want = "any shape" if shape is None else f"shape {tuple(shape)}"
        raise ConfigError(where, got, f"must be an array of {want} and dtype {dtype}")
    if dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ConfigError(where, "non-finite values", "must be finite")
    return a.copy()


# -- the file ------------------------------------------------------------------------------------
def write_file(path: str | os.PathLike, meta: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a snapshot atomically: a temporary file in the same directory, fsync'ed, renamed
    into place, the directory fsync'ed. ``arrays`` hold numbers (object arrays are refused)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    try:
        with open(tmp, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                zf.writestr(_META, json.dumps(doc, indent=1, allow_nan=False))
                for name, array in arrays.items():
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                        np.lib.format.write_array(out, np.asarray(array), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


_MAX_RATIO, _MAX_SLACK = 200, 64 << 20  # the arrays a snapshot may declare: 200x its size on disk, + 64 MiB


def read_file(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """``(metadata, arrays)`` of the snapshot at ``path``, without running any code from it.

    Raises :class:`ConfigError` (field ``path``) for anything that is not an intact snapshot of
    a format version this library reads."""
    path = Path(path)

    def refuse(problem: str) -> ConfigError:
        return ConfigError("path", str(path), problem)

    try:
        zf = zipfile.ZipFile(path)
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror or exc})") from None
    except zipfile.BadZipFile:
        raise refuse("is not a banditroute snapshot (not a zip archive of JSON metadata and .npy arrays; "
                     "a pickle is never loaded, unless asked for with format='pickle')") from None
    with zf:
        try:
            meta = json.loads(zf.read(_META).decode("utf-8"))
        except KeyError:
            raise refuse(f"is not a banditroute snapshot (no {_META})") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RecursionError) as exc:
            raise refuse(f"is damaged ({_META}: {exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise refuse(f"is not a banditroute snapshot ({_META} does not say format {FORMAT!r})")
        version = meta.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise refuse(f"has format_version {version!r}; this banditroute reads 1 to {FORMAT_VERSION}")
        declared = sum(info.file_size for info in zf.infolist())  # zipfile reads no more than declared
        if declared > _MAX_RATIO * path.stat().st_size + _MAX_SLACK:
            raise refuse(f"declares {declared:,} bytes of arrays in a {path.stat().st_size:,}-byte file (refused: "
                         f"more than {_MAX_RATIO}x its size, a zip bomb rather than a snapshot)")
        arrays = {}
        for info in zf.infolist():
            if info.filename == _META:
                continue
            if not info.filename.endswith(".npy"):
                raise refuse(f"holds an unexpected member {info.filename!r}")
            try:
                data = zf.read(info)  # checks the member's CRC-32
                arrays[info.filename[:-4]] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
            except ValueError as exc:  # object arrays (a pickle inside), malformed headers
                raise refuse(f"member {info.filename!r} is not a plain numeric array (refused without "
                             f"running it: {exc})") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise refuse(f"is damaged ({info.filename}: {exc})") from None
    return meta, arrays


def pack_strings(values: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Strings (or None) as arrays: their UTF-8 bytes end to end, offsets and a null mask.

    >>> unpack_strings(pack_strings(["é", None, "{}"]), owner="x")
    ['é', None, '{}']
    """
    encoded = [b"" if v is None else v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return {"utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), "offsets": offsets,
            "null": np.array([v is None for v in values], dtype=np.bool_)}


def unpack_strings(arrays: Mapping[str, np.ndarray], *, owner: str) -> list[str | None]:
    """The strings :func:`pack_strings` stored (checked; a ConfigError names ``owner``)."""
    try:
        data, offsets, null = (arrays[k] for k in ("utf8", "offsets", "null"))
        ok = (data.dtype == np.uint8 and offsets.dtype == np.int64 and null.dtype == np.bool_
              and offsets.shape == (null.size + 1,) and offsets[0] == 0 and offsets[-1] == data.size
              and np.all(np.diff(offsets) >= 0))
        if not ok:
            raise ValueError("inconsistent arrays")
        raw = data.tobytes()
        bounds = offsets.tolist()
        return [None if n else raw[a:b].decode("utf-8") for a, b, n in zip(bounds, bounds[1:], null.tolist())]
    except (KeyError, ValueError, AttributeError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(owner, str(exc), "is not a stored list of strings") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
