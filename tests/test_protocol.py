"""FUSE wire-protocol tests: the test plays the kernel against fuse4fs.

fuse4fs serves one end of a SOCK_SEQPACKET socketpair (passed as /dev/fd/N)
without mounting anything; tests/fusewire.py is the kernel's side.  Each
test feeds the server a malformed or unusual request, checks the reply the
protocol calls for, checks that valid requests still work afterwards, and
finally closes the channel and requires a clean exit (status 0, no
sanitizer report, image untouched).

Expected file contents and metadata come from the in-kernel ext4 driver,
which reads the same image over a read-only loop mount.

Environment: FUSE4FS (the binary; the tests are skipped without it),
FUSEWIRE_SEED to change the fuzz seed, FUSEWIRE_TIMEOUT for the per-reply
timeout in seconds.  Sanitizer reports (FUSE4FS_SANITIZED=1 builds) are
looked for in the server's stderr in every build.
"""

import errno
import hashlib
import os
import random
import stat
import struct
import subprocess
import tempfile

import pytest

import fusewire as fw
from fusewire import Op

FUSE4FS = os.environ.get("FUSE4FS")
FUZZ_SEED = int(os.environ.get("FUSEWIRE_SEED", "20250601"), 0)
FUZZ_COUNT = 2000

pytestmark = pytest.mark.skipif(not FUSE4FS, reason="FUSE4FS is not set")

# Replies acceptable for a node id that does not name a live inode.
BAD_NODE_ERRORS = (errno.ESTALE, errno.ENOENT, errno.EIO, errno.EINVAL)


# ---------------------------------------------------------------------------
# The test image and what the kernel's ext4 driver says about it
# ---------------------------------------------------------------------------

