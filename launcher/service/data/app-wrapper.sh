#!/bin/sh
# Runs the app for supervisord and keeps its process group clean.
#
#   app-wrapper.sh PYTHON ENV_FILE COMMAND [ARG...]
#
# supervisord makes this shell the leader of a new process group. The app is started in that group with
# exactly the environment in ENV_FILE (JSON), which is what the preflight probe ran with: a tiny python
# replaces the whole environment and execs the app, so nothing of supervisord's own environment leaks in.
#
# Why a wrapper at all: when the app's main process dies on its own, its multiprocessing workers live on,
# holding GPU memory, and supervisord would respawn the app beside them. Here, once the app is gone, every
# other process of the group is killed before this shell exits, so the respawn always finds a clean slate.
# A POSIX shell, not python: it idles for the app's whole life and costs ~2 MB instead of ~10.
set -u
python=$1
env_file=$2
shift 2

# A command that cannot start is one line and exit 127 (as a shell says it), never a traceback.
"$python" -S -I -c 'import json, os, sys
env = json.load(open(sys.argv[1]))
try:
    os.execvpe(sys.argv[2], sys.argv[2:], env)
except OSError as exc:
    sys.stderr.write("heygem app-wrapper: cannot start %s: %s\n" % (sys.argv[2], exc.strerror))
    sys.exit(127)' "$env_file" "$@" &
app=$!

# supervisord signals the whole group on stop: the app gets the signal itself; this shell waits for it.
trap ':' TERM INT HUP QUIT
while :; do
    # Its stderr only: dash reports a job killed by a signal ("Terminated") there, which is no app output.
    wait "$app" 2>/dev/null
    status=$?
    # wait returns early (>128) when a trapped signal arrives; the app may still be running then.
    kill -0 "$app" 2>/dev/null || break
done

# This group's id, from /proc (field 5 of stat, after the command name in parentheses).
read -r self </proc/$$/stat
# shellcheck disable=SC2086  # split the fields after "(comm) "
set -- ${self##*) }
group=$3

kill_rest() {
    left=0
    for stat in /proc/[0-9]*/stat; do
        { read -r line <"$stat"; } 2>/dev/null || continue
        pid=${line%% *}
        [ "$pid" = "$$" ] && continue
        # shellcheck disable=SC2086  # split the fields after "(comm) "
        set -- ${line##*) }
        [ "$3" = "$group" ] || continue
        [ "$1" = Z ] && continue  # already dead, waiting for its parent (tini or heygem-launch) to reap it
        kill -KILL "$pid" 2>/dev/null && left=1
    done
    return "$left"
}
tries=0
until kill_rest || [ "$tries" -ge 100 ]; do
    tries=$((tries + 1))
done

# Exit as the app did, so supervisord logs its real exit status or signal.
if [ "$status" -gt 128 ] && [ "$status" -lt 160 ]; then
    trap - TERM INT HUP QUIT
    kill -s "$(kill -l "$status")" "$$" 2>/dev/null
fi
exit "$status"
