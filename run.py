#!/usr/bin/env python3
"""One entry point for a fresh machine that has only python3.

  python3 run.py demo   # make the demo data, pretrain, evaluate, print the table
  python3 run.py test   # the test suite

Both create (or reuse) a virtual environment in .venv with cvrl_jax and its dependencies
installed from the package registry; it is rebuilt when setup.py changes. Extra arguments
after the command are passed on (to pytest for `test`, to the demo script for `demo`).
Set CVRL_VENV to use another environment folder.
"""
import hashlib
import os
import subprocess
import sys
import venv

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.environ.get("CVRL_VENV", os.path.join(ROOT, ".venv"))
STAMP = os.path.join(VENV, ".cvrl_setup_hash")


def _python():
  return os.path.join(VENV, "bin", "python")


def _setup_hash():
  with open(os.path.join(ROOT, "setup.py"), "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def ensure_venv():
  wanted = _setup_hash()
  if os.path.exists(STAMP) and open(STAMP).read().strip() == wanted:
    return
  if not os.path.exists(_python()):
    print(f"[run.py] creating virtual environment in {VENV}", flush=True)
    venv.EnvBuilder(with_pip=True).create(VENV)
  print("[run.py] installing cvrl_jax and its dependencies (about a minute)", flush=True)
  pip = [_python(), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
  subprocess.check_call(pip + ["--upgrade", "pip"])
  subprocess.check_call(pip + ["-e", f"{ROOT}[test]"], cwd=ROOT)
  with open(STAMP, "w") as f:
    f.write(wanted)


def main(argv):
  if len(argv) < 2 or argv[1] not in ("demo", "test"):
    print(__doc__)
    return 2
  ensure_venv()
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  if argv[1] == "test":
    cmd = [_python(), "-m", "pytest", "-q", "tests"] + argv[2:]
  else:
    cmd = [_python(), "-m", "cvrl_jax.demo"] + argv[2:]
  return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