FILE_BYTES = bytes((i * 7 + i // 251) % 256 for i in range(12345))
SPARSE_HEAD = b"H" * 4096
SPARSE_TAIL = b"T" * 4096
SPARSE_TAIL_AT = 64 << 10
XATTRS = {"user.greeting": b"hello world",
          "user.blob": bytes(range(200))}
NAMES = ("hello.txt", "dir", "link", "sparse")


def _populate(src):
    os.mkdir(os.path.join(src, "dir"))
    for i in range(3):
        with open(os.path.join(src, "dir", "inner%d" % i), "wb") as f:
            f.write(b"inner %d\n" % i)
    path = os.path.join(src, "hello.txt")
    with open(path, "wb") as f:
        f.write(FILE_BYTES)
    for k, v in XATTRS.items():
        os.setxattr(path, k, v)
    os.symlink("hello.txt", os.path.join(src, "link"))
    with open(os.path.join(src, "sparse"), "wb") as f:
        f.write(SPARSE_HEAD)
        f.seek(SPARSE_TAIL_AT)
        f.write(SPARSE_TAIL)


def _lseek_probe(fd, size):
    """SEEK_DATA/SEEK_HOLE results at interesting offsets: {(off, whence):
    result or -errno}."""
    out = {}
    for off in sorted({0, 1, 4095, 4096, 5000, SPARSE_TAIL_AT - 1,
                       SPARSE_TAIL_AT, size - 1, size, size + 1}):
        for whence in (os.SEEK_DATA, os.SEEK_HOLE):
            try:
                out[(off, whence)] = os.lseek(fd, off, whence)
            except OSError as e:
                out[(off, whence)] = -e.errno
    return out


def _kernel_oracle(img):
    """Mount the image read-only with the kernel's ext4 and record what a
    client would see.  Returns a dict, or None if mounting is impossible."""
    mnt = tempfile.mkdtemp(prefix="fusewire-oracle-")
    r = subprocess.run(["mount", "-t", "ext4", "-o", "ro,noload,loop", img, mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(mnt)
        return None
    try:
        o = {"stat": {}, "xattrs": {}, "lseek": {}}
        o["root"] = os.lstat(mnt)
        o["statvfs"] = os.statvfs(mnt)
        o["dirents"] = {e.name: (e.inode(), e.is_dir(), e.is_symlink())
                        for e in os.scandir(mnt)}
        o["subdir"] = sorted(os.listdir(os.path.join(mnt, "dir")))
        for name in NAMES:
            o["stat"][name] = os.lstat(os.path.join(mnt, name))
        path = os.path.join(mnt, "hello.txt")
        o["xattrs"] = {k: os.getxattr(path, k) for k in os.listxattr(path)}
        with open(path, "rb") as f:
            o["hello"] = f.read()
        o["readlink"] = os.readlink(os.path.join(mnt, "link"))
        for name in ("hello.txt", "sparse"):
            p = os.path.join(mnt, name)
            fd = os.open(p, os.O_RDONLY)
            try:
                o["lseek"][name] = _lseek_probe(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        with open(os.path.join(mnt, "sparse"), "rb") as f:
            o["sparse"] = f.read()
        return o
    finally:
        if subprocess.run(["umount", mnt], capture_output=True).returncode:
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        os.rmdir(mnt)


class Image:
    def __init__(self, path, oracle):
        self.path = path
        self.oracle = oracle
        self.sha = _sha(path)


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    top = tmp_path_factory.mktemp("protocol")
    src = top / "src"
    src.mkdir()
    _populate(str(src))
    img = str(top / "fs.img")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), img, "8M"],
                   check=True, capture_output=True)
    oracle = _kernel_oracle(img)
    if oracle is None:
        pytest.skip("cannot loop-mount the image with the kernel's ext4")
    # The image must really hold what the tests look for.
    assert oracle["hello"] == FILE_BYTES
    assert oracle["xattrs"] == XATTRS
    assert oracle["lseek"]["sparse"][(0, os.SEEK_HOLE)] < SPARSE_TAIL_AT, \
        "mkfs did not keep the hole in 'sparse'"
    return Image(img, oracle)


# ---------------------------------------------------------------------------
# Server lifecycle helpers
# ---------------------------------------------------------------------------

@pytest.fixture
def server(image):
    """A fuse4fs serving the image, not yet INITed; always reaped."""
    peer = fw.KernelPeer.spawn([FUSE4FS, "-f", "-o", "ro", image.path,
                                fw.DEVFD])
    try:
        yield peer
    finally:
        peer.cleanup()


@pytest.fixture
def peer(server):
    """A fuse4fs after a normal INIT handshake."""
    server.init()
    return server


def assert_alive(p, image):
    """Valid requests still work: GETATTR of the root, LOOKUP of a file."""
    root = p.getattr(fw.ROOT_ID).attr
    assert stat.S_ISDIR(root.mode)
    assert root.ino == image.oracle["root"].st_ino
    e = p.lookup(fw.ROOT_ID, "hello.txt")
    assert e.nodeid not in (0, fw.ROOT_ID)
    assert e.attr.size == len(FILE_BYTES)
    assert e.attr.ino == image.oracle["stat"]["hello.txt"].st_ino
    p.forget(e.nodeid, 1)


def finish(p, image):
    """End of every test: still serving, nothing left unanswered, then a
    clean exit when the channel closes, and the image untouched."""
    assert_alive(p, image)
    p.expect_silence(0.1)
    assert not p.inflight, "requests never answered: %r" % p.inflight
    rc = p.close()
    check_exit(p, rc, image)


def check_exit(p, rc, image):
    err = p.stderr_text()
    assert rc == 0, "exit status %r; stderr:\n%s" % (rc, err[-4000:])
    # Only a sanitizer build can print these, but they can never be right.
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert marker not in err, "sanitizer report:\n%s" % err[-8000:]
    assert _sha(image.path) == image.sha, "the read-only image was modified"


def expect_error(reply, *errs):
    names = "/".join(errno.errorcode[e] for e in errs)
    assert reply.error in [-e for e in errs], \
        "%r: expected %s" % (reply, names)


def lookup_node(p, name):
    return p.lookup(fw.ROOT_ID, name).nodeid


# ---------------------------------------------------------------------------
# INIT
# ---------------------------------------------------------------------------

def test_close_before_init(server, image):
    """The peer closes the channel without ever sending INIT."""
    rc = server.close()
    check_exit(server, rc, image)


def test_close_with_open_files(peer, image):
    """The channel closes while files are open and nodes are looked up, as
    when the kernel aborts the connection: no RELEASE or FORGET ever comes.
    The server must still exit cleanly (and, in a sanitizer build, without
    leaking the handles)."""
    hello = lookup_node(peer, "hello.txt")
    d = lookup_node(peer, "dir")
    fh = peer.open(hello).fh
    peer.opendir(d)
    peer.opendir(fw.ROOT_ID)
    assert peer.read(hello, fh, 0, 10) == FILE_BYTES[:10]
    rc = peer.close()
    check_exit(peer, rc, image)


@pytest.mark.parametrize("offered", [fw.KERNEL_6_18_FLAGS, 0],
                         ids=["linux-6.18", "no-flags"])
def test_init_negotiation(server, image, offered):
    # Anything before INIT is refused with EIO, and does not break INIT.
    expect_error(server.request(Op.GETATTR, fw.ROOT_ID,
                                fw.GetattrIn().pack()), errno.EIO)
    expect_error(server.request(Op.LOOKUP, fw.ROOT_ID, fw.cstr("hello.txt")),
                 errno.EIO)
    expect_error(server.request(Op.STATFS, fw.ROOT_ID), errno.EIO)

    out = server.init(flags=offered)
    assert len(server.init_reply.data) == fw.InitOut.SIZE
    assert out.major == fw.KERNEL_VERSION
    assert out.minor <= fw.KERNEL_MINOR_6_18
    offered = int(offered)
    assert out.flags & ~(offered & 0xFFFFFFFF) == 0, \
        "reply flags %#x not offered (%#x)" % (out.flags, offered & 0xFFFFFFFF)
    if out.flags & fw.InitFlag.INIT_EXT:
        assert out.flags2 & ~(offered >> 32) == 0, \
            "reply flags2 %#x not offered (%#x)" % (out.flags2, offered >> 32)
    assert out.max_write >= 4096
    if server.agreed_flags & fw.InitFlag.MAX_PAGES:
        assert out.max_pages >= 1

    # A second INIT is a protocol violation.
    r = server.request(Op.INIT, 0, server.init_in.pack())
    expect_error(r, errno.EPROTO)
    finish(server, image)


# ---------------------------------------------------------------------------
# Malformed headers and lengths
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 4, 8, 12, 15])
def test_header_shorter_than_out_header(peer, image, n):
    """Fewer than 16 bytes: not even a unique to answer to.  (A zero-length
    message cannot be tested: it reads as end-of-file on a socket.)"""
    msg = fw.pack_request(Op.GETATTR, peer.new_unique(), fw.ROOT_ID,
                          fw.GetattrIn().pack(), length=n)[:n]
    peer.send_raw(msg)
    peer.expect_silence(0.3)
    finish(peer, image)


