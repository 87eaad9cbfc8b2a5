"""tollgate-torch installs on its own: its wheel needs only torch + fsspec, and a process that cannot
import Tollgate, numpy, Airflow or MLflow still checkpoints, restores and guards a training loop."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

# Runs in a child: a meta-path hook refuses everything outside the standard library, torch, fsspec and
# what those two declare, then the helper does a real save -> corrupt -> restore and a SIGTERM.
CHILD = r"""
import importlib.metadata as md, os, re, signal, sys, tempfile

def closure(names):
    seen, todo = set(), list(names)
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [r for r in md.requires(name) or [] if "extra ==" not in r]
        except md.PackageNotFoundError:
            pass
    return seen

dists = closure(["torch", "fsspec"])
allowed = {top for top, owners in md.packages_distributions().items()
           if any(o.lower().replace("_", "-") in dists for o in owners)}
allowed |= set(sys.stdlib_module_names) | {"tollgate_torch", "__main__"}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in allowed and not top.startswith("_"):
            raise ModuleNotFoundError(f"tollgate_torch must not import {name}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
import warnings
warnings.simplefilter("ignore")  # torch notes that numpy is missing: that is the point
import torch
from tollgate_torch import EXIT_PREEMPTED, Preempted
from tollgate_torch.checkpoints import CheckpointStore
from tollgate_torch.preemption import PreemptionGuard
from tollgate_torch.state import capture_rng, epoch_permutation, restore_rng

loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "tollgate"))
assert not loaded, loaded
folder = tempfile.mkdtemp()
store = CheckpointStore(folder, keep=2)
torch.manual_seed(7)
store.save({"w": torch.ones(3), "rng": capture_rng()}, step=1, epoch=0)
expected = torch.rand(2)
store.save({"w": torch.full((3,), 2.0), "rng": capture_rng()}, step=2, epoch=0)
with open(os.path.join(folder, "ckpt-00000002.pt"), "r+b") as handle:
    handle.write(b"garbage")
restored = store.restore_latest()
assert restored.entry.step == 1 and torch.equal(restored.state["w"], torch.ones(3)), restored
restore_rng(restored.state["rng"])
assert torch.equal(torch.rand(2), expected), "RNG state not restored"
assert torch.equal(epoch_permutation(3, 1, 10), epoch_permutation(3, 1, 10))

guard = PreemptionGuard(grace_seconds=30)
guard.install()
with guard.deferred():
    os.kill(os.getpid(), signal.SIGTERM)
    assert guard.requested
try:
    guard.raise_if_requested()
except Preempted:
    print("OK", EXIT_PREEMPTED)
"""


def test_helper_runs_with_only_torch_and_fsspec():
    done = subprocess.run(
        # -S: no site hooks (.pth files), so the path is exactly the helper's folder and the packages.
        [sys.executable, "-S", "-c", CHILD],
        env={"PYTHONPATH": f"{REPO / 'include'}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "OK 75"


def test_wheel_declares_only_torch_and_fsspec(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO / "packages" / "tollgate-torch"),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = tmp_path.glob("tollgate_torch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert {n.split("/")[0] for n in names if n.endswith(".py")} == {"tollgate_torch"}
    required = sorted(
        line.split(":", 1)[1].split(";")[0].strip().split(">")[0]
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )
    assert required == ["fsspec", "torch"]
