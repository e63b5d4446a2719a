"""The settings' command-line flags: each `--flag` and the `HEYGEM_*` key it sets. Flags are the top layer of
the settings (`settings.load_settings(flags)`). Plain data: the click CLI builds its options from it, and the
`--check-only` fast path (launcher/__main__.py) reads argv with it without importing click."""

from __future__ import annotations

# Command-line option -> setting key, help.
SETTING_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--env-file", "HEYGEM_ENV_FILE", "the .env file (default: $HEYGEM_ENV_FILE, else ./.env if present)"),
    ("--conda-root", "HEYGEM_CONDA_ROOT", "conda installation root"),
    ("--conda-env", "HEYGEM_CONDA_ENV", "env name, prefix path, or '' for this interpreter"),
    ("--app-dir", "HEYGEM_APP_DIR", "the app's working directory"),
    ("--app-command", "HEYGEM_APP_COMMAND", "the app's command line"),
    ("--require-provider", "HEYGEM_REQUIRE_PROVIDER", "provider the probe must run on"),
    ("--extra-library-path", "HEYGEM_EXTRA_LIBRARY_PATH", "extra library folders, colon-separated"),
    ("--preflight-timeout", "HEYGEM_PREFLIGHT_TIMEOUT", "seconds before a hung probe is killed"),
    ("--run-dir", "HEYGEM_RUN_DIR", "private folder for sockets and logs"),
    ("--stop-grace", "HEYGEM_STOP_GRACE", "seconds between SIGTERM and SIGKILL on stop"),
)
