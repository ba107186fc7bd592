#!/usr/bin/env python3
"""Allocation calls per delivery from a heaptrack recording, by library and by our own frame.

    heaptrack_print -f <recording>.zst --print-flamegraph stacks.txt --flamegraph-cost-type allocations
    bench/tools/heaptrack_shares.py stacks.txt <deliveries>

Each call is counted once: under "by library" for the innermost crate on its stack outside core,
alloc, std, hashbrown and bytes (whose functions allocate on their callers' behalf); under "by our
frame" for the innermost frame of a crate of ours (`fp_*`), and for the three largest of those, by
the library it called (the first crate below it that is neither ours nor one of those five). Names
are demangled with `c++filt` (v0 symbols), and the legacy escapes heaptrack leaves in the others
(`_$LT$X..Y$u20$as$u20$Z$GT$`) are decoded. Start-up and idle allocations are in the totals too,
so run enough deliveries (the bench's 20,000) for them to be small.
"""
import collections
import re
import subprocess
import sys

ON_BEHALF = ("core", "alloc", "std", "hashbrown", "bytes")
LEGACY_ESCAPES = {"LT": "<", "GT": ">", "RF": "&", "BP": "*", "C": ",", "SP": "@", "LP": "(",
                  "RP": ")"}
LEGACY_ESCAPE = re.compile(r"\$(LT|GT|RF|BP|C|SP|LP|RP|u[0-9a-f]{2})\$")


def crate_of(frame):
    match = re.match(r"[<&*]*(?:mut |dyn )*([A-Za-z_][A-Za-z0-9_]*)(\[[0-9a-f]+\])?::", frame)
    return match.group(1) if match else None


def decoded(frame):
    """A legacy-mangled Rust name as written in the source: `_$LT$a..B$u20$as$u20$c..D$GT$::f`
    becomes `<a::B as c::D>::f`. One pass from the left, so escapes side by side stay apart."""
    if "$" not in frame and ".." not in frame:
        return frame

    def text(match):
        code = match.group(1)
        return chr(int(code[1:], 16)) if code.startswith("u") else LEGACY_ESCAPES[code]

    frame = LEGACY_ESCAPE.sub(text, frame).replace("..", "::")
    # A path segment that began with an escape keeps the `_` the mangling put before it.
    return re.sub(r"(^|::)_(?=<)", r"\1", frame)


def readable(frame):
    frame = re.sub(r"\[[0-9a-f]+\]", "", frame)
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    return re.sub(r"::\{closure#\d+\}|::_?\{\{closure\}\}", "::{closure}", frame)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    deliveries = int(sys.argv[2])
    stacks = []
    for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    frames = sorted({frame for stack, _ in stacks for frame in stack})
    demangled = subprocess.run(["c++filt"], input="\n".join(frames), capture_output=True,
                               text=True, check=True).stdout.split("\n")
    names = {frame: decoded(name) for frame, name in zip(frames, demangled)}
    by_library, by_ours, total = collections.Counter(), collections.Counter(), 0
    called = collections.defaultdict(collections.Counter)
    for stack, count in stacks:
        stack = [names[frame] for frame in stack]
        total += count
        crates = [(crate_of(frame), frame) for frame in reversed(stack)]
        library = next((crate for crate, _ in crates if crate and crate not in ON_BEHALF), "other")
        at = next((i for i, (crate, _) in enumerate(crates) if crate and crate.startswith("fp_")), None)
        ours = "(no frame of ours)" if at is None else readable(crates[at][1])
        # The library our frame called: the outermost foreign crate between it and the allocation.
        callee = next((crate for crate, _ in reversed(crates[:at or 0])
                       if crate and crate not in ON_BEHALF and not crate.startswith("fp_")),
                      "(ours or the standard library)")
        by_library[library] += count
        by_ours[ours] += count
        called[ours][callee] += count
    print(f"{total:>9} calls to the allocator, {total / deliveries:.1f} per delivery")
    print("# by the innermost library on the stack, per delivery")
    for name, count in by_library.most_common(16):
        print(f"{count:>9} {count / deliveries:6.1f} {name}")
    print("# by the innermost frame of our own crates (fp_*), per delivery")
    for name, count in by_ours.most_common(25):
        print(f"{count:>9} {count / deliveries:6.1f} {name[:140]}")
    for name, _ in by_ours.most_common(3):
        print(f"# {name[:100]}, by the library it called, per delivery")
        for callee, count in called[name].most_common(6):
            print(f"{count:>9} {count / deliveries:6.1f} {callee}")


if __name__ == "__main__":
    main()
