"""Saving and loading fitted estimators in a format that cannot run code.

:func:`save` writes one safetensors file: every torch tensor and numpy array of
the estimator goes into the file's tensors, and everything else into a JSON
description stored in the file's metadata.  :func:`load` reads it back without
:mod:`pickle`: JSON and safetensors hold data only, and the few kinds of object
the description names are rebuilt from an allow-list, so a model file from
someone else can be loaded safely.

The estimator is walked generically, through each object's ``__getstate__``
(the state :mod:`pickle` would store), not by per-class code: any fitted ssad
estimator, the scikit-learn estimators inside it and scikit-learn pipelines of
them are saved the same way.  Fitted torch modules are stored as CPU state
dicts by :class:`ssad._persistence.TorchStateMixin` and rebuilt on load from the
estimator's parameters, as when unpickling.

What a file may hold
--------------------
- ``None``, ``bool``, ``int``, ``float`` (NaN and infinities included), ``str``,
  and lists, tuples, dicts, sets of them;
- numpy arrays of numbers, strings, dates or times (stored as raw bytes, dtype
  and shape), numpy arrays of objects that are themselves allowed, numpy
  scalars and dtypes, :class:`numpy.random.RandomState`;
- torch tensors (dense, stored by safetensors), :class:`torch.device`,
  :class:`torch.dtype`, :class:`pathlib.Path`, :class:`slice`;
- objects of an allowed class, rebuilt with ``cls.__new__(cls)`` and
  ``__setstate__(state)`` (or ``__dict__.update``) with a state made of the
  above.  Allowed classes are the scikit-learn estimators (subclasses of
  :class:`sklearn.base.BaseEstimator`) defined in ``ssad`` or ``sklearn``, the
  dataclasses defined in ``ssad`` (e.g. :class:`ssad._images.Preprocessor`), and
  the classes passed to :func:`load` as ``trusted``.

Anything else (functions, other classes, modules, raw ``nn.Module`` objects
outside an estimator that stores them as state dicts) is refused by
:func:`save` with a :class:`TypeError` naming where it sits in the estimator,
and by :func:`load` with a :class:`ValueError`, before any object is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

__all__ = ["load", "save"]

logger = logging.getLogger(__name__)

FORMAT = "ssad"
FORMAT_VERSION = "1"

#: numpy dtype kinds stored as raw bytes: booleans, numbers, strings, dates, times.
_RAW_KINDS = "biufcSUmM"

#: Modules whose classes may be rebuilt (with the conditions of _allowed_by_default).
_TRUSTED_PACKAGES = ("ssad", "sklearn")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def save(estimator: Any, path: str | os.PathLike[str]) -> None:
    """Save a fitted estimator to a file that :func:`load` reads without pickle.

    Parameters
    ----------
    estimator : object
        Any ssad estimator, fitted or not, or a scikit-learn estimator or
        :class:`~sklearn.pipeline.Pipeline` built of them.
    path : str or os.PathLike
        The file to write (a safetensors file; any name, e.g. ``model.ssad``).

    Raises
    ------
    TypeError
        If the estimator holds an object the format cannot store (a function,
        an object of a class that is not an estimator, ...); the message says
        where it sits, e.g. ``estimator.steps[1][1].foo_``.  Use :mod:`pickle`
        for such estimators (trusted files only).
    FileNotFoundError
        If the folder of ``path`` does not exist.

    See Also
    --------
    load : Read the file back.

    Notes
    -----
    The file is a safetensors file: the tensors and arrays are its tensors, and
    the rest of the estimator's state is JSON in its metadata.  Torch tensors are
    saved on the CPU; an estimator fitted on a GPU loads anywhere (it runs on the
    CPU where its device is missing, as after unpickling).

    Examples
    --------
    >>> import numpy as np
    >>> import ssad
    >>> X = np.random.default_rng(0).normal(size=(50, 3))
    >>> scorer = ssad.KNNScorer().fit(X)
    >>> ssad.save(scorer, "scorer.ssad")  # doctest: +SKIP
    >>> restored = ssad.load("scorer.ssad")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    encoder = _Encoder()
    tree = encoder.encode(estimator, "estimator")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tree": json.dumps(tree, allow_nan=False, separators=(",", ":")),
    }
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot save to {path!r}: the folder {folder!r} does not exist.")
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        save_file(encoder.tensors, tmp, metadata=metadata)
        os.replace(tmp, path)  # atomic: a reader never sees a partial file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info(
        "Saved %s to %s (%d tensors).", type(estimator).__name__, path, len(encoder.tensors)
    )


