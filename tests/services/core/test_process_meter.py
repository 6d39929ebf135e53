"""The process meter the benchmarks and the hostile-input tests share: a child that holds a known
number of bytes and burns a known CPU time is seen in the tree, and not when only the parent is metered."""

from __future__ import annotations

import subprocess
import sys

from services.core.process_meter import metered

MB = 2**20
HOLD = 200 * MB
#: the child: hold HOLD bytes (touched, so resident), burn ~0.3 s of CPU, then wait to be read
CHILD = f"""
import time
block = bytearray({HOLD})
block[::4096] = b"x" * len(block[::4096])
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
print("ready", flush=True)
time.sleep(1.0)
"""


def _run_child(tree: bool) -> tuple:
    with (metered(tree=tree, interval=0.05) as meter,
          subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True) as child):  # fmt: skip
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.wait()
    return meter, child.returncode


def test_the_tree_meter_sees_a_childs_memory_and_cpu():
    meter, code = _run_child(tree=True)
    assert code == 0
    assert meter.grown >= HOLD * 0.9, meter  # the child's block, resident while it slept
    assert meter.cpu_s >= 0.25, meter  # reaped by this process: its CPU counts here
    assert meter.wall_s >= 1.0, meter
    assert meter.figures()["peak_rss_mb"] == round(meter.peak / MB)


def test_a_single_process_meter_does_not_count_its_children():
    meter, _ = _run_child(tree=False)
    assert meter.grown < HOLD / 2, meter
