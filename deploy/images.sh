#!/usr/bin/env bash
# Builds the CPU images (gateway, text, image, audio, fusion) with podman or docker, offline:
#   deploy/images.sh [TARGET ...]         (default: all five)
# The wheels come from pip here (deploy/wheels); the base is $BASE, or, when no registry answers,
# a Debian bookworm root made by mmdebstrap and imported as localhost/omniforge-base:bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("${@:-gateway text image audio fusion}")
engine="${CONTAINER_ENGINE:-$(command -v podman || command -v docker)}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"
tag="${IMAGE_TAG:-0.1.0}"
py="${PYTHON:-.venv/bin/python}"
# 1. wheels of every serving package and its pinned dependencies (no torch)
"$py" -m pip wheel -q -w deploy/wheels -c requirements.lock ./protos/python ./shared ./gateway ./services/text \
  ./services/image ./services/audio ./services/fusion 2>&1 | grep -v "^WARNING: Location" || true
# 2. the base
if [ -z "${BASE:-}" ]; then
  BASE=localhost/omniforge-base:bookworm
  if ! "$engine" image exists "$BASE" 2>/dev/null; then
    root=$(mktemp -d)
    mmdebstrap --variant=apt --include=python3,python3-venv,ca-certificates,libespeak-ng1,espeak-ng-data,libcairo2,libgomp1 \
      bookworm "$root/base.tar"
    "$engine" import "$root/base.tar" "$BASE"
    rm -rf "$root"
  fi
fi
# 3. one image per target
isolation=()
[ "$(basename "$engine")" = podman ] && isolation=(--isolation chroot --format docker)
for target in ${targets[@]}; do
  "$engine" build "${isolation[@]}" -f deploy/Dockerfile --target "$target" --build-arg BASE="$BASE" \
    --build-arg PYTHON=python3 --build-arg BUILD_FFMPEG="${BUILD_FFMPEG:-0}" -t "omniforge/$target:$tag" .
done
