"""Read fairseq checkpoints (``hubert_base.pt``) without fairseq and without running their code.

A fairseq checkpoint is a ``torch.save`` zip whose pickle holds, besides tensors and plain
containers, objects of fairseq classes (``task_state`` keeps the label dictionaries as
``fairseq.data.dictionary.Dictionary``, RVC_FACTS.md §6.2) and, in old files, an
``argparse.Namespace``. PyTorch's ``weights_only`` loader refuses those (RVC issue #2575), and the
plain loader would import fairseq and run whatever the pickle asks for.

Design: ``torch.load(..., weights_only=False, pickle_module=<ours>)``, where our unpickler is the
pure-Python one with two gates. ``find_class`` hands out only allowlisted objects, and BUILD (which
calls ``__setstate__`` with state from the file) runs only on our own stand-ins and on
``OrderedDict`` (a state dict's ``_metadata``). We did not use ``weights_only=True`` with
``torch.serialization.safe_globals``: that allowlist takes exact names, and a fairseq file may
name any fairseq class (dictionaries, meters, enums of its dataclass config), which we want to
read as inert data rather than enumerate. ``find_class`` allows

- the tensor rebuild helpers, dtypes, layouts and ``torch.Size`` that the zip format uses;
- plain builtin containers and scalars, ``collections.OrderedDict``/``defaultdict``;
  ``bytes``/``bytearray`` only from a string or bytes (never a size to allocate);
- numpy *scalars* (fairseq's ``extra_state`` may hold a numpy float), through stand-ins that
  accept a numeric dtype by name and decode its bytes. Real ``numpy.dtype`` is never handed out:
  its ``__setstate__`` trusts the pickle (a crafted state makes an object dtype, and an array of
  it turns file bytes into object pointers: a segfault or worse). numpy arrays are refused;
- ``_codecs.encode`` restricted to the latin-1 str->bytes case (protocol 2's bytes);
- ``fairseq.*`` names -> an inert :class:`FairseqObject` subclass, ``argparse.Namespace`` ->
  :class:`FairseqNamespace`. Neither has behaviour: they only keep the state the pickle gives.

Everything else (``builtins.exec``, ``posix.system``, ``subprocess.*``, any other class) raises
:class:`~rvc_lora.utils.errors.CheckpointError` before anything is called.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import os
import pickle
import types
from typing import Any

import numpy as np
import torch

from rvc_lora.utils.errors import CheckpointError
from rvc_lora.utils.safe_load import check_zip_container, require_checkpoint_file


class _Refused(pickle.UnpicklingError):
    """A stand-in saw data that no fairseq checkpoint holds (reported as a refusal)."""


class FairseqObject:
    """Inert stand-in for an object of a fairseq class: attributes only, no behaviour.

    ``fairseq_global`` names the class the pickle asked for. Positional arguments of a call
    (e.g. an enum member rebuilt as ``Cls(value)``) are kept in ``_args``; dict-/list-style items
    (for subclasses of dict or list) in ``_items`` / ``_list``.
    """

    fairseq_global: str = "fairseq.?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Only reached when the pickle *calls* the class (REDUCE); plain objects are rebuilt
        # with __new__ + __setstate__.
        self.__dict__.update(kwargs, _args=args)

    def __setstate__(self, state: Any) -> None:
        # Protocol 2 gives the instance dict, or (dict, slots dict) for classes with __slots__.
        if (
            isinstance(state, tuple)
            and len(state) == 2
            and all(s is None or isinstance(s, dict) for s in state)
        ):
            for part in state:
                self.__dict__.update(part or {})
        elif isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.fairseq_global}>"


class FairseqNamespace(FairseqObject):
    """Stand-in for ``argparse.Namespace`` (old fairseq checkpoints keep their ``args`` in one)."""

    fairseq_global = "argparse.Namespace"


_STAND_INS: dict[str, type[FairseqObject]] = {}


def _stand_in(module: str, name: str) -> type[FairseqObject]:
    key = f"{module}.{name}"
    if key not in _STAND_INS:
        _STAND_INS[key] = type(name, (FairseqObject,), {"fairseq_global": key})
    return _STAND_INS[key]


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Pickle protocol 2 writes a bytes object as _codecs.encode(str, "latin1"); nothing else.
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise _Refused(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin-1", errors)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor (protocol 0/1 objects), limited to our inert classes.
    if not (isinstance(cls, type) and issubclass(cls, FairseqObject) and base is object):
        raise _Refused(f"copyreg._reconstructor({cls!r}, {base!r})")
    return cls.__new__(cls)


class NumpyDtypeStandIn:
    """What ``numpy.dtype(name, align, copy)`` + BUILD gives in a fairseq pickle, as inert data.

    Only the numeric names below are accepted, and the state may say nothing but the byte order;
    :func:`_numpy_scalar` turns it into a real ``np.dtype`` built from the name alone.
    """

    NUMERIC = frozenset(
        {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}
    )

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(name, str) or name not in self.NUMERIC:
            raise _Refused(f"numpy dtype {str(name)[:20]!r} (only numeric scalars are read)")
        self.name, self.byteorder = name, "="

    def __setstate__(self, state: Any) -> None:
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags);
        # for a plain numeric dtype all but the byte order are None / -1 / 0.
        if not (
            isinstance(state, tuple)
            and len(state) == 8
            and state[1] in ("<", ">", "|", "=")
            and state[2:5] == (None, None, None)
        ):
            raise _Refused(f"numpy dtype state {str(state)[:60]} (not a plain number)")
        self.byteorder = state[1]


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    # numpy.core.multiarray.scalar(dtype, bytes): one number of a numeric dtype, nothing else.
    if not isinstance(dtype, NumpyDtypeStandIn):
        raise _Refused(f"numpy scalar of {type(dtype).__name__}")
    real = np.dtype(dtype.name).newbyteorder(dtype.byteorder)
    if not isinstance(data, bytes) or len(data) != real.itemsize:
        raise _Refused(f"numpy scalar {dtype.name} with {type(data).__name__} data")
    return np.frombuffer(data, dtype=real)[0]


def _byte_string(cls: type) -> Any:
    # bytes(n) / bytearray(n) would allocate n bytes that the file never paid for.
    def make(*args: Any) -> Any:
        if args and not isinstance(args[0], (str, bytes, bytearray)):
            raise _Refused(f"{cls.__name__}({type(args[0]).__name__}, ...)")
        return cls(*args)

    return make


_BYTE_STRINGS = {"bytes": _byte_string(bytes), "bytearray": _byte_string(bytearray)}
_BUILTINS = {
    "dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str",
    "slice", "object",
}  # fmt: skip
_TORCH_HELPERS = {
    "torch._utils": {
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state",
    },
    "torch._tensor": {"_rebuild_from_type_v2", "Tensor"},
    "torch.nn.parameter": {"Parameter"},
    "torch.serialization": {"_get_layout"},
}  # fmt: skip
_NUMPY = {
    ("numpy", "dtype"): NumpyDtypeStandIn,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


def _allowed_global(module: str, name: str) -> Any:
    """The object for ``module.name`` if it is on the allowlist, else ``None``."""
    if module == "builtins" and name in _BUILTINS:
        return getattr(__import__("builtins"), name)
    if module == "builtins" and name in _BYTE_STRINGS:
        return _BYTE_STRINGS[name]
    if module == "collections" and name in ("OrderedDict", "defaultdict"):
        return getattr(collections, name)
    if module == "fairseq" or module.startswith("fairseq."):
        return _stand_in(module, name)
    if module == "argparse" and name == "Namespace":
        return FairseqNamespace
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    if module == "copyreg" and name == "_reconstructor":
        return _reconstructor
    if module in ("torch", "torch.storage"):
        obj = getattr(torch, name, None)
        # Storage types never get here: torch's own find_class maps them first.
        if isinstance(obj, (torch.dtype, torch.layout)) or obj is torch.Size or obj is torch.device:
            return obj
        return None
    if name in _TORCH_HELPERS.get(module, ()):
        return getattr(__import__(module, fromlist=[name]), name)
    return _NUMPY.get((module, name))


def _load_build(self: RestrictedUnpickler) -> None:
    # BUILD calls __setstate__ (or fills __dict__) with state from the file: only our inert
    # stand-ins may take it, and an OrderedDict its attributes (a state dict's _metadata).
    state = self.stack.pop()
    inst = self.stack[-1]
    if isinstance(inst, (FairseqObject, NumpyDtypeStandIn)):
        inst.__setstate__(state)
    elif (
        type(inst) is collections.OrderedDict
        and isinstance(state, dict)
        and all(isinstance(k, str) and not k.startswith("__") for k in state)
    ):
        inst.__dict__.update(state)
    else:
        raise CheckpointError(
            f"{self.source}: refused to load: its pickle sets the state of a "
            f"{type(inst).__module__}.{type(inst).__qualname__}, which fairseq checkpoints never "
            f"do; get the file from a trusted source"
        )


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """Pure-Python unpickler: ``find_class`` hands out only allowlisted objects, BUILD only
    reaches our stand-ins (the C unpickler cannot gate BUILD).

    ``source`` names the file in the refusal message (one line).
    """

    source: str = "<checkpoint>"
    dispatch = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: _load_build}  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 (torch.save's default) writes Python 2 names such as ``__builtin__.set``;
        # map them as the stock find_class does before checking.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = _allowed_global(module, name)
        if obj is None:
            raise CheckpointError(
                f"{self.source}: refused to load: its pickle asks for the global {module}.{name}, "
                f"which could run code; fairseq checkpoints need only tensors, containers and "
                f"fairseq data objects, so get the file from a trusted source"
            )
        return obj


def _restricted_pickle_module(source: str) -> types.ModuleType:
    """A module-like object for ``torch.load(pickle_module=...)`` that names ``source``."""
    unpickler = type("RestrictedUnpickler", (RestrictedUnpickler,), {"source": source})
    module = types.ModuleType("rvc_lora_restricted_pickle")
    module.Unpickler = unpickler  # type: ignore[attr-defined]
    # The legacy (pre-zip) format also reads small headers with ``pickle_module.load``.
    module.load = lambda f, **kw: unpickler(f, **kw).load()  # type: ignore[attr-defined]
    return module


def load_fairseq_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Unpickle a fairseq checkpoint on CPU through :class:`RestrictedUnpickler`.

    Returns:
        The checkpoint dict (``cfg``/``args``, ``model``, ``task_state``, ...), with fairseq
        objects as inert :class:`FairseqObject` instances. Use :func:`to_plain` on config parts.

    Raises:
        CheckpointError: the file is missing or empty, is not a PyTorch checkpoint, is not a
            dict, or its pickle names a global outside the allowlist.
    """
    p = require_checkpoint_file(path)
    check_zip_container(p)  # before torch inflates anything
    try:
        state = torch.load(
            p,
            map_location="cpu",
            weights_only=False,
            pickle_module=_restricted_pickle_module(str(p)),
        )
    except CheckpointError:
        raise
    except _Refused as exc:
        raise CheckpointError(
            f"{p}: refused to load: its pickle holds {str(exc).splitlines()[0][:120]}, which "
            f"fairseq checkpoints never need; get the file from a trusted source"
        ) from None
    except Exception as exc:  # noqa: BLE001 - garbage input can fail anywhere in the unpickler
        first = str(exc).splitlines()[0][:160] if str(exc) else "truncated"
        raise CheckpointError(
            f"{p}: not a readable PyTorch checkpoint ({type(exc).__name__}: {first}); the file "
            f"may be truncated or of another format: download it again"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{p}: expected a fairseq checkpoint dict, got {type(state).__name__}"
        )
    return state


def to_plain(obj: Any) -> Any:
    """Turn stand-ins into plain Python data: namespaces/objects -> dicts, enums -> their value.

    Containers are converted recursively; tensors and scalars are returned unchanged.
    """
    if isinstance(obj, FairseqObject):
        attrs = {k: v for k, v in obj.__dict__.items() if not k.startswith("_")}
        args = obj.__dict__.get("_args", ())
        if not attrs and len(args) == 1:  # an enum member pickled as Cls(value)
            return to_plain(args[0])
        if not attrs and "_items" in obj.__dict__:  # a dict subclass
            return to_plain(obj.__dict__["_items"])
        if not attrs and "_list" in obj.__dict__:  # a list subclass
            return to_plain(obj.__dict__["_list"])
        return {k: to_plain(v) for k, v in attrs.items()}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj
