#!/usr/bin/env bash
# Start (if not running) and initialise (if uninitialised) the local LXD daemon for Pirus:
# a `dir` storage pool and no network. Idempotent. scripts/setup.sh installs the packages.
set -euo pipefail

LXD_LOG=${LXD_LOG:-/var/log/lxd-pirus.log}

if ! lxc info >/dev/null 2>&1; then
  # No systemd here: run the daemon directly, detached from this shell.
  setsid /usr/bin/lxd --group root --logfile="$LXD_LOG" </dev/null >/dev/null 2>&1 &
  lxd waitready --timeout=120
fi

if ! lxc storage show default >/dev/null 2>&1; then
  lxd init --preseed <<'PRESEED'
config: {}
networks: []
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
PRESEED
fi
lxc info >/dev/null
echo "LXD ready: $(lxd --version)"
