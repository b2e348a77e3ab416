#!/bin/sh
# The recipe's install step: sh install.sh <unzipped artifact folder> <work folder>
#
# A venv in the work folder with the pinned requirements, skipped when the installed set already matches; an
# interpreter that already has exactly the pinned set (GGDEFENDER_PYTHON, else python3) is used as it is
# (pre-provisioned devices, local runs). Never `pip --user`. It lives in the artifact, not in the recipe,
# because nucleus lite reads every `{` of a recipe script as a recipe variable and caps the recipe's size
# (docs/deploy.md). Ends by writing <work>/ggdefender-python, which the run step executes.
set -eu
if [ "$#" -ne 2 ] || [ ! -f "$1/requirements.txt" ] || [ ! -d "$2" ]; then
  echo "usage: sh install.sh <artifact folder with requirements.txt> <work folder>" >&2
  exit 2
fi
ART="$1"
WORK="$2"
REQ="$ART/requirements.txt"
PY="${GGDEFENDER_PYTHON:-python3}"

# exit 0 when interpreter $1 has exactly the pinned requirements
matches() {
  "$1" - "$REQ" <<'PYCHECK'
import sys
from importlib.metadata import PackageNotFoundError, version
missing = []
for line in open(sys.argv[1]):
    spec = line.split("#")[0].strip()
    if spec:
        name, _, want = spec.partition("==")
        try:
            ok = version(name) == want
        except PackageNotFoundError:
            ok = False
        if not ok:
            missing.append(spec)
if missing:
    print("ggdefender install: not satisfied: " + ", ".join(missing))
sys.exit(1 if missing else 0)
PYCHECK
}

if [ -x "$WORK/venv/bin/python" ] && matches "$WORK/venv/bin/python"; then
  echo "ggdefender install: venv already matches requirements.txt"
  PYBIN="$WORK/venv/bin/python"
elif command -v "$PY" >/dev/null 2>&1 && matches "$(command -v "$PY")"; then
  echo "ggdefender install: using $PY, which already has the pinned requirements"
  PYBIN="$(command -v "$PY")"
else
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "ggdefender install: needs Python >= 3.10, $PY is $("$PY" -V 2>&1); set GGDEFENDER_PYTHON" >&2
    exit 1
  fi
  echo "ggdefender install: creating $WORK/venv with $PY"
  "$PY" -m venv "$WORK/venv"
  "$WORK/venv/bin/python" -m pip install --no-input --disable-pip-version-check -q -r "$REQ"
  matches "$WORK/venv/bin/python"
  PYBIN="$WORK/venv/bin/python"
fi
# The collector runs as an unprivileged user (Supervisor.CollectorUser): it must be able to read and run the
# venv and the code, and to enter the work folder to reach its own collector/ folder; it must never be able to
# write any of them (the state files in the work folder are 0600).
if [ "$PYBIN" = "$WORK/venv/bin/python" ]; then chmod -R u+rwX,go+rX,go-w "$WORK/venv"; fi
chmod go+x,go-w "$WORK"
chmod -R go+rX,go-w "$ART" 2>/dev/null ||
  echo "ggdefender install: cannot change the artifact's permissions (not its owner); the recipe's Read: ALL applies"
printf '%s\n' "$PYBIN" > "$WORK/ggdefender-python.tmp"
mv "$WORK/ggdefender-python.tmp" "$WORK/ggdefender-python"
