#!/bin/sh
# The container's entrypoint, run by tini (PID 1, -g): hand over to heygem-launch with every argument.
# exec, so that heygem-launch receives tini's signals itself and its exit code is the container's.
set -eu
exec heygem-launch "$@"
