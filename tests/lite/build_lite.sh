#!/usr/bin/env bash
# Builds AWS IoT Greengrass nucleus lite (the real C nucleus) for the lite integration tests, once per commit.
#   bash tests/lite/build_lite.sh        prints the folder holding the built daemons (bin/) on its last line
# Sources: $GGDEFENDER_LITE_SOURCES (a folder with aws-greengrass-lite-<short>.tar.gz and dep-<name>.tar.gz for
# the four CMake FetchContent dependencies: an offline build) when set, else a git clone of the pinned commit
# (needs github.com; FetchContent then fetches the dependencies itself).
# Cache: ${GGDEFENDER_LITE_CACHE:-~/.cache/ggdefender/greengrass-lite}/<commit>/; a build is taken only when its
# `complete` marker exists, which is written after the build, in a folder renamed into place at the end, so a
# build that was interrupted is never taken as done.
# Exit codes: 0 built (or cached); 3 something the build needs is missing (the message says what to install).
set -euo pipefail

LITE_COMMIT=326e992b4a03e1b41b0c49f97663fc0c69182cf9
LITE_REPO=https://github.com/aws-greengrass/aws-greengrass-lite
DEPS=(gg_sdk core_mqtt aws_sigv4 unity)
# Debian packages of the build (also installed by `.ci/bootstrap test`); checked by their pkg-config names
PKGCONFIG_NEEDS="openssl libcurl uuid libzip sqlite3 yaml-0.1 libsystemd libevent liburiparser"
JOBS=${GGDEFENDER_LITE_JOBS:-2}

CACHE=${GGDEFENDER_LITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ggdefender/greengrass-lite}
DONE="$CACHE/$LITE_COMMIT"

missing() { echo "build_lite: $*" >&2; exit 3; }

if [ -f "$DONE/complete" ] && [ -x "$DONE/bin/ggipcd" ]; then
  echo "$DONE"
  exit 0
fi

for tool in cmake make cc pkg-config; do
  command -v "$tool" >/dev/null || missing "no '$tool': install the Debian packages cmake build-essential pkg-config (as root: bash .ci/bootstrap test installs them)"
done
for pc in $PKGCONFIG_NEEDS; do
  pkg-config --exists "$pc" || missing "no development files for '$pc': install libssl-dev libcurl4-openssl-dev uuid-dev libzip-dev libsqlite3-dev libyaml-dev libsystemd-dev libevent-dev liburiparser-dev"
done

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/.building-$LITE_COMMIT.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

FC_ARGS=()
if [ -n "${GGDEFENDER_LITE_SOURCES-}" ]; then
  src_tar=$(ls "$GGDEFENDER_LITE_SOURCES"/aws-greengrass-lite-"${LITE_COMMIT:0:8}"*.tar.gz 2>/dev/null | head -1 || true)
  [ -n "$src_tar" ] || missing "GGDEFENDER_LITE_SOURCES=$GGDEFENDER_LITE_SOURCES has no aws-greengrass-lite-${LITE_COMMIT:0:8}.tar.gz"
  tar -xzf "$src_tar" -C "$WORK"
  mv "$WORK/aws-greengrass-lite" "$WORK/src"
  mkdir -p "$WORK/deps"
  for d in "${DEPS[@]}"; do
    [ -f "$GGDEFENDER_LITE_SOURCES/dep-$d.tar.gz" ] || missing "GGDEFENDER_LITE_SOURCES=$GGDEFENDER_LITE_SOURCES has no dep-$d.tar.gz"
    tar -xzf "$GGDEFENDER_LITE_SOURCES/dep-$d.tar.gz" -C "$WORK/deps"
    FC_ARGS+=("-DFETCHCONTENT_SOURCE_DIR_${d^^}=$WORK/deps/$d")
  done
  FC_ARGS+=(-DFETCHCONTENT_FULLY_DISCONNECTED=ON)
else
  command -v git >/dev/null || missing "no git to fetch nucleus lite (or set GGDEFENDER_LITE_SOURCES to offline sources)"
  git clone -q "$LITE_REPO" "$WORK/src" >&2 ||
    missing "cannot clone $LITE_REPO (offline?): set GGDEFENDER_LITE_SOURCES to a folder with the lite and dependency tarballs"
  git -C "$WORK/src" checkout -q "$LITE_COMMIT"
fi

echo "build_lite: building nucleus lite ${LITE_COMMIT:0:8}" >&2
{
  cmake -S "$WORK/src" -B "$WORK/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${FC_ARGS[@]}"
  make -C "$WORK/build" -j"$JOBS"
} >"$WORK/build.log" 2>&1 || {
  cp "$WORK/build.log" "$CACHE/build-failed.log"
  tail -30 "$WORK/build.log" >&2
  echo "build_lite: build failed (log: $CACHE/build-failed.log)" >&2
  exit 1
}

# only the daemons are kept; the marker is written last and the folder appears whole by a rename. A build
# finished meanwhile by another session is kept (it may be in use): ours is then dropped.
mkdir -p "$WORK/out"
cp -a "$WORK/build/bin" "$WORK/out/bin"
echo "$LITE_COMMIT" >"$WORK/out/complete"
if ! mv -T "$WORK/out" "$DONE" 2>/dev/null && [ ! -f "$DONE/complete" ]; then
  rm -rf "$DONE"  # a folder without the marker is never a finished build
  mv -T "$WORK/out" "$DONE"
fi
echo "$DONE"
