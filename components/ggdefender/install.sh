#!/bin/sh
# The recipe's install step: sh install.sh <unzipped code artifact folder> <work folder>
#
# Gives the component a Python with its requirements, offline: a venv in the work folder filled with
# `pip --no-index --only-binary=:all:` from the platform's wheels artifact, which the nucleus unpacks beside the
# code (ggdefender-wheels-<architecture>/: wheels/ and requirements-cp3XX.txt per Python, docs/deploy.md): no
# network, no compiler. GGDEFENDER_INDEX_URL, which the recipe sets from the component configuration's
# Install/IndexUrl (docs/configuration.md), names a package index (e.g. https://pypi.org/simple) to install
# requirements.txt's pins from instead; "" means the artifact. The value is checked by supervisor/index_url.py beside
# this script and reaches pip only as one argument. A venv that already matches is kept; an interpreter that already
# has exactly the pinned set (GGDEFENDER_PYTHON, else python3) is used as it is (pre-provisioned devices, local
# runs). Never `pip --user`. It lives in the artifact, not in the recipe, because nucleus lite reads every `{` of
# a recipe script as a recipe variable and caps the recipe's size. Ends by writing <work>/ggdefender-python,
# which the run step executes.
set -eu
if [ "$#" -ne 2 ] || [ ! -f "$1/requirements.txt" ] || [ ! -d "$2" ]; then
  echo "usage: sh install.sh <artifact folder with requirements.txt> <work folder>" >&2
  exit 2
fi
ART="$1"
WORK="$2"
REQ="$ART/requirements.txt"
PY="${GGDEFENDER_PYTHON:-python3}"
INDEX="${GGDEFENDER_INDEX_URL:-}"

# a bad index is refused before anything changes (the last good venv stays)
if [ -n "$INDEX" ]; then
  if ! command -v "$PY" >/dev/null 2>&1; then
    echo "ggdefender install: no $PY to install with; set GGDEFENDER_PYTHON" >&2
    exit 1
  fi
  if ! INDEX_SHOWN=$("$PY" "$(dirname "$0")/supervisor/index_url.py" "$INDEX"); then
    echo "ggdefender install: refused the component configuration's Install/IndexUrl (see above);" \
      "set it to an http(s) package index URL, or to \"\" to install from the wheels artifact" >&2
    exit 2
  fi
fi

# The wheels folder beside the code: the nucleus downloads only this platform's. Should several be there
# (an unpacked build, not a deployment), the interpreter's machine picks one.
WHEELS=""
WHEELS_PROBLEM=""
count=0
for d in "$ART"/../ggdefender-wheels-*; do
  if [ -d "$d" ]; then count=$((count + 1)); WHEELS="$d"; fi
done
if [ "$count" -gt 1 ]; then
  case "$("$PY" -c 'import sysconfig; print(sysconfig.get_platform())' 2>/dev/null)" in
    *-x86_64) arch=amd64 ;;
    *-aarch64) arch=aarch64 ;;
    *-arm*) arch=arm ;;
    *) arch=unknown ;;
  esac
  WHEELS="$ART/../ggdefender-wheels-$arch"
  [ -d "$WHEELS" ] || { WHEELS_PROBLEM="$count wheels artifacts beside $ART, none for $arch"; WHEELS=""; }
elif [ "$count" -eq 0 ]; then
  WHEELS_PROBLEM="no wheels artifact (ggdefender-wheels-<architecture>) beside $ART; deploy the recipe's manifest for this platform"
fi

# exit 0 when interpreter $1 has exactly the requirements of file $2
matches() {
  "$1" - "$2" <<'PYCHECK'
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

# the requirements file to install for interpreter $1 (empty when the wheels artifact has none for it)
wanted() {
  if [ -n "$INDEX" ]; then echo "$REQ"; return; fi
  tag=$("$1" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
  if [ -n "$WHEELS" ] && [ -f "$WHEELS/requirements-$tag.txt" ]; then echo "$WHEELS/requirements-$tag.txt"; fi
}

VENV_PY="$WORK/venv/bin/python"
if [ -x "$VENV_PY" ] && [ -n "$(wanted "$VENV_PY")" ] && matches "$VENV_PY" "$(wanted "$VENV_PY")"; then
  echo "ggdefender install: venv already matches $(wanted "$VENV_PY")"
  PYBIN="$VENV_PY"
elif command -v "$PY" >/dev/null 2>&1 && matches "$(command -v "$PY")" "$REQ"; then
  echo "ggdefender install: using $PY, which already has the pinned requirements"
  PYBIN="$(command -v "$PY")"
else
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "ggdefender install: needs Python >= 3.10, $PY is $("$PY" -V 2>&1); set GGDEFENDER_PYTHON" >&2
    exit 1
  fi
  WANT="$(wanted "$PY")"
  if [ -z "$WANT" ]; then
    if [ -z "$WHEELS" ]; then
      echo "ggdefender install: $WHEELS_PROBLEM, or set the configuration key Install/IndexUrl to install from" \
        "a package index" >&2
    else
      have=$(cd "$WHEELS" && ls requirements-cp*.txt 2>/dev/null | sed 's/requirements-//; s/[.]txt$//' | tr '\n' ' ')
      echo "ggdefender install: $(basename "$WHEELS") has no wheels for $("$PY" -V 2>&1) ($PY); it has: $have" \
        "- set GGDEFENDER_PYTHON to one of those, or the configuration key Install/IndexUrl to install from" \
        "a package index" >&2
    fi
    exit 1
  fi
  if [ -n "$INDEX" ]; then FROM="$WANT's pins, from the package index $INDEX_SHOWN"; else FROM="$WANT"; fi
  echo "ggdefender install: creating $WORK/venv with $PY from $FROM"
  "$PY" -m venv --clear "$WORK/venv"
  if [ -n "$INDEX" ]; then
    "$VENV_PY" -m pip install --no-input --disable-pip-version-check -q --index-url "$INDEX" -r "$WANT"
  else
    "$VENV_PY" -m pip install --no-input --disable-pip-version-check -q --no-index --only-binary=:all: \
      --find-links "$WHEELS/wheels" -r "$WANT"
  fi
  matches "$VENV_PY" "$WANT"
  PYBIN="$VENV_PY"
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
