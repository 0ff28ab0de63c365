#!/usr/bin/env python3
"""Regenerates expected.json and promtool-output.txt from promql.yaml.

Needs promtool from Debian's `prometheus` package (apt-get install prometheus). Every case in
promql.yaml expects no samples, so promtool prints what Prometheus computed for each case that
has a result; a case it does not mention computed nothing. Run from anywhere:

    python3 tests/golden/regenerate.py
"""
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)?\{([^}]*)\} (\S+?)(?:,\s|$)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


def cases(path):
    """(expr, eval_time) in file order, read without a YAML library; promtool's own escaping
    (a YAML single-quoted string keeps backslashes) is kept as written."""
    found = []
    for line in open(path):
        match = re.search(r"expr: '(.*)', eval_time: (\S+),", line)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def main():
    promql = os.path.join(HERE, "promql.yaml")
    # Run from this folder with a relative path: the committed output names no machine's path.
    run = subprocess.run(["promtool", "test", "rules", "promql.yaml"], capture_output=True, text=True, cwd=HERE)
    raw = run.stdout + run.stderr
    version = subprocess.run(["promtool", "--version"], capture_output=True, text=True)
    with open(os.path.join(HERE, "promtool-output.txt"), "w") as out:
        out.write(version.stdout.splitlines()[0] + "\n" + raw)
    got = {}
    lines = raw.splitlines()
    for index, line in enumerate(lines):
        match = re.match(r'\s*expr: "(.*)", time: (\S+),$', line)
        if not match:
            continue
        # promtool prints the expression Go-quoted (%q): JSON reads that quoting.
        expr = json.loads('"' + match.group(1) + '"')
        for follow in lines[index + 1:index + 4]:
            follow = follow.strip()
            if follow.startswith("got:"):
                samples = []
                for name, labels, value in SAMPLE.findall(follow[4:].strip()):
                    pairs = dict(LABEL.findall(labels))
                    if name:
                        pairs["__name__"] = name
                    samples.append({"labels": pairs, "value": value})
                got[(expr, match.group(2))] = samples
                break
    expected = [
        {"expr": expr, "eval_time": time, "samples": got.get((expr, time), [])}
        for expr, time in cases(promql)
    ]
    with open(os.path.join(HERE, "expected.json"), "w") as out:
        json.dump(expected, out, indent=1, sort_keys=True)
        out.write("\n")
    print(f"{len(expected)} cases, {sum(1 for e in expected if e['samples'])} with samples", file=sys.stderr)


if __name__ == "__main__":
    main()
