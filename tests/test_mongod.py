"""clipcap/mongod.py: FiftyOne runs on the project's own private mongod (the session's `fiftyone_db`)."""

import os
import subprocess
import sys


def test_fiftyone_works_on_the_private_mongod(fiftyone_db, tmp_path):
    assert fiftyone_db.startswith("mongodb://127.0.0.1:")
    script = """
import fiftyone as fo
dataset = fo.Dataset("clipcap-smoke")
dataset.add_samples([fo.Sample(filepath=f"/tmp/image{i}.jpg", captions=[f"caption {i}"]) for i in range(3)])
print(len(fo.load_dataset("clipcap-smoke")), fo.config.database_uri)
"""
    environment = dict(os.environ, FIFTYONE_DATABASE_URI=fiftyone_db)
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["3", fiftyone_db]
