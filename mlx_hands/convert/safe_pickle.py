"""Read the original pickled files (PyTorch checkpoints, the MANO release pickle) without torch,
chumpy or scipy, and without ever running code from the file.

Every global a pickle names goes through an allow-list. Known tensor and array builders are
replaced by numpy-only functions; classes under the ``stand_ins`` prefixes become inert
:class:`StandIn` objects that only record what was pickled; anything else raises
:class:`UnsafePickleError` before it is imported.

PyTorch checkpoints (:func:`load_torch_file`) come back as the pickled structure (dicts, lists,
:class:`StandIn` objects) with every tensor as a **read-only numpy array that views a memory map
of the file**: nothing is read from disk until an array's values are used, so
``load_torch_file("wilor_final.ckpt")["state_dict"]`` costs only the pickled metadata even when the
file also holds optimizer states. ``np.array(x)`` makes a private, writable copy. bfloat16 tensors
are the exception: numpy has no bfloat16, so they are converted to float32 (and read) on load.
float16 stays float16. Tensors keep torch's shape and strides (a transposed tensor is a
non-contiguous view). Parameters load as plain arrays; ``torch.float16``-style dtypes as the string
``"torch.float16"``, ``torch.device`` as ``"cpu"``, ``torch.Size`` as a tuple.
"""

from __future__ import annotations

import codecs
import collections
import io
import logging
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "UnsafePickleError",
    "StandIn",
    "DEFAULT_STAND_INS",
    "load_torch_file",
    "load_legacy_pickle",
    "module_state_dict",
]

# Metadata classes a Lightning checkpoint may pickle besides tensors (hyper-parameters, callback,
# loop and optimizer states). They are recorded, never imported.
DEFAULT_STAND_INS: tuple[str, ...] = (
    "yacs.config.",
    "omegaconf.",
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "torch.optim.",
    "torch.torch_version.",
    "torchmetrics.",
    "torch.utils.data.",
    "typing.",
    "enum.",
    "argparse.Namespace",
    "types.SimpleNamespace",
    "pathlib.",
    "datetime.",
    "decimal.Decimal",
    "fractions.Fraction",
)

_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C


class CheckpointError(ValueError):
    """The file is not the expected format, or is damaged (truncated, missing members)."""


class UnsafePickleError(ValueError):
    """The pickle names a global outside the allow-list (it may try to run code)."""


# --------------------------------------------------------------------------------------------
# Stand-ins


class StandIn:
    """Inert record of an object of a class we do not import.

    Its pickled state lands in ``__dict__`` (so ``m._modules``, the children and parameters of a pickled
    ``nn.Module`` such as ``m.model``, and ``cfg.MODEL`` of a yacs CfgNode work as attributes), dict items in
    a private dict (so a yacs ``CfgNode`` behaves like a dict), list items in a private list,
    constructor arguments in ``_standin_args`` and any non-dict state in ``_standin_state``.
    The class path is ``type(obj)._standin_path`` (e.g. ``"yacs.config.CfgNode"``).
    """

    _standin_path = "?"

    def __init__(self, *args, **kwargs):
        if kwargs:
            self._standin_kwargs = kwargs

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, "_standin_args", args)
        object.__setattr__(obj, "_standin_items", {})
        object.__setattr__(obj, "_standin_list", [])
        return obj

    def __setstate__(self, state):
        slots = None
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)) \
                and isinstance(state[1], dict):
            state, slots = state
        if isinstance(state, dict):
            self.__dict__.update(state)
        elif state is not None:
            object.__setattr__(self, "_standin_state", state)
        if slots:
            self.__dict__.update(slots)

    # dict-like
    def __setitem__(self, key, value):
        self._standin_items[key] = value

    def __getitem__(self, key):
        if self._standin_items or not self._standin_list:
            return self._standin_items[key]
        return self._standin_list[key]

    def __contains__(self, key):
        return key in self._standin_items

    def __iter__(self):
        return iter(self._standin_items if self._standin_items else self._standin_list)

    def __len__(self):
        return len(self._standin_items) + len(self._standin_list)

    def __bool__(self):
        return True

    def keys(self):
        return self._standin_items.keys()

    def values(self):
        return self._standin_items.values()

    def items(self):
        return self._standin_items.items()

    def get(self, key, default=None):
        return self._standin_items.get(key, default)

    # list-like
    def append(self, value):
        self._standin_list.append(value)

    def extend(self, values):
        self._standin_list.extend(values)

    def __getattr__(self, name):
        # only reached when normal lookup fails: let attribute-style configs (CfgNode) read items
        if name.startswith("__") or name.startswith("_standin"):
            raise AttributeError(name)
        d = object.__getattribute__(self, "__dict__")
        for group in ("_parameters", "_buffers", "_modules"):  # nn.Module attribute lookup
            if isinstance(d.get(group), dict) and name in d[group]:
                return d[group][name]
        items = d.get("_standin_items", {})
        if name in items:
            return items[name]
        raise AttributeError(f"{type(self)._standin_path} stand-in has no attribute {name!r}")

    def __repr__(self):
        return f"<StandIn {type(self)._standin_path}>"


