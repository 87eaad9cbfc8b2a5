"""Checkpoint cost: the training loop's stall per checkpoint, and the store's save and restore time.

Stall: the trainer's own ``_checkpoint`` (metrics flush, state capture with RNG and position, the
in-memory snapshot, handing it to the background worker), timed in the loop's thread with the previous
save already finished (steady state: more training between checkpoints than one background write takes),
against the snapshot's own time: capturing the state (state_dicts, RNG, position) and copying it
(``tollgate_torch.background.snapshot``), timed alone on the same state; the copy alone is printed too.
The background write (what the loop no longer waits for) is printed beside it.

The state is the real one (model, Adam moments, LR scheduler, RNG states, position) of the default
model trained a few steps on generated data. The store's save adds sha256, an fsynced atomic write
(temp file + os.replace), the manifest and keep-last-K pruning; its restore adds reading the
manifest, verifying size + sha256 and ``weights_only`` loading. The bare baseline is torch.save to a
file (no fsync) and torch.load of it. Prints medians and the ratio.

The store figures below compare a synchronous ``CheckpointStore.save`` with a bare torch.save.

Usage: python benchmarks/checkpoint_overhead.py [--rows 100000] [--repeat 15] [--s3]
  --s3 also measures the store on S3 (a local moto_server: network round trips, no disk).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from tollgate.data.generator import generate
from tollgate.training.settings import parse
from tollgate.training.trainer import Trainer
from tollgate_torch.background import BackgroundSaver, snapshot
from tollgate_torch.checkpoints import CheckpointStore, serialize
from tollgate_torch.preemption import PreemptionGuard


def trained_state(rows: int, workdir: Path) -> tuple[Trainer, dict]:
    days = max(1, rows // 20_000)
    frame = pd.concat([generate(f"2025-03-{d + 1:02d}", rows=rows // days) for d in range(days)])
    data = workdir / "events.parquet"
    frame.to_parquet(data, index=False)
    settings = parse(
        ["--data-file", str(data), "--checkpoint-uri", str(workdir / "unused"), "--output-uri",
         str(workdir / "out"), "--training-run-id", "bench", "--mlflow-uri", ""],
        environ={},
    )  # fmt: skip
    trainer = Trainer(settings, PreemptionGuard(30))
    trainer._prepare()
    trainer._last_saved_step = -1
    # a few real steps so the optimizer holds its moments
    for _ in range(5):
        idx = torch.arange(256)
        trainer.optimizer.zero_grad()
        loss = trainer.loss_fn(trainer.model(trainer.x_cat[idx], trainer.x_num[idx]), trainer.y[idx])
        loss.backward()
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.progress.step += 1
    return trainer, trainer._state()


def timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(uri: str, trainer: Trainer, state: dict, repeat: int) -> tuple[float, float, float]:
    """(save, restore incl. verification, load_state_dict into model/optimizer) medians."""
    store = CheckpointStore(uri, keep=3)
    step = iter(range(1, 10_000))
    save = timed(lambda: store.save(state, step=next(step), epoch=0), repeat)
    restore = timed(store.restore_latest, repeat)
    restored = store.restore_latest()
    assert restored is not None

    def apply() -> None:
        trainer.model.load_state_dict(restored.state["model"])
        trainer.optimizer.load_state_dict(restored.state["optimizer"])
        trainer.scheduler.load_state_dict(restored.state["scheduler"])

    return save, restore, timed(apply, repeat)


def train_steps(trainer: Trainer, n: int) -> None:
    for _ in range(n):
        index = torch.randint(0, trainer.n_train, (256,))
        trainer.optimizer.zero_grad()
        loss = trainer.loss_fn(trainer.model(trainer.x_cat[index], trainer.x_num[index]), trainer.y[index])
        loss.backward()
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.progress.step += 1


def measure_stall(uri: str, trainer: Trainer, repeat: int) -> tuple[float, float, float, float]:
    """Medians of (stall per checkpoint, snapshot incl. capture, snapshot copy alone, background write).

    Each round trains 10 steps (the state is as warm in the caches as in the loop), lets the previous
    background write finish, then times the trainer's ``_checkpoint`` and, separately, the snapshot of
    the same state (capture: state_dicts, RNG, position; copy: cloning it). Which of the two goes first
    alternates, so neither always finds the other's copy in the caches.
    """
    trainer.store = CheckpointStore(uri, keep=3)
    trainer.store.claim(1)
    trainer.saver = BackgroundSaver(trainer.store)
    trainer._open_attempt(None)
    stalls, owns, copies, writes = [], [], [], []

    def own() -> None:
        started = time.perf_counter()
        state = trainer._state()
        copied = time.perf_counter()
        snapshot(state)
        owns.append(time.perf_counter() - started)
        copies.append(time.perf_counter() - copied)

    for round_ in range(repeat):
        train_steps(trainer, 10)
        trainer.saver.wait()  # steady state: the write finished during the steps since the last checkpoint
        if round_ % 2:
            own()
        started = time.perf_counter()
        trainer._checkpoint()
        stalls.append(time.perf_counter() - started)
        trainer.saver.wait()  # (the worker would compete with the timing below)
        writes.append(trainer.saver.write_seconds)
        if not round_ % 2:
            own()
    return tuple(statistics.median(x) for x in (stalls, owns, copies, writes))  # type: ignore[return-value]


def print_stall(where: str, stall: float, own: float, copy: float, write: float) -> None:
    print(
        f"stall per checkpoint ({where}): {stall * 1e3:.2f} ms; the snapshot's own time {own * 1e3:.2f} ms "
        f"(capture + copy; stall {stall / own:.2f}x), its tensor copy alone {copy * 1e3:.2f} ms "
        f"(stall {stall / copy:.2f}x); background write {write * 1e3:.1f} ms (off the loop)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--s3", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="tollgate-ckpt-bench-") as tmp:
        work = Path(tmp)
        trainer, state = trained_state(args.rows, work)
        size = len(serialize(state))
        bare = work / "bare.pt"
        bare_save = timed(lambda: torch.save(state, bare), args.repeat)
        bare_load = timed(lambda: torch.load(bare, weights_only=True), args.repeat)
        save, restore, apply = measure(str(work / "store"), trainer, state, args.repeat)
        params = sum(p.numel() for p in trainer.model.parameters())
        print(f"checkpoint: {size / 1e6:.2f} MB ({params:,} parameters + Adam moments + RNG), "
              f"median of {args.repeat}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        print_stall("local folder", *measure_stall(str(work / "stall"), trainer, args.repeat))
        print(f"{'':28}{'bare torch':>12}{'store':>12}{'ratio':>8}")
        print(
            f"{'save (local folder)':28}{bare_save * 1e3:>10.1f}ms{save * 1e3:>10.1f}ms"
            f"{save / bare_save:>8.2f}"
        )
        print(
            f"{'restore (local folder)':28}{bare_load * 1e3:>10.1f}ms{restore * 1e3:>10.1f}ms"
            f"{restore / bare_load:>8.2f}"
        )
        print(f"{'  + load_state_dict':28}{'':>12}{apply * 1e3:>10.1f}ms")
        payload = serialize(state)
        ser = timed(lambda: serialize(state), args.repeat)
        digest = timed(lambda: hashlib.sha256(payload).hexdigest(), args.repeat)
        print(
            f"save breakdown: serialize {ser * 1e3:.1f} ms, sha256 {digest * 1e3:.1f} ms, "
            f"atomic write + fsync + manifest + pruning {(save - ser - digest) * 1e3:.1f} ms"
        )
        if args.s3:
            measure_s3(trainer, state, args.repeat, bare_save, bare_load)


def measure_s3(trainer: Trainer, state: dict, repeat: int, bare_save: float, bare_load: float) -> None:
    from local_s3 import moto_endpoint

    with moto_endpoint("bench"):
        print_stall("S3, moto_server", *measure_stall("s3://bench/stall", trainer, repeat))
        save, restore, _ = measure("s3://bench/ckpt", trainer, state, repeat)
        print(f"{'save (S3, moto_server)':28}{bare_save * 1e3:>10.1f}ms{save * 1e3:>10.1f}ms"
              f"{save / bare_save:>8.2f}")  # fmt: skip
        print(f"{'restore (S3, moto_server)':28}{bare_load * 1e3:>10.1f}ms{restore * 1e3:>10.1f}ms"
              f"{restore / bare_load:>8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
