"""FUSE over io_uring: which transport carries the requests, and that the
filesystem behaves the same over it.

Whatever FUSE4FS_TRANSPORT the rest of the suite runs with, these tests set
the fuse module's enable_uring themselves (and put it back).  The trace of
`-d` names the transport of every request (" ring" at the end of the line
for a ring entry), which is how they tell the transports apart.
"""

import os
import re
import signal
import subprocess
import threading
import time

import pytest

import f4util
import opgen
from f4util import fuse4fs_mount, e2fsck, snapshot, kernel_mount, assert_same
from test_rw import mkimg

pytestmark = [
    pytest.mark.usefixtures("fuse4fs_bin", "require_root"),
    pytest.mark.skipif(f4util.uring_param() is None,
                       reason="this kernel has no FUSE io_uring (%s)" % f4util.URING_PARAM),
]

REQ = re.compile(r"^fe\[\d+\] unique=\d+ op=(\w+)\(\d+\) .*?( ring)?$")
# What the kernel keeps on /dev/fuse even with the ring ready.
DEV_FUSE_ONLY = {"INIT", "FORGET", "BATCH_FORGET", "INTERRUPT"}


def requests(stderr):
    """[(opcode name, over the ring?)] from a -d trace."""
    out = []
    for line in stderr.splitlines():
        m = REQ.match(line)
        if m:
            out.append((m.group(1), bool(m.group(2))))
    return out


def finish(h):
    """Unmount, let the server exit, and return its whole -d trace (the
    trace goes away with the mount's context)."""
    f4util.umount(str(h))
    h.proc.wait(60)
    return h.stderr()


def workload(mnt):
    """Something of every kind: creates, writes big and small, reads,
    renames, links, xattrs, directories, a symlink, truncation, removal."""
    os.mkdir(os.path.join(mnt, "d"))
    big = os.urandom(3 * 1024 * 1024 + 123)
    with open(os.path.join(mnt, "d", "big"), "wb") as f:
        f.write(big)
        f.flush()
        os.fsync(f.fileno())
    for i in range(50):
        with open(os.path.join(mnt, "d", "f%02d" % i), "w") as f:
            f.write("file %d\n" % i * (i + 1))
    os.rename(os.path.join(mnt, "d", "f00"), os.path.join(mnt, "renamed"))
    os.link(os.path.join(mnt, "renamed"), os.path.join(mnt, "hardlink"))
    os.symlink("d/big", os.path.join(mnt, "sym"))
    os.setxattr(os.path.join(mnt, "renamed"), "user.k", b"v" * 300)
    os.truncate(os.path.join(mnt, "d", "f01"), 3)
    os.unlink(os.path.join(mnt, "d", "f02"))
    with open(os.path.join(mnt, "sym"), "rb") as f:
        assert f.read() == big
    assert sorted(os.listdir(os.path.join(mnt, "d")))[:3] == ["big", "f01", "f03"]
    return big


def test_requests_travel_over_the_ring(tmp_path):
    """With enable_uring on, every request but INIT, FORGET and INTERRUPT
    arrives in a ring entry, the results are right, and the image is clean
    and the same to the kernel's ext4."""
    img = mkimg(tmp_path / "ring.img", "64M")
    with f4util.uring_enabled(True):
        with fuse4fs_mount(str(img), ["uring=on"], ro=False, extra_args=["-d"]) as h:
            workload(str(h))
            snap = snapshot(str(h))
            trace = finish(h)
    reqs = requests(trace)
    assert "io_uring:" in trace, "no ring set up:\n" + trace[-2000:]
    on_ring = {op for op, ring in reqs if ring}
    off_ring = [op for op, ring in reqs if not ring and op not in DEV_FUSE_ONLY]
    assert not off_ring, "requests that came over /dev/fuse: %s" % sorted(set(off_ring))
    for op in ("LOOKUP", "CREATE", "WRITE", "READ", "RENAME", "LINK", "SYMLINK",
               "SETXATTR", "SETATTR", "UNLINK", "MKDIR", "FSYNC", "RELEASE", "DESTROY"):
        assert op in on_ring, "%s never came over the ring (saw %s)" % (op, sorted(on_ring))
    assert not any(ring for op, ring in reqs if op in DEV_FUSE_ONLY)
    assert e2fsck(str(img)).returncode == 0
    with kernel_mount(str(img)) as k:
        assert_same(snapshot(k), snap, "kernel vs fuse4fs over io_uring")