def _make_stand_in_class(path: str, classes: dict) -> type:
    cls = classes.get(path)
    if cls is None:
        module, _, name = path.rpartition(".")
        cls = type(name, (StandIn,), {"_standin_path": path, "__module__": "mlx_hands.standin." + module})
        classes[path] = cls
    return cls


def module_state_dict(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Keys and arrays of a stand-in ``nn.Module`` tree, named as ``nn.Module.state_dict()`` does:
    own parameters, then persistent buffers, then children (``model.0.conv.weight``,
    ``...bn.running_mean``); None entries are skipped."""
    d = getattr(obj, "__dict__", {})
    if "_modules" not in d:
        raise TypeError(f"module_state_dict: {obj!r} at {prefix or '<root>'!r} is not a pickled nn.Module")
    out: dict[str, np.ndarray] = {}
    for name, value in (d.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value
    skip = d.get("_non_persistent_buffers_set") or set()
    for name, value in (d.get("_buffers") or {}).items():
        if value is not None and name not in skip:
            out[prefix + name] = value
    for name, child in (d.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state_dict(child, prefix + name + "."))
    return out


# --------------------------------------------------------------------------------------------
# Inert replacements for allowed globals


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1")
    if not isinstance(obj, str) or codecs.lookup(encoding).name not in ("iso8859-1", "utf-8"):
        raise UnsafePickleError(f"_codecs.encode called with unexpected arguments ({type(obj).__name__}, {encoding!r})")
    return obj.encode(encoding, errors)


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"numpy _reconstruct of {subtype!r}: only numpy.ndarray is allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_dtype(spec, align=False, copy=False):
    # copy=True (as pickled) gives a fresh dtype for BUILD to set the byte order on, not numpy's singleton
    dt = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dt.hasobject:
        raise UnsafePickleError(f"numpy object dtype {spec!r} is not allowed")
    return dt


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"numpy scalar of dtype {dtype!r} is not allowed")
    if isinstance(data, str):
        data = data.encode("latin1")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _make_reconstructor():
    def _reconstructor(cls, base, state=None):
        # copyreg._reconstructor(cls, base, state): how protocol 0-1 (and py2) rebuild plain objects
        if isinstance(cls, type) and issubclass(cls, StandIn):
            obj = cls.__new__(cls)
            if state is not None:
                object.__setattr__(obj, "_standin_base_state", state)
            return obj
        raise UnsafePickleError(f"copyreg._reconstructor of {cls!r} is not allowed")

    return _reconstructor


class InertAttribute:
    """What ``getattr(StandInClass, name)`` unpickles to, e.g. ultralytics' ``Pose.detect = Detect.forward``."""

    def __init__(self, path: str):
        self.path = path

    def __repr__(self):
        return f"<InertAttribute {self.path}>"


def _safe_getattr(*args):
    # pickle spells a bound or class function as getattr(owner, name); allowed only on stand-ins, where
    # it yields a record and never the attribute itself
    if len(args) in (2, 3) and isinstance(args[1], str):
        owner = args[0] if isinstance(args[0], type) else type(args[0])
        if issubclass(owner, StandIn):
            return InertAttribute(f"{owner._standin_path}.{args[1]}")
    raise UnsafePickleError(f"builtins.getattr{tuple(a if isinstance(a, str) else type(a).__name__ for a in args)} "
                            f"is not allowed (only on stand-in classes)")


_BUILTINS = {
    "set": set, "frozenset": frozenset, "slice": slice, "complex": complex, "range": range,
    "bytearray": bytearray, "bytes": bytes, "object": object, "int": int, "float": float,
    "bool": bool, "str": str, "list": list, "tuple": tuple, "dict": dict, "unicode": str, "long": int,
}

_COMMON_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("collections", "Counter"): collections.Counter,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _np_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
}
for _mod in ("builtins", "__builtin__"):
    for _name, _obj in _BUILTINS.items():
        _COMMON_GLOBALS[(_mod, _name)] = _obj
    _COMMON_GLOBALS[(_mod, "getattr")] = _safe_getattr