@pytest.mark.parametrize("n", [16, 17, 24, 32, 39])
def test_header_truncated(peer, image, n):
    """16..39 bytes: the unique is there, the rest of the header is not."""
    unique = peer.new_unique()
    msg = fw.pack_request(Op.GETATTR, unique, fw.ROOT_ID,
                          fw.GetattrIn().pack(), length=n)[:n]
    peer.send_raw(msg, unique=unique, opcode=Op.GETATTR)
    expect_error(peer.wait(unique), errno.EINVAL)
    finish(peer, image)


LYING_LENGTHS = [
    ("plus8", lambda n: n + 8),
    ("plus4096", lambda n: n + 4096),
    ("minus8", lambda n: n - 8),
    ("header-only", lambda n: 40),
    ("39", lambda n: 39),
    ("16", lambda n: 16),
    ("0", lambda n: 0),
    ("u32max", lambda n: 0xFFFFFFFF),
]


@pytest.mark.parametrize("how", [h for h, _ in LYING_LENGTHS])
@pytest.mark.parametrize("what", ["getattr", "lookup", "read"])
def test_length_lies(peer, image, what, how):
    """in_header.len disagrees with the bytes actually sent."""
    node = lookup_node(peer, "hello.txt")
    fh = peer.open(node).fh
    if what == "getattr":
        op, nodeid, body = Op.GETATTR, fw.ROOT_ID, fw.GetattrIn().pack()
    elif what == "lookup":
        op, nodeid, body = Op.LOOKUP, fw.ROOT_ID, fw.cstr("hello.txt")
    else:
        op, nodeid, body = Op.READ, node, fw.ReadIn(fh, 0, 4096).pack()
    length = dict(LYING_LENGTHS)[how](40 + len(body))
    r = peer.request(op, nodeid, body, length=length)
    expect_error(r, errno.EINVAL)
    # The file handle is still good.
    assert peer.read(node, fh, 0, 100) == FILE_BYTES[:100]
    peer.release(node, fh)
    finish(peer, image)


def _file(p):
    return lookup_node(p, "hello.txt")


def _root(p):
    return fw.ROOT_ID


# (id, opcode, node, body, acceptable errors).  The first errno is the one
# the length check gives; the others are what a read-only server may answer
# instead when the operation cannot succeed anyway.
EINVAL, EROFS, ENOSYS = errno.EINVAL, errno.EROFS, errno.ENOSYS
TRUNCATED_ARGS = [
    ("read-10", Op.READ, _file, bytes(10), (EINVAL,)),
    ("read-0", Op.READ, _file, b"", (EINVAL,)),
    ("readdir-10", Op.READDIR, _root, bytes(10), (EINVAL,)),
    ("readdirplus-39", Op.READDIRPLUS, _root, bytes(39), (EINVAL,)),
    ("getattr-8", Op.GETATTR, _root, bytes(8), (EINVAL,)),
    ("open-4", Op.OPEN, _file, bytes(4), (EINVAL,)),
    ("opendir-0", Op.OPENDIR, _root, b"", (EINVAL,)),
    ("release-8", Op.RELEASE, _file, bytes(8), (EINVAL,)),
    ("releasedir-23", Op.RELEASEDIR, _root, bytes(23), (EINVAL,)),
    ("getxattr-no-size", Op.GETXATTR, _file, b"\x10\0", (EINVAL,)),
    ("getxattr-no-name", Op.GETXATTR, _file, fw.GetxattrIn(64).pack(),
     (EINVAL,)),
    ("getxattr-name-no-nul", Op.GETXATTR, _file,
     fw.GetxattrIn(64).pack() + b"user.greeting", (EINVAL,)),
    ("listxattr-4", Op.LISTXATTR, _file, bytes(4), (EINVAL,)),
    ("lookup-no-nul", Op.LOOKUP, _root, b"hello.txt", (EINVAL,)),
    ("lookup-empty", Op.LOOKUP, _root, b"", (EINVAL,)),
    ("lseek-16", Op.LSEEK, _file, bytes(16), (EINVAL,)),
    ("statx-16", Op.STATX, _file, bytes(16), (EINVAL, ENOSYS)),
    ("access-2", Op.ACCESS, _file, bytes(2), (EINVAL, ENOSYS)),
    ("bmap-4", Op.BMAP, _file, bytes(4), (EINVAL, ENOSYS)),
    ("getlk-20", Op.GETLK, _file, bytes(20), (EINVAL, ENOSYS)),
    ("ioctl-8", Op.IOCTL, _file, bytes(8), (EINVAL, ENOSYS)),
    ("poll-8", Op.POLL, _file, bytes(8), (EINVAL, ENOSYS)),
    ("flush-8", Op.FLUSH, _file, bytes(8), (EINVAL, ENOSYS)),
    ("fsync-8", Op.FSYNC, _file, bytes(8), (EINVAL, ENOSYS)),
    ("write-size-exceeds-data", Op.WRITE, _file,
     fw.WriteIn(0, 0, 4096).pack() + bytes(100), (EINVAL, EROFS)),
    ("write-20", Op.WRITE, _file, bytes(20), (EINVAL, EROFS)),
    ("setattr-40", Op.SETATTR, _file, bytes(40), (EINVAL, EROFS)),
    ("setxattr-size-exceeds-value", Op.SETXATTR, _file,
     fw.SetxattrIn(1000).pack() + b"user.x\0" + b"v" * 10, (EINVAL, EROFS)),
    ("setxattr-name-no-nul", Op.SETXATTR, _file,
     fw.SetxattrIn(0).pack() + b"user.x", (EINVAL, EROFS)),
    ("removexattr-no-nul", Op.REMOVEXATTR, _file, b"user.greeting",
     (EINVAL, EROFS)),
    ("mkdir-4", Op.MKDIR, _root, bytes(4), (EINVAL, EROFS)),
    ("mkdir-no-name", Op.MKDIR, _root, fw.MkdirIn(0o755).pack(),
     (EINVAL, EROFS)),
    ("mknod-no-nul", Op.MKNOD, _root, fw.MknodIn(0o100644).pack() + b"x",
     (EINVAL, EROFS)),
    ("create-no-nul", Op.CREATE, _root, fw.CreateIn(os.O_RDWR).pack() + b"x",
     (EINVAL, EROFS, ENOSYS)),
    ("symlink-one-name", Op.SYMLINK, _root, b"newlink\0", (EINVAL, EROFS)),
    ("rename-one-name", Op.RENAME, _root,
     fw.RenameIn(fw.ROOT_ID).pack() + b"hello.txt\0", (EINVAL, EROFS)),
    ("rename2-4", Op.RENAME2, _root, bytes(4), (EINVAL, EROFS, ENOSYS)),
    ("link-4", Op.LINK, _root, bytes(4), (EINVAL, EROFS, ENOSYS)),
    ("unlink-no-nul", Op.UNLINK, _root, b"hello.txt", (EINVAL, EROFS)),
    ("fallocate-8", Op.FALLOCATE, _file, bytes(8),
     (EINVAL, EROFS, ENOSYS, errno.EOPNOTSUPP)),
    ("copy-file-range-8", Op.COPY_FILE_RANGE, _file, bytes(8),
     (EINVAL, EROFS, ENOSYS)),
]


