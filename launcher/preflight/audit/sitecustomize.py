"""heygem-launch's session audit, loaded into each of the app's Python processes (Python 3.8+, stdlib only).

heygem-launch puts this file's folder first on the app's PYTHONPATH, so that `site` imports it as
`sitecustomize` in the main process and in every worker multiprocessing spawns (they inherit the environment,
not the memory). It then:

- takes its folder off `sys.path` and runs the app's own `sitecustomize`, if there is one, so that the app
  sees the `sys.path` and the `sitecustomize` it would see without it;
- never imports onnxruntime, and costs an interpreter that never does almost nothing (this file is all it
  loads; the rest, heygem_session_audit.py, is read only once onnxruntime is): a finder on `sys.meta_path`
  waits for the app to import `onnxruntime.capi.onnxruntime_inference_collection`, the module that defines
  `InferenceSession`, and then wraps `InferenceSession.__init__` in place (same class, same exceptions, same
  return values; `run()` is untouched);
- after each session's creation sends one datagram to HEYGEMLAUNCH_AUDIT_SOCKET (a unix socket in the launcher's
  0700 run dir): the pid, the model (its path, or `<bytes: N>`), the providers asked for, the providers the
  session got (`InferenceSession.get_providers()`, ONNX Runtime's own word), and the first line of the
  exception when creation raised. Nothing the audit does may fail the app: every error of its own is dropped.
"""

import os
import sys

TARGET = "onnxruntime.capi.onnxruntime_inference_collection"
_HERE = os.path.dirname(os.path.abspath(__file__))


class _SessionFinder:
    """Finds nothing itself; every import but one costs a string comparison. For the module that defines
    InferenceSession it loads the audit's work (heygem_session_audit.py, beside this file) and hands over."""

    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        try:
            import importlib.util

            location = os.path.join(_HERE, "heygem_session_audit.py")
            spec = importlib.util.spec_from_file_location("heygem_session_audit", location)
            audit = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(audit)
            return audit.find_spec(self, name, path, target)
        except Exception:  # the audit must never fail an import of the app's
            return None


def _chain():
    """The app's own sitecustomize, found as if this one were not there; an error in it is reported by `site`
    exactly as it would be without the audit."""
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    ours = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401  (the app's, if it has one)
    except ImportError as exc:
        if exc.name != "sitecustomize":
            raise
        # importlib reads sys.modules[name] back once this module has run (a KeyError there would be an
        # "Error in sitecustomize" line): with no sitecustomize of the app's, this one stays registered.
        sys.modules["sitecustomize"] = ours


sys.meta_path.insert(0, _SessionFinder())
_chain()