class _SafeUnpickler(pickle.Unpickler):
    """Resolves globals from an explicit table; stand-in prefixes become StandIn subclasses."""

    def __init__(self, file, *, source: str, table: dict, stand_ins: Iterable[str], **kw):
        super().__init__(file, **kw)
        self._source = source
        self._table = table
        self._stand_ins = tuple(stand_ins)
        self._classes: dict[str, type] = {}

    def find_class(self, module, name):
        key = (module, name)
        if key in self._table:
            return self._table[key]
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _make_reconstructor()
        path = f"{module}.{name}"
        if self._stand_ins and path.startswith(self._stand_ins):
            return _make_stand_in_class(path, self._classes)
        raise UnsafePickleError(f"{self._source}: refusing to load: it names {path}, which no checkpoint of these "
                                f"models needs (loading it could run code; the file may be malicious or damaged)")


# --------------------------------------------------------------------------------------------
# PyTorch files

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64, "ComplexDoubleStorage": np.complex128, "UntypedStorage": np.uint8,
}
_TORCH_DTYPES = [
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "complex64", "complex128", "double", "float", "half", "long", "int", "short", "uint16", "uint32", "uint64",
]


class _StorageType:
    def __init__(self, name: str, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    __slots__ = ("key", "dtype", "numel", "array")

    def __init__(self, key, dtype, numel, array):
        self.key, self.dtype, self.numel, self.array = key, dtype, numel, array


class _TorchType:
    """Marker for torch.Tensor / torch.nn.Parameter named as a type (e.g. in _rebuild_from_type_v2)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


def _bf16_to_f32(a: np.ndarray) -> np.ndarray:
    return (np.ascontiguousarray(a).astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("torch._utils._rebuild_tensor_v2 called without a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    arr = storage.array
    if storage_offset < 0 or len(size) != len(stride) or any(s < 0 for s in stride) or any(n < 0 for n in size):
        raise CheckpointError(f"bad tensor layout: size {size}, stride {stride}, offset {storage_offset}")
    if int(np.prod(size, dtype=np.int64)) == 0:
        out = np.empty(size, dtype=arr.dtype)
    else:
        extent = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
        if extent > storage.numel:
            raise CheckpointError(
                f"tensor needs {extent} elements of storage {storage.key}, which holds {storage.numel}")
        base = arr[storage_offset:]
        out = np.lib.stride_tricks.as_strided(
            base, shape=size, strides=tuple(s * arr.itemsize for s in stride), writeable=False)
    if storage.dtype == "bfloat16":
        out = _bf16_to_f32(out)
    return out


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor_v2, _rebuild_parameter):
        raise UnsafePickleError(f"torch._tensor._rebuild_from_type_v2 with unexpected builder {func!r}")
    return func(*args)


def _torch_device(spec, index=None):
    return str(spec) if index is None else f"{spec}:{index}"


def _torch_table() -> dict:
    table = dict(_COMMON_GLOBALS)
    table[("torch._utils", "_rebuild_tensor_v2")] = _rebuild_tensor_v2
    table[("torch._utils", "_rebuild_parameter")] = _rebuild_parameter
    table[("torch._utils", "_rebuild_parameter_with_state")] = _rebuild_parameter
    table[("torch._tensor", "_rebuild_from_type_v2")] = _rebuild_from_type_v2
    table[("torch", "Size")] = tuple
    table[("torch", "device")] = _torch_device
    table[("torch", "Tensor")] = _TorchType("torch.Tensor")
    table[("torch.nn.parameter", "Parameter")] = _TorchType("torch.nn.parameter.Parameter")
    for name, dtype in _STORAGE_DTYPES.items():
        table[("torch", name)] = _StorageType(name, dtype)
    for name in _TORCH_DTYPES:
        table[("torch", name)] = f"torch.{name}"
    return table


def _storage_array(dtype, raw: np.ndarray, numel: int, big_endian: bool) -> np.ndarray:
    np_dtype = np.dtype(np.uint16 if dtype == "bfloat16" else dtype)
    if big_endian:
        np_dtype = np_dtype.newbyteorder(">")
    return raw[: numel * np_dtype.itemsize].view(np_dtype)


def _file_map(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")


def _zip_member_offset(zf: zipfile.ZipFile, info: zipfile.ZipInfo, fp) -> int:
    fp.seek(info.header_offset)
    header = fp.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise CheckpointError(f"bad zip local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def load_torch_file(path, *, stand_ins: Iterable[str] = ()) -> Any:
    """Load a file written by ``torch.save`` (zip format, or the legacy pre-1.6 format) with numpy.

    Tensors become read-only numpy arrays backed by a memory map of the file (read on use; see
    the module docstring). Classes whose dotted path starts with ``DEFAULT_STAND_INS`` or one of
    ``stand_ins`` (e.g. ``("ultralytics.", "torch.nn.modules.")`` for a pickled detector) become
    :class:`StandIn` records (stand-ins never run code: ``stand_ins=("",)`` records every unknown
    class). Raises FileNotFoundError, CheckpointError (wrong format, truncated)
    or UnsafePickleError (a global outside the allow-list).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    stand = DEFAULT_STAND_INS + tuple(stand_ins)
    if zipfile.is_zipfile(path):
        return _load_torch_zip(path, stand)
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:1] == b"\x80":
        try:
            magic = _SafeUnpickler(io.BytesIO(head), source=str(path), table={}, stand_ins=()).load()
        except Exception:
            magic = None
        if magic == _LEGACY_TORCH_MAGIC:
            return _load_torch_legacy(path, stand)
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (zip) file (wrong format, or truncated)")