@pytest.mark.parametrize("case", TRUNCATED_ARGS, ids=[c[0] for c in TRUNCATED_ARGS])
def test_truncated_argument(peer, image, case):
    _id, op, node, body, errs = case
    expect_error(peer.request(op, node(peer), body), *errs)
    finish(peer, image)


@pytest.mark.parametrize("opcode", [7, 19, 54, 1000, 0x7FFFFFFF, 0xFFFFFFFF])
def test_unknown_opcode(peer, image, opcode):
    expect_error(peer.request(opcode, fw.ROOT_ID), errno.ENOSYS)
    expect_error(peer.request(opcode, fw.ROOT_ID, bytes(64)), errno.ENOSYS)
    finish(peer, image)


def _bad_nodeids(image):
    files = image.oracle["statvfs"].f_files      # s_inodes_count
    return [("zero", 0), ("u64max", 2**64 - 1), ("bit63", 2**63),
            ("root-ino-plus-2^32", 2**32 + 2), ("unused-ino", files),
            ("past-inodes-count", files + 1)]


BAD_NODE_OPS = [
    ("getattr", Op.GETATTR, fw.GetattrIn().pack()),
    ("lookup", Op.LOOKUP, fw.cstr("hello.txt")),
    ("readlink", Op.READLINK, b""),
    ("open", Op.OPEN, fw.OpenIn(os.O_RDONLY).pack()),
    ("opendir", Op.OPENDIR, fw.OpenIn(os.O_RDONLY).pack()),
    ("readdir", Op.READDIR, fw.ReadIn(0, 0, 4096).pack()),
    ("read", Op.READ, fw.ReadIn(0, 0, 4096).pack()),
    ("getxattr", Op.GETXATTR, fw.GetxattrIn(0).pack() + b"user.greeting\0"),
    ("listxattr", Op.LISTXATTR, fw.GetxattrIn(0).pack()),
    ("statx", Op.STATX, fw.StatxIn(0, 0, 0, 0, fw.STATX_BASIC_STATS).pack()),
    ("lseek", Op.LSEEK, fw.LseekIn(0, 0, fw.SEEK_DATA).pack()),
]


@pytest.mark.parametrize("case", BAD_NODE_OPS, ids=[c[0] for c in BAD_NODE_OPS])
def test_bad_nodeid(peer, image, case):
    _id, op, body = case
    extra = ()
    if op in (Op.READ, Op.READDIR, Op.LSEEK):
        extra = (errno.EBADF,)      # these act on the (equally bogus) fh
    elif op == Op.STATX:
        extra = (errno.ENOSYS,)
    wrong = []
    for label, nodeid in _bad_nodeids(image):
        r = peer.request(op, nodeid, body)
        ok = -r.error in BAD_NODE_ERRORS + extra
        if not ok:
            wrong.append("%s (%#x): %r" % (label, nodeid, r))
    assert not wrong, "expected one of %s:\n%s" % (
        "/".join(errno.errorcode[e] for e in BAD_NODE_ERRORS + extra),
        "\n".join(wrong))
    finish(peer, image)


