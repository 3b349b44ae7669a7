#!/usr/bin/env python3
"""Times commands in turn (A, B, C, A, B, C, ...) rather than one after the other as hyperfine
does, so that a machine whose speed drifts over a run (this one does, by 10-20 %) weighs on
every command alike. For before/after comparisons of a few milliseconds in a start of hundreds.

Usage: scripts/bench-interleaved.py RUNS 'LABEL=COMMAND' ...   (a shell runs each COMMAND)
Prints a markdown table: mean ± standard deviation, median, min and max, in milliseconds.
"""
import statistics
import subprocess
import sys
import time

WARMUP = 3


def main() -> int:
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    runs = int(sys.argv[1])
    cmds = []
    for arg in sys.argv[2:]:
        label, sep, cmd = arg.partition("=")
        if not sep or not cmd:
            print(f"bench-interleaved: {arg!r} is not LABEL=COMMAND", file=sys.stderr)
            return 2
        cmds.append((label, cmd))
    times = {label: [] for label, _ in cmds}
    for i in range(WARMUP + runs):
        for label, cmd in cmds:
            start = time.monotonic()
            done = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL)
            elapsed = (time.monotonic() - start) * 1000
            if done.returncode != 0:
                print(f"bench-interleaved: {label} failed ({done.returncode})", file=sys.stderr)
                return 1
            if i >= WARMUP:
                times[label].append(elapsed)
        print(f"\r{i + 1}/{WARMUP + runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"| command ({runs} runs each, interleaved) | mean [ms] | median [ms] | min | max |")
    print("|:---|---:|---:|---:|---:|")
    for label, _ in cmds:
        t = times[label]
        sd = statistics.stdev(t) if len(t) > 1 else 0.0
        print(
            f"| {label} | {statistics.mean(t):.1f} ± {sd:.1f} | {statistics.median(t):.1f} "
            f"| {min(t):.1f} | {max(t):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