def _load_torch_zip(path: Path, stand: tuple[str, ...]) -> Any:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (zip) file ({e})") from None
    with zf, open(path, "rb") as fp:
        infos = {i.filename: i for i in zf.infolist()}
        pkls = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: zip file without a single <archive>/data.pkl: not a PyTorch checkpoint")
        prefix = pkls[0][: -len("data.pkl")]
        big = False
        if prefix + "byteorder" in infos:
            big = zf.read(prefix + "byteorder").decode("ascii", "replace").strip() == "big"
        try:
            data_pkl = zf.read(pkls[0])
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(f"{path}: cannot read {pkls[0]}: {e}") from None
        fmap = _file_map(path)
        size = fmap.shape[0]
        storages: dict[str, _Storage] = {}

        def persistent_load(pid):
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
                raise CheckpointError(f"{path}: unexpected persistent id {pid!r}")
            stype, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
            if not isinstance(stype, _StorageType):
                raise UnsafePickleError(f"{path}: persistent id names {stype!r}, not a torch storage type")
            if key in storages:
                return storages[key]
            name = f"{prefix}data/{key}"
            info = infos.get(name)
            if info is None:
                raise CheckpointError(f"{path}: truncated: storage data/{key} missing")
            itemsize = 2 if stype.dtype == "bfloat16" else np.dtype(stype.dtype).itemsize
            nbytes = numel * itemsize
            if info.file_size < nbytes:
                raise CheckpointError(
                    f"{path}: truncated: storage data/{key} has {info.file_size} bytes, needs {nbytes}")
            if info.compress_type == zipfile.ZIP_STORED:
                start = _zip_member_offset(zf, info, fp)
                if start + nbytes > size:
                    raise CheckpointError(f"{path}: truncated: storage data/{key} runs past the end of the file")
                raw = fmap[start : start + nbytes]
                # the zip's own checksum: damage inside a tensor would otherwise pass unnoticed
                if info.file_size == nbytes and zlib.crc32(raw) != info.CRC:
                    raise CheckpointError(f"{path}: damaged: the tensor data/{key} does not match its checksum "
                                          f"(the file was altered or corrupted; download it again)")
            else:  # torch never compresses, but a re-zipped file might
                raw = np.frombuffer(zf.read(name), np.uint8)
            st = _Storage(key, stype.dtype, numel, _storage_array(stype.dtype, raw, numel, big))
            storages[key] = st
            return st

        up = _SafeUnpickler(io.BytesIO(data_pkl), source=str(path), table=_torch_table(), stand_ins=stand,
                            encoding="utf-8")
        up.persistent_load = persistent_load
        return _unpickle(up, path)