@pytest.mark.parametrize("what", ["write", "getattr"])
def test_message_larger_than_read_buffer(peer, image, what):
    """A message the server cannot read whole is answered with EIO."""
    node = lookup_node(peer, "hello.txt")
    size = max(2 << 20, peer.init_out.max_write + (1 << 20))
    if what == "write":
        body = fw.WriteIn(0, 0, size).pack() + b"w" * size
        r = peer.request(Op.WRITE, node, body)
    else:
        r = peer.request(Op.GETATTR, node, fw.GetattrIn().pack() + bytes(size))
    expect_error(r, errno.EIO)
    # And again, to be sure the leftover of the first one was not taken for
    # a new request.
    r = peer.request(Op.GETATTR, node, fw.GetattrIn().pack() + bytes(size))
    expect_error(r, errno.EIO)
    finish(peer, image)


# ---------------------------------------------------------------------------
# FORGET, BATCH_FORGET, INTERRUPT
# ---------------------------------------------------------------------------

def test_forget_and_batch_forget(peer, image):
    hello = lookup_node(peer, "hello.txt")
    d = lookup_node(peer, "dir")
    d2 = lookup_node(peer, "dir")                 # nlookup 2 for dir
    assert d2 == d
    link = lookup_node(peer, "link")

    peer.forget(hello, 1)
    peer.forget(d, 2**64 - 1)                     # more than ever looked up
    peer.forget(0, 1)
    peer.forget(2**64 - 1, 1)
    peer.forget(image.oracle["statvfs"].f_files, 1)
    peer.send(Op.FORGET, link, bytes(4), expect_reply=False)   # truncated
    peer.send(Op.FORGET, link, b"", expect_reply=False)
    peer.expect_silence(0.3)

    peer.batch_forget([(link, 1)])
    peer.batch_forget([])
    peer.batch_forget([(link, 1)], count=1000)    # count lies upward
    peer.batch_forget([(link, 1), (hello, 1)], count=1)   # and downward
    peer.batch_forget([], count=0xFFFFFFFF)
    peer.batch_forget([(0, 1), (2**64 - 1, 5), (fw.ROOT_ID, 0)])
    peer.send(Op.BATCH_FORGET, 0, bytes(3), expect_reply=False)
    peer.send(Op.BATCH_FORGET, 0, fw.BatchForgetIn(2).pack() + bytes(20),
              expect_reply=False)
    peer.expect_silence(0.3)

    # Everything can be looked up again and read.
    for name in ("hello.txt", "dir", "link"):
        e = peer.lookup(fw.ROOT_ID, name)
        assert e.attr.ino == image.oracle["stat"][name].st_ino
        assert peer.getattr(e.nodeid).attr.ino == e.attr.ino
    assert peer.readlink(lookup_node(peer, "link")) == b"hello.txt"
    finish(peer, image)


def test_interrupt_truncated(peer, image):
    """An INTERRUPT too short to name its victim: an EINVAL reply, or none
    (replies to INTERRUPT are optional)."""
    unique = peer.new_unique() | 1
    peer.send(Op.INTERRUPT, 0, bytes(4), unique=unique, expect_reply=None)
    peer.poll(0.3)
    if unique in peer.replies:
        expect_error(peer.replies.pop(unique), errno.EINVAL)
    finish(peer, image)


@pytest.mark.parametrize("victim", ["never-sent", "answered"])
def test_interrupt_not_in_flight(peer, image, victim):
    if victim == "never-sent":
        target = 10**9
    else:
        target = peer.send(Op.GETATTR, fw.ROOT_ID, fw.GetattrIn().pack())
        peer.wait(target).check()
    unique = peer.interrupt(target)
    assert unique & 1
    r = peer.wait(unique)
    assert r.unique == unique
    expect_error(r, errno.EAGAIN)
    finish(peer, image)


# ---------------------------------------------------------------------------
# Functional requests, checked against the kernel's ext4
# ---------------------------------------------------------------------------

def _check_attr(attr, st, what):
    assert (attr.ino, attr.mode, attr.nlink, attr.uid, attr.gid,
            attr.size, attr.blocks) == \
        (st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
         st.st_size, st.st_blocks), what
    for t in ("atime", "mtime", "ctime"):
        ns = getattr(st, "st_%s_ns" % t)
        assert (getattr(attr, t), getattr(attr, t + "nsec")) == \
            divmod(ns, 10**9), "%s %s" % (what, t)


