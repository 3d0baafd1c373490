"""Fixtures shared by the fuse4fs test modules.

  fuse4fs_bin     path of the server under test (env FUSE4FS); skips when unset
  sanitized       True when FUSE4FS_SANITIZED=1 (binary built with ASan+UBSan)
  require_root    skips unless running as root (mounts, loop devices, mknod)
  f4_workdir      a session-wide scratch directory (mode 0755) for images
  ext_images      f4util.ImageCache: ext_images.get("ext4") builds once per session
  mountpoint      a fresh, world-traversable empty directory; checked at teardown

FUSE4FS_TRANSPORT=uring|classic makes every fuse4fs mount take its requests
over io_uring (the session turns the fuse module's enable_uring on) or over
/dev/fuse reads; unset, fuse4fs picks (io_uring when the kernel offers it).

At the end of the session any mount left on a directory this process made
(f4util.make_public_dir, used for every mountpoint) is removed and reported
as an error, and loop devices backed by files in f4_workdir are detached.
Other processes' mounts are never touched, even with the same name prefixes.
"""

import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import f4util  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def fuse4fs_bin():
    b = os.environ.get("FUSE4FS")
    if not b:
        pytest.skip("FUSE4FS is not set: point it at the fuse4fs binary under test "
                    "(e.g. FUSE4FS=$PWD/_build/fuse4fs/fuse4fs)")
    if not os.access(b, os.X_OK):
        pytest.fail("FUSE4FS=%s is not an executable file" % b)
    return b


@pytest.fixture(scope="session")
def sanitized():
    return os.environ.get("FUSE4FS_SANITIZED") == "1"


@pytest.fixture(scope="session")
def require_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (mount, loop devices, mknod, chown)")


@pytest.fixture(scope="session")
def f4_workdir():
    d = f4util.make_public_dir("f4work-")
    yield d
    _cleanup_under(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def ext_images(f4_workdir, require_root):
    return f4util.ImageCache(f4_workdir)


@pytest.fixture
def mountpoint():
    d = f4util.make_public_dir("f4mp-")
    yield d
    if f4util.is_mounted(d):
        f4util.fuse_abort(d)
        f4util.umount(d)
        try:
            os.rmdir(d)
        except OSError:
            pass
        pytest.fail("test left %s mounted (unmounted it now)" % d)
    try:
        os.rmdir(d)
    except OSError:
        pass


def _our_mounts():
    """Mounts on directories this test process created (other sessions may
    use the same helpers and directory prefixes at the same time)."""
    return [e for e in f4util.mountinfo() if e["mnt"] in f4util.CREATED_DIRS]


def _cleanup_under(workdir):
    """Detach loop devices whose backing file lives in workdir."""
    left = []
    cp = subprocess.run(["losetup", "-a", "-O", "NAME,BACK-FILE", "-n", "-l"],
                        capture_output=True, text=True)
    for line in cp.stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].strip().startswith(workdir):
            left.append(line.strip())
            for e in f4util.mountinfo():
                if e["source"] == parts[0]:
                    f4util.umount(e["mnt"])
            subprocess.run(["losetup", "-d", parts[0]], capture_output=True)
    return left


@pytest.fixture(scope="session", autouse=True)
def _transport():
    """FUSE4FS_TRANSPORT=uring: the kernel must offer FUSE over io_uring for
    the whole session (and gets its setting back afterwards)."""
    if f4util.transport() != "uring" or os.geteuid() != 0:
        yield
        return
    if f4util.uring_param() is None:
        pytest.exit("FUSE4FS_TRANSPORT=uring, but this kernel has no %s"
                    % f4util.URING_PARAM, returncode=1)
    with f4util.uring_enabled(True):
        yield


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_mounts():
    before = {e["mnt"] for e in _our_mounts()}
    yield
    leaked = [e for e in _our_mounts() if e["mnt"] not in before]
    for e in reversed(leaked):
        if e["fstype"].startswith("fuse"):
            f4util.fuse_abort(e["mnt"])
        f4util.umount(e["mnt"])
        try:
            os.rmdir(e["mnt"])
        except OSError:
            pass
    if leaked:
        pytest.fail("mounts left behind at the end of the session (now removed): %s"
                    % ", ".join("%s (%s)" % (e["mnt"], e["fstype"]) for e in leaked))
