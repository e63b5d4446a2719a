"""supervisord as the service starts it (`python -m launcher.service.supervisord_main -c CONF`): supervisor's own
`supervisord`, run without OpenSSL.

supervisord never uses OpenSSL: it listens on a unix socket, without TLS, and checks the control password as a
SHA-1 hash, which hashlib then computes with Python's own `_sha1`. Its imports would still load it (`ssl` through
`http.client`, `_hashlib` through `hashlib`): libcrypto alone is ~3.5 MB of resident memory, kept for the whole
run. Marked absent here, `import ssl` and `import _hashlib` raise ImportError, which http.client, hashlib and hmac
handle as on a Python built without OpenSSL.
"""

from __future__ import annotations

import runpy
import sys

sys.modules["ssl"] = None  # type: ignore[assignment]
sys.modules["_hashlib"] = None  # type: ignore[assignment]
# alter_sys: sys.argv[0] becomes supervisord's own file, and its options are sys.argv[1:].
runpy.run_module("supervisor.supervisord", run_name="__main__", alter_sys=True)