def test_lookup_getattr_read(peer, image):
    o = image.oracle
    for name in NAMES:
        e = peer.lookup(fw.ROOT_ID, name)
        _check_attr(e.attr, o["stat"][name], "LOOKUP " + name)
        _check_attr(peer.getattr(e.nodeid).attr, o["stat"][name],
                    "GETATTR " + name)
    _check_attr(peer.getattr(fw.ROOT_ID).attr, o["root"], "GETATTR root")
    # A missing name: ENOENT, or a negative entry (node id 0).
    r = peer.request(Op.LOOKUP, fw.ROOT_ID, fw.cstr("missing"))
    if r.error:
        expect_error(r, errno.ENOENT)
    else:
        assert r.struct(fw.EntryOut).nodeid == 0, "LOOKUP of a missing name"

    node = lookup_node(peer, "hello.txt")
    fh = peer.open(node).fh
    size = len(FILE_BYTES)
    assert peer.read(node, fh, 0, 1 << 16) == FILE_BYTES
    assert peer.read(node, fh, 5000, 100) == FILE_BYTES[5000:5100]
    assert peer.read(node, fh, size - 10, 4096) == FILE_BYTES[-10:]
    assert peer.read(node, fh, size, 4096) == b""
    assert peer.read(node, fh, size + 12345, 4096) == b""
    # GETATTR through the handle.
    _check_attr(peer.getattr(node, fh=fh).attr, o["stat"]["hello.txt"],
                "GETATTR fh")
    peer.release(node, fh)

    node = lookup_node(peer, "sparse")
    fh = peer.open(node).fh
    data = b"".join(peer.read(node, fh, off, 16384)
                    for off in range(0, len(o["sparse"]), 16384))
    assert data == o["sparse"]
    peer.release(node, fh)
    finish(peer, image)


def test_readdir(peer, image):
    o = image.oracle
    want = {name: ino for name, (ino, _d, _l) in o["dirents"].items()}
    want["."] = want[".."] = o["root"].st_ino
    fh = peer.opendir(fw.ROOT_ID).fh
    entries = peer.readdir_all(fw.ROOT_ID, fh)
    got = {e.name.decode(): e.ino for e in entries}
    assert len(got) == len(entries), "duplicate names: %r" % entries
    assert got == want
    types = {e.name.decode(): e.type for e in entries}
    assert types["dir"] == stat.S_IFDIR >> 12
    assert types["hello.txt"] == stat.S_IFREG >> 12
    assert types["link"] == stat.S_IFLNK >> 12
    # Small buffers: one record at a time, resuming from each cookie.
    small = peer.readdir_all(fw.ROOT_ID, fh, size=64)
    assert [e.name for e in small] == [e.name for e in entries]
    peer.releasedir(fw.ROOT_ID, fh)

    d = lookup_node(peer, "dir")
    fh = peer.opendir(d).fh
    names = sorted(e.name.decode() for e in peer.readdir_all(d, fh))
    assert names == sorted(o["subdir"] + [".", ".."])
    peer.releasedir(d, fh)

    if peer.agreed_flags & fw.InitFlag.DO_READDIRPLUS:
        fh = peer.opendir(fw.ROOT_ID).fh
        plus = peer.readdir_all(fw.ROOT_ID, fh, plus=True)
        assert {e.name.decode(): e.ino for e in plus} == want
        for e in plus:
            name = e.name.decode()
            if name in NAMES:
                assert e.entry.nodeid != 0
                _check_attr(e.entry.attr, o["stat"][name], "READDIRPLUS " + name)
                peer.forget(e.entry.nodeid, 1)
        peer.releasedir(fw.ROOT_ID, fh)
    finish(peer, image)


def test_readlink_xattr_statfs(peer, image):
    o = image.oracle
    link = lookup_node(peer, "link")
    assert peer.readlink(link) == os.fsencode(o["readlink"])

    node = lookup_node(peer, "hello.txt")
    names = b"".join(fw.cstr(k) for k in o["xattrs"])
    n = peer.listxattr(node, 0)
    assert n == len(names)
    got = peer.listxattr(node, n)
    assert sorted(got.split(b"\0")[:-1]) == sorted(names.split(b"\0")[:-1])
    assert got.endswith(b"\0")
    expect_error(peer.request(Op.LISTXATTR, node, fw.GetxattrIn(1).pack()),
                 errno.ERANGE)
    for k, v in o["xattrs"].items():
        assert peer.getxattr(node, k, 0) == len(v)
        assert peer.getxattr(node, k, len(v)) == v
        assert peer.getxattr(node, k, 65536) == v
        expect_error(peer.request(Op.GETXATTR, node,
                                  fw.GetxattrIn(len(v) - 1).pack() + fw.cstr(k)),
                     errno.ERANGE)
    expect_error(peer.request(Op.GETXATTR, node,
                              fw.GetxattrIn(100).pack() + fw.cstr("user.nope")),
                 errno.ENODATA)

    sv = o["statvfs"]
    st = peer.statfs()
    assert (st.blocks, st.bfree, st.files, st.ffree, st.bsize, st.frsize,
            st.namelen) == (sv.f_blocks, sv.f_bfree, sv.f_files, sv.f_ffree,
                            sv.f_bsize, sv.f_frsize, sv.f_namemax)
    assert sv.f_bavail <= st.bavail <= st.bfree
    finish(peer, image)


@pytest.mark.parametrize("name", ["hello.txt", "sparse"])
def test_lseek(peer, image, name):
    node = lookup_node(peer, name)
    fh = peer.open(node).fh
    wrong = []
    for (off, whence), want in sorted(image.oracle["lseek"][name].items()):
        r = peer.request(Op.LSEEK, node, fw.LseekIn(fh, off, whence).pack())
        got = -r.errno if r.error else r.struct(fw.LseekOut).offset
        if got != want:
            wrong.append("%s(%d): got %s, ext4 says %s" % (
                "SEEK_DATA" if whence == os.SEEK_DATA else "SEEK_HOLE", off,
                got, want))
    assert not wrong, "\n".join(wrong)
    peer.release(node, fh)
    finish(peer, image)


