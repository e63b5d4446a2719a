"""Exit codes (sysexits), one meaning each; the README's table is generated from the same names."""

from __future__ import annotations

import os

OK = os.EX_OK  # 0: the required provider really ran the probe / clean stop
USAGE = os.EX_USAGE  # 64: bad command line
UNAVAILABLE = os.EX_UNAVAILABLE  # 69: preflight refused: the app would not run on the required provider
SOFTWARE = os.EX_SOFTWARE  # 70: the app crash-looped or the launcher hit an internal error
GPU_FAULT = os.EX_OSERR  # 71: a GPU faulted at run time (XID, lost, NVML Unknown Error): reset, reboot or recreate
CONFIG = os.EX_CONFIG  # 78: a setting, the .env file or the conda env is invalid
