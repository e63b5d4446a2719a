"""The session audit's work, loaded by sitecustomize.py (beside it) only once the app imports onnxruntime, so
that an interpreter that never does pays nothing for it, even where no bytecode is cached
(PYTHONDONTWRITEBYTECODE, a folder it cannot write). Python 3.8+, stdlib only; see sitecustomize.py."""

import os
import sys

SOCKET_VARIABLE = "HEYGEMLAUNCH_AUDIT_SOCKET"
TARGET = "onnxruntime.capi.onnxruntime_inference_collection"
MAX_RECORD = 8192  # bytes in one datagram: a model path and two provider lists fit many times over


def _names(providers):
    """Provider names from what InferenceSession takes: names, or (name, options) pairs; None if not given."""
    if providers is None:
        return None
    try:
        return [p[0] if isinstance(p, (tuple, list)) else str(p) for p in providers]
    except Exception:
        return None


def _model(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return f"<bytes: {len(path_or_bytes)}>"
    try:
        return os.fspath(path_or_bytes)
    except TypeError:
        return repr(path_or_bytes)[:200]


def _send(record):
    path = os.environ.get(SOCKET_VARIABLE)
    if not path:
        return
    import json
    import socket

    data = json.dumps(record).encode("utf-8", "replace")[:MAX_RECORD]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # Never waits: a queue the launcher has not read yet (net.unix.max_dgram_qlen, 10 by default) drops
        # this record rather than hold the app's session; ORT's own line and /proc remain as evidence.
        sock.setblocking(False)
        sock.sendto(data, path)


def _report(session, args, kwargs, error):
    try:
        given = args[0] if args else kwargs.get("path_or_bytes")
        requested = args[2] if len(args) > 2 else kwargs.get("providers")
        providers = None
        if error is None:
            providers = list(session.get_providers())
        first = None
        if error is not None:
            lines = str(error).strip().splitlines()
            first = (lines[0] if lines else type(error).__name__)[:500]
        _send(
            {
                "pid": os.getpid(),
                "model": _model(given),
                "requested": _names(requested),
                "providers": providers,
                "error": first,
            }
        )
    except Exception:
        pass


def _wrap(module):
    cls = getattr(module, "InferenceSession", None)
    if cls is None or getattr(cls.__init__, "__heygem_audit__", False):
        return
    import functools

    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        try:
            original(self, *args, **kwargs)
        except BaseException as exc:
            _report(self, args, kwargs, exc)
            raise
        _report(self, args, kwargs, None)

    __init__.__heygem_audit__ = True
    cls.__init__ = __init__


def find_spec(finder, name, path, target):
    """For `finder` (sitecustomize's): the spec the other finders give `name`, its loader wrapped so that the
    module's InferenceSession is wrapped once the module has run."""
    for other in sys.meta_path:
        if other is finder or not hasattr(other, "find_spec"):
            continue
        spec = other.find_spec(name, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            _wrap_loader(spec.loader)
            return spec
    return None


def _wrap_loader(loader):
    run = loader.exec_module

    def exec_module(module):
        run(module)
        try:  # noqa: SIM105  (kept as plain as the rest of the audit)
            _wrap(module)
        except Exception:
            pass

    loader.exec_module = exec_module
