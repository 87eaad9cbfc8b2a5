"""Throughput and peak memory of the ingest gate and of dataset versioning, against a pandas floor.

    .venv/bin/python benchmarks/ingest_throughput.py [--rows 1000000] [--fault null_burst]
    .venv/bin/python benchmarks/ingest_throughput.py --before-ref ''            # this tree only
    .venv/bin/python benchmarks/ingest_throughput.py --sweep 1000000,4000000           # memory vs size
    .venv/bin/python benchmarks/ingest_throughput.py --sweep 16000000 --repeat 1       # about 2.5 min
    .venv/bin/python benchmarks/ingest_throughput.py --rows 4000000 --chunk-timeline  # memory per chunk

Lands one partition (in a child process, in pieces of 1M rows each with 1 % of rows broken by the fault,
so a 16M-row file is never held in memory), then times:

* the validation gate (``tollgate.data.gate.run_gate``: Parquet read, Great Expectations checkpoint with
  per-row results, Data Docs, clean/quarantine split and writes), with its phases, for this tree
  ("after") and for the gate module of ``--before-ref`` ("before", loaded from git into this process:
  same data, same GX import, same machine state); each twice, interleaved, after a warm-up run, best kept;
* versioning (``DataRepo.publish``: curated window, ``dvc add``, ``dvc push`` to a local remote, git commit
  and tag) and its rerun (unchanged content, same revision);
* the floor: one plain pandas pass over the same checks (schema, types, non-null, ranges, allowed sets,
  unique ids, row count, label rate, timestamps in the day) producing the same per-row failure mask,
  measured twice, best kept.

Prints seconds, rows/s and each gate's ratio to the floor (issue 15's target: at most 5x), and the
peak resident memory of each stage on its own (Linux: the process's high-water mark is reset before each
stage through ``/proc/self/clear_refs``; elsewhere the process's max RSS). ``--sweep`` runs the after-gate
alone for each size in a fresh process and tabulates time and peak memory. The row-count bound of the
suite is raised to the partition's size so large sweeps are not rejected. Everything runs in a temporary
folder; nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

DAY = "2024-06-01"
WARM_DAY = "2024-05-31"
REPO = Path(__file__).resolve().parents[1]
# The tree before issue 15 part 4 (the whole partition in memory; bf1a7d6 is the one before part 3).
BEFORE_REF = "38fe537"


def pandas_floor(path: Path, day: str, chunk_rows: int = 1_000_000) -> tuple[int, float]:
    """The same checks as the GX suite, in plain pandas, in chunks of 1M rows whatever the gate's chunk
    (a partition of up to 1M rows in one frame, as the floor always was; above, each chunk's rows plus one
    pass over the ids for duplicates across chunks); returns (failing rows, seconds)."""
    import pyarrow.parquet as pq

    from tollgate.data import schema
    from tollgate.data.chunks import chunk_size, duplicated_values, iter_chunks
    from tollgate.data.gate import landed_frame

    t0 = time.perf_counter()
    parquet = pq.ParquetFile(path)
    rows = parquet.metadata.num_rows
    size = chunk_size(chunk_rows, rows)
    repeated = duplicated_values(parquet, schema.EVENT_ID, size).to_pylist() if rows > size else None
    bad_rows = 0
    label_sum = 0
    for table in iter_chunks(parquet, size):
        frame = landed_frame(table)
        bad = floor_checks(frame, day)
        ids = frame[schema.EVENT_ID]
        bad |= ids.duplicated(keep=False).to_numpy() if repeated is None else ids.isin(repeated).to_numpy()
        bad_rows += int(bad.sum())
        label_sum += int(frame[schema.LABEL].sum())
    _label_rate = label_sum / rows
    _rows_ok = rows >= 1000
    return bad_rows, time.perf_counter() - t0


def floor_checks(frame: Any, day: str) -> Any:
    """Per-row failure mask of the suite's row-level checks but uniqueness (schema and types asserted)."""
    import numpy as np
    import pandas as pd

    from tollgate.data import schema
    from tollgate.data.generator import interval_end, interval_start

    assert set(frame.columns) == set(schema.COLUMNS), "schema"
    types_ = {
        "string": "string",
        "int64": "Int64",
        "float64": "float64",
        "datetime64[us, UTC]": "datetime64[us, UTC]",
    }
    for column, dtype in schema.COLUMNS.items():
        assert str(frame[column].dtype) in (types_[dtype], dtype, "str"), (column, frame[column].dtype)
    bad = np.zeros(len(frame), dtype=bool)
    for column in schema.COLUMNS:
        bad |= frame[column].isna().to_numpy()
    for column, (low, high) in schema.VALUE_RANGES.items():
        values = frame[column]
        bad |= (values.notna() & ~values.between(low, high)).to_numpy(dtype=bool, na_value=False)
    bad |= (
        ~frame["device"].isin(schema.DEVICES).to_numpy(dtype=bool, na_value=True)
        & frame["device"].notna().to_numpy()
    )
    bad |= (
        ~frame["country"].isin(schema.COUNTRIES).to_numpy(dtype=bool, na_value=True)
        & frame["country"].notna().to_numpy()
    )
    bad |= ~frame[schema.LABEL].isin(schema.LABEL_VALUES).to_numpy(dtype=bool, na_value=True)
    ts = frame[schema.TIMESTAMP]
    start, end = pd.Timestamp(interval_start(day)), pd.Timestamp(interval_end(day))
    bad |= ~((ts >= start) & (ts < end)).to_numpy(dtype=bool, na_value=False)
    return bad