def _unpickle(up: pickle.Unpickler, path) -> Any:
    try:
        return up.load()
    except (UnsafePickleError, CheckpointError):
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, KeyError, TypeError,
            ValueError, struct.error, MemoryError, RecursionError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot unpickle ({type(e).__name__}: {e}); damaged or not a checkpoint") \
            from None


def _load_torch_legacy(path: Path, stand: tuple[str, ...]) -> Any:
    """Pre-1.6 format: magic, protocol, sys_info, main pickle, storage keys, then raw storages
    (each an int64 element count and its bytes) in key order. Two passes: the first learns every
    storage's dtype, so their offsets are known before tensors are built in the second."""
    table = _torch_table()
    with open(path, "rb") as f:
        try:
            for _ in range(3):
                _SafeUnpickler(f, source=str(path), table=table, stand_ins=()).load()
        except UnsafePickleError:
            raise
        except Exception as e:
            raise CheckpointError(f"{path}: bad legacy PyTorch header ({e})") from None
        main_at = f.tell()
        seen: dict[str, Any] = {}

        def record(pid):
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
                raise CheckpointError(f"{path}: unexpected persistent id {pid!r}")
            if len(pid) > 5 and pid[5] is not None:
                raise CheckpointError(f"{path}: legacy storage views are not supported")
            if not isinstance(pid[1], _StorageType):
                raise UnsafePickleError(f"{path}: persistent id names {pid[1]!r}, not a torch storage type")
            key = str(pid[2])
            seen[key] = pid[1].dtype
            return _Storage(key, pid[1].dtype, 0, np.zeros(0, np.uint8))

        def dummy_tensor(*a, **k):
            return None

        t1 = dict(table)
        t1[("torch._utils", "_rebuild_tensor_v2")] = dummy_tensor
        up = _SafeUnpickler(f, source=str(path), table=t1, stand_ins=stand)
        up.persistent_load = record
        _unpickle(up, path)
        keys = _unpickle(_SafeUnpickler(f, source=str(path), table=table, stand_ins=()), path)
        offsets = {}
        pos = f.tell()
        fsize = path.stat().st_size
        for key in keys:
            key = str(key)
            f.seek(pos)
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated: storage {key} missing")
            (numel,) = struct.unpack("<q", head)
            itemsize = 2 if seen.get(key) == "bfloat16" else np.dtype(seen.get(key, np.uint8)).itemsize
            offsets[key] = (pos + 8, numel)
            pos += 8 + numel * itemsize
            if pos > fsize:
                raise CheckpointError(f"{path}: truncated: storage {key} runs past the end of the file")
        fmap = _file_map(path)
        storages: dict[str, _Storage] = {}

        def persistent_load(pid):
            key = str(pid[2])
            if key not in storages:
                if key not in offsets:
                    raise CheckpointError(f"{path}: truncated: storage {key} missing")
                start, numel = offsets[key]
                dtype = pid[1].dtype
                itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
                storages[key] = _Storage(key, dtype, numel,
                                         _storage_array(dtype, fmap[start : start + numel * itemsize], numel, False))
            return storages[key]

        f.seek(main_at)
        up = _SafeUnpickler(f, source=str(path), table=table, stand_ins=stand)
        up.persistent_load = persistent_load
        return _unpickle(up, path)


# --------------------------------------------------------------------------------------------
# Python 2 release pickles (MANO)