@pytest.mark.parametrize("how", ["uring=off", "param off"])
def test_dev_fuse_when_not_wanted_or_not_offered(tmp_path, how):
    """uring=off, or a kernel that does not offer the ring (enable_uring
    off, with the default uring=auto): everything goes over /dev/fuse."""
    img = mkimg(tmp_path / "dev.img", "64M")
    opts = ["uring=off"] if how == "uring=off" else ["uring=auto"]
    with f4util.uring_enabled(how != "param off"):
        with fuse4fs_mount(str(img), opts, ro=False, extra_args=["-d"]) as h:
            workload(str(h))
            trace = finish(h)
    reqs = requests(trace)
    assert reqs and not any(ring for _, ring in reqs)
    assert any(op == "WRITE" for op, _ in reqs)
    assert e2fsck(str(img)).returncode == 0


def test_uring_on_refused_when_the_kernel_does_not_offer_it(tmp_path, mountpoint):
    """uring=on with enable_uring off: a clear error naming the switch,
    the mount-failure exit status (32, as iomap=on), nothing mounted, the
    image untouched."""
    img = mkimg(tmp_path / "refused.img", "64M")
    before = open(img, "rb").read()
    with f4util.uring_enabled(False):
        cp = subprocess.run([os.environ["FUSE4FS"], "-f", str(img), mountpoint,
                             "-o", "uring=on"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 32, cp
    assert "enable_uring" in cp.stderr and "uring=auto" in cp.stderr, cp.stderr
    assert not f4util.is_mounted(mountpoint)
    assert open(img, "rb").read() == before


def test_bad_uring_value(tmp_path, mountpoint):
    img = mkimg(tmp_path / "bad.img", "64M")
    cp = subprocess.run([os.environ["FUSE4FS"], str(img), mountpoint, "-o", "uring=yes"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1
    assert "uring=yes: expected auto, on or off" in cp.stderr


@pytest.mark.parametrize("threads", [1, 4, 9])
def test_parallel_clients_on_every_queue(tmp_path, threads):
    """Clients pinned to each CPU (so every queue is used) read and write
    their own files at once, with as few as one entry per queue: every byte
    comes back, e2fsck is clean."""
    ncpu = os.cpu_count() or 1
    img = mkimg(tmp_path / "par.img", "256M")
    errors = []
    with f4util.uring_enabled(True):
        with fuse4fs_mount(str(img), ["uring=on", "threads=%d" % threads], ro=False) as h:
            mnt = str(h)

            def client(i):
                try:
                    os.sched_setaffinity(0, {i % ncpu})
                    data = os.urandom(64 * 1024) * 16
                    p = os.path.join(mnt, "c%d" % i)
                    for rnd in range(3):
                        with open(p, "wb") as f:
                            f.write(data)
                        with open(p, "rb") as f:
                            if f.read() != data:
                                errors.append("client %d round %d: data differs" % (i, rnd))
                except Exception as e:  # reported below
                    errors.append("client %d: %r" % (i, e))

            ts = [threading.Thread(target=client, args=(i,)) for i in range(2 * ncpu + 2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
    assert not errors, errors
    assert e2fsck(str(img)).returncode == 0


def test_killed_server_fails_requests_instead_of_hanging(tmp_path):
    """kill -9 of a ring-served server: the waiting caller gets an error
    (ENOTCONN) within seconds, and the mount can be removed."""
    img = mkimg(tmp_path / "kill.img", "64M")
    with f4util.uring_enabled(True):
        with fuse4fs_mount(str(img), ["uring=on", "nosync_unmount"], ro=False,
                           check_exit=False) as h:
            mnt = str(h)
            with open(os.path.join(mnt, "f"), "wb") as f:
                f.write(b"x" * 65536)
            result = {}

            def reader():
                try:
                    while True:
                        with open(os.path.join(mnt, "f"), "rb") as f:
                            f.read()
                except OSError as e:
                    result["errno"] = e.errno

            t = threading.Thread(target=reader, daemon=True)
            t.start()
            time.sleep(0.3)
            os.kill(h.proc.pid, signal.SIGKILL)
            t.join(20)
            assert not t.is_alive(), "a reader hung after the server was killed"
            # ENOTCONN, ECONNABORTED, or ECANCELED for a request caught in a ring
            assert result.get("errno") in (107, 103, 125), result
            h.proc.wait(10)
    assert not f4util.is_mounted(mnt)


@pytest.mark.parametrize("seed", [3, 11])
def test_random_sequence_matches_ext4_over_the_ring(seed, f4_workdir, monkeypatch):
    """Two seeds of the differential test (see test_differential.py) with
    every request over io_uring, whatever the suite's transport."""
    monkeypatch.setenv("FUSE4FS_TRANSPORT", "uring")
    with f4util.uring_enabled(True):
        out = opgen.run_seed(seed, 300, binary=os.environ["FUSE4FS"], workdir=f4_workdir)
    assert out.ok, out.report()
