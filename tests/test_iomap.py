"""fuse4fs in iomap mode, driven by a model of the iomap kernel.

No kernel here has the FUSE iomap extension, so `iomap_model.IomapMount`
plays it over a socketpair: it sends IOMAP_BEGIN/END/IOEND as the kernel
would for each VFS operation, checks every reply against the kernel's
rules (fuse-abi.md section 2), moves the data itself at the device
addresses fuse4fs returns, and compares every read with a shadow copy of
the file.  The ioctls a socket cannot answer come from tests/iomap_shim.c
(LD_PRELOAD).

Every scenario then ends the same way (`finish`):
  * everything written back; each file read back in full (buffered and
    O_DIRECT) and compared with its shadow; its layout taken with REPORT
    (FIEMAP) and SEEK_DATA/SEEK_HOLE;
  * unmount: DESTROY, fuse4fs exits 0 on its own, no sanitizer report;
  * the superblock says clean; e2fsck -fn: clean;
  * the in-kernel ext4 driver, on a loop device, reads back exactly the
    shadow bytes, with the sizes and mtimes the model pushed, and FIEMAP
    and SEEK_DATA/SEEK_HOLE that equal what fuse4fs reported (modulo
    merging of adjacent extents).

Every test image has recognisable garbage in its free blocks, so a block
that should read as zeroes (unwritten, freshly allocated, past EOF) but is
read from the device shows up as stale data.  Two tests kill the server
instead of unmounting: what FSYNC/SYNCFS committed must survive.  The
model's own rule checks are tested at the end with crafted replies.

The scenario tests need root (fuse4fs attaches a loop device; the oracle
mounts one) and FUSE4FS; they skip without.  FUSE4FS_SANITIZED=1 marks a
sanitizer build (the model then relaxes the ASan link-order check that
LD_PRELOAD trips).
"""

import contextlib
import errno
import os
import random
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import f4util as U  # noqa: E402
import fusewire as fw  # noqa: E402
import iomap_model as im  # noqa: E402
from iomap_model import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,  # noqa: E402
                         FALLOC_FL_ZERO_RANGE)

# Scenario tests run fuse4fs; the model self-tests at the end do not.
needs_server = pytest.mark.usefixtures("fuse4fs_bin", "require_root")

KiB = 1024
MiB = 1024 * 1024

# Room past EOF that REPORT and FIEMAP are compared over (preallocation
# beyond EOF shows up in both).
REPORT_SLACK = 16 * MiB


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("iomap-shim")
    return im.build_shim(im.SHIM_SOURCE, str(d))


def mkfs(path, *, size="64M", blocksize=4096, features=(), fstype="ext4",
         src=None):
    """A fresh image; `src` is a directory to copy in (mkfs -d)."""
    path = str(path)
    if os.path.exists(path):
        os.unlink(path)
    args = ["mkfs." + fstype, "-F", "-q", "-b", str(blocksize),
            "-E", "root_owner=0:0"]
    for f in features:
        args += ["-O", f]
    if src is not None:
        args += ["-d", str(src)]
    U.run(args + [path, size])
    fill_free_blocks(path)
    return path