def load(path: str | os.PathLike[str], *, trusted: Iterable[type] | None = None) -> Any:
    """Load an estimator written by :func:`save`, without running code from the file.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`.
    trusted : iterable of classes, default=None
        Classes that may be rebuilt besides the default allow-list (see the
        module documentation), e.g. your own estimator classes defined outside
        ``ssad`` and ``sklearn``.

    Returns
    -------
    estimator : object
        The estimator, as it was saved.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a file written by :func:`save` (a pickle, a corrupt
        or truncated file), or names a class that is not allowed or data that
        is not of an allowed kind; nothing from the file is run or built
        before the offending entry is met.

    See Also
    --------
    save : Write such a file.

    Notes
    -----
    Loading builds only allowed objects from data: no pickle, no import of
    modules outside ``ssad`` and ``sklearn``, no call of a function named by the
    file.  The estimators' own ``__setstate__`` runs, as it does when
    unpickling; for network estimators it builds the architecture named by the
    estimator's parameters (e.g. a timm model, without downloading weights) and
    loads the saved weights into it.  :mod:`pickle` files, by contrast, can run
    any code when loaded: unpickle only files you trust.

    Examples
    --------
    >>> import ssad
    >>> detector = ssad.load("detector.ssad")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The model file {path!r} is not a file.")
    from safetensors import safe_open

    if isinstance(trusted, type):
        raise TypeError(
            f"The 'trusted' parameter of load must be an iterable of classes, e.g. "
            f"[{trusted.__name__}]. Got the class {trusted.__name__} itself instead."
        )
    extra = frozenset(trusted or ())
    for cls in extra:
        if not isinstance(cls, type):
            raise TypeError(
                f"The 'trusted' parameter of load must be an iterable of classes. Got "
                f"{cls!r} of type {type(cls).__name__} in it instead."
            )
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT or "tree" not in metadata:
                raise ValueError("it has no ssad metadata")
            if metadata.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"it is in version {metadata.get('format_version')!r} of the format; this "
                    f"ssad reads version {FORMAT_VERSION}"
                )
            tree = json.loads(metadata["tree"])
            return _Decoder(f, extra).decode(tree, "estimator")
    except _Refused as exc:
        raise ValueError(f"Refused to load {path!r}: {exc}") from None
    except Exception as exc:  # safetensors / JSON errors, malformed entries, recursion
        raise ValueError(
            f"Could not read {path!r} as an ssad model file (one written by ssad.save): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


class _Refused(Exception):
    """An entry of the file names something the allow-list refuses."""


# --------------------------------------------------------------------------- save


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _savable_class(cls: type) -> bool:
    # any estimator class (load may need trusted= for those outside ssad / sklearn)
    return "<locals>" not in cls.__qualname__ and (
        issubclass(cls, BaseEstimator) or _allowed_by_default(cls)
    )


class _Encoder:
    """Turn an object into a JSON tree plus a dict of tensors."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._ids: dict[int, int] = {}  # id(obj) -> reference number
        self._alive: list[Any] = []  # keeps temporaries alive so that ids stay unique

    def _remember(self, obj: Any, node: dict[str, Any]) -> dict[str, Any]:
        node["id"] = self._ids[id(obj)] = len(self._ids)
        self._alive.append(obj)
        return node

    def _tensor_key(self, tensor: torch.Tensor) -> str:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = tensor
        return key

    def encode(self, obj: Any, where: str) -> Any:
        kind = type(obj)
        if obj is None or kind in (bool, int, str):
            return obj
        if kind is float:
            return obj if math.isfinite(obj) else {"$": "float", "v": repr(obj)}
        if id(obj) in self._ids:
            return {"$": "ref", "id": self._ids[id(obj)]}
        if kind is list:
            node = self._remember(obj, {"$": "list", "items": []})
            node["items"] = [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
            return node
        if kind is tuple:
            return {
                "$": "tuple",
                "items": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)],
            }
        if kind is dict:
            node = self._remember(obj, {"$": "dict", "items": []})
            node["items"] = [
                [self.encode(k, f"{where} (a key)"), self.encode(v, f"{where}[{k!r}]")]
                for k, v in obj.items()
            ]
            return node
        if kind in (set, frozenset):
            items = [self.encode(v, f"{where} (an item)") for v in obj]
            return {"$": kind.__name__, "items": items}
        if kind is np.ndarray:
            return self._remember(obj, self._array(obj, where))
        if isinstance(obj, np.generic) and kind.__module__ == "numpy":
            if obj.dtype.kind not in _RAW_KINDS:
                raise TypeError(f"{where} is a numpy scalar of dtype {obj.dtype}; {_CANNOT}")
            return {"$": "npscalar", "dtype": obj.dtype.str, "hex": obj.tobytes().hex()}
        if isinstance(obj, np.dtype):
            if obj.kind not in _RAW_KINDS or obj.fields is not None:
                raise TypeError(f"{where} is the numpy dtype {obj!r}; {_CANNOT}")
            return {"$": "npdtype", "v": obj.str}
        if kind in (torch.Tensor, torch.nn.Parameter):
            return self._remember(obj, self._tensor(obj, where))
        if kind is torch.device:
            return {"$": "torch.device", "v": str(obj)}
        if kind is torch.dtype:
            return {"$": "torch.dtype", "v": str(obj).removeprefix("torch.")}
        if isinstance(obj, PurePath):
            return {"$": "path", "v": str(obj)}
        if kind is slice:
            items = [
                self.encode(v, f"{where}.{n}")
                for n, v in zip(("start", "stop", "step"), (obj.start, obj.stop, obj.step))
            ]
            return {"$": "slice", "items": items}
        if kind is np.random.RandomState:
            state = obj.get_state(legacy=False)
            return {"$": "RandomState", "state": self.encode(state, f"{where} (its state)")}
        if isinstance(obj, torch.nn.Module):
            raise TypeError(
                f"{where} is a torch module ({kind.__name__}) outside an estimator that "
                "stores its modules as state dicts (ssad._persistence.TorchStateMixin); "
                f"{_CANNOT}"
            )
        if isinstance(obj, type) or not _savable_class(kind):
            raise TypeError(
                f"{where} is an object of type {kind.__module__}.{kind.__qualname__}, which "
                f"is neither data nor an estimator; {_CANNOT}"
            )
        state = obj.__getstate__() if hasattr(obj, "__getstate__") else obj.__dict__
        if not isinstance(state, dict):
            raise TypeError(
                f"{where} ({kind.__qualname__}) has a state of type {type(state).__name__}, "
                f"not a dict; {_CANNOT}"
            )
        node = self._remember(obj, {"$": "object", "class": _class_name(kind)})
        self._alive.append(state)
        node["state"] = {
            "$": "dict",
            "items": [[k, self.encode(v, f"{where}.{k}")] for k, v in state.items()],
        }
        return node

    def _array(self, arr: np.ndarray, where: str) -> dict[str, Any]:
        if arr.dtype.kind == "O":
            items = [self.encode(v, f"{where}[{i}]") for i, v in enumerate(arr.ravel().tolist())]
            return {"$": "ndarray_object", "shape": list(arr.shape), "items": items}
        if arr.dtype.kind not in _RAW_KINDS or arr.dtype.fields is not None:
            raise TypeError(f"{where} is a numpy array of dtype {arr.dtype}; {_CANNOT}")
        # keep Fortran order, as pickle does: BLAS rounds differently on another layout
        fortran = bool(arr.flags.f_contiguous and not arr.flags.c_contiguous)
        data = arr.tobytes(order="F" if fortran else "C")
        raw = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())
        return {
            "$": "ndarray",
            "key": self._tensor_key(raw),
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            "fortran": fortran,
        }

    def _tensor(self, tensor: torch.Tensor, where: str) -> dict[str, Any]:
        if tensor.layout != torch.strided or tensor.is_quantized:
            raise TypeError(f"{where} is a {tensor.layout} tensor; {_CANNOT}")
        data = tensor.detach().to("cpu", copy=True).contiguous()  # never shares memory
        return {
            "$": "tensor",
            "key": self._tensor_key(data),
            "parameter": isinstance(tensor, torch.nn.Parameter),
            "requires_grad": bool(tensor.requires_grad),
        }


