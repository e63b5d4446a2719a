"""The floor under any launcher's preflight: a Python that only spawns the probe and waits for it.

Usage: python bench/floor.py INPUTS (a marshal file: python, provider, env, cwd, the probe's script and model).
The probe's inputs are computed beforehand (bench/run.py, with launcher/preflight/early.py), so nothing here
reads a setting, a library or the GPU: this is the launcher's interpreter start plus the probe itself (its
python, `import onnxruntime`, the test inference), which any launcher that runs a real inference in a fresh
process pays. `--check-only`'s time beyond it is what the launcher itself adds.
"""

import marshal
import os
import sys

with open(sys.argv[1], "rb") as handle:
    python, provider, env, cwd, child, model = marshal.load(handle)
folder = f"/tmp/heygem-floor-{os.getpid()}"
os.mkdir(folder, 0o700)
script_r, script_w = os.pipe()
os.chdir(cwd)
argv = [python, "-", f"{folder}/report.json", model, provider, folder]
pid = os.posix_spawn(python, argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, script_r, 0)], setsid=True)
os.close(script_r)
with open(child, "rb") as source:
    os.write(script_w, source.read())
os.close(script_w)
os.waitpid(pid, 0)
for name in os.listdir(folder):
    os.unlink(f"{folder}/{name}")
os.rmdir(folder)
