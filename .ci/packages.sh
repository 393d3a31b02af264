# The Debian packages flocker's build, tests, benchmarks and demo need: the
# one list, sourced by .ci/run and cluster-examples/demo.
#
# librocksdb-dev: RocksDB 7.8 linked by the rocksdb crate (no 25-minute C++ build);
# clang/libclang-dev: bindgen for librocksdb-sys; etcd-server: the benchmark's anchor;
# busybox-static: the one binary in the FROM-scratch image Docker tests and the demo
#   build (no registry).
# faketime, jq, iproute2: the chaos suite (clock nemesis, verdicts, network namespaces);
# netcat-openbsd, rsync: the volume benchmark's anchors; curl: the demo talks to its apps.
# docker.io: the engine the agent tests drive (machines usually have one already).
# python3: .ci/check-layers (most machines have it already).
# btrfs-progs, xfsprogs, e2fsprogs: mkfs for the loop-mounted btrfs, XFS (reflink) and
#   ext4 the volume backend tests and benchmarks run on (src/volume/backend/loopfs.rs).
# prometheus: tests/metrics.rs checks /metrics with its `promtool check metrics` and
#   scrapes a cluster with a real server on 127.0.0.1 (on a host with systemd the
#   package also enables its own service on :9090; the tests do not use it).
# fuse3: the FUSE kernel side's helper (fusermount3) and module setup for flocker-lazyfs
#   (lazyfs/), the file system that forgets unsynced writes in the power-cut tests and the
#   chaos suite's power nemesis (it mounts through /dev/fuse directly as root, fusermount3
#   otherwise).
# chromium, libnss3-tools: tests/status_page.rs loads the status page in a real headless
#   browser; certutil/pk12util put the user's client certificate and the CA in its NSS store.

flocker_packages() {
  FLOCKER_PACKAGES=(librocksdb-dev clang libclang-dev etcd-server busybox-static iptables
    faketime jq iproute2 netcat-openbsd rsync curl python3 btrfs-progs xfsprogs e2fsprogs
    prometheus fuse3 chromium libnss3-tools)
  command -v dockerd >/dev/null || FLOCKER_PACKAGES+=(docker.io)
}

# Installs whichever of the packages are missing (apt-get, through sudo
# unless root); says nothing when all are there.
flocker_install_packages() {
  flocker_packages
  local missing=() p
  for p in "${FLOCKER_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}
