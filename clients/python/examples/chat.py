#!/usr/bin/env python3
"""A streamed chat with an LLM served by the cluster's workers.

Type a line, watch the answer arrive token by token; an empty line or EOF
ends the chat. The whole conversation is sent each turn (``messages``).

    python3 chat.py --coordinator ws://127.0.0.1:8765 --model qwen2.5-0.5b-instruct
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List

import legacygpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--coordinator", default="ws://127.0.0.1:8765")
    parser.add_argument("--token", default=None)
    parser.add_argument("--system", default="You are a helpful assistant.")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args()

    messages: List[Dict[str, str]] = [{"role": "system", "content": args.system}]
    with legacygpu.Client(args.coordinator, token=args.token) as client:
        while True:
            print("> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line.strip():
                return 0
            messages.append({"role": "user", "content": line.strip()})
            reply = client.generate(args.model, messages=messages, max_tokens=args.max_tokens,
                                    temperature=args.temperature)
            try:
                for delta in reply:
                    print(delta, end="", flush=True)
            except legacygpu.TaskError as e:
                print(f"\n[the answer failed: {e.code}: {e.reason}]")
                messages.pop()
                continue
            except (legacygpu.ConnectionLost, legacygpu.ClientClosed, legacygpu.Unauthorized) as e:
                print(f"\n[the cluster is gone: {e}]")
                return 1
            except legacygpu.LegacyGpuError as e:  # Busy, Rejected…: try again with the next line
                print(f"\n[no answer: {e}]")
                messages.pop()
                continue
            print()
            messages.append({"role": "assistant", "content": reply.result["text"] if reply.result else ""})


if __name__ == "__main__":
    raise SystemExit(main())
