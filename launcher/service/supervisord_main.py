"""supervisord as the service starts it (`python -m launcher.service.supervisord_main -c CONF`): supervisor's own
`supervisord`, run without OpenSSL.

supervisord never uses OpenSSL: it listens on a unix socket, without TLS, and checks the control password as a
SHA-1 hash, which hashlib then computes with Python's own `_sha1` (launcher/system/openssl.py says the rest).
"""

from __future__ import annotations

import runpy

from launcher.system import openssl

openssl.keep_out()
# alter_sys: sys.argv[0] becomes supervisord's own file, and its options are sys.argv[1:].
runpy.run_module("supervisor.supervisord", run_name="__main__", alter_sys=True)