def test_statx(peer, image):
    node = lookup_node(peer, "hello.txt")
    r = peer.request(Op.STATX, node,
                     fw.StatxIn(0, 0, 0, 0, fw.STATX_BASIC_STATS).pack())
    if r.error == -errno.ENOSYS:
        pytest.skip("STATX not implemented")
    sx = r.struct(fw.StatxOut).stat
    st = image.oracle["stat"]["hello.txt"]
    assert sx.mask & fw.STATX_BASIC_STATS == fw.STATX_BASIC_STATS
    assert (sx.ino, sx.mode, sx.nlink, sx.uid, sx.gid, sx.size, sx.blocks) == \
        (st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
         st.st_size, st.st_blocks)
    assert (sx.mtime.tv_sec, sx.mtime.tv_nsec) == divmod(st.st_mtime_ns, 10**9)
    finish(peer, image)


def test_destroy(peer, image):
    assert_alive(peer, image)
    r = peer.destroy()
    assert r.data == b""
    rc = peer.wait_exit()           # exits on its own, channel still open
    check_exit(peer, rc, image)


# ---------------------------------------------------------------------------
# Fuzz
# ---------------------------------------------------------------------------

# Argument layout per opcode: (fixed struct or None, trailing part) where
# the trailing part is the number of names, or "data" for a payload.
FUZZ_ARGS = {
    Op.LOOKUP: (None, 1), Op.FORGET: (fw.ForgetIn, 0),
    Op.GETATTR: (fw.GetattrIn, 0), Op.SETATTR: (fw.SetattrIn, 0),
    Op.READLINK: (None, 0), Op.SYMLINK: (None, 2),
    Op.MKNOD: (fw.MknodIn, 1), Op.MKDIR: (fw.MkdirIn, 1),
    Op.UNLINK: (None, 1), Op.RMDIR: (None, 1),
    Op.RENAME: (fw.RenameIn, 2), Op.LINK: (fw.LinkIn, 1),
    Op.OPEN: (fw.OpenIn, 0), Op.READ: (fw.ReadIn, 0),
    Op.WRITE: (fw.WriteIn, "data"), Op.STATFS: (None, 0),
    Op.RELEASE: (fw.ReleaseIn, 0), Op.FSYNC: (fw.FsyncIn, 0),
    Op.SETXATTR: (fw.SetxattrIn, "xattr"), Op.GETXATTR: (fw.GetxattrIn, 1),
    Op.LISTXATTR: (fw.GetxattrIn, 0), Op.REMOVEXATTR: (None, 1),
    Op.FLUSH: (fw.FlushIn, 0), Op.INIT: (fw.InitIn, 0),
    Op.OPENDIR: (fw.OpenIn, 0), Op.READDIR: (fw.ReadIn, 0),
    Op.RELEASEDIR: (fw.ReleaseIn, 0), Op.FSYNCDIR: (fw.FsyncIn, 0),
    Op.GETLK: (fw.LkIn, 0), Op.SETLK: (fw.LkIn, 0),
    Op.ACCESS: (fw.AccessIn, 0), Op.CREATE: (fw.CreateIn, 1),
    Op.INTERRUPT: (fw.InterruptIn, 0), Op.BMAP: (fw.BmapIn, 0),
    Op.IOCTL: (fw.IoctlIn, "data"), Op.POLL: (fw.PollIn, 0),
    Op.NOTIFY_REPLY: (fw.NotifyRetrieveIn, "data"),
    Op.BATCH_FORGET: (fw.BatchForgetIn, "forgets"),
    Op.FALLOCATE: (fw.FallocateIn, 0), Op.READDIRPLUS: (fw.ReadIn, 0),
    Op.RENAME2: (fw.Rename2In, 2), Op.LSEEK: (fw.LseekIn, 0),
    Op.COPY_FILE_RANGE: (fw.CopyFileRangeIn, 0),
    Op.COPY_FILE_RANGE_64: (fw.CopyFileRangeIn, 0),
    Op.SETUPMAPPING: (None, "data"), Op.REMOVEMAPPING: (None, "data"),
    Op.SYNCFS: (fw.SyncfsIn, 0), Op.TMPFILE: (fw.CreateIn, 1),
    Op.STATX: (fw.StatxIn, 0),
}
# The iomap tree's opcodes (FREEZE_FS .. IOMAP_END): on a connection that
# did not negotiate iomap they must be refused, with a reply.
for _op in range(4089, 4096):
    FUZZ_ARGS[_op] = (None, "data")
# Never sent: DESTROY ends the session, SETLKW may legitimately block.
FUZZ_OPS = sorted(FUZZ_ARGS)

INTERESTING = {
    "Q": [0, 1, 2, 4095, 4096, 12345, 65536, 2**31, 2**32, 2**63 - 1,
          2**63, 2**64 - 1],
    "q": [0, 1, -1, 4096, 2**63 - 1, -2**63],
    "I": [0, 1, 2, 3, 4, 8, 255, 4096, 65536, 1 << 20, 2**31, 2**32 - 1],
    "i": [0, 1, -1, 2**31 - 1, -2**31],
    "H": [0, 1, 255, 2**15, 2**16 - 1],
}
FUZZ_NAMES = [b"hello.txt", b"dir", b"link", b"sparse", b".", b"..",
              b"lost+found", b"missing", b"a" * 255, b"a" * 256, b"x/y",
              b"user.greeting", b"user.blob", b"security.selinux",
              b"system.posix_acl_access", b"trusted.x", b"\xff\xfe"]


