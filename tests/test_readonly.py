"""fuse4fs -o ro serves ext2/3/4 images exactly as the in-kernel ext4 driver.

The oracle is the kernel: each image is mounted read-only on a read-only
loop device with the in-kernel ext4 driver, everything observable is
recorded (f4util.snapshot), and the same is recorded through fuse4fs.  The
image must be byte-identical afterwards and e2fsck -fn clean.
"""

import errno
import hashlib
import json
import mmap
import os
import random
import subprocess
import threading
import time
import zlib

import pytest

import f4util
from f4util import MiB, GiB

if not os.environ.get("FUSE4FS"):
    pytest.skip("FUSE4FS is not set: it must name the fuse4fs binary under test "
                "(e.g. FUSE4FS=_build/fuse4fs/fuse4fs)", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("these tests mount images and need root", allow_module_level=True)

READ_FORMATS = ["ext2", "ext3", "ext4", "ext4-inline", "ext4-1k", "ext4-128"]
EXT4_INLINE_DATA_FL = 0x10000000


@pytest.fixture(scope="module")
def kernel_snap(ext_images):
    """kernel_snap(fmt): the kernel's snapshot of that format's image (cached)."""
    cache = {}

    def get(fmt):
        if fmt not in cache:
            img = ext_images.get(fmt)
            with f4util.kernel_mount(img.path) as m:
                cache[fmt] = f4util.snapshot(m)
            assert f4util.sha256_file(img.path) == img.sha256, "kernel ro mount changed the image"
            _check_reference(fmt, cache[fmt])
        return cache[fmt]
    return get


def _check_reference(fmt, snap):
    """The reference must actually contain what the comparison is meant to
    cover; otherwise a passing comparison would prove nothing."""
    types = {r.get("type") for r in snap.values()}
    missing = {"reg", "dir", "lnk", "chr", "blk", "fifo", "sock"} - types
    assert not missing, "%s image lacks inode types %s" % (fmt, missing)
    holes = [p for p, r in snap.items()
             if r.get("type") == "reg" and isinstance(r.get("seek"), list)
             and r["size"] > 0 and sum(s[1] - s[0] for s in r["seek"] if len(s) == 2) < r["size"]]
    assert len(holes) >= 5, "%s image has too few sparse files: %s" % (fmt, holes)
    assert snap["hardlinks/one"]["nlink"] == 3
    assert snap["hardlinks/one"]["ino"] == snap["hardlinks/sub/three"]["ino"]
    assert len(snap["symlinks/len1000"]["target"]) == 1000
    assert snap["owners/u100000-g100000"]["uid"] == 100000
    big = snap["xattrs/big"]["xattrs"].get("user.big", b"")
    assert len(big) == (700 if fmt == "ext4-1k" else 3000), "big xattr missing"
    assert snap["sparse/big-5G"]["size"] > 4 * GiB
    acl = [p for p, r in snap.items() if "system.posix_acl_access" in r.get("xattrs", {})]
    assert acl, "%s image carries no ACLs" % fmt
    assert snap["devices/chr-300-70000"]["rdev"] == "300:70000"
    nsec = [p for p, r in snap.items() if isinstance(r.get("mtime"), int) and r["mtime"] % 10**9]
    if fmt == "ext4-128":
        assert not nsec, "128-byte inodes cannot hold nanoseconds"
    else:
        assert len(nsec) > 50, "%s image: nanosecond timestamps did not reach the image" % fmt
        assert any(r.get("mtime", 0) > (1 << 31) * 10**9 for r in snap.values()), \
            "%s image: no timestamp after 2038" % fmt
    assert any(isinstance(r.get("mtime"), int) and r["mtime"] < 0 for r in snap.values())


def _debugfs_flags(image, path):
    cp = f4util.run(["debugfs", "-R", 'stat "/%s"' % path, image])
    for tok in cp.stdout.split("Flags:")[1:2]:
        return int(tok.split()[0], 16)
    raise AssertionError("debugfs stat %s: no flags in\n%s" % (path, cp.stdout))


def _kernel_seek_anomaly(ref, diff_line):
    """The kernel answers SEEK_HOLE with ENOENT (which lseek must never
    return) for an inline-data inode whose i_size exceeds its inline data,
    as mkfs -d makes for a sparse file without data.  Such a seek map is not
    an oracle; the file's bytes are still compared."""
    for path, rec in ref.items():
        seek = rec.get("seek")
        if isinstance(seek, str) and seek.endswith("ENOENT") and \
                diff_line.startswith("%r: seek:" % path):
            return True
    return False


# ---------------------------------------------------------------------------
# The whole tree, every field
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", READ_FORMATS)
def test_tree_matches_kernel(fmt, ext_images, kernel_snap, fuse4fs_bin):
    img = ext_images.get(fmt)
    if fmt == "ext4-inline":
        # make sure the image really has inline files and directories
        for p in ("inline/s30", "inline/s100", "inline/tiny-dir", "inline/empty-dir"):
            assert _debugfs_flags(img.path, p) & EXT4_INLINE_DATA_FL, "%s is not inline" % p
    before = f4util.sha256_file(img.path)
    assert before == img.sha256
    ref = kernel_snap(fmt)
    with f4util.fuse4fs_mount(img.path) as h:
        got = f4util.snapshot(h.mnt)
    problems = []
    diffs = [d for d in f4util.diff_snapshots(ref, got) if not _kernel_seek_anomaly(ref, d)]
    if diffs:
        problems.append("differences from the kernel: " + f4util.format_diffs(diffs))
    after = f4util.sha256_file(img.path)
    if after != before:
        problems.append("the image was modified by a read-only mount "
                        "(sha256 %s -> %s)" % (before, after))
    fsck = f4util.e2fsck(img.path)
    if fsck.returncode != 0:
        problems.append("e2fsck -fn is not clean after the mount (exit %d):\n%s"
                        % (fsck.returncode, f4util._tail(fsck.stdout + fsck.stderr)))
    if problems:
        pytest.fail("%s image through fuse4fs -o ro:\n%s" % (fmt, "\n\n".join(problems)),
                    pytrace=False)


@pytest.mark.parametrize("source", ["offset", "blockdev"])
def test_other_sources(source, ext_images, kernel_snap, fuse4fs_bin, tmp_path):
    """The same filesystem 1 MiB + 512 bytes into a larger file (-o offset=),
    and on a read-only loop device instead of a file."""
    img = ext_images.get("ext4")
    ref = kernel_snap("ext4")
    if source == "offset":
        prefix = 1048576 + 512
        path = str(tmp_path / "with-prefix.img")
        zero = bytes(65536)
        with open(path, "wb") as out, open(img.path, "rb") as fin:
            out.write(random.Random(9).randbytes(prefix))
            while True:
                b = fin.read(65536)
                if not b:
                    break
                if b == zero[:len(b)]:
                    out.seek(len(b), os.SEEK_CUR)
                else:
                    out.write(b)
            out.truncate(prefix + os.path.getsize(img.path))
        before = f4util.sha256_file(path)
        with f4util.fuse4fs_mount(path, ["offset=%d" % prefix]) as h:
            got = f4util.snapshot(h.mnt)
        assert f4util.sha256_file(path) == before, "image modified"
    else:
        loop = f4util.run(["losetup", "--find", "--show", "-r", img.path]).stdout.strip()
        try:
            with f4util.fuse4fs_mount(loop) as h:
                got = f4util.snapshot(h.mnt)
        finally:
            subprocess.run(["losetup", "-d", loop], capture_output=True)
        assert f4util.sha256_file(img.path) == img.sha256, "image modified"
    diffs = [d for d in f4util.diff_snapshots(ref, got) if not _kernel_seek_anomaly(ref, d)]
    if diffs:
        pytest.fail("%s: %s" % (source, f4util.format_diffs(diffs)), pytrace=False)


def test_mount_entry(ext_images, fuse4fs_bin):
    """The kernel sees a read-only fuse.fuse4fs mount."""
    img = ext_images.get("ext4")
    with f4util.fuse4fs_mount(img.path) as h:
        e = f4util.mount_entry(h.mnt)
        assert e is not None
        assert e["fstype"] == "fuse.fuse4fs", e
        assert "ro" in e["opts"].split(","), "mount is not read-only for the VFS: %s" % e
        st = os.statvfs(h.mnt)
        assert st.f_flag & os.ST_RDONLY


# ---------------------------------------------------------------------------
# Read patterns: random preads, EOF, mmap, O_DIRECT, parallel readers
# ---------------------------------------------------------------------------

def _read_plan(ref, seed):
    rng = random.Random(seed)
    plan = []
    files = sorted((p, r) for p, r in ref.items() if r.get("type") == "reg")
    lengths = [1, 2, 100, 511, 4095, 4096, 4097, 8192, 65536, 65537, 131072 + 5, 1 << 20]
    for path, r in files:
        size = r["size"]
        offs = {0, 1, max(0, size - 1), size, size + 1, size + 4096, size + (1 << 20)}
        segs = [s for s in r.get("seek", []) if len(s) == 2] if isinstance(r.get("seek"), list) else []
        for s, e in segs[:8]:
            offs.update((max(0, s - 1), s, max(0, e - 1), e, max(0, s - 100)))
        for _ in range(6):
            offs.add(rng.randrange(0, size + 200))
        for off in sorted(offs):
            n = rng.choice(lengths) if rng.random() < 0.7 else rng.randrange(1, 300000)
            plan.append(("pread", path, off, n))
        if 0 < size <= 8 * MiB:
            plan.append(("mmap", path, 0, size))
            plan.append(("chunked", path, 0, size))
        if size >= 4096:
            plan.append(("direct", path, 0, min(size, 256 * 1024) // 4096 * 4096))
    # mmap windows inside the 5 GiB sparse file, across the 4 GiB boundary
    plan.append(("mmap", "sparse/big-5G", 4 * GiB - MiB, 2 * MiB))
    plan.append(("mmap", "sparse/big-5G", GiB - MiB, 2 * MiB))
    plan.append(("direct", "sparse/big-5G", 4 * GiB - 8192, 16384))
    return plan


def _summ(data):
    """Length, digest and per-4K crcs of a read result (to locate a difference)."""
    return (len(data), hashlib.sha256(data).hexdigest(),
            tuple(zlib.crc32(data[i:i + 4096]) for i in range(0, len(data), 4096)))


def _do_reads(mnt, plan):
    out = []
    for kind, path, off, n in plan:
        p = os.path.join(mnt, path)
        try:
            if kind == "pread":
                fd = os.open(p, os.O_RDONLY)
                try:
                    out.append(_summ(os.pread(fd, n, off)))
                finally:
                    os.close(fd)
            elif kind == "mmap":
                out.append(None)    # filled in by _mmap_reads
            elif kind == "chunked":
                # sequential read() calls with odd sizes
                h = bytearray()
                sizes = [1, 7, 4095, 4096, 4097, 65536, 3, 1 << 20]
                with open(p, "rb", buffering=0) as f:
                    i = 0
                    while True:
                        b = f.read(sizes[i % len(sizes)])
                        i += 1
                        if not b:
                            break
                        h += b
                out.append(_summ(bytes(h)))
            elif kind == "direct":
                fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
                try:
                    buf = mmap.mmap(-1, max(n, 4096))
                    got = os.preadv(fd, [memoryview(buf)[:n]], off)
                    out.append(_summ(bytes(buf[:got])))
                    buf.close()
                finally:
                    os.close(fd)
        except OSError as e:
            out.append(("error", errno.errorcode.get(e.errno, e.errno)))
    return out


_MMAP_READER = r"""
import hashlib, json, mmap, os, sys, zlib
mnt = sys.argv[1]
for line in sys.stdin:
    path, off, n = json.loads(line)
    try:
        with open(os.path.join(mnt, path), "rb") as f:
            with mmap.mmap(f.fileno(), n, prot=mmap.PROT_READ, offset=off) as m:
                data = m[:]
        res = [len(data), hashlib.sha256(data).hexdigest(),
               [zlib.crc32(data[i:i + 4096]) for i in range(0, len(data), 4096)]]
    except OSError as e:
        res = ["error", e.errno]
    print(json.dumps(res), flush=True)
"""


def _mmap_reads(mnt, plan, out):
    """Do the plan's mmap reads in child processes: a server that fails a
    page-in kills the reader with SIGBUS, which must not kill the test run."""
    todo = [i for i, p in enumerate(plan) if p[0] == "mmap"]
    while todo:
        feed = "".join(json.dumps([plan[i][1], plan[i][2], plan[i][3]]) + "\n" for i in todo)
        cp = subprocess.run([f4util.PYTHON, "-c", _MMAP_READER, mnt], input=feed,
                            capture_output=True, text=True, timeout=300)
        lines = cp.stdout.splitlines()
        for i, line in zip(todo, lines):
            r = json.loads(line)
            out[i] = (r[0], errno.errorcode.get(r[1], r[1])) if r[0] == "error" else \
                (r[0], r[1], tuple(r[2]))
        done = len(lines)
        if done < len(todo):
            sig = -cp.returncode if cp.returncode < 0 else None
            out[todo[done]] = ("error", "reader died: %s" % (
                "signal %d" % sig if sig else "exit %d: %s" % (cp.returncode, cp.stderr[-300:])))
            done += 1
        todo = todo[done:]


@pytest.mark.parametrize("fmt", ["ext2", "ext4", "ext4-inline", "ext4-1k"])
def test_read_patterns(fmt, ext_images, kernel_snap, fuse4fs_bin):
    img = ext_images.get(fmt)
    ref = kernel_snap(fmt)
    plan = _read_plan(ref, seed=zlib.crc32(fmt.encode()))
    with f4util.kernel_mount(img.path) as m:
        want = _do_reads(m, plan)
        _mmap_reads(m, plan, want)
    with f4util.fuse4fs_mount(img.path) as h:
        got = _do_reads(h.mnt, plan)
        _mmap_reads(h.mnt, plan, got)
    assert sum(1 for w in want if w[0] == "error") < len(want) // 4, "reference reads mostly failed"
    diffs = []
    for (kind, path, off, n), w, g in zip(plan, want, got):
        if w == g:
            continue
        if w[0] == "error" or g[0] == "error" or w[0] != g[0]:
            detail = "kernel=%s fuse4fs=%s" % (w[:2], g[:2])
        else:
            first = next((i for i, (a, b) in enumerate(zip(w[2], g[2])) if a != b), None)
            detail = "kernel returned %d bytes, fuse4fs %d; first differing 4K chunk at offset %s" % (
                w[0], g[0], off + first * 4096 if first is not None else off + min(w[0], g[0]))
        diffs.append("%s %s off=%d len=%d: %s" % (kind, path, off, n, detail))
    assert not diffs, "%s: %d of %d reads differ from the kernel:\n%s" % (
        fmt, len(diffs), len(plan), "\n".join(diffs[:100]))
    assert f4util.sha256_file(img.path) == img.sha256


@pytest.mark.parametrize("threads", [None, 1])
def test_parallel_readers(threads, ext_images, kernel_snap, fuse4fs_bin):
    """Several threads reading different files at once see the kernel's bytes
    (with the default worker count, and with a single worker)."""
    img = ext_images.get("ext4")
    ref = kernel_snap("ext4")
    files = [(p, r) for p, r in sorted(ref.items())
             if r.get("type") == "reg" and r["size"] <= 4 * MiB]
    errors = []

    def reader(mnt, order):
        for p, r in order:
            try:
                fd = os.open(os.path.join(mnt, p), os.O_RDONLY)
                try:
                    d, notes = f4util.content_digest(fd, r["size"], None)
                finally:
                    os.close(fd)
            except OSError as e:
                errors.append("%s: %s" % (p, e))
                continue
            if d != r["digest"] or notes:
                errors.append("%s: content differs from the kernel %s" % (p, notes or ""))

    opts = ["threads=%d" % threads] if threads else []
    with f4util.fuse4fs_mount(img.path, opts) as h:
        readers = []
        for i in range(6):
            order = list(files)
            random.Random(i).shuffle(order)
            t = threading.Thread(target=reader, args=(h.mnt, order))
            readers.append(t)
            t.start()
        for t in readers:
            t.join(240)
        assert not any(t.is_alive() for t in readers), "readers hung"
    assert not errors, "\n".join(errors[:50])


# ---------------------------------------------------------------------------
# A directory with 100,000 entries
# ---------------------------------------------------------------------------

def _bigdir_probe(mnt, sample, missing):
    d = os.path.join(mnt, "big")
    names = []
    dino = {}
    with os.scandir(d) as it:
        for e in it:
            names.append(e.name)
            dino[e.name] = (e.inode(), f4util._dentry_kind(e))
    stats = {}
    for n in sample:
        try:
            stats["big/" + n] = f4util.stat_record(os.path.join(d, n))[0]
        except OSError as e:
            stats["big/" + n] = {"lstat": f4util._errname(e)}
    lookups = {}
    for n in missing:
        try:
            os.lstat(os.path.join(d, n))
            lookups[n] = "exists"
        except OSError as e:
            lookups[n] = f4util._errname(e)
    stats["big"] = f4util.stat_record(d)[0]
    return names, dino, stats, lookups


def test_big_directory(ext_images, fuse4fs_bin):
    img = ext_images.get("ext4-bigdir")
    rng = random.Random(5)
    sample = rng.sample(img.names, 2000) + ["subdir0", "subdir2", img.names[0], img.names[-1]]
    missing = ([n + "x" for n in rng.sample(img.names, 300)] +
               [n.upper() for n in rng.sample(img.names, 300)] +
               [n[:-1] for n in rng.sample(img.names, 300) if len(n) > 8] +
               ["f%06d" % (100000 + i) for i in range(100)] + ["", "nope"])
    missing = [n for n in missing if n and n not in set(img.names)]
    t0 = time.monotonic()
    with f4util.kernel_mount(img.path) as m:
        k_names, k_dino, k_stats, k_look = _bigdir_probe(m, sample, missing)
    t1 = time.monotonic()
    with f4util.fuse4fs_mount(img.path) as h:
        f_names, f_dino, f_stats, f_look = _bigdir_probe(h.mnt, sample, missing)
    t2 = time.monotonic()
    assert sorted(k_names) == img.names, "the kernel does not list the names that were created"
    assert set(k_look.values()) == {"ENOENT"}
    problems = []
    if sorted(f_names) != sorted(k_names):
        fs, ks = set(f_names), set(k_names)
        dup = len(f_names) - len(fs)
        problems.append("listing differs: %d entries (kernel %d), %d duplicates, missing %s, extra %s"
                        % (len(f_names), len(k_names), dup, sorted(ks - fs)[:10], sorted(fs - ks)[:10]))
    bad_ino = [n for n in k_dino if n in f_dino and f_dino[n] != k_dino[n]]
    if bad_ino:
        problems.append("%d entries differ in d_ino/d_type, e.g. %s: kernel %s fuse4fs %s"
                        % (len(bad_ino), bad_ino[0], k_dino[bad_ino[0]], f_dino[bad_ino[0]]))
    diffs = f4util.diff_snapshots(k_stats, f_stats)
    if diffs:
        problems.append("stat of sampled entries differs:\n" + "\n".join(diffs[:50]))
    bad_look = {n: v for n, v in f_look.items() if v != k_look[n]}
    if bad_look:
        problems.append("lookups of missing names: %s" % list(bad_look.items())[:20])
    if f4util.sha256_file(img.path) != img.sha256:
        problems.append("image modified")
    assert not problems, "100,000-entry directory (kernel %.1fs, fuse4fs %.1fs):\n%s" % (
        t1 - t0, t2 - t1, "\n".join(problems))


# ---------------------------------------------------------------------------
# Permissions as an unprivileged user
# ---------------------------------------------------------------------------

_PROBE = r"""
import errno, json, os, sys
mnt, ops = sys.argv[1], json.loads(sys.argv[2])
out = {}
for op in ops:
    kind, rel = op.split(" ", 1)
    p = os.path.join(mnt, rel)
    try:
        if kind == "read":
            with open(p, "rb") as f:
                out[op] = "ok:%d" % len(f.read())
        elif kind == "list":
            out[op] = "ok:%d" % len(os.listdir(p))
        elif kind == "stat":
            st = os.lstat(p)
            out[op] = "ok:%o" % st.st_mode
        elif kind == "write":
            os.close(os.open(p, os.O_WRONLY))
            out[op] = "ok"
        elif kind == "access-w":
            out[op] = "ok" if os.access(p, os.W_OK) else "denied"
        elif kind == "readlink":
            out[op] = "ok:%d" % len(os.readlink(p))
        elif kind == "listxattr":
            out[op] = "ok:" + ",".join(sorted(os.listxattr(p, follow_symlinks=False)))
        elif kind == "getxattr-trusted":
            out[op] = "ok:%d" % len(os.getxattr(p, "trusted.t1"))
        elif kind == "getxattr-user":
            out[op] = "ok:%d" % len(os.getxattr(p, "user.small"))
        else:
            out[op] = "bad op"
    except OSError as e:
        out[op] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""

PERM_EXPECT = {
    "read perm/secret": "EACCES",
    "read perm/acl-read": "ok:9",
    "read perm/acl-deny": "EACCES",
    "read perm/public": "ok:7",
    "read perm/group-read": "ok:11",
    "read perm/owner-nobody": "ok:16",
    "read perm/nobody-no-owner-bits": "EACCES",
    "list perm/closed-dir": "EACCES",
    "list perm/acl-dir": "ok:1",
    "list perm/exec-only-dir": "EACCES",
    "read perm/closed-dir/inner": "EACCES",
    "stat perm/closed-dir/inner": "EACCES",
    "read perm/acl-dir/inner": "ok:17",
    "read perm/exec-only-dir/inner": "ok:23",
    "write modes/file-0777": "EROFS",
    "access-w modes/file-0777": "denied",
    "read modes/file-0000": "EACCES",
    "list modes/dir-0000": "EACCES",
    "readlink symlinks/len100": "ok:100",
    "listxattr xattrs/small": "ok:security.s1,user.binary,user.empty,user.small",
    "getxattr-trusted xattrs/small": "ENODATA",
    "getxattr-user xattrs/small": "ok:1",
}
# What changes when ACLs are not enforced (fuse4fs -o noacl): only the mode
# bits count, and the group bits of an ACL'd file hold the ACL mask.  The
# kernel's ext4 no longer accepts noacl, so these entries are the oracle.
NOACL_CHANGES = {
    "read perm/acl-read": "EACCES",
    "read perm/acl-deny": "ok:9",
    "list perm/acl-dir": "EACCES",
    "read perm/acl-dir/inner": "EACCES",
}


@pytest.mark.parametrize("acl", ["acl", "noacl"])
def test_unprivileged_access(acl, ext_images, fuse4fs_bin):
    img = ext_images.get("ext4")
    ops = json.dumps(sorted(PERM_EXPECT))
    with f4util.kernel_mount(img.path) as m:
        want = f4util.run_as(65534, 65534, _PROBE, [m, ops])
    fopts = ["allow_other"] + (["noacl"] if acl == "noacl" else [])
    with f4util.fuse4fs_mount(img.path, fopts) as h:
        got = f4util.run_as(65534, 65534, _PROBE, [h.mnt, ops])
    bad_ref = {k: (want.get(k), v) for k, v in PERM_EXPECT.items() if want.get(k) != v}
    assert not bad_ref, "the kernel itself does not behave as this test expects " \
                        "(test bug): %s" % bad_ref
    if acl == "noacl":
        want.update(NOACL_CHANGES)
    diffs = ["%s: %s=%s fuse4fs=%s" % (k, "kernel" if k not in NOACL_CHANGES or acl == "acl"
                                       else "expected", want[k], got.get(k))
             for k in sorted(want) if got.get(k) != want[k]]
    assert not diffs, "uid 65534 on a -o %s mount:\n%s" % (acl, "\n".join(diffs))


# ---------------------------------------------------------------------------
# Read-only enforcement
# ---------------------------------------------------------------------------

def _write_attempts(mnt):
    P = lambda r: os.path.join(mnt, r)
    ops = [
        ("open O_WRONLY", lambda: os.close(os.open(P("files/one"), os.O_WRONLY))),
        ("open O_RDWR", lambda: os.close(os.open(P("files/one"), os.O_RDWR))),
        ("open O_TRUNC", lambda: os.close(os.open(P("files/one"), os.O_RDONLY | os.O_TRUNC))),
        ("open O_APPEND", lambda: os.close(os.open(P("files/one"), os.O_WRONLY | os.O_APPEND))),
        ("create", lambda: os.close(os.open(P("files/new"), os.O_CREAT | os.O_WRONLY, 0o644))),
        ("create O_EXCL", lambda: os.close(os.open(P("new"), os.O_CREAT | os.O_EXCL | os.O_RDONLY))),
        ("O_CREAT on existing, read-only", lambda: os.close(os.open(P("files/one"), os.O_CREAT | os.O_RDONLY))),
        ("O_TMPFILE", lambda: os.close(os.open(P("dirs"), os.O_TMPFILE | os.O_WRONLY, 0o600))),
        ("mkdir", lambda: os.mkdir(P("newdir"))),
        ("rmdir", lambda: os.rmdir(P("dirs/empty"))),
        ("unlink", lambda: os.unlink(P("files/one"))),
        ("unlink missing", lambda: os.unlink(P("files/missing"))),
        ("rename", lambda: os.rename(P("files/one"), P("files/one-renamed"))),
        ("symlink", lambda: os.symlink("x", P("newlink"))),
        ("link", lambda: os.link(P("files/one"), P("files/one-link"))),
        ("mknod fifo", lambda: os.mkfifo(P("newfifo"))),
        ("mknod chr", lambda: os.mknod(P("newchr"), 0o600 | 0o020000, os.makedev(1, 3))),
        ("chmod", lambda: os.chmod(P("files/one"), 0o600)),
        ("chown", lambda: os.chown(P("files/one"), 1, 1)),
        ("lchown symlink", lambda: os.chown(P("symlinks/len10"), 1, 1, follow_symlinks=False)),
        ("utime", lambda: os.utime(P("files/one"), ns=(1, 1))),
        ("utime now", lambda: os.utime(P("files/one"))),
        ("truncate", lambda: os.truncate(P("files/b4096"), 10)),
        ("setxattr", lambda: os.setxattr(P("files/one"), "user.new", b"v")),
        ("removexattr", lambda: os.removexattr(P("xattrs/small"), "user.small")),
        ("set acl", lambda: os.setxattr(P("acls/file"), "system.posix_acl_access",
                                        os.getxattr(P("acls/file"), "system.posix_acl_access"))),
    ]
    out = {}
    for name, fn in ops:
        try:
            fn()
            out[name] = "ok"
        except OSError as e:
            out[name] = f4util._errname(e)
    return out


def test_writes_fail_with_erofs(ext_images, fuse4fs_bin):
    img = ext_images.get("ext4")
    with f4util.kernel_mount(img.path) as m:
        want = _write_attempts(m)
    with f4util.fuse4fs_mount(img.path) as h:
        got = _write_attempts(h.mnt)
        after = f4util.snapshot(h.mnt, contents=False, xattrs=False)
    assert want["chmod"] == "EROFS" and want["create"] == "EROFS"
    diffs = ["%s: kernel=%s fuse4fs=%s" % (k, want[k], got.get(k)) for k in want if got.get(k) != want[k]]
    assert not diffs, "write attempts on the read-only mount:\n" + "\n".join(diffs)
    assert "files/one" in after and "files/new" not in after and "newdir" not in after
    assert f4util.sha256_file(img.path) == img.sha256, "image modified"


# ---------------------------------------------------------------------------
# Mount-time errors
# ---------------------------------------------------------------------------

def _start_failing(binary, image, mnt, opts):
    cmd = [binary, "-f", image, mnt] + (["-o", opts] if opts else [])
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        if f4util.is_mounted(mnt):
            f4util.fuse_abort(mnt)
            f4util.umount(mnt)
        pytest.fail("%s did not exit within 30s (it should refuse to mount)\nstderr:\n%s"
                    % (" ".join(cmd), f4util._tail(e.stderr)))
    return cmd, cp


RECOVERY_IMAGE = "/work/shared/corpus/e2fsprogs-images/j_recover_csum2_64bit.img.bz2"


@pytest.mark.parametrize("case", ["missing", "garbage", "empty", "directory", "casefold",
                                  "rw-needs-recovery"])
def test_mount_errors(case, ext_images, fuse4fs_bin, mountpoint, tmp_path):
    """Refusals: non-zero exit (32, like mount(8)), a message that says what
    is wrong, no mount left behind, the image untouched."""
    opts = "ro"
    keywords = ()
    if case == "missing":
        image = str(tmp_path / "does-not-exist.img")
        codes = (32,)
        keywords = ("does-not-exist.img", "No such file")
    elif case == "garbage":
        image = str(tmp_path / "random.img")
        with open(image, "wb") as f:
            f.write(random.Random(3).randbytes(8 * MiB))
        codes = (32,)
        keywords = ("random.img", "superblock", "ext2", "ext4", "filesystem", "file system", "magic")
    elif case == "empty":
        image = str(tmp_path / "empty.img")
        open(image, "wb").close()
        codes = (32,)
        keywords = ("empty.img", "superblock", "ext2", "ext4", "filesystem", "file system",
                    "short read", "too small")
    elif case == "directory":
        image = str(tmp_path)
        codes = (32,)
        keywords = (os.path.basename(str(tmp_path)), "directory", "Is a directory")
    elif case == "casefold":
        # a valid filesystem with a feature fuse4fs refuses even read-only
        image = str(tmp_path / "casefold.img")
        f4util.run(["mkfs.ext4", "-q", "-F", "-O", "casefold", image, "16M"])
        codes = (32,)
        keywords = ("casefold", "case-insensitive", "case insensitive")
    else:
        # a journal that needs recovery is never replayed, so no rw mount
        if not os.path.exists(RECOVERY_IMAGE):
            pytest.skip("%s is missing" % RECOVERY_IMAGE)
        image = f4util.decompress(RECOVERY_IMAGE, str(tmp_path / "recover.img"))
        opts = "rw"
        codes = (32,)
        keywords = ("journal_only", "e2fsck", "recovery")
    before = f4util.sha256_file(image) if os.path.isfile(image) else None
    cmd, cp = _start_failing(fuse4fs_bin, image, mountpoint, opts)
    mounted = f4util.is_mounted(mountpoint)
    if mounted:
        f4util.fuse_abort(mountpoint)
        f4util.umount(mountpoint)
    problems = []
    if mounted:
        problems.append("a mount was left behind")
    if cp.returncode not in codes:
        problems.append("exit code %d, expected %s" % (cp.returncode, " or ".join(map(str, codes))))
    err = cp.stderr.strip()
    if not err:
        problems.append("no message on stderr")
    elif not any(k.lower() in err.lower() for k in keywords):
        problems.append("the message does not say what is wrong (expected one of %s)" % (keywords,))
    san = f4util.sanitizer_report(cp.stderr)
    if san:
        problems.append("sanitizer report: %s" % san[:5])
    if before is not None and f4util.sha256_file(image) != before:
        problems.append("the image was modified")
    assert not problems, "%s:\n%s\nstderr:\n%s" % (" ".join(cmd), "\n".join(problems), err[-2000:])
