"""The digits trainer: ``python -m tollgate_examples.digits.train`` honours Tollgate's trainer contract.

A user's own trainer looks like this one. Inputs are arguments or ``TOLLGATE_<NAME>`` env variables
(arguments win); SIGTERM saves a checkpoint and exits 75; bad input exits 2; the output folder gets
``model.pt`` + ``model_config.json`` and then, last, ``result.json`` with the holdout metrics. The spot
machinery is the ``tollgate_torch`` helper: checkpoint store, preemption guard, exact-resume state.
Progress lines on stdout (``TOLLGATE_PROGRESS step=N``, ``TOLLGATE_RESUMED``, ``TOLLGATE_PREEMPTED``)
let the local launcher inject an interruption at a given step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch

from tollgate_torch import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_PREEMPTED, EXIT_SUCCESS, BadInput, Preempted
from tollgate_torch.background import BackgroundSaver
from tollgate_torch.checkpoints import CheckpointStore
from tollgate_torch.folder import Folder, UnsupportedLocation
from tollgate_torch.preemption import PreemptionGuard
from tollgate_torch.state import capture_rng, epoch_permutation, restore_rng

EXPERIMENT = "tollgate-digits"
STEP_DELAY_ENV = "TOLLGATE_STEP_DELAY_SECONDS"  # tests/demos: slow each step so an interruption lands
# argument -> (type, default); None = required (or, for the data, one of the two ways)
ARGUMENTS: dict[str, tuple[type, Any]] = {
    "training-run-id": (str, None),
    "checkpoint-uri": (str, None),
    "output-uri": (str, None),
    "data-repo": (str, ""),
    "data-rev": (str, ""),
    "data-path": (str, "data/digits_curated.parquet"),
    "data-file": (str, ""),
    "mlflow-uri": (str, ""),
    "experiment": (str, EXPERIMENT),
    "grace-seconds": (float, 30.0),
    "seed": (int, 42),
    "epochs": (int, 10),
    "batch-size": (int, 16),
    "lr": (float, 0.005),
    "channels": (int, 16),
    "checkpoint-every": (int, 50),
    "keep-checkpoints": (int, 3),
    "holdout-fraction": (float, 0.2),
    "quality": (str, "normal"),
}
HYPERPARAMETERS = ("seed", "epochs", "batch_size", "lr", "channels", "holdout_fraction", "quality")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    print(f"[digits.train] {message}", file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(f"{message}. Run `python -m tollgate_examples.digits.train --help` for the arguments.")


def parse(argv: list[str] | None, env: dict[str, str] | os._Environ = os.environ) -> dict[str, Any]:
    """Arguments, then ``TOLLGATE_<NAME>`` env, then defaults; BadInput names the problem and the fix."""
    parser = _Parser(prog="python -m tollgate_examples.digits.train", description=__doc__.splitlines()[0])
    for name in ARGUMENTS:
        parser.add_argument(f"--{name}", default=None)
    given = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    for name, (kind, default) in ARGUMENTS.items():
        key = name.replace("-", "_")
        raw = given[key] if given[key] is not None else env.get(f"TOLLGATE_{key.upper()}")
        if name == "mlflow-uri" and raw is None:
            raw = env.get("MLFLOW_TRACKING_URI", "")
        if raw is None and default is None:
            raise BadInput(f"missing --{name}: pass it as an argument or set TOLLGATE_{key.upper()}")
        try:
            values[key] = kind(raw) if raw is not None else default
        except ValueError:
            raise BadInput(f"--{name} must be a {kind.__name__}, got {raw!r}") from None
    if not values["data_file"] and not (values["data_repo"] and values["data_rev"]):
        raise BadInput("no dataset given: pass --data-repo and --data-rev, or --data-file")
    for key in ("epochs", "batch_size", "checkpoint_every", "channels", "keep_checkpoints"):
        if values[key] <= 0:
            raise BadInput(f"--{key.replace('_', '-')} must be a positive integer, got {values[key]}")
    if values["lr"] <= 0 or not 0 < values["holdout_fraction"] < 1:
        raise BadInput("--lr must be positive and --holdout-fraction between 0 and 1")
    if values["quality"] not in ("normal", "degraded"):
        raise BadInput(f"--quality must be normal or degraded, got {values['quality']!r}")
    values["attempt"] = env.get("TOLLGATE_ATTEMPT", "")
    return values


class DigitsTrainer:
    def __init__(self, s: dict[str, Any], guard: PreemptionGuard) -> None:
        self.s, self.guard = s, guard
        self.store = CheckpointStore(s["checkpoint_uri"], s["keep_checkpoints"])
        self.saver = BackgroundSaver(self.store)  # the loop waits only for a snapshot of the state
        self.step, self.epoch, self.batch = 0, 0, 0
        self.last_checkpoint: str | None = None
        self.saved_step = -1
        self.tracker: Any = None

    def _data(self) -> None:
        from tollgate.training import dataset as datasets
        from tollgate_examples.digits.dataset import SCHEMA
        from tollgate_examples.digits.model import to_images

        s = self.s
        frame, self.dataset = datasets.load(
            s["data_file"] or None,
            s["data_repo"] or None,
            s["data_rev"] or None,
            s["data_path"],
            schema=SCHEMA,
        )
        train, holdout = datasets.time_split(frame, s["holdout_fraction"], schema=SCHEMA)
        labels = train["digit"].to_numpy()
        if s["quality"] == "degraded":  # a deliberately worse model (gate demos): labels shuffled
            import numpy as np

            labels = np.random.default_rng(s["seed"]).permutation(labels)
        self.x, self.y = to_images(train), torch.as_tensor(labels, dtype=torch.long)
        self.holdout = holdout
        self.frame = frame

    def _model(self) -> None:
        from tollgate_examples.digits.model import DigitsCNN

        s = self.s
        torch.manual_seed(s["seed"])
        self.model = DigitsCNN(s["channels"])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=s["lr"])
        self.batches = (len(self.y) + s["batch_size"] - 1) // s["batch_size"]
        self.fingerprint = {
            **{k: s[k] for k in HYPERPARAMETERS},
            "content_hash": self.dataset.content_hash,
            "train_rows": len(self.y),
        }

    def _resume(self) -> str | None:
        restored = self.store.restore_latest()
        if restored is None:
            return None
        state = restored.state
        if state.get("fingerprint") != self.fingerprint:
            raise BadInput(
                f"checkpoint folder {self.s['checkpoint_uri']} belongs to a run with other data or "
                "hyperparameters; resume with the original settings or give a new --checkpoint-uri"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        self.step, self.epoch, self.batch = int(state["step"]), int(state["epoch"]), int(state["batch"])
        self.last_checkpoint, self.saved_step = restored.entry.name, self.step
        return restored.entry.name

    def _checkpoint(self, wait: bool = False) -> None:
        """Snapshot the state and persist it in the background; ``wait``: until it is committed."""
        if self.saved_step == self.step:
            if wait:
                self.saver.wait()
            return
        state = {
            "fingerprint": self.fingerprint,
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": capture_rng(),
        }
        with self.guard.deferred():
            self.saver.submit(state, self.step, self.epoch)
            if wait:
                self.saver.wait()
        self.last_checkpoint, self.saved_step = f"ckpt-{self.step:08d}.pt", self.step

    def _preempt(self) -> None:
        """SIGTERM: finish the save in flight, then save this step and leave."""
        self._checkpoint(wait=True)
        say(f"TOLLGATE_PREEMPTED step={self.step} checkpoint={self.last_checkpoint}")
        raise Preempted("SIGTERM: checkpoint saved")

    def _evaluate(self) -> dict[str, float]:
        from tollgate_examples.digits.model import Predictor, evaluate

        probabilities = Predictor(self.model).predict_proba(self.holdout)
        metrics = evaluate(self.holdout["digit"].to_numpy(), probabilities)
        self.model.train()
        return metrics

    def _track(self, resumed_from: str | None) -> None:
        from tollgate.training.tracking import open_tracker

        s = self.s
        self.tracker = open_tracker(s["mlflow_uri"], s["experiment"], s["training_run_id"])
        self.tracker.set_tags(
            {
                "tollgate.example": "digits",
                "tollgate.resumed_from_checkpoint": resumed_from or "none",
                "tollgate.dataset.rev": self.dataset.rev or "none",
                "tollgate.dataset.content_hash": self.dataset.content_hash,
            }
        )
        if hasattr(self.tracker, "log_params"):
            self.tracker.log_params({**{k: s[k] for k in HYPERPARAMETERS}, "train_rows": len(self.y)})

    def run(self) -> dict[str, Any]:
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        self._data()
        self._model()
        resumed_from = self._resume()
        say(f"TOLLGATE_RESUMED from_step={self.step} checkpoint={resumed_from or 'none'}")
        self._track(resumed_from)
        s, delay = self.s, float(os.environ.get(STEP_DELAY_ENV) or 0.0)
        loss_fn = torch.nn.CrossEntropyLoss()
        self.model.train()
        with self.guard.deferred():  # SIGTERM only sets a flag: the step finishes, then we save and leave
            while self.epoch < s["epochs"]:
                order = epoch_permutation(s["seed"], self.epoch, len(self.y))
                while self.batch < self.batches:
                    index = order[self.batch * s["batch_size"] : (self.batch + 1) * s["batch_size"]]
                    self.optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(self.model(self.x[index]), self.y[index])
                    loss.backward()
                    self.optimizer.step()
                    self.batch, self.step = self.batch + 1, self.step + 1
                    say(f"TOLLGATE_PROGRESS step={self.step} epoch={self.epoch + 1}")
                    self.tracker.log_step(self.step, {"train_loss": float(loss.item())})
                    if delay:
                        time.sleep(delay)
                    self.saver.check()  # a background save that failed stops the loop
                    if self.guard.requested:
                        self._preempt()
                    if self.step % s["checkpoint_every"] == 0:
                        self._checkpoint()
                self.epoch, self.batch = self.epoch + 1, 0
                log(f"epoch {self.epoch}/{s['epochs']}: " + json.dumps(self._evaluate()))
            self._checkpoint(wait=True)
            if self.guard.requested:
                self._preempt()
        metrics = self._evaluate()
        result = {
            "metrics": metrics,
            "mlflow_run_id": self.tracker.run_id,
            "training_run_id": s["training_run_id"],
            "steps": self.step,
            "epochs": s["epochs"],
            "resumed_from": resumed_from,
            "final_checkpoint": self.last_checkpoint,
            "dataset": self.dataset.as_dict(),
            "train_rows": len(self.y),
            "holdout_rows": len(self.holdout),
            "quality": s["quality"],
        }
        self.tracker.log_metrics(self.step, metrics)
        self._publish(result)
        self.tracker.end("FINISHED")
        return result

    def _publish(self, result: dict[str, Any]) -> None:
        """Model files first, result.json last: whoever sees result.json sees a complete model."""
        out = Folder(self.s["output_uri"])
        with tempfile.TemporaryDirectory(prefix="digits-model-") as tmp:
            folder = Path(tmp)
            torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, folder / "model.pt")
            config = {
                "format": 1,
                "example": "digits",
                "channels": self.s["channels"],
                "label": "digit",
                "training_run_id": self.s["training_run_id"],
                "hyperparameters": {k: self.s[k] for k in HYPERPARAMETERS},
                "dataset": self.dataset.as_dict(),
            }
            (folder / "model_config.json").write_text(json.dumps(config, indent=2))
            (folder / "result.json").write_text(json.dumps(result, indent=2))
            if hasattr(self.tracker, "log_params"):
                self.tracker.log_artifacts(folder, "trainer_output")
            for name in ("model.pt", "model_config.json", "result.json"):
                out.write(name, (folder / name).read_bytes())


def main(argv: list[str] | None = None) -> int:
    guard = PreemptionGuard(grace_seconds=30.0)
    guard.install()  # from the first moment: a spot notice during start-up is a preemption too
    trainer = None
    try:
        settings = parse(argv)
        guard.grace_seconds = settings["grace_seconds"]
        trainer = DigitsTrainer(settings, guard)
        result = trainer.run()
        log(f"done: {result['steps']} steps, holdout {json.dumps(result['metrics'])}")
        return EXIT_SUCCESS
    except Preempted:
        if trainer is None or trainer.last_checkpoint is None:
            say("TOLLGATE_PREEMPTED step=0 checkpoint=none")
        _end(trainer, "KILLED")
        return EXIT_PREEMPTED
    except (BadInput, UnsupportedLocation) as exc:
        print(f"digits.train: bad input: {exc}", file=sys.stderr, flush=True)
        _end(trainer, "FAILED")
        return EXIT_BAD_INPUT
    except Exception:
        traceback.print_exc()
        _end(trainer, "FAILED")
        return EXIT_FAILURE
    finally:
        if trainer is not None:
            trainer.saver.drain()  # no checkpoint write outlives the exit
        guard.uninstall()


def _end(trainer: DigitsTrainer | None, status: str) -> None:
    try:
        if trainer is not None and trainer.tracker is not None:
            trainer.tracker.end(status)
    except Exception as exc:  # never masks the exit code
        print(f"digits.train: could not update MLflow: {exc}", file=sys.stderr)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code) if code == EXIT_PREEMPTED else sys.exit(code)
