#!/usr/bin/env python3
"""Instructions per request, GET and PUT apart, at pipeline 1 and 32, for
one or two server builds side by side (callgrind: the counts do not move
when other processes share the machine).

    perf/instructions_table.py                         # the current build
    perf/instructions_table.py --before /tmp/old-kvstore-server
    perf/instructions_table.py --proto resp

Each cell is a marginal count: the server runs the same load twice, with
SMALL and LARGE measured requests after the same 100,000-key preload, and
the cell is (instructions of the large run - those of the small run) /
(LARGE - SMALL). Start-up, preload and shutdown cancel out; what is left
is what one more request costs the whole server in user space (the
kernel's share is not counted). 100% GET or 100% PUT, 50 clients, 100-byte
values, `--fsync never`. Prints a markdown table; appends nothing.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "perf" / "instructions.sh"
CURRENT = ROOT / "target" / "release" / "kvstore-server"
SMALL = 20_000
LARGE = 80_000
SHAPES = [("GET", "1"), ("PUT", "0")]
PIPELINES = [1, 32]


def total(binary, proto, pipeline, get_ratio, requests):
    """All user-space instructions of one run of the server."""
    command = [
        "bash", str(SCRIPT), "--total-only", "--proto", proto, "--pipeline", str(pipeline),
        "--get-ratio", get_ratio, "--requests", str(requests),
    ]
    environment = dict(os.environ, KVSTORE_BINARY=str(binary))
    output = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=1800)
    if output.returncode != 0 or not output.stdout.strip().isdigit():
        raise RuntimeError(f"instructions.sh failed: {output.stderr.strip()[-500:]}")
    return int(output.stdout.strip())


def per_request(binary, proto, pipeline, get_ratio):
    small = total(binary, proto, pipeline, get_ratio, SMALL)
    large = total(binary, proto, pipeline, get_ratio, LARGE)
    return (large - small) / (LARGE - SMALL)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a server binary to count beside the current build")
    parser.add_argument("--proto", choices=["line", "resp"], default="line")
    arguments = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    builds = ([("before", arguments.before)] if arguments.before else []) + [("after", CURRENT)]
    header = "| request | pipeline | " + " | ".join(name for name, _ in builds)
    header += " | after / before |" if arguments.before else " |"
    print(header)
    print("| --- | ---: |" + " ---: |" * (len(builds) + (1 if arguments.before else 0)))
    for name, get_ratio in SHAPES:
        for pipeline in PIPELINES:
            counts = []
            for _, binary in builds:
                counts.append(per_request(binary, arguments.proto, pipeline, get_ratio))
                print(f"  {name} x{pipeline} {binary}: {counts[-1]:.0f}", file=sys.stderr, flush=True)
            row = f"| {name} | {pipeline} | " + " | ".join(f"{count:,.0f}" for count in counts)
            row += f" | {counts[-1] / counts[0]:.2f}x |" if arguments.before else " |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