class _ChumpyCh:
    """chumpy.ch.Ch: pickled as NEWOBJ + a state dict whose 'x' holds the value."""

    _path = "chumpy.ch.Ch"

    def __setstate__(self, state):
        self.state = state


class _SparseMatrix:
    """scipy.sparse csc/csr matrix: pickled as NEWOBJ + a state dict (data, indices, indptr, _shape)."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state


def _sparse_class(fmt: str):
    return type(f"_{fmt}_matrix", (_SparseMatrix,), {"fmt": fmt})


def _sparse_to_dense(m: _SparseMatrix, source: str) -> np.ndarray:
    st = m.state if isinstance(m.state, dict) else {}
    try:
        data, indices, indptr = (np.asarray(st[k]) for k in ("data", "indices", "indptr"))
        shape = tuple(int(s) for s in st.get("_shape", st.get("shape")))
    except (KeyError, TypeError):
        raise CheckpointError(f"{source}: scipy sparse matrix without data/indices/indptr/shape") from None
    major, minor = (shape[1], shape[0]) if m.fmt == "csc" else shape
    if indptr.shape != (major + 1,) or indices.shape != data.shape or indptr[-1] != len(data) \
            or (len(indices) and (indices.min() < 0 or indices.max() >= minor)):
        raise CheckpointError(f"{source}: inconsistent {m.fmt} matrix of shape {shape}")
    out = np.zeros(shape, dtype=data.dtype)
    cols = np.repeat(np.arange(major), np.diff(indptr))
    if m.fmt == "csc":
        np.add.at(out, (indices, cols), data)
    else:
        np.add.at(out, (cols, indices), data)
    return out


def _legacy_table() -> dict:
    table = dict(_COMMON_GLOBALS)
    table[("chumpy.ch", "Ch")] = _ChumpyCh
    for mod in ("scipy.sparse.csc", "scipy.sparse._csc"):
        table[(mod, "csc_matrix")] = _sparse_class("csc")
    for mod in ("scipy.sparse.csr", "scipy.sparse._csr"):
        table[(mod, "csr_matrix")] = _sparse_class("csr")
    return table


class _LegacyUnpickler(_SafeUnpickler):
    def find_class(self, module, name):
        if module.startswith("chumpy") and (module, name) not in self._table:
            raise UnsafePickleError(
                f"{self._source}: chumpy class {module}.{name} is not supported (only chumpy.ch.Ch values "
                "can be read without chumpy); re-save the file with plain numpy arrays")
        return super().find_class(module, name)


def _plain(obj, source: str, memo: dict):
    oid = id(obj)
    if oid in memo:
        return memo[oid]
    if isinstance(obj, _ChumpyCh):
        st = getattr(obj, "state", None)
        x = st.get("x") if isinstance(st, dict) else None
        if not isinstance(x, np.ndarray):
            raise CheckpointError(f"{source}: chumpy.ch.Ch without a numeric 'x' value (a chumpy expression?)")
        out = x
    elif isinstance(obj, _SparseMatrix):
        out = _sparse_to_dense(obj, source)
    elif isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
        memo[oid] = out
        for k, v in obj.items():
            out[k] = _plain(v, source, memo)
    elif isinstance(obj, list):
        out = []
        memo[oid] = out
        out.extend(_plain(v, source, memo) for v in obj)
    elif isinstance(obj, tuple):
        out = tuple(_plain(v, source, memo) for v in obj)
    else:
        out = obj
    memo[oid] = out
    return out


def load_legacy_pickle(path) -> dict:
    """Read a Python 2 release pickle such as ``MANO_RIGHT.pkl`` with numpy only.

    ``chumpy.ch.Ch`` values become their numeric ``np.ndarray``, scipy csc/csr matrices become dense
    arrays, numpy arrays stay arrays (py2 byte strings are decoded as latin1). Other chumpy
    classes (expressions) and any global off the allow-list raise UnsafePickleError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle not found: {path}")
    with open(path, "rb") as f:
        up = _LegacyUnpickler(f, source=str(path), table=_legacy_table(), stand_ins=(), encoding="latin1")
        obj = _unpickle(up, path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return _plain(obj, str(path), {})
