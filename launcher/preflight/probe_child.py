"""The preflight probe: runs in the app's env, with its python, its environment, in its directory.

Python 3.8 and only the standard library, onnxruntime and numpy: it runs inside HeyGem's env.
Usage: python - REPORT MODEL PROVIDER PROFILE_DIR < probe_child.py

It writes a JSON report to REPORT after every stage, so that a hung probe still tells how far it got.
ONNX Runtime's own messages go to this process's stderr/stdout, which the parent reads too.
"""

import json
import os
import sys
import time

report = {
    "ok": False,
    "stage": "start",
    "python": sys.version.split()[0],
    "executable": sys.executable,
    "cwd": os.getcwd(),
    "ld_library_path": os.environ.get("LD_LIBRARY_PATH"),
    # The GPU this probe is pinned to (one probe per GPU with HEYGEM_GPUS), as the CUDA runtime will read it.
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
}
started = time.monotonic()


def save(stage, **fields):
    report["stage"] = stage
    report.update(fields)
    report["elapsed_s"] = round(time.monotonic() - started, 3)
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(report, handle)
    os.replace(tmp, sys.argv[1])


def fail(stage, exc, **fields):
    import traceback  # here, not at the top: the probe's start-up is on the preflight's critical path

    save(
        stage,
        error_type=type(exc).__name__,
        error=str(exc).strip()[:2000],
        traceback=traceback.format_exc()[-2000:],
        **fields,
    )
    sys.exit(3)


def reference(x, w, m):
    # Conv (no padding, stride 1) then MatMul, the same graph as probe.onnx, computed by numpy.
    import numpy as np

    out_h, out_w = x.shape[2] - w.shape[2] + 1, x.shape[3] - w.shape[3] + 1
    conv = np.zeros((x.shape[0], w.shape[0], out_h, out_w), dtype=np.float64)
    for ki in range(w.shape[2]):
        for kj in range(w.shape[3]):
            patch = x[:, :, ki : ki + out_h, kj : kj + out_w].astype(np.float64)
            conv += np.einsum("nchw,oc->nohw", patch, w[:, :, ki, kj].astype(np.float64))
    return conv @ m.astype(np.float64)


def imports():
    """onnxruntime first: without it nothing else matters, and it imports numpy itself."""
    save("import_onnxruntime")
    try:
        import onnxruntime as ort
    except Exception as exc:
        fail("import_onnxruntime", exc)
    save("import_numpy")
    try:
        import numpy as np
    except Exception as exc:
        fail("import_numpy", exc)
    info = {"ort_version": getattr(ort, "__version__", "unknown"), "ort_file": getattr(ort, "__file__", None)}
    try:
        from onnxruntime.capi import build_and_package_info as build

        info["package_name"] = getattr(build, "package_name", None)
        info["cuda_version"] = getattr(build, "cuda_version", None)
    except Exception:
        pass
    info["available_providers"] = list(ort.get_available_providers())
    return ort, np, info


def create_session(ort, model, required, profile_dir):
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(profile_dir, "probe")
    if required != "CPUExecutionProvider":
        # Creation fails if any node would land on CPU: catches a provider library that does not load.
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        # enable_fallback=0: no silent retry on CPU when creating the provider throws.
        return ort.InferenceSession(model, sess_options=options, providers=[required], enable_fallback=0)
    except Exception as exc:
        fail("create_session", exc)


def node_providers_of(session, max_error):
    """Which provider ran each node, from ORT's own profile."""
    found = {}
    try:
        with open(session.end_profiling()) as handle:
            events = json.load(handle)
        for event in events:
            args = event.get("args") or {}
            if event.get("cat") == "Node" and "provider" in args:
                found[args.get("op_name", event.get("name", "?"))] = args["provider"]
    except Exception as exc:
        fail("profile", exc, max_error=max_error)
    return found


def main():
    model, required, profile_dir = sys.argv[2], sys.argv[3], sys.argv[4]
    ort, np, info = imports()
    save("create_session", **info)
    session = create_session(ort, model, required, profile_dir)
    providers = list(session.get_providers())
    save("run", session_providers=providers)
    if not providers or providers[0] != required:
        save("run", error_type="ProviderNotUsed", error=f"session providers are {providers}")
        sys.exit(3)

    rng = np.random.RandomState(0)
    feeds = {
        "x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "m": rng.standard_normal((6, 5)).astype(np.float32),
    }
    try:
        (output,) = session.run(None, feeds)
    except Exception as exc:
        fail("run", exc)
    expected = reference(feeds["x"], feeds["w"], feeds["m"])
    max_error = float(np.max(np.abs(output.astype(np.float64) - expected)))
    scale = max(1.0, float(np.max(np.abs(expected))))
    # TF32 math on Ampere and later is allowed to differ by ~1e-3 relative; garbage differs by far more.
    save("compare", max_error=max_error, tolerance=2e-2 * scale)
    node_providers = node_providers_of(session, max_error)
    ok = (
        max_error <= 2e-2 * scale
        and bool(node_providers)
        and all(provider == required for provider in node_providers.values())
    )
    save("done", ok=ok, node_providers=node_providers)
    sys.exit(0 if ok else 3)


if __name__ == "__main__":
    main()
