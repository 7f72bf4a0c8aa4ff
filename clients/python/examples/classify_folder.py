#!/usr/bin/env python3
"""Classify every image of a folder on the cluster, with a progress bar.

Images are read and encoded one at a time, just before they are submitted,
with at most ``--in-flight`` tasks unfinished at once: a folder of any size
takes memory for that many images only. The bar moves as results come back,
in whatever order they finish (``as_completed``).

    python3 classify_folder.py --coordinator ws://127.0.0.1:8765 --model resnet50 photos/
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

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
    labels: Dict[Path, str] = {}
    with legacygpu.Client(args.coordinator, token=args.token) as client:
        todo: Iterator[Path] = iter(files)
        running: Dict[str, Path] = {}
        window: List[legacygpu.Task] = []

        def submit_more() -> None:
            """Tops the window up to --in-flight tasks, reading each image only now."""
            while len(window) < args.in_flight:
                f = next(todo, None)
                if f is None:
                    return
                try:
                    data = inputs.inference(args.model, f, top_k=args.top_k)
                except (OSError, ValueError) as e:  # unreadable, not an image, too big
                    labels[f] = f"error: {e}"
                    continue
                task: Optional[legacygpu.Task] = None
                while task is None:
                    try:
                        task = client.submit("inference", data)
                    except legacygpu.Busy as e:  # the queue is full: wait a little
                        time.sleep(e.retry_after_s)
                    except legacygpu.LegacyGpuError as e:
                        labels[f] = f"error: {e}"
                        break
                if task is not None:
                    running[task.task_id] = f
                    window.append(task)

        try:
            submit_more()
            while window:
                task = next(client.as_completed(window))
                window.remove(task)
                f = running.pop(task.task_id)
                try:
                    best = task.result()["top_k"][0]
                    labels[f] = f"{best['label']} ({best['score']:.2f})"
                except legacygpu.TaskError as e:
                    labels[f] = f"error: {e.code}: {e.reason}"
                except legacygpu.LegacyGpuError as e:  # ConnectionLost, ClientClosed…
                    labels[f] = f"error: {e}"
                print(bar(len(labels), len(files)), end="", file=sys.stderr, flush=True)
                submit_more()
        except legacygpu.LegacyGpuError as e:  # the client gave up: what is left is not done
            print(f"\nstopped: {e}", file=sys.stderr)
    print(file=sys.stderr)
    failed = 0
    for f in files:
        label = labels.get(f, "error: not classified")
        failed += label.startswith("error:")
        print(f"{f.name}: {label}")
    print(f"{len(files)} images, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
