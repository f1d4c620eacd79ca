"""Regenerate data/small.vcf: 240 simulated variant calls of one sample (VCF 4.2), stdlib only.

Deterministic (fixed seed, no dates): ``python make_data.py`` rewrites the same bytes. The
records vary on purpose so that the filter's edge cases are in the bundled data: QUAL from
about 3 to 250 with some missing (``.``), INFO DP from 2 to 120 with some records without DP,
INFO fields in varied order with a DP4 field that must not be mistaken for DP, SNVs and
indels, PASS and LowQual filters, and four contigs of uneven size.
"""

from __future__ import annotations

import random
from pathlib import Path

SEED = 20240102
# Contig, length and how many records to draw on it.
CONTIGS = [("chr1", 248956422, 90), ("chr2", 242193529, 70), ("chr17", 83257441, 50),
           ("chrX", 156040895, 30)]
BASES = "ACGT"

HEADER = """\
##fileformat=VCFv4.2
##FILTER=<ID=PASS,Description="All filters passed">
##FILTER=<ID=LowQual,Description="Low quality">
##INFO=<ID=DP,Number=1,Type=Integer,Description="Total read depth at the locus">
##INFO=<ID=DP4,Number=4,Type=Integer,Description="Ref-fwd, ref-rev, alt-fwd, alt-rev bases">
##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">
##INFO=<ID=MQ,Number=1,Type=Integer,Description="Root-mean-square mapping quality">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth of the sample">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">
"""


def record(rng: random.Random, chrom: str, pos: int) -> str:
    ref = rng.choice(BASES)
    kind = rng.random()
    if kind < 0.8:  # SNV
        alt = rng.choice([b for b in BASES if b != ref])
    elif kind < 0.9:  # insertion
        alt = ref + "".join(rng.choice(BASES) for _ in range(rng.randint(1, 4)))
    else:  # deletion
        alt = ref
        ref = ref + "".join(rng.choice(BASES) for _ in range(rng.randint(1, 4)))
    dp = rng.randint(2, 120)
    qual_value = round(rng.uniform(3, 250), rng.choice([0, 1, 2]))
    qual = "." if rng.random() < 0.05 else f"{qual_value:g}"
    alt_reads = max(1, round(dp * rng.uniform(0.2, 1.0)))
    af = round(alt_reads / dp, 3)
    fwd = alt_reads // 2
    info = [f"AF={af}", f"MQ={rng.randint(20, 60)}",
            f"DP4={dp - alt_reads - (dp - alt_reads) // 2},{(dp - alt_reads) // 2},"
            f"{fwd},{alt_reads - fwd}"]
    if rng.random() < 0.93:  # a few callers leave DP out now and then
        info.insert(rng.randint(0, len(info)), f"DP={dp}")
    filt = "PASS" if qual != "." and qual_value >= 20 else "LowQual"
    gt = "1/1" if af > 0.85 else "0/1"
    sample = f"{gt}:{max(1, dp - rng.randint(0, 3))}:{rng.randint(3, 99)}"
    return "\t".join([chrom, str(pos), ".", ref, alt, qual, filt, ";".join(info),
                      "GT:DP:GQ", sample])


def vcf() -> str:
    rng = random.Random(SEED)
    lines = [HEADER.rstrip("\n")]
    lines += [f"##contig=<ID={name},length={length}>" for name, length, _ in CONTIGS]
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tSAMPLE1")
    for name, length, count in CONTIGS:
        for pos in sorted(rng.sample(range(10_000, length), count)):
            lines.append(record(rng, name, pos))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("data") / "small.vcf"
    target.parent.mkdir(exist_ok=True)
    target.write_text(vcf())
    print(f"wrote {target} ({target.stat().st_size} bytes)")
