#!/usr/bin/env bash
# Third-party command-line tools the integration tests drive whose pinned dependencies clash
# with the project's own test environment (snakemake-executor-plugin-tes wants py-tes<0.5,
# nf-core wants rich>=14 where roc-validator wants rich<14): one venv each, under
# ${PIRUS_TOOLS_DIR:-~/.cache/pirus-tools}/<name>. Idempotent: a venv whose stamp matches its
# requirement list is left alone. tests/tools.py finds them.
set -euo pipefail
tools_dir="${PIRUS_TOOLS_DIR:-$HOME/.cache/pirus-tools}"
mkdir -p "$tools_dir"

make_venv() {  # make_venv NAME REQUIREMENT...
  local name="$1"; shift
  local venv="$tools_dir/$name" stamp="$*"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.pirus-stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
  printf '%s' "$stamp" > "$venv/.pirus-stamp"
}

# py-tes 0.4 (the TES plugin's pin) imports six without declaring it.
# snakemake-storage-plugin-fs: the TES plugin moves files only through a storage provider.
make_venv snakemake "snakemake>=9,<10" "snakemake-executor-plugin-tes>=0.1.3" six \
  "snakemake-storage-plugin-fs==1.1.3"
make_venv nf-core "nf-core==4.2.1"

# The rootfs of the image Snakemake's TES jobs run in (tests/test_tes.py makes the Pirus package
# from it with Pirus's builder, adding examples/tes/snakemake-runner/): Debian bookworm with
# python3, bash and rsync (mmdebstrap, from the Debian mirror), and the venv's own Snakemake
# and fs storage plugin pip-installed into it from PyPI: Snakemake 9 is not in bookworm, and
# the containers have no network to install it themselves. Its Python bytecode is compiled
# as unchecked-hash .pyc: Pirus's builder gives every file one fixed mtime, which would make
# timestamp-checked .pyc stale, and every job would compile Snakemake again at each start.
sm_version=$("$tools_dir/snakemake/bin/python" -c 'import snakemake; print(snakemake.__version__)')
rootfs="$tools_dir/snakemake-rootfs.tar"
stamp="bookworm python3 python-is-python3 bash rsync coreutils snakemake==$sm_version snakemake-storage-plugin-fs==1.1.3 unchecked-hash"
if [ ! -s "$rootfs" ] || [ "$(cat "$rootfs.stamp" 2>/dev/null)" != "$stamp" ]; then
  mmdebstrap --variant=essential --format=tar \
    --include=python3,python-is-python3,bash,rsync,coreutils \
    --customize-hook="'$tools_dir/snakemake/bin/python' -m pip install -q --no-cache-dir \
--no-compile --target \"\$1/usr/local/lib/python3.11/dist-packages\" \
snakemake==$sm_version snakemake-storage-plugin-fs==1.1.3" \
    --customize-hook='chroot "$1" python3 -m compileall -q -f --invalidation-mode unchecked-hash /usr/lib/python3.11 /usr/local/lib/python3.11/dist-packages >/dev/null' \
    bookworm "$rootfs.part"
  mv "$rootfs.part" "$rootfs"
  printf '%s' "$stamp" > "$rootfs.stamp"
fi
echo "Pirus for Jupyter: test tools set up in $tools_dir"
