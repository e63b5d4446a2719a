"""OpenSSL kept out of a process that never uses it.

The launcher's service and its supervisord speak XML-RPC over a unix socket, without TLS, and hash with
Python's own `_sha1`/`_blake2`; their imports would still load OpenSSL (`ssl` through `http.client`, `_hashlib`
through `hashlib`): libssl and libcrypto are ~3.5 MB of resident memory, kept for the whole run. Marked absent,
`import ssl` and `import _hashlib` raise ImportError, which http.client, hashlib and hmac handle as on a Python
built without OpenSSL (CPython's Lib/http/client.py, Lib/hashlib.py).
"""

from __future__ import annotations

import sys

MODULES = ("ssl", "_hashlib")


def keep_out() -> bool:
    """Mark OpenSSL's modules absent for the rest of this process; False (nothing done) when one is loaded
    already. Not for a process that serves or fetches anything over TLS: prometheus-client imports `ssl`."""
    if any(sys.modules.get(name) is not None for name in MODULES):
        return False
    for name in MODULES:
        sys.modules[name] = None  # type: ignore[assignment]
    return True
