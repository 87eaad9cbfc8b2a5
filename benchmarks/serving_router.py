"""The serving router under load: what it adds over in-process ``predict``, shadow on vs off,
requests per second of one router process, and a hot reload under load.

Starts a real ``mlflow server`` and a real router process (one uvicorn process: one core), registers a
signed, approved tiny pyfunc, then:
1. **in-process**: ``pyfunc.predict`` on one row, the same row every time (the floor);
2. **router at a fixed rate** (open loop, default 200 req/s): the client's round-trip latency and the
   router's own handler latency (from its prediction log); "added" = router handler minus in-process,
   and, paired per request, the handler minus the model's own predict time on that request (``model_ms``);
3. **shadow on vs off**: user-facing p99 in alternating blocks, each block's p99 printed (the spread), in
   steady state (each switch is followed by a settling load that is not measured), and an exact permutation
   test over the blocks;
4. **requests/s**: closed loop with a few concurrent clients for a few seconds;
5. **reload under load**: the champion alias moves (and SIGHUP) during the fixed-rate run: failed
   requests (must be 0) and p99 around the swap.
Percentiles are over raw latencies, never histogram buckets.

With ``--pin`` (the default where there are 2 CPUs or more) the router, and the shadow worker it spawns,
run on CPU 0 only: "one core", as one router process per core runs in production. The load generator and
the MLflow server run on the other CPUs, as clients on other machines would. ``--no-pin`` lets every process
share every CPU (the figures then include the client's own CPU use).

Usage: .venv/bin/python benchmarks/serving_router.py [--rate 200] [--seconds 10] [--blocks 6] [--no-pin]
       [--shadow-core same|other] [--shadow-priority nice|idle] [--on-mode shadow|canary0]
Run alone on a quiet machine; figures on a busy one are upper bounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.serving import RouterProcess, ServingModels, example_rows  # noqa: E402
from tollgate.platform.processes import free_port, start_group, stop_group, wait_healthy  # noqa: E402
from tollgate.serving.settings import RouterSettings  # noqa: E402

MODEL = "bench-router"
ROW = example_rows(1)
DEFAULTS = {f.name: f.default for f in dataclasses.fields(RouterSettings)}  # the router's own defaults
SETTLE_S = 3.0  # after a shadow on/off switch, before a block is measured


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def fmt(values: list[float]) -> str:
    return f"p50 {pct(values, 0.5):.3f} ms  p99 {pct(values, 0.99):.3f} ms  (n={len(values)})"


def shadow_comparison(
    off: list[list[float]], on: list[list[float]], dropped: int, what: str = "user-facing"
) -> str:
    """``what`` p99 with shadow off vs on, from alternating blocks.

    Noise on a shared machine comes in bursts longer than a request, so the unit of comparison is the block:
    each block's p99, and an exact permutation test of the difference in mean block p99 (every way of
    labelling the blocks "on" or "off"). A request-level bootstrap would ignore those bursts and call noise a
    difference."""
    import itertools

    p_off, p_on = [pct(ms, 0.99) for ms in off], [pct(ms, 0.99) for ms in on]
    observed = statistics.mean(p_on) - statistics.mean(p_off)
    pooled, k = p_off + p_on, len(p_on)
    diffs = []
    for chosen in itertools.combinations(range(len(pooled)), k):
        picked = set(chosen)
        on_mean = statistics.mean(pooled[i] for i in picked)
        off_mean = statistics.mean(pooled[i] for i in range(len(pooled)) if i not in picked)
        diffs.append(on_mean - off_mean)
    p_value = sum(abs(d) >= abs(observed) - 1e-12 for d in diffs) / len(diffs)

    def spread(values: list[float]) -> str:
        return (
            f"{', '.join(f'{v:.2f}' for v in values)} ms; median {statistics.median(values):.2f}, "
            f"range {min(values):.2f}-{max(values):.2f}"
        )

    verdict = "no difference beyond noise" if p_value >= 0.05 else "a difference beyond noise"
    return (
        f"{what} p99 per block, shadow off: {spread(p_off)}\n"
        f"{what} p99 per block, shadow on : {spread(p_on)}; shadow dropped {dropped}\n"
        f"{what}: on minus off (mean block p99): {observed:+.3f} ms; exact permutation p = {p_value:.3f} "
        f"over {len(diffs)} labellings of {len(pooled)} blocks: {verdict} at 0.05"
    )


def start_mlflow(work: Path):
    port = free_port()
    (work / "artifacts").mkdir(parents=True)
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
        "--artifacts-destination", str(work / "artifacts"), "--serve-artifacts",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = start_group(command, work / "mlflow.log", env=env)
    url = f"http://127.0.0.1:{port}"
    wait_healthy("mlflow server", f"{url}/health", process, work / "mlflow.log", timeout=300)
    return process, url


class Load:
    """Open-loop load: ``threads`` connections share a schedule of ``rate`` requests per second."""

    def __init__(self, port: int, rate: float, seconds: float, threads: int = 4):
        self.port, self.rate, self.seconds, self.threads = port, rate, seconds, threads
        self.latencies: list[tuple[float, float]] = []  # (send time, ms)
        self.failures = 0
        self.body = json.dumps({"rows": ROW}).encode()

    def _worker(self, index: int, start: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        n = int(self.rate * self.seconds)
        for i in range(index, n, self.threads):
            due = start + i / self.rate
            time.sleep(max(0.0, due - time.perf_counter()))
            sent = time.perf_counter()
            try:
                conn.request("POST", "/predict", self.body, {"content-type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            if ok:
                self.latencies.append((sent - start, (time.perf_counter() - sent) * 1000))
            else:
                self.failures += 1

    def run(self) -> Load:
        start = time.perf_counter() + 0.05
        workers = [threading.Thread(target=self._worker, args=(i, start)) for i in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return self

    @property
    def ms(self) -> list[float]:
        return [ms for _, ms in self.latencies]


def closed_loop(port: int, seconds: float, clients: int = 4) -> float:
    count = [0] * clients
    stop = time.perf_counter() + seconds
    body = json.dumps({"rows": ROW}).encode()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < stop:
            conn.request("POST", "/predict", body, {"content-type": "application/json"})
            conn.getresponse().read()
            count[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / seconds


def pin_router(pid: int, router_cpus: set[int], shadow_cpus: set[int]) -> None:
    """Once the shadow worker has placed itself on ``shadow_cpus``, every thread of the router on
    ``router_cpus`` (threads it starts later inherit that)."""
    deadline = time.monotonic() + 120
    while not any(os.sched_getaffinity(child) == shadow_cpus for child in children(pid)):
        if time.monotonic() > deadline:
            raise SystemExit(f"the shadow worker never ran on CPUs {sorted(shadow_cpus)}")
        time.sleep(0.2)
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), router_cpus)


def children(pid: int) -> list[int]:
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


def main_thread_sched(pid: int) -> tuple[float, int]:
    """The router's main thread so far: seconds it waited to run while runnable (its runqueue wait, from
    /proc schedstat) and how often another task took its CPU (involuntary context switches)."""
    with open(f"/proc/{pid}/schedstat") as handle:
        waited_ns = int(handle.read().split()[1])
    with open(f"/proc/{pid}/status") as handle:
        switches = next(int(line.split()[1]) for line in handle if line.startswith("nonvoluntary_ctxt"))
    return waited_ns / 1e9, switches


def admin(router: RouterProcess, body: dict) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=120)
    conn.request(
        "POST", "/admin/rollout", json.dumps(body), {**router.admin(), "content-type": "application/json"}
    )
    response = conn.getresponse()
    assert response.status == 200, response.read()
    response.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--blocks", type=int, default=6, help="blocks per arm (shadow off, on, alternating)")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=len(os.sched_getaffinity(0)) >= 2,
        help="the router on CPU 0, everything else on the other CPUs (default where there are 2 or more)",
    )
    parser.add_argument(
        "--shadow-core",
        choices=("same", "other"),
        default="same",
        help="the shadow worker on the router's core (same: the default setting) or on the other CPUs "
        "(TOLLGATE_ROUTER_SHADOW_CPUS)",
    )
    parser.add_argument(
        "--shadow-priority",
        choices=("nice", "idle"),
        default="nice",
        help="the shadow worker at nice 10 (the router's default) or SCHED_IDLE (the production manifests' "
        "setting, TOLLGATE_ROUTER_SHADOW_IDLE_PRIORITY)",
    )
    parser.add_argument(
        "--on-mode",
        choices=("shadow", "canary0"),
        default="shadow",
        help="what the 'on' blocks run: shadow, or a canary at weight 0 (the challenger loaded in the "
        "router, no request sent to it: what having it loaded alone costs)",
    )
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    router_cpus, other_cpus = ({cpus[0]}, set(cpus[1:])) if args.pin else (set(cpus), set(cpus))
    shadow_cpus = router_cpus if args.shadow_core == "same" else other_cpus
    print(
        f"router on CPU {sorted(router_cpus)}, its shadow worker on CPU {sorted(shadow_cpus)}, "
        f"load generator and MLflow on CPU {sorted(other_cpus)}"
    )
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-router-"))
    os.sched_setaffinity(0, other_cpus)  # inherited by the MLflow server
    mlflow_proc, mlflow_url = start_mlflow(work / "mlflow")
    router = None
    try:
        models = ServingModels(mlflow_url, work)
        champion = models.register(MODEL)
        challenger = models.register(MODEL, {"output": "label"}, approve=False)
        models.set_alias(MODEL, "champion", champion)
        # The router's own polling defaults, as deployed: the test fixture polls MLflow every second and the
        # rollout record twice a second, so that tests see changes at once, and that work lands on its core.
        router = RouterProcess(
            work,
            models,
            MODEL,
            TOLLGATE_ROUTER_LOG_FLUSH_SECONDS="2",
            TOLLGATE_ROUTER_ALIAS_POLL_SECONDS=str(DEFAULTS["alias_poll_s"]),
            TOLLGATE_ROUTER_ROLLOUT_POLL_SECONDS=str(DEFAULTS["rollout_poll_s"]),
            TOLLGATE_ROUTER_SHADOW_CPUS=",".join(map(str, sorted(shadow_cpus))),
            TOLLGATE_ROUTER_SHADOW_IDLE_PRIORITY=str(args.shadow_priority == "idle").lower(),
        )
        # The router and what it spawns inherit this; a worker may only place itself on CPUs its parent
        # could use, so with --shadow-core other the router starts on both and is pinned once it has.
        os.sched_setaffinity(0, router_cpus | shadow_cpus)
        try:
            router.start()
        finally:
            os.sched_setaffinity(0, other_cpus)
        router.wait_for(lambda s: s["ready"], "ready", timeout=120)
        if shadow_cpus != router_cpus:
            pin_router(router.process.pid, router_cpus, shadow_cpus)

        import mlflow.pyfunc
        import pandas as pd

        pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/{champion}")
        frame = pd.DataFrame(ROW)

        def floor(cpus: set[int]) -> list[float]:
            os.sched_setaffinity(0, cpus)
            try:
                for _ in range(200):
                    pyfunc.predict(frame)
                times = []
                for _ in range(2000):
                    t = time.perf_counter()
                    pyfunc.predict(frame)
                    times.append((time.perf_counter() - t) * 1000)
                return times
            finally:
                os.sched_setaffinity(0, other_cpus)

        inproc = floor(other_cpus)
        print(f"in-process predict (1 row)          : {fmt(inproc)}")
        if args.pin:  # the router's core also carries its idle threads (and, here, the VM's interrupts)
            print(f"  the same on the router's CPU {sorted(router_cpus)}   : {fmt(floor(router_cpus))}")

        Load(router.port, args.rate, 2).run()  # warm the router and the connections
        base = Load(router.port, args.rate, args.seconds).run()
        print(f"router round trip at {args.rate:.0f} req/s     : {fmt(base.ms)}  failures {base.failures}")
        time.sleep(3)  # let the log flush
        from tollgate.serving.predlog import read_log

        logged = read_log(router.storage_root).dropna(subset=["latency_ms"]).tail(len(base.ms))
        handler = list(logged.latency_ms)
        print(f"router handler (prediction log)     : {fmt(handler)}")
        print(f"model predict inside the router     : {fmt(list(logged.model_ms))}")
        print(
            f"router's own share, per request     : {fmt(list(logged.latency_ms - logged.model_ms))} "
            "(handler minus its own predict: parse, routing, response, metrics, log append)"
        )
        print(
            f"added by the router over predict    : p50 {pct(handler, 0.5) - pct(inproc, 0.5):.3f} ms  "
            f"p99 {pct(handler, 0.99) - pct(inproc, 0.99):.3f} ms (handler minus in-process)"
        )
        print(
            f"added incl. HTTP on loopback        : p50 {pct(base.ms, 0.5) - pct(inproc, 0.5):.3f} ms  "
            f"p99 {pct(base.ms, 0.99) - pct(inproc, 0.99):.3f} ms (client round trip minus in-process)"
        )

        # Steady state only: each switch loads or unloads the challenger (in the router and in the shadow
        # worker), a one-off cost per rollout that would otherwise land in every block; a settling load of
        # SETTLE_S, not measured, follows each switch.
        off, on = [], []  # per block: the user-facing latencies
        windows: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}  # per block: when it ran
        waits: dict[str, list[tuple[float, int, int]]] = {"off": [], "on": []}  # per block: sched, requests
        on_body = {"mode": "shadow", "challenger_version": challenger, "rollout_id": "bench-shadow"}
        if args.on_mode == "canary0":
            on_body = {**on_body, "mode": "canary", "weight_bp": 0}
            print("'on' blocks: a canary at weight 0 (the challenger loaded, no request sent to it)")
        for _ in range(args.blocks):
            for arm, blocks, body in (
                ("off", off, {"mode": "off"}),
                ("on", on, on_body),
            ):
                admin(router, body)
                Load(router.port, args.rate, SETTLE_S).run()
                started, before = time.time(), main_thread_sched(router.process.pid)
                blocks.append(Load(router.port, args.rate, args.seconds / 2).run().ms)
                windows[arm].append((started, time.time()))
                after = main_thread_sched(router.process.pid)
                waits[arm].append((after[0] - before[0], after[1] - before[1], len(blocks[-1])))
        admin(router, {"mode": "off"})
        dropped = router.status()["shadow"]["dropped"]
        print(shadow_comparison(off, on, dropped))
        for arm, per_block in waits.items():
            requests = sum(n for *_, n in per_block)
            waited_us = 1e6 * sum(w for w, *_ in per_block) / requests
            switches = 1000 * sum(s for _, s, _ in per_block) / requests
            print(
                f"router main thread, shadow {arm:3s}    : runqueue wait {waited_us:.0f} us per request, "
                f"{switches:.0f} involuntary switches per 1,000 requests (another task on its CPU first)"
            )
        # The same blocks seen inside the router (its handler time, from its log): without the client's and
        # the loopback's jitter, and without what happens before the handler runs (the event loop's wait).
        time.sleep(4)  # the last rows flushed
        log = read_log(router.storage_root).dropna(subset=["latency_ms"])
        ts = (log.ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        handler = {
            arm: [list(log.latency_ms[(ts >= a) & (ts <= b)]) for a, b in spans]
            for arm, spans in windows.items()
        }
        print(shadow_comparison(handler["off"], handler["on"], dropped, what="router handler"))

        rps = closed_loop(router.port, min(args.seconds, 5))
        print(
            f"requests/s, one router process      : {rps:.0f} (4 closed-loop clients"
            + ("; the router alone on its core)" if args.pin else "; the clients share the router's cores)")
        )

        newer = models.register(MODEL, {"weights": [2.0, 1.0]})
        load = Load(router.port, args.rate, args.seconds)
        thread = threading.Thread(target=load.run)
        thread.start()
        time.sleep(args.seconds / 4)
        swap_started = time.perf_counter()
        models.set_alias(MODEL, "champion", newer)
        router.process.send_signal(signal.SIGHUP)
        router.wait_for(lambda s: s["variants"]["champion"]["version"] == newer, "reloaded", timeout=60)
        swap_s = time.perf_counter() - swap_started
        thread.join()
        print(
            f"reload under {args.rate:.0f} req/s             : {load.failures} failed of "
            f"{len(load.ms) + load.failures}; swap took {swap_s:.2f} s (verify+load+warm); {fmt(load.ms)}"
        )
    finally:
        if router is not None:
            router.stop()
        stop_group(mlflow_proc.pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
