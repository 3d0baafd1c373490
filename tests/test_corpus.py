"""Damaged images: fuse4fs -o ro must never hang, crash or write.

For every image of the e2fsprogs test corpus (decompressed to a temporary
file; the corpus itself is never touched) fuse4fs either refuses to mount
(non-zero exit, a message on stderr, no mount left behind) or mounts it
read-only.  A mounted tree is walked in a child process with a time limit:
every directory listed, every inode lstat()ed, every regular file read,
every symlink read, every xattr read.  Any single operation may fail with
an error (EIO, EUCLEAN, ENOENT, ...), but nothing may hang, the server must
exit cleanly after the unmount without a crash or a sanitizer report, and
the image must be byte-identical afterwards.
"""

import glob
import json
import os
import subprocess
import tempfile
import time

import pytest

import f4util

CORPUS = os.environ.get("F4_CORPUS", "/work/shared/corpus/e2fsprogs-images")
IMAGES = sorted(glob.glob(os.path.join(CORPUS, "*.img.gz")) +
                glob.glob(os.path.join(CORPUS, "*.img.bz2")))

if not os.environ.get("FUSE4FS"):
    pytest.skip("FUSE4FS is not set: it must name the fuse4fs binary under test",
                allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("mounting needs root", allow_module_level=True)
if not IMAGES:
    pytest.skip("no corpus images in %s" % CORPUS, allow_module_level=True)

SLOW = 3 if os.environ.get("FUSE4FS_SANITIZED") == "1" else 1
MOUNT_TIMEOUT = 15 * SLOW      # from start to a stat()able mount
WALK_TIMEOUT = 60 * SLOW       # the whole tree walk
EXIT_TIMEOUT = 15 * SLOW       # from unmount to server exit

# The walker runs in its own process: a hung request then cannot hang the
# test run (the process is killed and the connection aborted), and a
# SIGBUS or similar stays in the child.  It prints "> op path" before each
# operation so that a hang can be pinned to one operation, and a final
# "DONE {json}" line with counts.
WALKER = r"""
import errno, json, os, stat, sys
mnt = sys.argv[1]
MAX_ENTRIES, MAX_FILE, MAX_TOTAL, MAX_DEPTH = 50000, 64 << 20, 512 << 20, 64
counts = {"dirs": 0, "entries": 0, "files": 0, "symlinks": 0, "bytes": 0,
          "xattrs": 0, "errors": {}}
examples = []
total = 0

def say(op, path):
    sys.stdout.write("> %s %r\n" % (op, path))
    sys.stdout.flush()

def fail(op, path, e):
    key = "%s:%s" % (op, errno.errorcode.get(e.errno, e.errno))
    counts["errors"][key] = counts["errors"].get(key, 0) + 1
    if len(examples) < 20:
        examples.append("%s %r: %s" % (op, path, e))

def xattrs(path):
    say("listxattr", path)
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        fail("listxattr", path, e)
        return
    for n in names:
        say("getxattr " + n, path)
        try:
            os.getxattr(path, n, follow_symlinks=False)
            counts["xattrs"] += 1
        except OSError as e:
            fail("getxattr", path, e)

def read_file(path, size):
    global total
    say("open", path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        fail("open", path, e)
        return
    try:
        pos = 0
        while pos < MAX_FILE and total < MAX_TOTAL:
            say("read@%d" % pos, path)
            try:
                b = os.pread(fd, 1 << 20, pos)
            except OSError as e:
                fail("read", path, e)
                break
            if not b:
                break
            pos += len(b)
            total += len(b)
            counts["bytes"] += len(b)
        for whence, name in ((os.SEEK_DATA, "SEEK_DATA"), (os.SEEK_HOLE, "SEEK_HOLE"))[:2 if size else 0]:
            say(name, path)
            try:
                os.lseek(fd, 0, whence)
            except OSError as e:
                fail(name, path, e)
    finally:
        os.close(fd)

say("statvfs", mnt)
try:
    os.statvfs(mnt)
except OSError as e:
    fail("statvfs", mnt, e)
seen = set()
stack = [(mnt, 0)]
xattrs(mnt)
while stack and counts["entries"] < MAX_ENTRIES:
    d, depth = stack.pop()
    say("list", d)
    try:
        with os.scandir(d) as it:
            names = [e.name for e in it]
    except OSError as e:
        fail("list", d, e)
        continue
    counts["dirs"] += 1
    for name in names:
        p = os.path.join(d, name)
        counts["entries"] += 1
        say("lstat", p)
        try:
            st = os.lstat(p)
        except OSError as e:
            fail("lstat", p, e)
            continue
        xattrs(p)
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) not in seen and depth < MAX_DEPTH:
                seen.add((st.st_dev, st.st_ino))
                stack.append((p, depth + 1))
        elif stat.S_ISREG(st.st_mode):
            counts["files"] += 1
            read_file(p, st.st_size)
        elif stat.S_ISLNK(st.st_mode):
            counts["symlinks"] += 1
            say("readlink", p)
            try:
                os.readlink(p)
            except OSError as e:
                fail("readlink", p, e)
counts["examples"] = examples
print("DONE " + json.dumps(counts), flush=True)
"""


def _walk(mnt):
    """Run the walker; returns (summary dict or None, problem or None)."""
    fd, out_path = tempfile.mkstemp(prefix="f4walk-")
    os.close(fd)
    try:
        return _walk_logged(mnt, out_path)
    finally:
        os.unlink(out_path)


def _walk_logged(mnt, out_path):
    with open(out_path, "w+") as out:
        p = subprocess.Popen([f4util.PYTHON, "-c", WALKER, mnt], stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            p.wait(timeout=WALK_TIMEOUT)
        except subprocess.TimeoutExpired:
            f4util.fuse_abort(mnt)          # unblock the walker first
            p.kill()
            p.wait(timeout=30)
            out.seek(0)
            lines = out.read().splitlines()
            last = [l for l in lines if l.startswith("> ")][-1:] or ["(nothing)"]
            return None, ("the walk did not finish within %ds; last operation: %s"
                          % (WALK_TIMEOUT, last[0][2:]))
        out.seek(0)
        text = out.read()
    done = [l for l in text.splitlines() if l.startswith("DONE ")]
    if p.returncode != 0 or not done:
        last = [l for l in text.splitlines() if l.startswith("> ")][-1:] or ["(nothing)"]
        return None, ("the walker died (exit %s) during %s:\n%s"
                      % (p.returncode, last[0][2:], f4util._tail(
                          "\n".join(l for l in text.splitlines() if not l.startswith("> ")), 2000)))
    return json.loads(done[0][5:]), None


def _image_id(path):
    return os.path.basename(path).split(".img")[0]


@pytest.mark.parametrize("src", IMAGES, ids=[_image_id(p) for p in IMAGES])
def test_damaged_image(src, tmp_path, fuse4fs_bin, record_property):
    img = f4util.decompress(src, str(tmp_path / "image"))
    before = f4util.sha256_file(img)
    mnt = f4util.make_public_dir("f4fmnt-")
    problems = []
    outcome = None
    tried = []
    try:
        for opts in (["ro"], ["ro", "norecovery"]):
            tried.append(",".join(opts))
            t0 = time.monotonic()
            try:
                with f4util.fuse4fs_mount(img, opts[1:], mnt=mnt, timeout=MOUNT_TIMEOUT,
                                          exit_timeout=EXIT_TIMEOUT,
                                          watchdog=WALK_TIMEOUT + 60) as h:
                    summary, problem = _walk(h.mnt)
                    if problem:
                        problems.append(problem)
                    else:
                        outcome = "mounted -o %s: %s" % (",".join(opts), json.dumps(
                            {k: v for k, v in summary.items() if k != "examples"}))
            except f4util.MountError as e:
                if e.kind in ("root-stat", "root-hung"):
                    # mounted, but the root inode is unusable
                    if e.kind == "root-hung":
                        problems.append(str(e))
                    problems.extend(getattr(e, "__notes__", []))
                    outcome = "mounted -o %s, stat of the root failed: %s" % (
                        ",".join(opts), e)
                    break
                # Refusing to mount is fine, when done properly.
                err = e.stderr or ""
                if e.kind == "timeout":
                    problems.append("did not mount and did not exit within %ds (hang)"
                                    % MOUNT_TIMEOUT)
                elif e.returncode < 0:
                    problems.append("crashed before mounting (signal %d)" % -e.returncode)
                elif e.returncode == 0:
                    problems.append("exited 0 without mounting")
                elif not err.strip():
                    problems.append("refused to mount (exit %d) without a message on stderr"
                                    % e.returncode)
                san = f4util.sanitizer_report(err)
                if san:
                    problems.append("sanitizer report:\n" + "\n".join(san[:40]))
                if f4util.is_mounted(mnt):
                    problems.append("a mount was left behind after the refusal")
                outcome = "refused -o %s (exit %s, %.1fs): %s" % (
                    ",".join(opts), e.returncode, time.monotonic() - t0,
                    err.strip().splitlines()[-1][:200] if err.strip() else "")
                lowered = err.lower()
                if "norecovery" not in opts and not problems and \
                        ("journal" in lowered or "recover" in lowered):
                    continue        # try again without journal replay
            except AssertionError as e:
                # server exited badly, sanitizer output, or the mount stayed
                problems.append(str(e))
            break
    finally:
        if f4util.is_mounted(mnt):
            f4util.fuse_abort(mnt)
            f4util.umount(mnt)
            problems.append("mount left behind (removed by the test)")
        try:
            os.rmdir(mnt)
        except OSError:
            pass
    after = f4util.sha256_file(img)
    if after != before:
        problems.append("the image changed during a read-only mount")
    record_property("outcome", outcome)
    print("%s: %s" % (_image_id(src), outcome))
    if problems:
        pytest.fail("%s (tried -o %s):\n%s" % (_image_id(src), " then -o ".join(tried),
                                              "\n".join(problems)), pytrace=False)
