#!/bin/sh
# Regenerate data/small.bam from data/small.sam with the host's samtools (apt-get install
# samtools); scripts/demo.sh and tests/test_real_tools.py do the same.
set -eu
cd "$(dirname "$0")"
samtools view --no-PG -b -o data/small.bam data/small.sam
