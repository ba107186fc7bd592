#!/usr/bin/env python3
"""Share of a profile's samples whose call stack holds each of the given frames (inclusive).

    perf script -i perf.data > script.txt
    bench/tools/frame_shares.py script.txt row_in_span construct_bind_data 'Span::new' ...

A sample counts for a text when the text appears anywhere in its stack as `perf script` prints
it (symbols, but also library paths), once however often it appears, so the shares of nested
frames overlap.
"""
import sys


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, texts = sys.argv[1], sys.argv[2:]
    with open(path, encoding="utf-8", errors="replace") as script:
        samples = [block for block in script.read().split("\n\n") if block.strip()]
    counts = dict.fromkeys(texts, 0)
    for sample in samples:
        stack = sample.split("\n", 1)[1] if "\n" in sample else ""
        for text in texts:
            if text in stack:
                counts[text] += 1
    print(f"# {len(samples)} samples; share of them whose stack holds each frame")
    for text in texts:
        print(f"{100 * counts[text] / max(len(samples), 1):6.2f}%  {text}")


if __name__ == "__main__":
    main()
