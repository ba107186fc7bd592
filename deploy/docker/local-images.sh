#!/usr/bin/env bash
# Builds the local stand-ins of every image the compose stack uses, for machines that cannot pull
# images (no registry): a Debian bookworm base made with debootstrap, PostgreSQL 15, RabbitMQ 3.10 and
# Prometheus 2.42 from Debian's packages on it, and the FeedbackPulse runtime image holding the
# binaries already built on this host (Jaeger has no Debian package: no stand-in). Elsewhere, docker-compose.yml pulls postgres:15 and rabbitmq:3.10-management and
# deploy/docker/Dockerfile builds the application image from source.
#
# Usage: deploy/docker/local-images.sh [debug|release|servers]   (the cargo profile whose binaries
#        go in, default debug, i.e. what `cargo build --workspace --bins` made; `servers`: only the
#        base, PostgreSQL and RabbitMQ images, no binaries needed, as deploy/docker/rabbitmq-cluster.sh
#        wants)
# Needs root (debootstrap), docker, and the binaries in ${CARGO_TARGET_DIR:-target}/<profile>/.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
profile=${1:-debug}
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin_dir="$target_dir/$profile"

base_image=${FP_LOCAL_BASE_IMAGE:-fp-local/debian:bookworm}
debian_mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Kept in step with the COPY lines of Dockerfile.prebuilt and Dockerfile.
binaries=(fp-api fp-dispatcher fp-log-ingest fp-dashboard fpctl fp-demo-receiver)

say() { printf '[local-images] %s\n' "$*" >&2; }

servers_only=false
[ "$profile" = servers ] && servers_only=true

$servers_only || for binary in "${binaries[@]}"; do
  [ -x "$bin_dir/$binary" ] || {
    say "missing $bin_dir/$binary: run \`cargo build --workspace --bins\` first"
    exit 1
  }
done

# The base: made once, then reused while the image exists (debootstrap takes minutes).
if docker image inspect "$base_image" >/dev/null 2>&1; then
  say "$base_image exists; not rebuilt (docker rmi it to make it again)"
else
  command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    apt-get update -q >/dev/null
    apt-get install -y -q debootstrap >/dev/null
  }
  rootfs=$(mktemp -d /var/tmp/fp-debootstrap.XXXXXX)
  trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
  started=$SECONDS
  say "debootstrap --variant=minbase bookworm (first time only)"
  debootstrap --variant=minbase bookworm "$rootfs" "$debian_mirror" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    exit 1
  }
  rm -f "$rootfs.log"
  # The same sources as the official debian:bookworm image, so apt-get inside builds gets updates.
  cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $debian_mirror bookworm main
deb $debian_mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
  # No package may start a service while an image is built (there is no init to run it).
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod +x "$rootfs/usr/sbin/policy-rc.d"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$base_image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  say "$base_image made in $((SECONDS - started)) s"
fi

build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
build() { # image dockerfile context build-arg...
  local image=$1 dockerfile=$2 context=$3; shift 3
  local started=$SECONDS previous
  previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  # Its output only on failure: on success the legacy builder only warns that it is deprecated.
  docker build -q -t "$image" -f "$dockerfile" "$@" "$context" >"$build_log" 2>&1 || {
    cat "$build_log" >&2
    say "building $image failed"
    exit 1
  }
  # New binaries make a new image; the one it replaced would stay behind untagged, on every run.
  if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$image")" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || say "the replaced $image ($previous) is still in use; kept"
  fi
  say "$image built in $((SECONDS - started)) s"
}

build fp-local/postgres:15 deploy/docker/postgres/Dockerfile deploy/docker/postgres \
  --build-arg "BASE_IMAGE=$base_image"
build fp-local/rabbitmq:3.10 deploy/docker/rabbitmq/Dockerfile deploy/docker/rabbitmq \
  --build-arg "BASE_IMAGE=$base_image"
$servers_only && exit 0
build fp-local/prometheus:2.42 deploy/docker/prometheus/Dockerfile deploy/docker/prometheus \
  --build-arg "BASE_IMAGE=$base_image"
# The context holds the six binaries alone (hard links where possible), so docker is not sent the
# whole target directory.
context="$target_dir/docker-context"
rm -rf "$context"
mkdir -p "$context"
for binary in "${binaries[@]}"; do
  cp -l "$bin_dir/$binary" "$context/" 2>/dev/null || cp "$bin_dir/$binary" "$context/"
done
build fp-local/feedbackpulse:dev deploy/docker/Dockerfile.prebuilt "$context" \
  --build-arg "RUNTIME_IMAGE=$base_image" \
  --build-arg "REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
rm -rf "$context"
