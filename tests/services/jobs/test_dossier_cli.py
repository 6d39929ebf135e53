"""``shoplens dossier`` and ``shoplens compare-models`` on a lake with nothing published: one clear line, exit 1.

The end-to-end runs on a built lake are in test_dossier.py (slow); this checks the command line itself.
"""

from __future__ import annotations

import os
import subprocess
import sys


def test_dossier_on_an_empty_lake_says_what_to_run(cli_env) -> None:
    env = {**os.environ, **cli_env}
    done = subprocess.run([sys.executable, "-m", "services", "dossier"], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("shoplens: error: dossier: the lake has published nothing yet"), done.stderr
    assert "shoplens run" in last


def test_compare_models_without_features_is_a_clear_error(cli_env) -> None:
    env = {**os.environ, **cli_env}
    done = subprocess.run([sys.executable, "-m", "services", "compare-models"], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "shoplens: error: no features published yet: run `shoplens features`"
