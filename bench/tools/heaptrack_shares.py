#!/usr/bin/env python3
"""Allocation calls per delivery from a heaptrack recording, by library and by our own frame.

    heaptrack_print -f <recording>.zst --print-flamegraph stacks.txt --flamegraph-cost-type allocations
    bench/tools/heaptrack_shares.py stacks.txt <deliveries>

Each call is counted once: under "by library" for the innermost crate on its stack outside core,
alloc, std, hashbrown, bytes and smallvec (whose functions allocate on their callers' behalf);
under "by our frame" for the innermost frame of a crate of ours (`fp_*`). Names are demangled with
`c++filt`. Start-up and idle allocations are in the totals too, so run enough deliveries (the
bench's 20,000) for them to be small.
"""
import collections
import re
import subprocess
import sys

ON_BEHALF = ("core", "alloc", "std", "hashbrown", "bytes", "smallvec")


def crate_of(frame):
    match = re.match(r"[<&*]*(?:mut |dyn )*([A-Za-z_][A-Za-z0-9_]*)(\[[0-9a-f]+\])?::", frame)
    return match.group(1) if match else None


def readable(frame):
    frame = re.sub(r"\[[0-9a-f]+\]", "", frame)
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    return re.sub(r"::\{closure#\d+\}|::_\$u7b\$\$u7b\$closure\$u7d\$\$u7d\$", "::{closure}", frame)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    deliveries = int(sys.argv[2])
    stacks = []
    for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    frames = sorted({frame for stack, _ in stacks for frame in stack})
    demangled = subprocess.run(["c++filt"], input="\n".join(frames), capture_output=True,
                               text=True, check=True).stdout.split("\n")
    names = dict(zip(frames, demangled))
    by_library, by_ours, total = collections.Counter(), collections.Counter(), 0
    for stack, count in stacks:
        stack = [names[frame] for frame in stack]
        total += count
        crates = [(crate_of(frame), frame) for frame in reversed(stack)]
        library = next((crate for crate, _ in crates if crate and crate not in ON_BEHALF), "other")
        ours = next((readable(frame) for crate, frame in crates if crate and crate.startswith("fp_")),
                    "(no frame of ours)")
        by_library[library] += count
        by_ours[ours] += count
    print(f"{total:>9} calls to the allocator, {total / deliveries:.1f} per delivery")
    print("# by the innermost library on the stack, per delivery")
    for name, count in by_library.most_common(16):
        print(f"{count:>9} {count / deliveries:6.1f} {name}")
    print("# by the innermost frame of our own crates (fp_*), per delivery")
    for name, count in by_ours.most_common(25):
        print(f"{count:>9} {count / deliveries:6.1f} {name[:140]}")


if __name__ == "__main__":
    main()
