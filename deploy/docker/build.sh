#!/bin/sh
# Build steps behind `make wheelhouse`, `make image` and `make test-image` (docs/deploy.md, "Image").
# Run from the repository root.
#
#   deploy/docker/build.sh base         $IMAGE_BASE: Debian (debootstrap) with python3, imported
#                                       into podman; once (kept while `podman image exists`)
#   deploy/docker/build.sh wheelhouse   build/wheelhouse: every wheel the image installs (the build
#                                       backend included), built by the base's python3 (pip in a
#                                       container on the host network); again when pyproject changes
#   deploy/docker/build.sh image        both of the above, then $IMAGE with podman build
#
# Where podman, debootstrap or the network is missing, this says why and exits 0 without an image:
# tests/test_image.py then skips with the reason. A Dockerfile that does not build exits 1.
set -eu

PYTHON=${PYTHON:-.venv/bin/python}
IMAGE=${IMAGE:-localhost/vandamme:test}
IMAGE_BASE=${IMAGE_BASE:-localhost/vandamme-test-base:bookworm}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=build/image
WHEELHOUSE=build/wheelhouse

say() { echo "image: $*"; }

containers_conf() {
    # No default ulimits: the sandbox of the test machines refuses to set them.
    mkdir -p "$WORK"
    printf '[containers]\ndefault_ulimits = []\n' > "$WORK/containers.conf"
    CONTAINERS_CONF=$(pwd)/$WORK/containers.conf
    export CONTAINERS_CONF
}

requirements() {
    # The build backend and the dependencies, read from pyproject.toml (the project itself is built
    # by the builder stage, from the source it copies).
    mkdir -p "$WORK"
    "$PYTHON" - > "$WORK/requirements.txt" <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    p = tomllib.load(f)
print("\n".join(p["build-system"]["requires"] + p["project"].get("dependencies", [])))
EOF
}

wheelhouse() {
    # Built by the base image's own python3 (the one the image runs: markers such as
    # python_full_version must be evaluated by it), with the host's network and CA bundle.
    requirements
    if [ -f "$WHEELHOUSE/.requirements.txt" ] && cmp -s "$WORK/requirements.txt" "$WHEELHOUSE/.requirements.txt" \
            && [ "$(cat "$WHEELHOUSE/.base" 2>/dev/null)" = "$(podman image inspect --format '{{.Id}}' "$IMAGE_BASE")" ]; then
        return 0
    fi
    say "building $WHEELHOUSE with the python3 of $IMAGE_BASE"
    rm -rf "$WHEELHOUSE"
    mkdir -p "$WHEELHOUSE"
    ca=/etc/ssl/certs/ca-certificates.crt  # the host's CA bundle (a proxy's CA included), when it has one
    ca_args=""
    [ ! -f "$ca" ] || ca_args="-v $ca:/host-ca.crt:ro -e PIP_CERT=/host-ca.crt"
    # shellcheck disable=SC2086
    if ! timeout 900 podman --runtime runc --cgroup-manager cgroupfs run --rm --network host \
            -v "$(pwd)/$WHEELHOUSE:/wheelhouse" -v "$(pwd)/$WORK/requirements.txt:/requirements.txt:ro" \
            $ca_args -e PIP_DISABLE_PIP_VERSION_CHECK=1 \
            "$IMAGE_BASE" sh -c 'python3 -m venv /tmp/venv && /tmp/venv/bin/pip wheel -q -w /wheelhouse -r /requirements.txt' \
            > "$WORK/wheelhouse.log" 2>&1; then
        say "pip could not build the wheelhouse (see $WORK/wheelhouse.log); no image, tests/test_image.py will skip"
        rm -rf "$WHEELHOUSE"
        return 1
    fi
    cp "$WORK/requirements.txt" "$WHEELHOUSE/.requirements.txt"
    podman image inspect --format '{{.Id}}' "$IMAGE_BASE" > "$WHEELHOUSE/.base"
}

base() {
    containers_conf
    if podman image exists "$IMAGE_BASE"; then
        return 0
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "debootstrap not found (make test-image installs it); no base image, tests/test_image.py will skip"
        return 1
    fi
    say "making $IMAGE_BASE: debootstrap $DEBIAN_SUITE (minbase + python3, python3-venv, ca-certificates), podman import"
    root=$(mktemp -d /tmp/vandamme-image-base.XXXXXX)
    if ! timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" > "$WORK/debootstrap.log" 2>&1; then
        say "debootstrap failed (see $WORK/debootstrap.log); no base image, tests/test_image.py will skip"
        rm -rf "$root"
        return 1
    fi
    # apt's lists and caches are of no use in an image
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    if ! tar -C "$root" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$IMAGE_BASE" > /dev/null; then
        say "podman import failed; no base image, tests/test_image.py will skip"
        rm -rf "$root"
        return 1
    fi
    rm -rf "$root"
}

image() {
    if ! command -v podman >/dev/null 2>&1; then
        say "podman not found; tests/test_image.py will skip (make test-image installs podman and runs it)"
        return 0
    fi
    base || return 0
    wheelhouse || return 0
    old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    say "building $IMAGE (podman build --isolation chroot, base $IMAGE_BASE, offline from $WHEELHOUSE)"
    # --format docker: the OCI format has no HEALTHCHECK.
    if ! timeout 1200 podman build --isolation chroot --format docker --layers=false \
            -f deploy/docker/Dockerfile \
            --build-arg BASE_IMAGE="$IMAGE_BASE" --build-arg WHEELHOUSE="$WHEELHOUSE" \
            -t "$IMAGE" . > "$WORK/build.log" 2>&1; then
        tail -n 30 "$WORK/build.log"
        say "podman build failed (whole log: $WORK/build.log)"
        return 1
    fi
    new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
    # the image this one replaces, when nothing else uses it
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        podman rmi "$old" > /dev/null 2>&1 || true
    fi
    say "built $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

case "${1:-}" in
    base|wheelhouse)
        command -v podman >/dev/null 2>&1 || { say "podman not found (make test-image installs it)"; exit 0; }
        base || exit 0
        [ "$1" = base ] || wheelhouse || exit 0 ;;
    image) image ;;
    *) echo "usage: $0 wheelhouse|base|image" >&2; exit 2 ;;
esac
