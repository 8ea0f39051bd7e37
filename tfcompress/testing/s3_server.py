"""A real S3-compatible server on 127.0.0.1 (moto's standalone server), for the tests and benchmarks
of the shared cache: the store client talks HTTP to it exactly as to a bucket in the cloud.

    with local_s3_server("my-bucket") as environ:   # AWS_* variables, also set in os.environ
        ... s3://my-bucket/prefix ...
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["local_s3_server"]


@contextlib.contextmanager
def local_s3_server(bucket: str, log: Path = Path(os.devnull)):
    """Starts the server on a free port, creates `bucket`, points the AWS_* variables at it; undoes all."""
    port = _free_port()
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=output, stderr=output
        )
        environ = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }
        saved = {name: os.environ.get(name) for name in environ}
        os.environ.update(environ)
        try:
            _wait_for(port)
            import s3fs

            s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
            yield environ
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            server.kill()
            server.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the S3 server on port {port} did not start within {seconds:.0f} s")
