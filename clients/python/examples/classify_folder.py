#!/usr/bin/env python3
"""Classify every image of a folder on the cluster, with a progress bar.

All images are submitted pipelined (``submit_many``), and the bar moves as
results come back in whatever order they finish (``as_completed``).

    python3 classify_folder.py --coordinator ws://127.0.0.1:8765 --model resnet50 photos/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import legacygpu
from legacygpu import inputs

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // max(total, 1)
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--coordinator", default="ws://127.0.0.1:8765")
    parser.add_argument("--token", default=None)
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()

    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        print(f"no PNG or JPEG files in {args.folder}", file=sys.stderr)
        return 1
    data = [inputs.inference(args.model, f, top_k=args.top_k) for f in files]
    labels = {}
    failed = 0
    with legacygpu.Client(args.coordinator, token=args.token) as client:
        tasks = client.submit_many("inference", data, in_flight=args.in_flight)
        by_task = {t.task_id: f for t, f in zip(tasks, files)}
        for n, task in enumerate(client.as_completed(tasks), start=1):
            try:
                best = task.result()["top_k"][0]
                labels[by_task[task.task_id]] = f"{best['label']} ({best['score']:.2f})"
            except legacygpu.TaskError as e:
                labels[by_task[task.task_id]] = f"error: {e.code}: {e.reason}"
                failed += 1
            print(bar(n, len(tasks)), end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    for f in files:
        print(f"{f.name}: {labels[f]}")
    print(f"{len(files)} images, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
