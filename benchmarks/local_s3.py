"""A local S3 endpoint for the benchmarks: a real ``moto_server`` on a free port, with one bucket.

Sets the AWS variables in this process's environment (inherited by the processes it starts), so the
storage layer and the trainer reach it through ``AWS_ENDPOINT_URL`` like any S3-compatible store.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def moto_endpoint(bucket: str) -> Iterator[str]:
    """Yield the endpoint URL with ``bucket`` created; the server stops on exit."""
    import boto3

    from tollgate.platform.processes import free_port, start_group, stop_group, wait_healthy

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=url,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "moto.log"
        proc = start_group([str(Path(sys.executable).parent / "moto_server"), "-p", str(port)], log)
        try:
            wait_healthy("moto_server", f"{url}/moto-api/", proc, log, timeout=120)
            boto3.client("s3", endpoint_url=url).create_bucket(Bucket=bucket)
            yield url
        finally:
            stop_group(proc.pid)
