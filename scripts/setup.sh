#!/usr/bin/env bash
# Install and start everything Pirus for Jupyter needs on a Debian/Ubuntu machine, as root.
# Idempotent: safe to run again; it only does what is missing.
#   - Debian packages: LXD, busybox-static (the demo/test base image), openssl (the cluster
#     tests' client certificate), mmdebstrap/skopeo/umoci (Debian and OCI bases), bcftools,
#     samtools, seqkit, tabix (host runs the real-tool tests compare with), Chromium (panel tests),
#     node and npm if absent (building the JupyterLab panel)
#   - a running, initialised LXD (dir storage pool, no network)
#   - this project and its test dependencies (pip, editable)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v lxd >/dev/null 2>&1 || need_apt+=(lxd)
# The statically linked busybox is copied into the minimal pipeline images.
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
# The cluster tests make the client certificate of their private LXD cluster with openssl.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# Real-tool bases: Debian rootfs from the host's apt sources, OCI images flattened into a rootfs;
# the same tools on the host so tests compare a run's outputs with the host's own run.
for pkg in mmdebstrap skopeo umoci bcftools samtools seqkit tabix; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${PIRUS_SKIP_BROWSER:-0}" != 1 ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${need_apt[@]}"
fi
bash scripts/setup-lxd.sh

# The JupyterLab panel: exact versions from package-lock.json, built into
# pirus_jupyter/labextension (shipped by the wheel as a prebuilt extension).
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q nodejs npm
fi
(cd labextension && npm ci --no-audit --no-fund --loglevel=error && npm run build)

python3 -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python3 -m pip install -q -e ".[test]"
bash scripts/setup-tools.sh
echo "Pirus for Jupyter: set up"
