"""Peak resident memory of a stretch of code in this process (Linux /proc), without imports.

``reset_peak()`` sets the process' peak (VmHWM) back to its current resident set through
``/proc/self/clear_refs``; ``status_kib()`` reads VmRSS and VmHWM. Kept free of torch and
the project so a probe process pays nothing for measuring.
"""

from __future__ import annotations


def status_kib() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


def reset_peak() -> bool:
    """True when the reset took effect (peak within 1 MiB of the resident set afterwards)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    st = status_kib()
    return st["VmHWM"] <= st["VmRSS"] + 1024
