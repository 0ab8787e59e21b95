#!/usr/bin/env bash
# Start a local Docker engine and build the worker's test images, without pulling anything.
#
# Idempotent: every step checks first and does nothing when its work is already done.
#   1. install docker.io with apt if it is missing;
#   2. start dockerd in the background if `docker info` fails: overlay2, else vfs (and, where
#      the default bridge cannot be made, without one: jobs run with NetworkMode none);
#   3. wait (bounded) until `docker info` answers;
#   4. build dcp-test/busybox:1 from the busybox-static .deb (dpkg -x + docker import): the one
#      in apt's cache, else the installed static binary, else `apt-get download`.
#
# Needs root (CI runs it with sudo where it is not root). Settings, by environment:
#   DCP_DOCKER_DATA_ROOT   dockerd --data-root          (default /var/lib/docker)
#   DCP_DOCKER_LOG         dockerd's log file           (default /tmp/dcp-dockerd.log)
#   DCP_DOCKER_WAIT_S      how long to wait for dockerd (default 60)
#   DCP_TEST_IMAGE         the test image's reference   (default dcp-test/busybox:1)
set -euo pipefail

DATA_ROOT="${DCP_DOCKER_DATA_ROOT:-/var/lib/docker}"
LOG="${DCP_DOCKER_LOG:-/tmp/dcp-dockerd.log}"
WAIT_S="${DCP_DOCKER_WAIT_S:-60}"
IMAGE="${DCP_TEST_IMAGE:-dcp-test/busybox:1}"
ARCHIVES="${DCP_APT_ARCHIVES:-/var/cache/apt/archives}"  # where apt keeps downloaded .debs
WORK_DIR=""
trap 'rm -rf "${WORK_DIR:-/nonexistent}"' EXIT

log() { printf 'docker.sh: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    # busybox-static is not installed here: the image build only needs its .deb (or the
    # binary, where it is installed already), and installing it would replace a dynamic busybox.
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

docker_answers() {
    # As root: a user outside the docker group must not be taken for "no engine".
    if [ "$(id -u)" = 0 ]; then
        timeout 10 docker info >/dev/null 2>&1
    else
        timeout 10 sudo docker info >/dev/null 2>&1
    fi
}

let_user_in() {
    # The tests run as the calling user: on a throwaway CI machine, open the socket to it.
    if [ "$(id -u)" != 0 ] && ! timeout 10 docker info >/dev/null 2>&1; then
        log "opening /var/run/docker.sock to $(id -un)"
        as_root chmod 666 /var/run/docker.sock
    fi
}

wait_for_docker() {
    local deadline=$((SECONDS + WAIT_S))
    while [ "$SECONDS" -lt "$deadline" ]; do
        docker_answers && return 0
        # dockerd died: no point waiting any longer.
        if [ -n "${DOCKERD_PID:-}" ] && ! as_root kill -0 "$DOCKERD_PID" 2>/dev/null; then
            return 1
        fi
        sleep 1
    done
    return 1
}

start_dockerd() {
    local driver="$1"
    shift
    log "starting dockerd (storage driver $driver${*:+, $*}, log $LOG)"
    as_root mkdir -p "$DATA_ROOT"
    # setsid + nohup: dockerd must outlive this script and the shell that called it.
    as_root setsid nohup dockerd \
        --data-root "$DATA_ROOT" \
        --storage-driver "$driver" \
        --log-level warn \
        "$@" \
        >>"$LOG" 2>&1 </dev/null &
    DOCKERD_PID=$!
    if wait_for_docker; then
        log "dockerd is up (storage driver $driver)"
        return 0
    fi
    log "dockerd with $driver did not come up; last log lines:"
    tail -n 20 "$LOG" >&2 || true
    # Stop only the dockerd this script started (its pid), never whatever a pid file names.
    as_root kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 20); do
        as_root kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.5
    done
    return 1
}

ensure_dockerd() {
    if docker_answers; then
        log "docker already answers"
        return 0
    fi
    if [ -f /var/run/docker.pid ]; then
        if as_root kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
            # A dockerd runs but does not answer yet (starting up): wait for it, start none.
            log "a dockerd is running (pid $(cat /var/run/docker.pid)); waiting for it"
            DOCKERD_PID=""
            wait_for_docker && return 0
            log "the running dockerd does not answer; see its log"
            exit 1
        fi
        # A stale pid file from a dead dockerd makes the next one refuse to start.
        as_root rm -f /var/run/docker.pid
    fi
    local drivers=(vfs)
    grep -qw overlay /proc/filesystems && drivers=(overlay2 vfs)
    local d
    for d in "${drivers[@]}"; do
        start_dockerd "$d" && return 0
    done
    # A CI container without NET_ADMIN cannot make the default bridge; the worker's jobs run
    # with NetworkMode none and need no bridge, so go on without one.
    for d in "${drivers[@]}"; do
        start_dockerd "$d" --bridge=none --iptables=false --ip6tables=false && return 0
    done
    log "dockerd did not start; see $LOG"
    exit 1
}

build_busybox_image() {
    if timeout 30 docker image inspect "$IMAGE" >/dev/null 2>&1; then
        log "$IMAGE already present"
        return 0
    fi
    local work deb
    WORK_DIR="$(mktemp -d)"
    work="$WORK_DIR"
    mkdir -p "$work/root/bin"
    deb="$(ls "$ARCHIVES"/busybox-static_*.deb 2>/dev/null | head -n 1 || true)"
    if [ -n "$deb" ]; then
        dpkg -x "$deb" "$work/root"
    elif dpkg -s busybox-static >/dev/null 2>&1 && [ -x /bin/busybox ] \
        && ! ldd /bin/busybox >/dev/null 2>&1; then
        # Installed, but apt's cache was cleaned (as in Debian container images): the
        # installed binary is the same static busybox.
        deb="installed busybox-static"
        cp /bin/busybox "$work/root/bin/busybox"
    else
        (cd "$work" && { apt-get download busybox-static >/dev/null 2>&1 \
            || { as_root apt-get update -qq && apt-get download busybox-static >/dev/null; }; })
        deb="$(ls "$work"/busybox-static_*.deb | head -n 1)"
        dpkg -x "$deb" "$work/root"
    fi
    local root="$work/root"
    mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/tmp" "$root/etc" \
        "$root/proc" "$root/sys" "$root/dev" "$root/root"
    chmod 1777 "$root/tmp"
    # One symlink per applet, like busybox --install -s, so /bin/sh, sleep, wget... exist.
    local applet
    for applet in $("$root/bin/busybox" --list); do
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -cf "$work/rootfs.tar" .
    timeout 120 docker import \
        --change 'CMD ["/bin/sh"]' \
        --change 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' \
        --message "dcp test image from $(basename "$deb")" \
        "$work/rootfs.tar" "$IMAGE" >/dev/null
    log "built $IMAGE from $(basename "$deb")"
}

install_packages
ensure_dockerd
let_user_in
build_busybox_image
timeout 30 docker image inspect --format '{{.Id}} {{index .RepoTags 0}}' "$IMAGE"