# ---- peak memory of one stage -------------------------------------------------------------------------
def reset_peak() -> bool:
    """Reset this process's resident high-water mark (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak RSS since the last ``reset_peak`` (Linux VmHWM), else the process's max RSS, in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak MB) of ``fn()`` on its own."""
    reset_peak()
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0, peak_mb()


# ---- the gate of another revision, loaded from git ------------------------------------------------------
def gate_module_at(ref: str) -> types.ModuleType:
    """``tollgate.data.gate`` as it was at ``ref`` (it imports today's storage/suite/generator modules)."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{ref}:include/tollgate/data/gate.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    name = f"tollgate_gate_at_{ref}"
    module = types.ModuleType(name)
    module.__file__ = f"<{ref}:include/tollgate/data/gate.py>"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


PIECE_ROWS = 1_000_000


def land(landing: Path, day: str, rows: int, fault: str) -> Path:
    """Land a partition in a child process (this process's memory then holds only what the gate needs)."""
    command = [sys.executable, __file__, "--land-to", str(landing), "--day", day, "--rows", str(rows)]
    command += ["--fault", fault]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def land_in_pieces(landing: Path, day: str, rows: int, fault: str) -> Path:
    """Write the partition in pieces of ``PIECE_ROWS`` rows, each generated, given the fault (1 % of its
    rows) and appended as its own row group(s): a 16M-row file without 16M rows in memory. The first piece
    is the generator's partition of that size (a file of up to 1M rows is the one ``tollgate.data.land``
    writes); later pieces draw from the next seeds, with event ids numbered on after the earlier pieces."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tollgate.data import schema
    from tollgate.data.generator import DEFAULT_SEED, parse_day, partition_uri
    from tollgate.data.suite import active_dataset

    target = Path(partition_uri(str(landing), day))
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp = day.replace("-", "")
    writer = None
    for piece, start in enumerate(range(0, rows, PIECE_ROWS)):
        n = min(PIECE_ROWS, rows - start)
        frame = active_dataset().generate(
            parse_day(day),
            n,
            DEFAULT_SEED + piece,
            fault=fault or None,
            share=0.01,
        )
        if piece:  # ids numbered on (a replayed row keeps the id of the row it replays)
            numbers = frame[schema.EVENT_ID].str.rsplit("-", n=1).str[1].astype("int64") + start
            frame[schema.EVENT_ID] = [f"imp-{stamp}-{number:08d}" for number in numbers]
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(target, table.schema, compression="snappy")
        writer.write_table(table.cast(writer.schema))
        del frame, table
    assert writer is not None
    writer.close()
    return target


# ---- one size -------------------------------------------------------------------------------------------
def measure(
    rows: int, fault: str, before_ref: str, repeat: int = 2, chunk_rows: int | None = None
) -> dict[str, Any]:
    """Figures of one partition size; the before gate only when ``before_ref`` is given."""
    import pyarrow.parquet as pq

    from tollgate.data.suite import GateThresholds

    figures: dict[str, Any] = {"rows": rows, "fault": fault or None}
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        uri = land(root / "landing", DAY, rows, fault)
        land(root / "landing", WARM_DAY, 20_000, fault)
        figures["land_s"] = time.perf_counter() - t0
        figures["file_mb"] = uri.stat().st_size / 1e6
        figures["row_groups"] = pq.ParquetFile(uri).num_row_groups

        t0 = time.perf_counter()
        import great_expectations  # noqa: F401 - import cost reported apart, paid once per worker process

        figures["gx_import_s"] = time.perf_counter() - t0
        from tollgate.data import gate as after_gate
        from tollgate.data.versioning import DataRepo

        gates = {"after": after_gate}
        if before_ref:
            gates["before"] = gate_module_at(before_ref)
        thresholds = GateThresholds(max_rows=max(rows * 2, GateThresholds().max_rows))
        landing = str(root / "landing")
        options = {"after": {"chunk_rows": chunk_rows}, "before": {}}
        for name, module in gates.items():  # warm-up: the first checkpoint of a process pays one-off costs
            warm = str(root / f"warm-{name}")
            module.run_gate(landing, warm, WARM_DAY, thresholds, log=lambda _: None, **options[name])

        best: dict[str, tuple[float, float, Any]] = {}
        for attempt in range(repeat):
            for name, module in gates.items():
                out_root = str(root / f"storage-{name}-{attempt}")
                outcome, seconds, peak = measured(
                    lambda m=module, o=out_root, k=options[name]: m.run_gate(
                        landing, o, DAY, thresholds, log=lambda _: None, **k
                    )
                )
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, peak, outcome)
                best[name] = (best[name][0], max(best[name][1], peak), best[name][2])

        floors = [pandas_floor(uri, DAY) for _ in range(repeat)]
        floor_bad = floors[0][0]
        figures["floor_s"] = min(seconds for _bad, seconds in floors)
        if "before" in best:  # the clean file both gates stored
            same = (
                Path(best["before"][2].clean_uri).read_bytes()
                == Path(best["after"][2].clean_uri).read_bytes()
            )
            figures["clean_bytes_identical"] = same
        for name, (seconds, peak, outcome) in best.items():
            assert floor_bad == outcome.quarantined_rows, (name, floor_bad, outcome.quarantined_rows)
            figures[f"{name}_gate_s"] = seconds
            figures[f"{name}_gate_peak_mb"] = peak
            figures[f"{name}_phases"] = {k: round(v, 3) for k, v in outcome.seconds.items()}
            figures[f"{name}_ratio"] = seconds / figures["floor_s"]
        outcome = best["after"][2]
        figures["quarantined"] = outcome.quarantined_rows

        repo = DataRepo(root / "data-repo", str(root / "dvc-remote"), window_days=7, chunk_rows=chunk_rows)
        publish = lambda: repo.publish(DAY, outcome.clean_uri, outcome.quarantined_rows, log=lambda _: None)  # noqa: E731
        version, figures["version_s"], figures["version_peak_mb"] = measured(publish)
        again, figures["version_rerun_s"], _ = measured(publish)
        assert again.rev == version.rev and not again.created
    figures["process_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def report(f: dict[str, Any]) -> None:
    rows = f["rows"]
    print(f"landed {rows:,} rows ({f['file_mb']:.1f} MB) in {f['land_s']:.1f} s (child process)")
    print(f"partition: {rows:,} rows, {f['quarantined']:,} quarantined ({f['fault'] or 'no fault'})")
    print(
        f"GX import: {f['gx_import_s']:.1f} s per process, not per task: on the local platform the scheduler "
        "imports GX/pandas/mlflow before its LocalExecutor forks (tollgate/platform/preload.py), so a "
        "gate task pays 0 s of it; a pod pays it once at start"
    )
    print(f"{'stage':<46}{'seconds':>9}{'rows/s':>12}{'x floor':>9}{'peak MB':>9}")
    lines = []
    if "before_gate_s" in f:
        lines.append(("gate BEFORE (" + BEFORE_REF + ")", f["before_gate_s"], f["before_gate_peak_mb"]))
    lines += [
        ("gate AFTER (this tree)", f["after_gate_s"], f["after_gate_peak_mb"]),
        ("versioning (curate + dvc add/push + git tag)", f["version_s"], f["version_peak_mb"]),
        ("rerun of versioning (unchanged -> same rev)", f["version_rerun_s"], None),
        ("floor: plain pandas pass, same checks", f["floor_s"], None),
    ]
    for name, seconds, peak in lines:
        ratio = f"{seconds / f['floor_s']:>8.1f}x" if name.startswith("gate") else f"{'':>9}"
        mem = f"{peak:>9.0f}" if peak is not None else f"{'':>9}"
        print(f"{name:<46}{seconds:>9.2f}{rows / seconds:>12,.0f}{ratio}{mem}")
    for name in ("before", "after"):
        if f"{name}_phases" in f:
            phases = ", ".join(f"{k} {v:.2f} s" for k, v in f[f"{name}_phases"].items())
            print(f"gate {name} phases: {phases}")
    verdict = "meets" if f["after_ratio"] <= 5 else "misses"
    print(f"GX gate vs pandas floor: {f['after_ratio']:.1f}x ({verdict} the 5x target of issue 15)", end="")
    print(f"; before: {f['before_ratio']:.1f}x" if "before_ratio" in f else "")
    print(f"peak memory of the whole process (max RSS): {f['process_max_rss_mb']:.0f} MB")
    if "clean_bytes_identical" in f:
        print(f"clean file of both gates byte-identical: {f['clean_bytes_identical']}")


def sweep(sizes: list[int], fault: str, repeat: int = 2, chunk_rows: int | None = None) -> None:
    """The after-gate and versioning at each size, each in a fresh process: time and peak memory."""
    header = ("rows", 12), ("gate s", 9), ("rows/s", 12), ("floor s", 9), ("x floor", 9), ("gate MB", 9)
    header += ("version s", 10), ("version MB", 11), ("id pass s", 10), ("run s", 8)
    print("".join(f"{name:>{width}}" for name, width in header), flush=True)
    peaks: dict[int, float] = {}
    for rows in sizes:
        command = [sys.executable, __file__, "--rows", str(rows), "--fault", fault, "--before-ref", ""]
        command += ["--json", "--repeat", str(repeat)]
        command += ["--chunk-rows", str(chunk_rows)] if chunk_rows is not None else []
        t0 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode:
            print(f"{rows:>12,} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        f = json.loads(done.stdout.strip().splitlines()[-1])
        peaks[rows] = f["after_gate_peak_mb"]
        print(
            f"{rows:>12,}{f['after_gate_s']:>9.2f}{rows / f['after_gate_s']:>12,.0f}{f['floor_s']:>9.2f}"
            f"{f['after_ratio']:>8.1f}x{f['after_gate_peak_mb']:>9.0f}{f['version_s']:>10.2f}"
            f"{f['version_peak_mb']:>11.0f}{f['after_phases'].get('id_pass', 0):>10.2f}{wall:>8.0f}",
            flush=True,
        )
    if len(peaks) > 1:
        low, high = min(peaks), max(peaks)
        growth = peaks[high] / peaks[low]
        verdict = "flat within 20 %" if growth <= 1.2 else "grows more than 20 %"
        print(f"gate peak RSS at {high:,} rows / at {low:,} rows: {growth:.2f} ({verdict})")


def chunk_timeline(rows: int, fault: str, chunk_rows: int | None = None) -> None:
    """The gate's resident memory chunk by chunk: the peak within each stretch between two of the gate's
    ``release_memory`` calls (the id pass, then each chunk), the RSS after each release, and how much of
    it Python's allocator holds (``tracemalloc``'s traced bytes; Arrow's and numpy's pools are not traced).
    The profile behind the memory figures: what a chunk needs, and what stays from one chunk to the next."""
    import threading
    import tracemalloc

    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 1e6

    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as tmp:
        root = Path(tmp)
        land(root / "landing", DAY, rows, fault)
        land(root / "landing", WARM_DAY, 20_000, fault)
        from tollgate.data import gate
        from tollgate.data.suite import GateThresholds

        thresholds = GateThresholds(max_rows=max(rows * 2, GateThresholds().max_rows))
        options = {"log": lambda _: None, "chunk_rows": chunk_rows}
        gate.run_gate(str(root / "landing"), str(root / "warm"), WARM_DAY, thresholds, **options)
        samples: list[tuple[float, float]] = []
        marks: list[tuple[float, float, float, float]] = []  # (before, after, RSS after, traced MB)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.perf_counter(), rss_mb()))
                time.sleep(0.005)

        release = gate.release_memory

        def marked() -> None:
            before = time.perf_counter()
            release()
            marks.append((before, time.perf_counter(), rss_mb(), tracemalloc.get_traced_memory()[0] / 1e6))

        gate.release_memory = marked
        sampler = threading.Thread(target=sample, daemon=True)
        start_rss, started = rss_mb(), time.perf_counter()
        tracemalloc.start()
        sampler.start()
        try:
            gate.run_gate(str(root / "landing"), str(root / "out"), DAY, thresholds, **options)
        finally:
            stop.set()
            sampler.join()
            tracemalloc.stop()
            gate.release_memory = release
    print(
        f"{rows:,} rows, fault {fault or 'none'}: RSS {start_rss:.0f} MB before the gate (GX imported, warm)"
    )
    print(f"{'stretch':>10}{'peak MB':>10}{'RSS after':>11}{'traced MB':>11}")
    previous = started
    for index, (before, after, rss, traced) in enumerate(marks):
        peak = max((r for t, r in samples if previous <= t <= before), default=float("nan"))
        print(f"{'id pass' if index == 0 else f'chunk {index}':>10}{peak:>10.0f}{rss:>11.0f}{traced:>11.0f}")
        previous = after
    tail = max((r for t, r in samples if t >= previous), default=float("nan"))
    print(
        f"{'the rest':>10}{tail:>10.0f}   (merge, Data Docs, store); "
        f"overall peak {max(r for _, r in samples):.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fault", default="null_burst", help="row-level fault to inject ('' for none)")
    parser.add_argument("--before-ref", default=BEFORE_REF, help="revision of the 'before' gate ('' to skip)")
    parser.add_argument("--sweep", default="", help="comma-separated sizes: peak memory and time per size")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each gate and of the floor (best kept)"
    )
    parser.add_argument(
        "--chunk-rows", type=int, default=None, help="the gate's chunk (default: 500k; 0: whole)"
    )
    parser.add_argument(
        "--chunk-timeline", action="store_true", help="the gate's memory chunk by chunk at --rows (a profile)"
    )
    parser.add_argument("--land-to", default="", help=argparse.SUPPRESS)  # the landing child process
    parser.add_argument("--day", default=DAY, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.land_to:
        print(land_in_pieces(Path(args.land_to), args.day, args.rows, args.fault))
        return
    if args.chunk_timeline:
        chunk_timeline(args.rows, args.fault, args.chunk_rows)
        return
    if args.sweep:
        sweep([int(size) for size in args.sweep.split(",")], args.fault, args.repeat, args.chunk_rows)
        return
    figures = measure(args.rows, args.fault, args.before_ref, args.repeat, args.chunk_rows)
    if args.json:
        print(json.dumps(figures))
    else:
        report(figures)


if __name__ == "__main__":
    main()
