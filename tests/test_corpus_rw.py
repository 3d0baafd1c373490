"""Read-write robustness on damaged images.

Every image of the e2fsprogs test corpus is mounted read-write (one test
each).  fuse4fs may refuse an image, with a clear message and exit code 32;
once it has mounted one, a short write workload runs against it under a
timeout.  Any single operation may fail with an errno a damaged ext4 gives
(EIO, EUCLEAN, ENOSPC, ...), but the server must not crash, hang, print a
sanitizer report, or exit with anything but 0 after the unmount.
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import f4util as U  # noqa: E402

CORPUS = "/work/shared/corpus/e2fsprogs-images"
if not os.path.isdir(CORPUS):
    CORPUS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "..", "..", "shared", "corpus",
                                           "e2fsprogs-images"))


def _images():
    try:
        names = sorted(n for n in os.listdir(CORPUS) if n.endswith((".img.gz", ".img.bz2")))
    except OSError:
        names = []
    return names or ["<no corpus>"]


IMAGES = _images()

WORKLOAD_TIMEOUT = 30

# What a damaged (or full, or oddly featured) ext4 may answer.
ALLOWED = {"EIO", "EUCLEAN", "EBADMSG", "ENOSPC", "EROFS", "EFBIG", "ENOENT", "EEXIST",
           "ENOTDIR", "EISDIR", "ENOTEMPTY", "EMLINK", "ENODATA", "EOVERFLOW",
           "ENAMETOOLONG", "E2BIG", "EOPNOTSUPP", "ENOTSUP", "ELOOP", "EDQUOT"}

WORKLOAD = r'''
import errno, json, os, sys
m = sys.argv[1]
P = lambda *a: os.path.join(m, *a)
res = []

def t(name, fn, *a):
    try:
        fn(*a)
        res.append([name, "ok"])
        return True
    except OSError as e:
        res.append([name, errno.errorcode.get(e.errno, str(e.errno))])
        return False

def write(p, data, mode="wb"):
    with open(p, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

def read(p, n=65536):
    with open(p, "rb") as f:
        return f.read(n)

def readback(p, data):
    with open(p, "rb") as f:
        got = f.read()
    if got != data:
        res.append(["mismatch", p])

# Look around first: reading a damaged tree must not take the server down.
names = []
t("listdir-root", lambda: names.extend(sorted(os.listdir(m))))
for n in names[:40]:
    p = P(n)
    t("lstat " + n, os.lstat, p)
    if os.path.isfile(p) and not os.path.islink(p):
        t("read " + n, read, p)
    elif os.path.isdir(p) and not os.path.islink(p):
        t("listdir " + n, os.listdir, p)
t("statvfs", os.statvfs, m)

small = b"small file\n"
big = bytes(range(256)) * 400          # 100 KiB
if t("create small", write, P("f4rw-small"), small):
    t("readback small", readback, P("f4rw-small"), small)
if t("create big", write, P("f4rw-big"), big):
    t("readback big", readback, P("f4rw-big"), big)
    t("append big", write, P("f4rw-big"), b"tail", "ab")
t("mkdir", os.mkdir, P("f4rw-dir"))
for i in range(8):
    t("create in dir %d" % i, write, P("f4rw-dir", "n%d" % i), b"%d\n" % i)
t("rename file", os.rename, P("f4rw-small"), P("f4rw-dir", "moved"))
t("rename dir", os.rename, P("f4rw-dir"), P("f4rw-dir2"))
t("symlink", os.symlink, "f4rw-big", P("f4rw-link"))
t("setxattr", os.setxattr, P("f4rw-big"), "user.f4rw", b"value")
t("truncate", os.truncate, P("f4rw-big"), 5000)
t("unlink", os.unlink, P("f4rw-dir2", "n3"))
t("unlink big", os.unlink, P("f4rw-big"))
t("rmdir nonempty", os.rmdir, P("f4rw-dir2"))
# Change something that was there before.
for n in names[:10]:
    p = P(n)
    if os.path.isfile(p) and not os.path.islink(p) and n != "lost+found":
        t("append to " + n, write, p, b"appended by the corpus test\n", "ab")
        break
for n in names[:10]:
    p = P(n)
    if os.path.isdir(p) and not os.path.islink(p) and n != "lost+found":
        t("create in " + n, write, os.path.join(p, "f4rw-new"), small)
        break
t("statvfs after", os.statvfs, m)
fd = os.open(m, os.O_RDONLY)
try:
    t("fsync root dir", os.fsync, fd)
finally:
    os.close(fd)
print(json.dumps(res))
'''


@pytest.mark.parametrize("name", IMAGES)
def test_corpus_read_write(name, tmp_path, fuse4fs_bin, require_root, sanitized):
    if name == "<no corpus>":
        pytest.skip("no corpus at %s" % CORPUS)
    img = str(tmp_path / name.rsplit(".", 1)[0])
    U.decompress(os.path.join(CORPUS, name), img)
    timeout = WORKLOAD_TIMEOUT * (3 if sanitized else 1)
    sb_before = _superblock_ok(img)
    mounted = False
    try:
        with U.fuse4fs_mount(img, ro=False, timeout=30, exit_timeout=30,
                             watchdog=timeout + 60) as h:
            mounted = True
            mnt = str(h)
            cp = U.run([U.PYTHON, "-c", WORKLOAD, mnt], check=False,
                       timeout=timeout + 30)
            if cp.returncode != 0:
                # run() raises on a timeout; a nonzero exit is a crash of
                # the workload itself (for instance ENOTCONN left unhandled).
                raise AssertionError("workload exited %d:\n%s%s"
                                     % (cp.returncode, U._tail(cp.stdout), U._tail(cp.stderr)))
            results = json.loads(cp.stdout.strip().splitlines()[-1])
            bad = [r for r in results if r[1] != "ok" and r[1] not in ALLOWED]
            assert not bad, ("operations failed with unexpected errors on %s: %s\n"
                             "all results: %s\nserver stderr:\n%s"
                             % (name, bad, results, U._tail(h.stderr())))
    except U.MountError as e:
        # Refusing the image is allowed, with a message and mount(8)'s code.
        assert e.returncode is not None, (
            "fuse4fs mounted %s but the mount is unusable (the kernel's ext4 refuses "
            "such an image at mount time):\n%s" % (name, e))
        assert e.returncode in (32,), "fuse4fs exited %s on %s:\n%s" % (
            e.returncode, name, e.stderr)
        assert e.stderr.strip(), "fuse4fs refused %s without saying why" % name
        assert not U.sanitizer_report(e.stderr), e.stderr
    if mounted and sb_before:
        # Do no harm: what e2fsprogs could open before, it can open after.
        assert _superblock_ok(img), (
            "after a read-write session on %s, dumpe2fs can no longer read the "
            "superblock:\n%s" % (name, U.run(["dumpe2fs", "-h", img], check=False).stderr))


def _superblock_ok(img):
    return U.run(["dumpe2fs", "-h", img], check=False).returncode == 0