class Fuzzer:
    def __init__(self, rng, nodes, fhs):
        self.rng = rng
        self.nodes = nodes
        self.fhs = fhs

    def value(self, name, code):
        rng = self.rng
        if isinstance(code, type):
            return self.struct(code)
        if code.endswith("s"):
            return rng.randbytes(int(code[:-1])) if rng.random() < 0.2 else b""
        if name in ("fh", "fh_in", "fh_out") and rng.random() < 0.6:
            return rng.choice(self.fhs)
        if name in ("nodeid_out", "newdir", "oldnodeid") and rng.random() < 0.6:
            return rng.choice(self.nodes)
        if name == "whence" and rng.random() < 0.7:
            return rng.randrange(0, 6)
        if rng.random() < 0.7:
            return rng.choice(INTERESTING[code])
        bits = struct.calcsize(code) * 8
        v = rng.getrandbits(bits)
        if code in "qi" and v >= 1 << (bits - 1):
            v -= 1 << bits
        return v

    def struct(self, cls):
        return cls(*(self.value(n, c) for n, c in cls.FIELDS))

    def name(self):
        rng = self.rng
        if rng.random() < 0.8:
            return rng.choice(FUZZ_NAMES) + b"\0"
        raw = rng.randbytes(rng.randrange(0, 300))
        return raw + (b"\0" if rng.random() < 0.7 else b"")

    def body(self, op):
        rng = self.rng
        if rng.random() < 0.2:          # noise of any length
            return rng.randbytes(rng.randrange(0, 200))
        cls, tail = FUZZ_ARGS[op]
        body = self.struct(cls).pack() if cls else b""
        if isinstance(tail, int):
            body += b"".join(self.name() for _ in range(tail))
        elif tail == "data":
            body += rng.randbytes(rng.randrange(0, 64))
        elif tail == "xattr":
            body += self.name() + b"v" * rng.randrange(0, 40)
        elif tail == "forgets":
            body += b"".join(fw.ForgetOne(rng.choice(self.nodes),
                                          rng.choice([0, 1, 2**64 - 1])).pack()
                             for _ in range(rng.randrange(0, 4)))
        if rng.random() < 0.2:          # cut or extend the well-formed body
            if body and rng.random() < 0.5:
                body = body[:rng.randrange(0, len(body))]
            else:
                body += bytes(rng.randrange(1, 64))
        return body


def test_fuzz(peer, image):
    rng = random.Random(FUZZ_SEED)
    hello = lookup_node(peer, "hello.txt")
    sparse = lookup_node(peer, "sparse")
    d = lookup_node(peer, "dir")
    link = lookup_node(peer, "link")
    nodes = [0, fw.ROOT_ID, hello, sparse, d, link, 2**64 - 1, 2**32 + 2,
             image.oracle["statvfs"].f_files]
    fhs = [0, 2**64 - 1, peer.open(hello).fh, peer.open(sparse).fh,
           peer.opendir(fw.ROOT_ID).fh, peer.opendir(d).fh]
    fz = Fuzzer(rng, nodes, fhs)

    for i in range(FUZZ_COUNT):
        op = rng.choice(FUZZ_OPS)
        nodeid = rng.choice(nodes) if rng.random() < 0.9 else rng.getrandbits(64)
        body = fz.body(op)
        hdr = {}
        if rng.random() < 0.05:
            hdr["length"] = rng.choice([0, 16, 39, 40, 40 + len(body) + 8,
                                        max(0, 40 + len(body) - 1),
                                        rng.getrandbits(32)])
        if rng.random() < 0.05:
            hdr["total_extlen"] = rng.getrandbits(16)
        if rng.random() < 0.1:
            hdr["uid"], hdr["gid"] = rng.getrandbits(32), rng.getrandbits(32)
        unique = peer.new_unique()
        if op in (Op.INTERRUPT, Op.NOTIFY_REPLY):
            expect = None               # a reply is allowed, not required
            unique |= 1 if op == Op.INTERRUPT else 0
        elif op in (Op.FORGET, Op.BATCH_FORGET):
            expect = False              # a reply is a protocol error
        else:
            expect = True
        what = "request %d (seed %#x): %s nodeid=%#x hdr=%r body=%s" % (
            i, FUZZ_SEED, fw.op_name(op), nodeid, hdr, body.hex())
        try:
            peer.send(op, nodeid, body, unique=unique, expect_reply=expect,
                      **hdr)
            if expect:
                peer.wait(unique)
        except fw.ServerGone as e:      # the message carries the stderr
            raise AssertionError("%s\n%s" % (what, e)) from None
        except fw.ProtocolError as e:
            raise AssertionError("%s\n%s\nstderr:\n%s" % (
                what, e, peer.stderr_text()[-4000:])) from None

    try:
        peer.poll(0.5)              # late INTERRUPT replies, stray replies
        finish(peer, image)
    except fw.ProtocolError as e:
        raise AssertionError("after %d fuzz requests (seed %#x): %s"
                             % (FUZZ_COUNT, FUZZ_SEED, e)) from None