_CANNOT = "ssad.save cannot store it. Use pickle instead (and load it only if you trust the file)."


# --------------------------------------------------------------------------- load


class _Decoder:
    """Rebuild an object from the JSON tree, refusing anything off the allow-list."""

    def __init__(self, tensors: Any, trusted: frozenset[type]) -> None:
        self._tensors = tensors
        self._keys = set(tensors.keys())
        self._trusted = trusted
        self._refs: dict[int, Any] = {}

    def decode(self, node: Any, where: str) -> Any:
        if node is None or type(node) in (bool, int, str, float):
            return node
        if isinstance(node, list):
            raise _Refused(f"{where} is a bare JSON list, which ssad.save never writes")
        if not isinstance(node, dict) or not isinstance(node.get("$"), str):
            raise _Refused(f"{where} is malformed: {str(node)[:80]}")
        kind = node["$"]
        if kind == "ref":
            ref = _field(node, "id", int, where)
            if ref not in self._refs:
                raise _Refused(f"{where} refers to the unknown entry {ref}")
            return self._refs[ref]
        if kind == "float":
            text = _field(node, "v", str, where)
            if text not in ("nan", "inf", "-inf"):
                raise _Refused(f"{where} is the float {text!r}")
            return float(text)
        if kind == "list":
            out: list[Any] = self._register(node, [], where)
            out.extend(self._items(node, where))
            return out
        if kind in ("tuple", "set", "frozenset"):
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[kind](
                self._items(node, where)
            )
        if kind == "dict":
            result: dict[Any, Any] = self._register(node, {}, where)
            for pair in _field(node, "items", list, where):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise _Refused(f"{where} holds a malformed dict item")
                key = self.decode(pair[0], f"{where} (a key)")
                result[key] = self.decode(pair[1], f"{where}[{key!r}]")
            return result
        if kind == "ndarray":
            return self._register(node, self._array(node, where), where)
        if kind == "ndarray_object":
            shape = _shape(node, where)
            items = self._items(node, where)
            if len(items) != math.prod(shape):
                raise _Refused(f"{where} has {len(items)} items for the shape {shape}")
            arr = np.empty(len(items), dtype=object)
            arr[:] = items
            return self._register(node, arr.reshape(shape), where)
        if kind == "npscalar":
            dtype = _raw_dtype(_field(node, "dtype", str, where), where)
            data = bytes.fromhex(_field(node, "hex", str, where))
            if len(data) != dtype.itemsize:
                raise _Refused(f"{where} has {len(data)} bytes for the dtype {dtype}")
            return np.frombuffer(data, dtype=dtype)[0]
        if kind == "npdtype":
            return _raw_dtype(_field(node, "v", str, where), where)
        if kind == "tensor":
            tensor = self._tensor(_field(node, "key", str, where), where)
            if _field(node, "parameter", bool, where):
                tensor = torch.nn.Parameter(tensor, requires_grad=bool(node.get("requires_grad")))
            elif node.get("requires_grad") is True:
                tensor.requires_grad_(True)
            return self._register(node, tensor, where)
        if kind == "torch.device":
            return torch.device(_field(node, "v", str, where))
        if kind == "torch.dtype":
            torch_dtype = getattr(torch, _field(node, "v", str, where), None)
            if not isinstance(torch_dtype, torch.dtype):
                raise _Refused(f"{where} names {node['v']!r}, which is not a torch dtype")
            return torch_dtype
        if kind == "path":
            return Path(_field(node, "v", str, where))
        if kind == "slice":
            items = self._items(node, where)
            if len(items) != 3 or not all(v is None or type(v) is int for v in items):
                raise _Refused(f"{where} is a malformed slice")
            return slice(*items)
        if kind == "RandomState":
            state = self.decode(node.get("state"), f"{where} (its state)")
            if not isinstance(state, dict) or state.get("bit_generator") != "MT19937":
                raise _Refused(f"{where} is not the state of a MT19937 RandomState")
            random_state = np.random.RandomState()
            random_state.set_state(state)
            return random_state
        if kind == "object":
            return self._object(node, where)
        raise _Refused(f"{where} is of the unknown kind {kind!r}")

    def _register(self, node: dict[str, Any], obj: Any, where: str) -> Any:
        ref = node.get("id")
        if ref is not None:
            if type(ref) is not int or ref in self._refs:
                raise _Refused(f"{where} has a malformed or repeated id {ref!r}")
            self._refs[ref] = obj
        return obj

    def _items(self, node: dict[str, Any], where: str) -> list[Any]:
        items = _field(node, "items", list, where)
        return [self.decode(v, f"{where}[{i}]") for i, v in enumerate(items)]

    def _tensor(self, key: str, where: str) -> torch.Tensor:
        if key not in self._keys:
            raise _Refused(f"{where} refers to the tensor {key!r}, which the file lacks")
        tensor: torch.Tensor = self._tensors.get_tensor(key)
        return tensor

    def _array(self, node: dict[str, Any], where: str) -> np.ndarray:
        dtype = _raw_dtype(_field(node, "dtype", str, where), where)
        shape = _shape(node, where)
        raw = self._tensor(_field(node, "key", str, where), where)
        if raw.dtype != torch.uint8 or raw.ndim != 1:
            raise _Refused(f"{where} is stored as a {raw.dtype} tensor, not raw bytes")
        if raw.numel() != math.prod(shape) * dtype.itemsize:
            raise _Refused(
                f"{where} has {raw.numel()} bytes for the shape {shape} of dtype {dtype}"
            )
        flat = np.frombuffer(raw.numpy().tobytes(), dtype=dtype)
        if node.get("fortran") is True:
            return flat.reshape(shape, order="F").copy(order="F")
        return flat.reshape(shape).copy()

    def _object(self, node: dict[str, Any], where: str) -> Any:
        cls: Any = self._class(_field(node, "class", str, where), where)
        obj = self._register(node, cls.__new__(cls), where)
        state = self.decode(node.get("state"), f"{where} (its state)")
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise _Refused(f"{where} has a state that is not a dict of attribute names")
        if hasattr(obj, "__setstate__"):
            obj.__setstate__(state)
        else:
            obj.__dict__.update(state)
        return obj

    def _class(self, name: str, where: str) -> type:
        """The class ``module:qualname`` if it is allowed; nothing outside the
        trusted packages is imported."""
        module_name, _, qualname = name.partition(":")
        by_name = {_class_name(cls): cls for cls in self._trusted}
        if name in by_name:
            return by_name[name]
        refused = _Refused(
            f"{where} is an object of the class {module_name}.{qualname}, which is not "
            "allowed: only scikit-learn estimators and ssad dataclasses defined in ssad or "
            "sklearn (and the classes passed as trusted=) are rebuilt"
        )
        if (
            not _MODULE_NAME.match(module_name)
            or module_name.split(".")[0] not in _TRUSTED_PACKAGES
            or "__main__" in module_name.split(".")
            or not qualname
            or not all(part.isidentifier() for part in qualname.split("."))
        ):
            raise refused
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise _Refused(f"{where} needs the module {module_name!r}: {exc}") from exc
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if not (
            isinstance(obj, type)
            and obj.__module__ == module_name
            and obj.__qualname__ == qualname
            and _allowed_by_default(obj)
        ):
            raise refused
        return obj


def _allowed_by_default(cls: type) -> bool:
    if issubclass(cls, BaseEstimator):
        return True
    return dataclasses.is_dataclass(cls) and cls.__module__.split(".")[0] == "ssad"


def _field(node: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = node.get(key)
    if type(value) is not kind:
        raise _Refused(f"{where} has a malformed {key!r} entry: {str(value)[:80]}")
    return value


def _shape(node: dict[str, Any], where: str) -> tuple[int, ...]:
    shape = _field(node, "shape", list, where)
    if not all(type(d) is int and d >= 0 for d in shape):
        raise _Refused(f"{where} has the malformed shape {shape}")
    return tuple(shape)


def _raw_dtype(text: str, where: str) -> np.dtype[Any]:
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError) as exc:
        raise _Refused(f"{where} has the unknown dtype {text!r}") from exc
    if dtype.kind not in _RAW_KINDS or dtype.fields is not None or dtype.hasobject:
        raise _Refused(f"{where} has the dtype {dtype}, which is not plain data")
    return dtype
