#!/usr/bin/env python3
"""Share of a profile's samples by the crate (or the kernel, or mimalloc) whose code was running:
each sample counted once, for its innermost frame outside core, alloc, std, hashbrown and bytes
(whose functions run on behalf of their callers).

    perf script -i perf.data > script.txt
    bench/tools/crate_shares.py script.txt [rows]

Unlike frame_shares.py, the shares do not overlap and add up to 100 %. C library functions
(`memmove`, the vDSO's clock) are not crates: their samples go to the crate that called them.
"""
import collections
import re
import sys

ON_BEHALF = ("core", "alloc", "std", "hashbrown", "bytes")


def crate_of(stack_lines):
    for line in stack_lines:
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        symbol = parts[1]
        if "[kernel" in symbol:
            return "kernel"
        if re.search(r"\b_?mi_", symbol):
            return "mimalloc"
        match = re.match(r"<?&?(?:mut )?([a-z_][a-z0-9_]*)::", symbol)
        if match and match.group(1) not in ON_BEHALF:
            return match.group(1)
    return "(unresolved)"


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    with open(sys.argv[1], encoding="utf-8", errors="replace") as script:
        samples = [block for block in script.read().split("\n\n") if block.strip()]
    counts = collections.Counter(crate_of(sample.split("\n")[1:]) for sample in samples)
    print(f"# {len(samples)} samples; each counted once, for its innermost frame outside "
          + "/".join(ON_BEHALF))
    for crate, count in counts.most_common(rows):
        print(f"{100 * count / max(len(samples), 1):5.1f}% {crate}")


if __name__ == "__main__":
    main()