def fill_free_blocks(img):
    """Write recognisable garbage into every free block, so that a read of
    a block that should read as zeroes (unwritten, newly allocated, past
    EOF) but comes from the device shows up as stale data."""
    out = U.run(["dumpe2fs", img]).stdout
    bs = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))
    with open(img, "r+b") as f:
        for line in out.splitlines():
            m = re.match(r"\s+Free blocks: (.*)$", line)
            if not m or not m.group(1).strip():
                continue
            for part in m.group(1).split(","):
                a, _, b = part.strip().partition("-")
                first, last = int(a), int(b or a)
                f.seek(first * bs)
                for blk in range(first, last + 1):
                    tag = b"\xa5STALE" + blk.to_bytes(8, "little")
                    f.write((tag * (bs // len(tag) + 1))[:bs])


def rand_bytes(rng, n):
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def write_src(d, name, chunks, size=None):
    """A source file for mkfs -d: chunks = [(offset, bytes)], holes
    between them; returns the file's full contents."""
    p = os.path.join(str(d), name)
    end = max([o + len(b) for o, b in chunks] + [size or 0])
    content = bytearray(end)
    with open(p, "wb") as f:
        for o, b in chunks:
            f.seek(o)
            f.write(b)
            content[o:o + len(b)] = b
        f.truncate(end)
    return bytes(content)


class Run:
    """One scenario: a model mount plus the files it knows about."""

    def __init__(self, request, image, shim, *, opts=(), expect_noniomap=(),
                 strict_zero=True):
        self.scenario = request.node.name
        self.image = image
        self.m = im.IomapMount(os.environ["FUSE4FS"], image, shim,
                               opts=opts, scenario=self.scenario,
                               strict_zero=strict_zero,
                               expect_noniomap=expect_noniomap,
                               log_path=image + ".shimlog")
        self.files = {}             # name -> File

    def start(self):
        self.m.start()
        return self

    def create(self, name):
        f = self.m.create(name)
        self.files[name] = f
        return f

    def open(self, name, content):
        f = self.m.open(name, shadow=content)
        self.files[name] = f
        return f


@contextlib.contextmanager
def scenario(request, image, shim, **kw):
    """Start a model mount; on success run `finish`; always clean up."""
    run = Run(request, image, shim, **kw)
    try:
        run.start()
        yield run
        finish(run)
    finally:
        run.m.kill()
        _detach_loops(image)


def _detach_loops(image):
    """Loop devices fuse4fs attached clear themselves when the last user
    closes them; detach any that did not (a failed test)."""
    cp = subprocess.run(["losetup", "-j", image, "-O", "NAME", "-n"],
                        capture_output=True, text=True)
    for name in cp.stdout.split():
        subprocess.run(["losetup", "-d", name], capture_output=True)


def finish(run):
    m = run.m
    bs = m.blocksize
    # 1. Everything on disk as the kernel would have it; read it all back.
    m.drop_caches()
    reports, seeks, mtimes = {}, {}, {}
    for name, f in sorted(run.files.items()):
        if f.closed:
            f = run.files[name] = m.open(f.inode.name, parent=f.inode.parent)
        m.verify(f)
        m.verify(f, direct=True)
        if f.inode.iomap:
            end = -(-f.inode.size // bs) * bs + REPORT_SLACK
            reports[name] = (end, im.normalize_extents(m.report(f, 0, end)))
            seeks[name] = m.seek_map(f)
    for name, f in run.files.items():
        if not f.inode.iomap:       # the server owns these times
            a = m.getattr(f.inode)
            f.inode.mtime = a.mtime * 10**9 + a.mtimensec
    # 2. Unmount: clean exit, nothing from a sanitizer.
    rc = m.unmount()
    err = m.stderr_text()
    assert rc == 0, "%s: fuse4fs exited with %r; stderr:\n%s" % (
        run.scenario, rc, err[-4000:])
    san = U.sanitizer_report(err)
    assert not san, "%s: sanitizer report:\n%s" % (run.scenario, err[-8000:])
    for name, f in run.files.items():
        mtimes[name] = f.inode.mtime
        assert f.inode.size == f.inode.disk_size == f.inode.server_size, \
            "%s: %r: in-core size %d but on-disk size %d (server %d) after " \
            "unmount" % (run.scenario, name, f.inode.size, f.inode.disk_size,
                         f.inode.server_size)
    # 3. DESTROY marked the filesystem clean; e2fsck agrees it is.
    hdr = U.run(["dumpe2fs", "-h", run.image]).stdout
    state = re.search(r"^Filesystem state:\s+(.*)$", hdr, re.M).group(1)
    assert state.strip() == "clean", \
        "%s: after DESTROY the superblock says %r" % (run.scenario, state)
    assert "needs_recovery" not in hdr, \
        "%s: after DESTROY the journal still needs recovery" % run.scenario
    cp = U.e2fsck(run.image)
    assert cp.returncode == 0, "%s: e2fsck -fn exit %d:\n%s%s" % (
        run.scenario, cp.returncode, cp.stdout[-6000:], cp.stderr[-2000:])
    # 4. The kernel's ext4 sees what the model wrote.
    with U.kernel_mount(run.image, ro=True) as mnt:
        for name, f in sorted(run.files.items()):
            path = os.path.join(mnt, name)
            st = os.stat(path)
            # Layout first: reading fills the page cache, and uptodate
            # folios over unwritten extents count as data for SEEK_DATA.
            if name in reports:
                end, rep = reports[name]
                kern = im.kernel_fiemap(path)
                assert all(lo < end for lo, _p, _l, _k in kern), \
                    "%s: %r: kernel FIEMAP has extents past the compared " \
                    "window %d: %r" % (run.scenario, name, end, kern)
                kern = im.normalize_extents(im.clip_extents(kern, end))
                assert rep == kern, \
                    "%s: %r: REPORT mappings differ from kernel FIEMAP\n" \
                    "  REPORT: %r\n  FIEMAP: %r" % (run.scenario, name, rep,
                                                    kern)
                fd = os.open(path, os.O_RDONLY)
                try:
                    ks = U.seek_map(fd, st.st_size)
                finally:
                    os.close(fd)
                assert seeks[name] == ks, \
                    "%s: %r: SEEK_DATA/SEEK_HOLE via REPORT %r, kernel %r" % (
                        run.scenario, name, seeks[name], ks)
            with open(path, "rb") as fo:
                data = fo.read()
            want = bytes(f.inode.shadow)
            if data != want:
                i = next((k for k in range(min(len(data), len(want)))
                          if data[k] != want[k]), min(len(data), len(want)))
                pytest.fail("%s: kernel ext4 reads %r differently: %d bytes "
                            "vs %d expected, first difference at %d "
                            "(kernel %s, expected %s)" % (
                                run.scenario, name, len(data), len(want), i,
                                data[i:i + 16].hex(), want[i:i + 16].hex()))
            assert st.st_mtime_ns == mtimes[name], \
                "%s: %r: kernel ext4 mtime %d, the kernel-owned mtime " \
                "pushed by SETATTR was %d" % (run.scenario, name,
                                              st.st_mtime_ns, mtimes[name])


def counts(m):
    return dict(m.stats()), dict(m.counts)


# --------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------

@needs_server
def test_reads_holes_written_unwritten(request, shim, tmp_path):
    rng = random.Random(11)
    src = tmp_path / "src"
    src.mkdir()
    dense = write_src(src, "dense", [(0, rand_bytes(rng, 300 * KiB + 17))])
    sparse = write_src(src, "sparse", [(0, rand_bytes(rng, 8 * KiB)),
                                       (MiB, rand_bytes(rng, 5000))])
    small = write_src(src, "small", [(0, rand_bytes(rng, 100))])
    img = mkfs(tmp_path / "r.img", src=src)
    with scenario(request, img, shim) as run:
        m = run.m
        fd = run.open("dense", dense)
        fs = run.open("sparse", sparse)
        fm = run.open("small", small)
        # Written ranges, block-unaligned reads, reads across EOF.
        m.read(fd, 0, len(dense))
        for off, n in [(1, 10), (4095, 2), (4096 * 7 + 3, 70000),
                       (len(dense) - 5, 100), (len(dense), 10)]:
            m.read(fd, off, n)
        m.read(fd, 8192, 65536, direct=True)
        m.read(fd, 0, -(-len(dense) // 512) * 512 + 4096, direct=True)
        m.read(fm, 0, 4096)
        m.read(fm, 0, 512, direct=True)
        # Holes.
        m.read(fs, 8 * KiB, 100 * KiB)
        m.read(fs, 8 * KiB - 10, 20)
        m.read(fs, 512 * KiB, 8 * KiB, direct=True)
        assert m.seek(fs, 8 * KiB, os.SEEK_DATA) == MiB
        assert m.seek(fs, 0, os.SEEK_HOLE) == 8 * KiB
        # Unwritten: preallocate inside the hole and past EOF.
        m.fallocate(fs, FALLOC_FL_KEEP_SIZE, 64 * KiB, 256 * KiB)
        m.fallocate(fs, FALLOC_FL_KEEP_SIZE, len(sparse), 100 * KiB)
        rep = m.report(fs, 0, 2 * MiB)
        kinds = {(lo, k) for lo, _p, _l, k in im.normalize_extents(rep)}
        assert (64 * KiB, "unwritten") in kinds, rep
        m.read(fs, 60 * KiB, 300 * KiB)
        m.read(fs, 64 * KiB, 256 * KiB, direct=True)
        assert m.seek(fs, 8 * KiB, os.SEEK_DATA) == MiB, \
            "unwritten extents are holes for SEEK_DATA"
        # Growing preallocation: the new tail reads as zeroes.
        m.fallocate(fm, 0, 0, 10000)
        assert fm.inode.size == 10000
        m.read(fm, 0, 10000)
        m.read(fm, 0, 10240, direct=True)
        st, _ = counts(m)
        assert st.get("read", (0,))[0] > 0
        assert st.get("direct-read", (0,))[0] > 0


def _debugfs_flags(img, name):
    out = U.run(["debugfs", "-R", "stat /" + name, img]).stdout
    for line in out.splitlines():
        if "Flags:" in line:
            return int(line.split("Flags:")[1].split()[0], 16)
    raise AssertionError("no Flags in debugfs output:\n" + out)


@needs_server
def test_inline_data_file(request, shim, tmp_path):
    """A tiny inline-data file is not an iomap inode: it carries
    FUSE_ATTR_EXCLUSIVE only and its data moves with classic READ/WRITE,
    next to a regular file that goes through iomap."""
    rng = random.Random(12)
    src = tmp_path / "src"
    src.mkdir()
    tiny = write_src(src, "tiny", [(0, b"inline bytes! " * 4)])
    big = write_src(src, "big", [(0, rand_bytes(rng, 40000))])
    img = mkfs(tmp_path / "i.img", src=src, features=["inline_data"])
    assert _debugfs_flags(img, "tiny") & 0x10000000, \
        "mkfs did not make 'tiny' an inline-data file"
    with scenario(request, img, shim, expect_noniomap={"tiny"}) as run:
        m = run.m
        ft = run.open("tiny", tiny)
        fb = run.open("big", big)
        assert not ft.inode.iomap and fb.inode.iomap
        before = m.stats().get("read", (0, 0))[0]
        m.read(ft, 0, 100)
        m.read(ft, 5, 7)
        assert m.stats().get("read", (0, 0))[0] == before, \
            "BEGIN was sent for a non-iomap inode"
        m.read(fb, 0, 40000)
        m.write(ft, 10, b"INLINE")
        m.read(ft, 0, 100)
        m.write(fb, 39990, b"x" * 100)
        m.fsync(fb)


# --------------------------------------------------------------------------
# Buffered writes
# --------------------------------------------------------------------------

@needs_server
def test_buffered_writes(request, shim, tmp_path):
    rng = random.Random(13)
    src = tmp_path / "src"
    src.mkdir()
    old = write_src(src, "old", [(0, rand_bytes(rng, 64 * KiB))])
    img = mkfs(tmp_path / "w.img", src=src)
    with scenario(request, img, shim) as run:
        m = run.m
        a = run.create("a")
        # small, then read back through the cache and (after writeback)
        # from the device
        m.write(a, 0, b"hello, iomap")
        m.read(a, 0, 100)
        m.fsync(a)
        m.read(a, 0, 100)
        # large and block-unaligned
        m.write(a, 4096 + 123, rand_bytes(rng, 3 * MiB + 77))
        m.read(a, 4000, 10000)
        # appending writes, some written back in between
        for i in range(6):
            m.write(a, a.inode.size, rand_bytes(rng, 10000 + i))
            if i % 2:
                m.writeback(a)
        m.fsync(a)
        m.read(a, 0, a.inode.size)
        # into a hole past EOF (zeroes old-EOF..pos first)
        b = run.create("b")
        m.write(b, 0, rand_bytes(rng, 5000))
        m.write(b, 8 * MiB + 1000, rand_bytes(rng, 20000))
        m.read(b, 0, 64 * KiB)
        m.fsync(b)
        m.read(b, 4000, 2 * MiB)
        # into a hole inside the file
        m.write(b, 3 * MiB + 7, rand_bytes(rng, 9000))
        m.read(b, 3 * MiB, 20000)
        # into preallocated space, inside and past EOF
        c = run.create("c")
        m.write(c, 0, rand_bytes(rng, 100 * KiB))
        m.fallocate(c, FALLOC_FL_KEEP_SIZE, 100 * KiB, MiB)
        m.fallocate(c, FALLOC_FL_KEEP_SIZE, 32 * KiB, 16 * KiB)
        m.write(c, 33 * KiB + 5, rand_bytes(rng, 3000))
        m.write(c, 200 * KiB + 100, rand_bytes(rng, 50 * KiB))
        m.fsync(c)
        m.read(c, 0, c.inode.size)
        # a file in a subdirectory (directories carry EXCLUSIVE only)
        sub = m.mkdir("sub")
        e = m.create("e", parent=sub.nodeid)
        m.write(e, 0, rand_bytes(rng, 7000))
        m.fsync(e)
        m.read(e, 0, 7000)
        run.files["sub/e"] = e
        # overwrite in place, partial blocks
        d = run.open("old", old)
        m.write(d, 100, b"X" * 5000)
        m.write(d, 64 * KiB - 3, b"tail!!")
        m.read(d, 0, 70 * KiB)
        m.close(d)
        m.close(c)


@needs_server
def test_writeback_ioend_and_disk_size(request, shim, tmp_path):
    """The on-disk size moves only with IOEND APPEND: before writeback
    GETATTR reports 0, after it the full size; unwritten allocations are
    converted by IOEND UNWRITTEN."""
    rng = random.Random(14)
    img = mkfs(tmp_path / "e.img")
    with scenario(request, img, shim) as run:
        m = run.m
        f = run.create("f")
        m.write(f, 0, rand_bytes(rng, 300 * KiB + 5))
        assert f.inode.size == 300 * KiB + 5 and f.inode.disk_size == 0
        m.getattr(f.inode)      # checks attr.size == on-disk size (0)
        rep = im.normalize_extents(m.report(f, 0, MiB))
        assert rep and all(k == "unwritten" for *_x, k in rep), \
            "a buffered write into a hole should allocate unwritten: %r" % rep
        m.stats_reset()
        m.writeback(f)
        assert m.counts["IOEND"] >= 1
        assert f.inode.disk_size == 300 * KiB + 5
        m.getattr(f.inode)
        rep = im.normalize_extents(m.report(f, 0, MiB))
        assert all(k == "data" for *_x, k in rep), rep
        # mmap stores: page_mkwrite, then writeback
        m.mmap_write(f, 5000, b"m" * 9000)
        m.mmap_write(f, 300 * KiB, b"end!!")
        m.fsync(f)
        m.read(f, 0, f.inode.size)
        # a store into a hole inside the file allocates through the fault
        g = run.create("g")
        m.truncate(g, 200 * KiB)
        m.mmap_write(g, 50 * KiB + 3, b"fault" * 100)
        m.fsync(g)
        m.read(g, 0, 200 * KiB)


@pytest.mark.parametrize("fstype", ["ext4", "ext2"])
@needs_server
def test_short_write_gives_back_allocation(request, shim, tmp_path, fstype):
    """A buffered write past EOF that copies less than asked sends END
    with written < count; the blocks it allocated past the new EOF must go
    (unwritten ones on ext4, MAPPED|F_NEW ones on block-mapped ext2)."""
    rng = random.Random(15)
    img = mkfs(tmp_path / "s.img", fstype=fstype)
    with scenario(request, img, shim) as run:
        m = run.m
        f = run.create("f")
        m.write(f, 0, rand_bytes(rng, 10000))
        m.fsync(f)
        m.stats_reset()
        n = m.write(f, 10000, rand_bytes(rng, 2 * MiB), short=5000)
        assert n == 5000 and f.inode.size == 15000
        assert m.counts["END"] >= 1
        m.fsync(f)
        bs = m.blocksize
        eof = -(-f.inode.size // bs) * bs
        rep = m.report(f, 0, 4 * MiB)
        beyond = [e for e in rep if e[0] + e[2] > eof]
        assert not beyond, "blocks past EOF %d after a short write: %r" % (
            eof, rep)
        # and a short write that copies nothing at all
        n = m.write(f, 20000, rand_bytes(rng, MiB), short=0)
        assert n == 0
        m.fsync(f)


# --------------------------------------------------------------------------
# Direct writes
# --------------------------------------------------------------------------

@needs_server
def test_direct_writes(request, shim, tmp_path):
    rng = random.Random(16)
    img = mkfs(tmp_path / "d.img")
    with scenario(request, img, shim) as run:
        m = run.m
        f = run.create("f")
        # aligned: into a hole, extending, overwrite
        m.write(f, 0, rand_bytes(rng, 64 * KiB), direct=True)
        m.write(f, 64 * KiB, rand_bytes(rng, MiB), direct=True)
        m.write(f, 8 * KiB, rand_bytes(rng, 16 * KiB), direct=True)
        m.read(f, 0, f.inode.size)
        m.read(f, 0, f.inode.size, direct=True)
        # far past EOF (zeroes old EOF .. pos), leaving a hole
        m.write(f, 4 * MiB, rand_bytes(rng, 8 * KiB), direct=True)
        # unaligned (sector-aligned only): into a hole, into mapped
        # blocks, into unwritten blocks, and extending with a tail
        m.write(f, 2 * MiB + 512, rand_bytes(rng, 1024), direct=True)
        m.write(f, 4096 + 1536, rand_bytes(rng, 5120), direct=True)
        m.fallocate(f, FALLOC_FL_KEEP_SIZE, 3 * MiB, 64 * KiB)
        m.write(f, 3 * MiB + 3584, rand_bytes(rng, 9216), direct=True)
        m.write(f, f.inode.size + 512 * 3, rand_bytes(rng, 1536), direct=True)
        m.read(f, 0, f.inode.size)
        # buffered dirty data under a direct write is written back first
        m.write(f, 100, b"buffered" * 100)
        m.write(f, 0, rand_bytes(rng, 4096), direct=True)
        m.write(f, 6000, b"after" * 10)
        m.read(f, 0, 12000)
        m.read(f, 0, 12288, direct=True)


@needs_server
def test_direct_write_io_error_keeps_unwritten(request, shim, tmp_path):
    """IOEND with an error: nothing is converted and the size stays, so
    the data that did reach the device never becomes visible."""
    rng = random.Random(17)
    img = mkfs(tmp_path / "x.img")
    with scenario(request, img, shim) as run:
        m = run.m
        f = run.create("f")
        m.write(f, 0, rand_bytes(rng, 16 * KiB), direct=True)
        with pytest.raises(im.IomapIOError) as ei:
            m.write(f, 16 * KiB, rand_bytes(rng, 32 * KiB), direct=True,
                    io_error=-errno.EIO)
        assert ei.value.errno == errno.EIO
        assert f.inode.size == 16 * KiB and f.inode.disk_size == 16 * KiB
        m.getattr(f.inode)
        # the blocks allocated for it may stay as unwritten past EOF, but
        # must read as zeroes once the file grows over them
        m.truncate(f, 64 * KiB)
        m.read(f, 0, 64 * KiB)
        m.read(f, 0, 64 * KiB, direct=True)


# --------------------------------------------------------------------------
# Truncate, punch, zero
# --------------------------------------------------------------------------

@needs_server
def test_truncate_and_punch(request, shim, tmp_path):
    rng = random.Random(18)
    img = mkfs(tmp_path / "t.img")
    with scenario(request, img, shim) as run:
        m = run.m
        f = run.create("f")
        m.write(f, 0, rand_bytes(rng, 2 * MiB))
        m.fsync(f)
        # down to the middle of a block, with dirty data beyond
        m.write(f, MiB, rand_bytes(rng, 100 * KiB))
        m.truncate(f, MiB + 12345)
        m.read(f, MiB, 20000)
        # up: the gap reads as zeroes
        m.truncate(f, 3 * MiB + 77)
        m.read(f, MiB, 2 * MiB + 77)
        m.read(f, MiB + 8192, 64 * KiB, direct=True)
        # writes after the truncate
        m.write(f, 3 * MiB, b"Z" * 100)
        # punch with partial-block edges, both written back and dirty
        m.write(f, 200 * KiB, rand_bytes(rng, 50 * KiB))
        m.fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    100 * KiB + 100, 300 * KiB)
        m.read(f, 90 * KiB, 320 * KiB)
        m.fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    512 * KiB, 64 * KiB)
        # zero range (becomes unwritten), and past EOF without KEEP_SIZE
        m.fallocate(f, FALLOC_FL_ZERO_RANGE, 700 * KiB + 1, 100 * KiB)
        m.fallocate(f, FALLOC_FL_ZERO_RANGE, f.inode.size - 1000, 50 * KiB)
        m.read(f, 600 * KiB, 300 * KiB)
        m.read(f, f.inode.size - 60 * KiB, 60 * KiB)
        # punch that reaches EOF
        m.fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    f.inode.size - 5000, 10000)
        m.fsync(f)
        m.read(f, 0, f.inode.size)
        # truncate to zero and rebuild
        g = run.create("g")
        m.write(g, 0, rand_bytes(rng, 50 * KiB))
        m.fsync(g)
        m.truncate(g, 0)
        m.write(g, 3000, b"again")
        m.truncate(g, 1)
        m.truncate(g, 4096 * 3 + 1)


# --------------------------------------------------------------------------
# Crashes: what FSYNC committed survives
# --------------------------------------------------------------------------

def _crash(run):
    """SIGKILL the server: no DESTROY, nothing more written back."""
    m = run.m
    m.peer.proc.kill()
    m.peer.proc.wait()
    m.kill()
    _detach_loops(run.image)


def _check_after_crash(run, synced, scenario):
    cp = U.e2fsck(run.image)
    assert cp.returncode == 0, "%s: e2fsck -fn after the crash, exit %d:\n%s" \
        % (scenario, cp.returncode, cp.stdout[-4000:])
    with U.kernel_mount(run.image, ro=True) as mnt:
        for name, want in synced.items():
            with open(os.path.join(mnt, name), "rb") as fo:
                got = fo.read()
            assert got == want, \
                "%s: %r after the crash: %d bytes, fsynced %d; first " \
                "difference at %r" % (scenario, name, len(got), len(want),
                                      next((i for i in range(min(len(got),
                                                                 len(want)))
                                            if got[i] != want[i]), None))


@needs_server
def test_fsync_survives_crash(request, shim, tmp_path):
    """FSYNC commits the file's metadata (unwritten conversion, size,
    extents) and SYNCFS everything: after a SIGKILL right after them the
    image is consistent and holds the synced bytes."""
    rng = random.Random(21)
    img = mkfs(tmp_path / "c.img")
    run = Run(request, img, shim)
    try:
        run.start()
        m = run.m
        f = run.create("f")
        g = run.create("g")
        m.write(f, 0, rand_bytes(rng, 300 * KiB + 11))
        m.write(f, 2 * MiB, rand_bytes(rng, 5120), direct=True)
        m.fsync(f)
        m.write(g, 5000, rand_bytes(rng, 100 * KiB))
        m.fallocate(g, FALLOC_FL_KEEP_SIZE, 200 * KiB, 100 * KiB)
        m.truncate(g, 150 * KiB)
        m.syncfs()
        synced = {"f": bytes(f.inode.shadow), "g": bytes(g.inode.shadow)}
    finally:
        _crash(run)
    _check_after_crash(run, synced, run.scenario)


@needs_server
def test_crash_after_unsynced_allocation(request, shim, tmp_path):
    """fuse4fs does not write the journal, so metadata changed after the
    last FSYNC may reach the disk only in part when the server dies.  What
    is promised: the filesystem is marked not clean (so e2fsck runs), one
    e2fsck -fy pass repairs it completely, and every fsynced byte is
    intact."""
    rng = random.Random(22)
    img = mkfs(tmp_path / "u.img")
    assert "has_journal" in U.run(["dumpe2fs", "-h", img]).stdout
    run = Run(request, img, shim)
    try:
        run.start()
        m = run.m
        f = run.create("f")
        m.write(f, 0, rand_bytes(rng, 300 * KiB))
        m.fsync(f)
        synced = {"f": bytes(f.inode.shadow)}
        m.write(f, 300 * KiB, rand_bytes(rng, 10000))      # not synced
        m.write(f, MiB, rand_bytes(rng, 10000))
    finally:
        _crash(run)
    state = U.run(["dumpe2fs", "-h", run.image]).stdout
    assert re.search(r"Filesystem state:\s+not clean", state), \
        "a crashed read-write mount must leave the filesystem not clean"
    fix = U.run(["e2fsck", "-fy", run.image], check=False)
    assert fix.returncode in (0, 1), "e2fsck -fy could not repair:\n%s" % (
        fix.stdout[-4000:])
    _check_after_crash(run, synced, run.scenario)


# --------------------------------------------------------------------------
# Other layouts: block-mapped files, 1 KiB blocks
# --------------------------------------------------------------------------

def _mixed_workload(m, run, rng, bs):
    f = run.create("f")
    m.write(f, 0, rand_bytes(rng, 10 * bs + 7))
    m.write(f, 40 * bs + 3, rand_bytes(rng, 3 * bs))
    m.write(f, 20 * bs + 512, rand_bytes(rng, 1024), direct=True)
    m.write(f, 30 * bs, rand_bytes(rng, 4 * bs), direct=True)
    m.fsync(f)
    m.read(f, 0, f.inode.size)
    m.write(f, 5, b"overwrite" * 50)
    m.truncate(f, 25 * bs + 100)
    m.write(f, f.inode.size + 2 * bs + 5, rand_bytes(rng, 3000))
    m.fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                2 * bs + 10, 5 * bs)
    m.mmap_write(f, bs - 3, b"mm" * 10)
    m.fsync(f)
    m.read(f, 0, f.inode.size)
    # short copies: into the punched hole, and past EOF with a gap
    assert m.write(f, 2 * bs + 20, rand_bytes(rng, 4 * bs), short=bs) == bs
    m.read(f, 0, 8 * bs)
    n = m.write(f, f.inode.size + 3 * bs + 7, rand_bytes(rng, 5 * bs),
                short=bs + 100)
    assert n == bs + 100
    m.fsync(f)
    m.read(f, 0, f.inode.size)
    g = run.create("g")
    for i in range(20):
        m.write(g, g.inode.size, rand_bytes(rng, rng.randrange(1, 3 * bs)))
    m.close(g)


@needs_server
def test_block_mapped_files(request, shim, tmp_path):
    """ext2-style indirect-mapped files: new blocks come back MAPPED with
    F_NEW (no unwritten state), and the writer zeroes what it does not
    write."""
    img = mkfs(tmp_path / "b.img", fstype="ext2")
    with scenario(request, img, shim) as run:
        _mixed_workload(run.m, run, random.Random(19), run.m.blocksize)


@needs_server
def test_1k_blocks(request, shim, tmp_path):
    img = mkfs(tmp_path / "k.img", blocksize=1024, size="32M")
    with scenario(request, img, shim) as run:
        assert run.m.blocksize == 1024
        _mixed_workload(run.m, run, random.Random(20), 1024)


# --------------------------------------------------------------------------
# Random workload
# --------------------------------------------------------------------------

def _fallocate_or_unsupported(m, f, mode, off, length):
    """fallocate; like ext4, block-mapped files support only PUNCH_HOLE."""
    try:
        m.fallocate(f, mode, off, length)
    except im.IomapIOError as e:
        if (e.errno != errno.EOPNOTSUPP or m.sb["extents"]
                or mode & FALLOC_FL_PUNCH_HOLE):
            raise


def _random_ops(m, run, rng, nops, bs, max_off):
    names = ["r0", "r1", "r2", "r3"]
    files = {n: run.create(n) for n in names}
    log = []

    def offset():
        # often near a block boundary or the end of the file
        r = rng.random()
        if r < 0.3:
            return max(0, rng.randrange(0, max_off // bs) * bs
                       + rng.randrange(-3, 4))
        if r < 0.5 and f.inode.size:
            return max(0, f.inode.size + rng.randrange(-2 * bs, 2 * bs))
        return rng.randrange(0, max_off)

    for i in range(nops):
        f = files[rng.choice(names)]
        size = f.inode.size
        op = rng.choices(
            ["bwrite", "dwrite", "mmap", "read", "dread", "truncate",
             "punch", "zero", "prealloc", "extend", "fsync", "writeback",
             "reopen", "otrunc"],
            [20, 8, 4, 12, 5, 4, 4, 3, 3, 2, 3, 3, 1, 1])[0]
        log.append((op, f.name, size))
        if op == "bwrite":
            off = offset()
            n = rng.choice([1, 17, 512, bs, bs + 1, 3 * bs - 5, 70000,
                            rng.randrange(1, 300000)])
            short = None
            if rng.random() < 0.1:
                short = rng.randrange(0, n + 1)
            m.write(f, off, rand_bytes(rng, n), short=short)
        elif op == "dwrite":
            off = rng.randrange(0, max_off // 512) * 512
            n = rng.choice([512, 1024, bs, 2 * bs, 8 * bs + 512])
            m.write(f, off, rand_bytes(rng, n), direct=True)
        elif op == "mmap" and size > 0:
            off = rng.randrange(0, size)
            n = min(size - off, rng.randrange(1, 3 * bs))
            m.mmap_write(f, off, rand_bytes(rng, n))
        elif op == "read" and size > 0:
            off = rng.randrange(0, size)
            m.read(f, off, rng.randrange(1, 200000))
        elif op == "dread" and size > 0:
            off = rng.randrange(0, size // 512 + 1) * 512
            m.read(f, off, rng.choice([512, bs, 16 * bs]), direct=True)
        elif op == "truncate":
            m.truncate(f, rng.choice([0, size // 2, size + 1000,
                                      rng.randrange(0, max_off)]))
        elif op == "punch" and size > 0:
            off = rng.randrange(0, size)
            _fallocate_or_unsupported(
                m, f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                rng.randrange(1, 200000))
        elif op == "zero" and size > 0:
            off = rng.randrange(0, size)
            _fallocate_or_unsupported(m, f, FALLOC_FL_ZERO_RANGE | rng.choice(
                [0, FALLOC_FL_KEEP_SIZE]), off, rng.randrange(1, 100000))
        elif op == "prealloc":
            _fallocate_or_unsupported(m, f, FALLOC_FL_KEEP_SIZE,
                                      rng.randrange(0, max_off),
                                      rng.randrange(1, 300000))
        elif op == "extend":
            _fallocate_or_unsupported(m, f, 0, size,
                                      rng.randrange(1, 100000))
        elif op == "fsync":
            m.fsync(f, datasync=rng.random() < 0.3)
        elif op == "writeback":
            m.writeback(f)
        elif op == "reopen":
            m.close(f)
            files[f.name] = run.files[f.name] = m.open(f.name)
        elif op == "otrunc":
            m.close(f)
            files[f.name] = run.files[f.name] = m.open(
                f.name, os.O_RDWR | os.O_TRUNC)
    return log


# (id, mkfs arguments, seed, operations)
RANDOM_CASES = [
    ("ext4-s1", {}, 1, 500),
    ("ext4-s2", {}, 2, 500),
    ("ext4-s3", {}, 3, 500),
    ("ext4-s4", {}, 4, 500),
    ("ext4-s5", {}, 5, 500),
    ("ext4-s6", {}, 6, 500),
    ("ext4-1k-s7", {"blocksize": 1024, "size": "48M"}, 7, 400),
    ("ext4-1k-s8", {"blocksize": 1024, "size": "48M"}, 8, 400),
    ("ext2-s9", {"fstype": "ext2"}, 9, 400),
    ("ext2-s10", {"fstype": "ext2"}, 10, 400),
    ("ext3-s11", {"fstype": "ext3"}, 11, 400),
]


@pytest.mark.parametrize("case", RANDOM_CASES,
                         ids=[c[0] for c in RANDOM_CASES])
@needs_server
def test_random_workload(request, shim, tmp_path, case):
    """A seeded mix of every operation on three files, each read checked
    against the shadow copy as it happens, and the end state by finish()."""
    name, mkfs_args, seed, nops = case
    rng = random.Random(seed)
    img = mkfs(tmp_path / ("%s.img" % name), **mkfs_args)
    with scenario(request, img, shim) as run:
        _random_ops(run.m, run, rng, nops, run.m.blocksize, 6 * MiB)


# --------------------------------------------------------------------------
# Self-tests of the model: crafted replies must trip the rule they break.
# These need neither root nor fuse4fs.
# --------------------------------------------------------------------------

class FakePeer:
    """Stands in for KernelPeer: answers requests from a queue."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.notifications = []
        self.sent = []

    def request(self, opcode, nodeid=0, body=b"", **hdr):
        self.sent.append((opcode, nodeid, body))
        error, data = self.replies.pop(0)
        return fw.Reply(2, error, data, opcode)


BS = 4096
DEV = 1


def _fake_mount(replies, sb=None):
    m = im.IomapMount("fuse4fs", None, "shim.so", scenario="self-test")
    m.peer = FakePeer(replies)
    m.blocksize = BS
    m.maxbytes = 1 << 40
    m.sb = sb
    m.devices = {DEV: _FakeDevice()}
    m.agreed = fw.InitFlag(0)
    return m


class _FakeDevice:
    id = DEV
    writable = True
    size = 1 << 30
    path = "/dev/fake"


def _inode(size=0):
    attr = fw.Attr(ino=12, size=size, mode=0o100644,
                   flags=im.ATTR_IOMAP | im.ATTR_EXCLUSIVE)
    ino = im.Inode(5, attr, "f")
    ino.shadow = bytearray(size)
    return ino


def io(off, length, typ, addr=im.NULL_ADDR, dev=0, flags=0):
    return im.IomapIo(off, length, addr, typ, flags, dev)


def mapped(off, length, addr=1 << 20, flags=0):
    return io(off, length, im.TYPE_MAPPED, addr, DEV, flags)


def pure(rd):
    return io(rd.offset, rd.length, im.TYPE_PURE_OVERWRITE)


def begin_reply(rd, wr=None):
    return (0, im.IomapBeginOut(rd, wr if wr is not None else pure(rd)).pack())


HOLE = io(0, BS, im.TYPE_HOLE)
BAD_BEGIN = [
    # (id, opflags, pos, reply, rule prefix)
    ("type", 0, 0, begin_reply(io(0, BS, 7)), "rule 1"),
    ("flags", 0, 0, begin_reply(mapped(0, BS, flags=1 << 8)), "rule 2"),
    ("zero-length", 0, 0, begin_reply(mapped(0, 0)), "rule 3"),
    ("offset-align", 0, 600, begin_reply(mapped(512, BS)), "rule 4"),
    ("length-align", 0, 0, begin_reply(mapped(0, BS + 512)), "rule 4"),
    ("overflow", 0, 0, begin_reply(mapped((1 << 64) - BS, 2 * BS)), "rule 5"),
    ("maxbytes", 0, 1 << 40, begin_reply(mapped(1 << 40, BS)), "rule 6"),
    ("mapped-no-dev", 0, 0,
     begin_reply(io(0, BS, im.TYPE_MAPPED, 4096, 0)), "rule 7"),
    ("mapped-no-addr", 0, 0,
     begin_reply(io(0, BS, im.TYPE_MAPPED, im.NULL_ADDR, DEV)), "rule 7"),
    ("hole-with-addr", 0, 0,
     begin_reply(io(0, BS, im.TYPE_HOLE, 4096, 0)), "rule 7"),
    ("pure-in-read", 0, 0,
     begin_reply(io(0, BS, im.TYPE_PURE_OVERWRITE), pure(HOLE)), "rule 7"),
    ("pure-with-dev", 0, 0,
     begin_reply(HOLE, io(0, BS, im.TYPE_PURE_OVERWRITE, im.NULL_ADDR, DEV)),
     "rule 7"),
    ("addr-overflow", 0, 0,
     begin_reply(mapped(0, 2 * BS, addr=(1 << 64) - BS)), "rule 8"),
    ("nocache", 0, 0, begin_reply(HOLE, io(0, BS, im.TYPE_NOCACHE)),
     "pair rule"),
    ("read-not-covering", 0, 2 * BS, begin_reply(mapped(0, BS)), "pair rule"),
    ("write-not-covering", 0, BS,
     begin_reply(mapped(0, 2 * BS), io(0, BS, im.TYPE_PURE_OVERWRITE)),
     "pair rule"),
    ("retry-without-cache", 0, 0,
     begin_reply(io(0, BS, im.TYPE_RETRY_CACHE)), "rule 2"),
    ("unknown-dev", 0, 0,
     begin_reply(io(0, BS, im.TYPE_MAPPED, 4096, 7)), "device rule"),
    ("short-reply", 0, 0, (0, bytes(60)), "reply size rule"),
    ("writeback-hole", im.OP_WRITEBACK, 0, begin_reply(HOLE),
     "writeback rule"),
    ("writeback-inline", im.OP_WRITEBACK, 0,
     begin_reply(io(0, BS, im.TYPE_INLINE)), "writeback rule"),
    ("inline-too-long", 0, 0, begin_reply(io(0, 2 * BS, im.TYPE_INLINE)),
     "inline rule"),
    ("zero-allocates", im.OP_ZERO, 0,
     begin_reply(mapped(0, BS, flags=im.F_NEW)), "contract: ZERO"),
    ("dio-write-hole", im.OP_WRITE | im.OP_DIRECT, 0, begin_reply(HOLE),
     "dio rule"),
    ("write-hole", im.OP_WRITE, 0, begin_reply(HOLE), "contract: a write"),
    ("pure-wrong-length", 0, 0,
     begin_reply(mapped(0, 2 * BS), io(0, BS, im.TYPE_PURE_OVERWRITE)),
     "contract: PURE_OVERWRITE"),
    ("inline-not-at-0", 0, BS, begin_reply(io(BS, BS, im.TYPE_INLINE)),
     "inline rule"),
]


@pytest.mark.parametrize("case", BAD_BEGIN, ids=[c[0] for c in BAD_BEGIN])
def test_model_rejects_bad_begin(case):
    _id, opflags, pos, reply, rule = case
    m = _fake_mount([reply])
    with pytest.raises(im.IomapViolation) as ei:
        m._begin(_inode(1 << 20), opflags, pos, BS)
    assert str(ei.value).startswith(rule), str(ei.value)
    assert "request: IOMAP_BEGIN" in str(ei.value)


def test_model_accepts_good_begin():
    """Valid answers pass, and the processed length is bounded by both
    mappings (out-of-place write: iomap = write, srcmap = read)."""
    m = _fake_mount([begin_reply(mapped(0, 4 * BS)),
                     begin_reply(mapped(0, 4 * BS), mapped(BS, BS, 1 << 24)),
                     begin_reply(io(0, 8 * BS, im.TYPE_HOLE))])
    ino = _inode(1 << 20)
    r = m._begin(ino, 0, BS, 8 * BS)
    assert r.length == 3 * BS and r.srcmap is None
    r = m._begin(ino, im.OP_WRITE, BS, 8 * BS)
    assert r.iomap.addr == 1 << 24 and r.srcmap.type == im.TYPE_MAPPED
    assert r.length == BS
    r = m._begin(ino, im.OP_ZERO, 2 * BS, BS)
    assert r.iomap.type == im.TYPE_HOLE and r.length == BS


def test_model_checks_ioend_newsize():
    m = _fake_mount([(0, im.IomapIoendOut(5000).pack()),
                     (0, im.IomapIoendOut(9000).pack()),
                     (0, bytes(4))])
    ino = _inode(0)
    ino.size = 9000
    with pytest.raises(im.IomapViolation) as ei:
        m._ioend(ino, im.IOEND_DIRECT, 0, 0, 9000, 0, im.NULL_ADDR)
    assert str(ei.value).startswith("ioend rule: newsize"), str(ei.value)
    m._ioend(ino, im.IOEND_DIRECT, 0, 0, 9000, 0, im.NULL_ADDR)
    assert ino.disk_size == 9000
    flags = m.peer.sent[-1][2][:4]
    assert int.from_bytes(flags, "little") & im.IOEND_APPEND
    with pytest.raises(im.IomapViolation) as ei:
        m._ioend(ino, im.IOEND_UNWRITTEN, 0, 0, 4096, 0, im.NULL_ADDR)
    assert str(ei.value).startswith("reply size rule"), str(ei.value)


def test_model_checks_attr_size():
    m = _fake_mount([])
    ino = _inode(0)
    ino.server_size = 4096
    attr = fw.Attr(ino=12, size=100, mode=0o100644,
                   flags=im.ATTR_IOMAP | im.ATTR_EXCLUSIVE)
    with pytest.raises(im.IomapViolation) as ei:
        m._attr_reply(ino, attr, "GETATTR")
    assert str(ei.value).startswith("attr rule"), str(ei.value)
    with pytest.raises(im.IomapViolation) as ei:
        m._check_attr(attr._replace(flags=im.ATTR_EXCLUSIVE), "f", "LOOKUP")
    assert "FUSE_ATTR_IOMAP" in str(ei.value)
    with pytest.raises(im.IomapViolation):
        m._check_attr(attr._replace(mode=0o40755, flags=0), "d", "LOOKUP")


SB = {"block_size": BS, "inode_size": 256, "uuid": bytes(range(16)),
      "extents": True, "huge_file": True}
GOOD_CONFIG = im.IomapConfigOut(
    flags=0x3F, s_uuid=bytes(range(16)), s_uuid_len=16, s_blocksize=BS,
    s_max_links=65000, s_time_gran=1, s_time_min=-(1 << 31),
    s_time_max=im.EXT4_EXTRA_TIMESTAMP_MAX,
    s_maxbytes=im.ext4_max_size(12, True))
BAD_CONFIG = [
    ("flags", {"flags": 0x80}, "config rule: flags"),
    ("uuid-len", {"s_uuid_len": 17}, "config rule: s_uuid_len"),
    ("pad", {"s_pad": b"\0\1\0"}, "config rule: s_pad"),
    ("blocksize", {"s_blocksize": 1024}, "contract: s_blocksize"),
    ("blocksize-pow2", {"s_blocksize": 3000}, "config rule (newer"),
    ("no-blocksize", {"flags": 0x3F & ~im.CONFIG_BLOCKSIZE},
     "contract: CONFIG must set BLOCKSIZE"),
    ("time-gran", {"s_time_gran": 0}, "config rule (newer snapshot): s_time"),
    ("time-max", {"s_time_max": (1 << 31) - 1}, "config: time"),
    ("maxbytes", {"s_maxbytes": 1 << 40}, "config: s_maxbytes"),
    ("max-links", {"s_max_links": 32000}, "config: s_max_links"),
    ("uuid", {"s_uuid": bytes(16)}, "config: s_uuid"),
    ("long", None, "reply size rule"),
]


@pytest.mark.parametrize("case", BAD_CONFIG, ids=[c[0] for c in BAD_CONFIG])
def test_model_rejects_bad_config(case, tmp_path):
    _id, change, rule = case
    data = (GOOD_CONFIG._replace(**change).pack() if change is not None
            else GOOD_CONFIG.pack() + bytes(8))
    m = _fake_mount([(0, data)], sb=SB)
    m.blocksize = None
    m.log_path = str(tmp_path / "none.log")
    with pytest.raises(im.IomapViolation) as ei:
        m._config()
    assert str(ei.value).startswith(rule), str(ei.value)


def test_model_config_needs_registered_device(tmp_path):
    """A valid CONFIG reply without a BACKING_OPEN in the shim log."""
    m = _fake_mount([(0, GOOD_CONFIG.pack()[:96])], sb=SB)
    m.log_path = str(tmp_path / "none.log")
    with pytest.raises(im.IomapViolation) as ei:
        m._config()
    assert "no block device registered" in str(ei.value)


def test_model_normalizes_extents():
    ext = [(0, 4096, 4096, "data"), (4096, 8192, 4096, "data"),
           (8192, 12288, 4096, "unwritten"), (16384, 20480, 4096, "data")]
    assert im.normalize_extents(ext) == [
        (0, 4096, 8192, "data"), (8192, 12288, 4096, "unwritten"),
        (16384, 20480, 4096, "data")]


def test_model_inline_paths():
    """INLINE mappings: reads fetch the bytes with FUSE_READ fh 0 at the
    BEGIN's pos/count, buffered writes send FUSE_WRITE fh 0 of the written
    bytes (and move the on-disk size) with no END."""
    inline = io(0, BS, im.TYPE_INLINE)
    m = _fake_mount([begin_reply(inline), (0, b"tiny file!"),
                     begin_reply(inline), (0, fw.WriteOut(3).pack())])
    ino = _inode(10)
    ino.shadow = bytearray(b"tiny file!")
    f = im.File(ino, 7, os.O_RDWR, 0)
    assert m.read(f, 0, 100) == b"tiny file!"
    op, nodeid, body = m.peer.sent[1]
    r = fw.ReadIn.unpack(body)
    assert op == fw.Op.READ and nodeid == 5 and r.fh == 0 and \
        (r.offset, r.size) == (0, BS)     # the BEGIN pos and count
    assert m.write(f, 4, b"FIL") == 3
    op, nodeid, body = m.peer.sent[3]
    w = fw.WriteIn.unpack(body)
    assert op == fw.Op.WRITE and w.fh == 0 and w.offset == 4 and \
        body[fw.WriteIn.SIZE:] == b"FIL"
    assert len(m.peer.sent) == 4, "no END for inline mappings"
    assert ino.shadow == bytearray(b"tinyFILle!") and not ino.dirty
