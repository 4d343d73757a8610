"""``python tests/audited_cli.py RECORD ARGS...``: the console script's ``lightning-ebm ARGS...``, recording every file
and folder this process creates, writes, renames or removes (Python's audit events: ``open`` for writing,
``os.mkdir``, ``os.rename``, which ``os.replace`` raises too, ``os.remove``) as JSON lines in ``RECORD``.

Pillow, the CSV logger, the config dump and the checkpoints' atomic saves all write through Python's ``open``; only
writes from C++ (``torch.save`` given a file name rather than a file) escape the record."""

import json
import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def main() -> int:
    record, args = sys.argv[1], sys.argv[2:]
    out = open(record, "a", buffering=1)  # noqa: SIM115  opened before the hook, so its writes go unrecorded; open till exit
    pid = os.getpid()

    def hook(event: str, hook_args: tuple) -> None:
        if os.getpid() != pid:  # a forked data-loading worker: not this process
            return
        if event == "open":
            path, mode, flags = hook_args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
            paths = [path] if writes else []
        elif event in ("os.mkdir", "os.remove", "os.rmdir"):
            paths = [hook_args[0]]
        elif event == "os.rename":
            paths = [hook_args[1]]
        else:
            return
        for path in paths:
            if isinstance(path, (str, bytes, os.PathLike)):
                out.write(json.dumps({"event": event, "path": os.path.abspath(os.fsdecode(path))}) + "\n")

    sys.addaudithook(hook)
    from lightning_ebm.__main__ import cli_main

    sys.argv = ["lightning-ebm", *args]
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
