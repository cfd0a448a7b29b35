"""clipcap/memory.py: `keep_freed_memory` stops the page faults of large tensors, and leaves malloc alone where the
environment tunes it already."""

import subprocess
import sys

from tests.conftest import ROOT

PAGE_FAULTS = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from clipcap.memory import keep_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(16 * 2**20)  # 64 MiB, every page written
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
default = faults()
kept = keep_freed_memory()
# The heap grows until freed blocks coalesce into one that fits torch's aligned 64 MiB request: a few rounds, more or
# fewer with what the imports left on the heap (in the scripts, the first training or generation steps).
for _ in range(3):
    faults()
print(default, faults(), kept)
"""


def test_keep_freed_memory_stops_the_page_faults_of_large_tensors():
    code = PAGE_FAULTS.format(root=str(ROOT))
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    default, kept_faults, kept = output.split()
    # glibc's default: each 64 MiB tensor is a fresh mmap, 16,384 pages faulted in, five times over.
    assert int(default) >= 5 * 16384 and kept == "True"
    assert int(kept_faults) < 1000
    env = {"MALLOC_ARENA_MAX": "2", "PATH": "/usr/bin:/bin"}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert output.split()[2] == "False"  # the environment tunes malloc already: left alone


def test_a_commands_peak_memory_and_exit_status_are_reported(tmp_path):
    """`python -m clipcap.memory --report FILE -- COMMAND` (demo.sh's stages): the child's peak resident memory, a
    250 MB array in it, lands in FILE; its exit status is the wrapper's."""
    report = tmp_path / "peak"
    allocate = "import numpy; a = numpy.ones(250_000_000 // 8); raise SystemExit(3)"
    command = [sys.executable, "-m", "clipcap.memory", "--report", str(report), "--", sys.executable, "-c", allocate]
    assert subprocess.run(command, check=False).returncode == 3
    assert 250e6 < int(report.read_text()) < 600e6


ARENAS = """
import ctypes, os, sys, tempfile, threading
sys.path.insert(0, {root!r})
from clipcap.memory import one_malloc_arena

limited = one_malloc_arena() if sys.argv[1] == "one" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = libc.fopen.restype = ctypes.c_void_p
start = threading.Barrier(4)

def allocate():  # four threads allocating at once: glibc gives contending threads arenas of their own
    start.wait()
    for _ in range(1000):
        libc.free(ctypes.c_void_p(libc.malloc(1000)))

threads = [threading.Thread(target=allocate) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
path = tempfile.mktemp()
report = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(report))
libc.fclose(ctypes.c_void_p(report))
print(limited, open(path).read().count("<heap nr="))
os.remove(path)
"""


def test_one_malloc_arena_serves_every_thread_from_one_heap():
    """glibc's `malloc_info` lists one heap per arena: four threads allocating at once get several, or one after
    `one_malloc_arena` (which leaves malloc alone where the environment tunes it)."""
    code = ARENAS.format(root=str(ROOT))

    def heaps(mode, env=None):
        done = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True, env=env)
        return done.stdout.split()

    assert heaps("one") == ["True", "1"]
    limited, default = heaps("default")
    assert limited == "None" and int(default) > 1
    assert heaps("one", env={"MALLOC_ARENA_MAX": "4", "PATH": "/usr/bin:/bin"})[0] == "False"
