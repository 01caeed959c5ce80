#!/usr/bin/env bash
# Builds the CPU images (gateway, text, image, audio, fusion, trainer; redis and postgres from Debian) with
# podman or docker, offline:
#   deploy/images.sh [TARGET ...]         (default: all eight)
# The wheels come from pip here (deploy/wheels); the base is $BASE, or, when no registry answers,
# a Debian bookworm root made by mmdebstrap and imported as localhost/omniforge-base:bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("${@:-gateway text image audio fusion trainer redis postgres}")
engine="${CONTAINER_ENGINE:-$(command -v podman || command -v docker)}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"
tag="${IMAGE_TAG:-0.1.0}"
py="${PYTHON:-.venv/bin/python}"
# 1. wheels of every package and its pinned dependencies (torch, the CPU build, for the trainer only)
"$py" -m pip wheel -q -w deploy/wheels -c requirements.lock ./protos/python ./shared ./gateway ./services/text \
  ./services/image ./services/audio ./services/fusion ./training ./sdk/python ./cli \
  'async-timeout>=4.0.3' 2>&1 | grep -v "^WARNING: Location" || true    # redis wants it below Python 3.11.3 (Debian's 3.11.2)
# 2. the base
if [ -z "${BASE:-}" ]; then
  BASE=localhost/omniforge-base:bookworm
  if ! "$engine" image exists "$BASE" 2>/dev/null; then
    root=$(mktemp -d)
    mmdebstrap --variant=apt --include=python3,python3-venv,ca-certificates,libespeak-ng1,espeak-ng-data,libcairo2,libgomp1,tzdata \
      bookworm "$root/base.tar"
    "$engine" import "$root/base.tar" "$BASE"
    rm -rf "$root"
  fi
fi
# 3. Redis and PostgreSQL from Debian's packages, for machines that cannot pull redis:7.0 and postgres:15
debian_image() {   # name, packages, --change ...
  local name=$1 packages=$2; shift 2
  "$engine" image exists "localhost/omniforge-$name:bookworm" 2>/dev/null && return
  local root; root=$(mktemp -d)
  mmdebstrap --variant=apt --include="$packages" \
    --customize-hook='copy-in deploy/infra/postgres-entrypoint.sh /usr/local/bin' bookworm "$root/$name.tar"
  "$engine" import "$@" "$root/$name.tar" "localhost/omniforge-$name:bookworm"
  rm -rf "$root"
}
infra=()
for target in ${targets[@]}; do
  case "$target" in
    redis) debian_image redis redis-server --change 'CMD ["redis-server", "--protected-mode", "no"]' ;;
    postgres) debian_image postgres postgresql-15 --change 'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]' ;;
    *) infra+=("$target") ;;
  esac
done
targets=("${infra[@]}")
# 4. one image per target
isolation=()
[ "$(basename "$engine")" = podman ] && isolation=(--isolation chroot --format docker)
for target in ${targets[@]}; do
  "$engine" build "${isolation[@]}" -f deploy/Dockerfile --target "$target" --build-arg BASE="$BASE" \
    --build-arg PYTHON=python3 --build-arg BUILD_FFMPEG="${BUILD_FFMPEG:-0}" -t "omniforge/$target:$tag" .
done
