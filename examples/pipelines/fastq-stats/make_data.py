"""Regenerate data/small.fastq: 300 simulated Illumina-like reads (Phred+33), stdlib only.

Deterministic (fixed seed, no timestamps): ``python make_data.py`` rewrites the same bytes.
The reads vary on purpose so that every statistic of the pipeline is exercised: lengths from
18 to 151 bases (a trimmed-looking spread with a peak at 151), a GC content drifting between
reads, a few ``N`` calls, and qualities that fall towards the 3' end, with some poor reads.
"""

from __future__ import annotations

import random
from pathlib import Path

READS = 300
SEED = 20240101


def read(rng: random.Random, index: int) -> tuple[str, str, str]:
    # Half of the reads are full length (151), the rest look adapter-trimmed.
    length = 151 if rng.random() < 0.5 else rng.randint(18, 150)
    gc = rng.uniform(0.3, 0.65)  # per-read GC bias, like reads from different regions
    bases = []
    for _ in range(length):
        if rng.random() < 0.01:
            bases.append("N")
        elif rng.random() < gc:
            bases.append(rng.choice("GC"))
        else:
            bases.append(rng.choice("AT"))
    poor = rng.random() < 0.1  # a few low-quality reads
    quals = []
    for position, base in enumerate(bases):
        if base == "N":
            quals.append(2)  # an N is called with the lowest quality, as Illumina does
            continue
        top = 25 if poor else 40
        drop = 15 * position // 151  # quality falls along the read
        quals.append(max(2, min(41, top - drop + rng.randint(-6, 2))))
    x, y = rng.randint(1000, 20000), rng.randint(1000, 20000)
    name = f"@SIM:1:FC01:1:{1101 + index // 100}:{x}:{y}"
    return name, "".join(bases), "".join(chr(33 + q) for q in quals)


def fastq() -> str:
    rng = random.Random(SEED)
    lines = []
    for index in range(READS):
        name, seq, qual = read(rng, index)
        lines += [f"{name} 1:N:0:ACGTACGT", seq, "+", qual]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("data") / "small.fastq"
    target.parent.mkdir(exist_ok=True)
    target.write_text(fastq())
    print(f"wrote {target} ({target.stat().st_size} bytes)")
