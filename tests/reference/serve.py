"""The line protocol by which a reference stays up between the rounds of a ``gl bench``.

A fresh process per round puts the reference at a disadvantage or an advantage that has nothing
to do with its code: a newly started interpreter beside ``gl``'s long-lived process, and the
exit of the previous one (its memory freed and handed back) overlapping ``gl``'s timed round.
In ``serve`` mode both sides are long-lived and take turns:

* the reference does its setup and check, then prints one JSON object (the *ready* reply);
* for every line ``round`` on standard input it runs one timed round and prints one JSON object;
* it exits at ``quit`` or at the end of its input.

Standard output carries nothing but these replies, one per line; anything else goes to stderr.
"""
from __future__ import annotations

import json
import sys
from typing import Callable, TextIO


def serve(ready: dict, round_fn: Callable[[], dict], stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Prints ``ready``, then answers each request line (``round`` or ``quit``)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout

    def reply(obj: dict) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    reply(ready)
    for line in stdin:
        request = line.strip()
        if request == "round":
            reply(round_fn())
        elif request == "quit":
            break
        elif request:
            reply({"error": f"unknown request {request!r} (expected 'round' or 'quit')"})
    return 0
