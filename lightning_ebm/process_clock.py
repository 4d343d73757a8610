"""How long this process has run, from the kernel's record of its start: the start-up time a user waits through.

Standard library only, so that it can be imported before torch and Lightning (``bench/startup.py`` times those
imports with it).
"""

import os
import time
from pathlib import Path


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process was started (``exec`` of the interpreter, so from the command), read from
    ``/proc/self/stat`` (to 1/100 s); ``None`` where there is no ``/proc`` (macOS, Windows)."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime: clock ticks after boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None
