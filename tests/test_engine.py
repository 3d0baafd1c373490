"""Tests of the FUSE protocol engine through tests/fe_toy.

fe_toy serves a fixed read-only tree: / (node 1), /hello (node 2,
"hello world\\n") and /link (node 3, symlink to "hello").

Two ways in:
  * a real FUSE mount (needs root and /dev/fuse): what the kernel shows must
    be exactly what the toy serves;
  * a SOCK_SEQPACKET socketpair handed over as /dev/fd/N: the test plays the
    kernel, so it can check the wire protocol byte by byte and send requests
    a kernel never would.

Env FE_TOY: path of the fe_toy binary (tests are skipped without it).
"""

import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time

import pytest

FE_TOY = os.environ.get("FE_TOY")
pytestmark = pytest.mark.skipif(
    not FE_TOY or not os.access(FE_TOY, os.X_OK),
    reason="FE_TOY is not set to the fe_toy binary")

# Protocol constants (from the ABI document; independent of the C header).
FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR = 1, 2, 3
FUSE_READLINK, FUSE_MKDIR, FUSE_RMDIR = 5, 9, 11
FUSE_OPEN, FUSE_READ, FUSE_WRITE, FUSE_STATFS = 14, 15, 16, 17
FUSE_SETXATTR = 21
FUSE_INIT, FUSE_OPENDIR, FUSE_READDIR = 26, 27, 28
FUSE_INTERRUPT, FUSE_DESTROY = 36, 38
FUSE_BATCH_FORGET, FUSE_READDIRPLUS = 42, 44
FUSE_FREEZE_FS, FUSE_UNFREEZE_FS, FUSE_SHUTDOWN_FS = 4089, 4090, 4091
FUSE_IOMAP_CONFIG, FUSE_IOMAP_IOEND = 4092, 4093
FUSE_IOMAP_BEGIN, FUSE_IOMAP_END = 4094, 4095
IOMAP_OPCODES = range(FUSE_FREEZE_FS, FUSE_IOMAP_END + 1)

FUSE_ASYNC_READ = 1 << 0
FUSE_POSIX_LOCKS = 1 << 1
FUSE_ATOMIC_O_TRUNC = 1 << 3
FUSE_DO_READDIRPLUS = 1 << 13
FUSE_READDIRPLUS_AUTO = 1 << 14
FUSE_PARALLEL_DIROPS = 1 << 18
FUSE_MAX_PAGES = 1 << 22
FUSE_CACHE_SYMLINKS = 1 << 23
FUSE_SETXATTR_EXT = 1 << 29
FUSE_INIT_EXT = 1 << 30
FUSE_CREATE_SUPP_GROUP = 1 << 34
FUSE_IOMAP = 1 << 43
FUSE_EXT_GROUPS = 32

EIO, EINVAL, ENOSYS, EAGAIN, EPROTO, ENOENT, EROFS = 5, 22, 38, 11, 71, 2, 30
EINTR = 4
ENOTTY = 25

# iomap (fuse-abi.md section 2; the iomap tree's v7 ABI).
FUSE_NOTIFY_IOMAP_DEV_INVAL = 99
FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS = 100
FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS = 101
IOMAP_TYPE_HOLE, IOMAP_TYPE_PURE_OVERWRITE = 0, 255
IOMAP_OP_WRITE, IOMAP_OP_DIRECT = 1 << 0, 1 << 4
IOMAP_IOEND_APPEND = 1 << 4
IOMAP_CONFIG_SID, IOMAP_CONFIG_BLOCKSIZE = 1 << 0, 1 << 2
IOMAP_CONFIG_CACHE_MAXBYTES = 1 << 6
NULL_ADDR = 2**64 - 1
IOMAP_IO = struct.Struct("<QQQHHI")                 # 32 bytes
BEGIN_IN = struct.Struct("<IIQQQ")                  # 32
END_IN = struct.Struct("<IIQQQq")                   # 40, then fuse_iomap_io
IOEND_IN = struct.Struct("<IiQQQQII")               # 48
CONFIG_IN = struct.Struct("<QqII40x")               # 64
CONFIG_OUT = struct.Struct("<Q32s16sB3sIIIqqqI4x")  # 104
RANGE = struct.Struct("<QQ")

IN_HEADER = struct.Struct("<IIQQIIIHH")      # 40 bytes
OUT_HEADER = struct.Struct("<IiQ")           # 16 bytes
INIT_IN = struct.Struct("<IIIII44x")         # 64 bytes
INIT_OUT = struct.Struct("<IIIIHHIIHHIIH22x")  # 64 bytes
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")    # 88 bytes
ENTRY_OUT_HEAD = struct.Struct("<QQQQII")    # 40 bytes, then fuse_attr
DIRENT = struct.Struct("<QQII")              # 24 bytes, then the name

HELLO = b"hello world\n"
TOY_TIME = 1700000000
MAX_WRITE = 1 << 20

# Offered by a typical 6.18 kernel, enough to see the filesystem's choices.
KERNEL_FLAGS = (FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_ATOMIC_O_TRUNC |
                FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO |
                FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS |
                FUSE_SETXATTR_EXT | FUSE_INIT_EXT | FUSE_CREATE_SUPP_GROUP)


def in_header(length, opcode, unique, nodeid=0, extlen=0):
    return IN_HEADER.pack(length, opcode, unique, nodeid, 1000, 1000, 4242,
                          extlen, 0)


def request(opcode, unique, nodeid=0, body=b"", extlen=0):
    return in_header(40 + len(body), opcode, unique, nodeid, extlen) + body


# ---------------------------------------------------------------------------
# Socketpair harness: the test is the kernel.
# ---------------------------------------------------------------------------

class Peer:
    """fe_toy serving one end of a socketpair; this object holds the other."""

    def __init__(self, *args):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX,
                                              socket.SOCK_SEQPACKET)
        self.sock.settimeout(5)
        self.errfile = tempfile.TemporaryFile()
        fd = theirs.fileno()
        self.proc = subprocess.Popen(
            [FE_TOY, *args, "/dev/fd/%d" % fd], pass_fds=[fd],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.errfile)
        theirs.close()

    def send(self, msg):
        self.sock.send(msg)

    def recv(self):
        msg = self.sock.recv(1 << 21)
        assert len(msg) >= 16, "reply shorter than a header: %r" % msg
        length, error, unique = OUT_HEADER.unpack_from(msg)
        assert length == len(msg), "out_header.len does not match the message"
        if error:
            assert len(msg) == 16, "an error reply must be header-only"
        return error, unique, msg[16:]

    def recv_raw(self):
        """One message, unchecked: (out_header fields, body)."""
        msg = self.sock.recv(1 << 21)
        assert len(msg) >= 16, "message shorter than a header: %r" % msg
        return OUT_HEADER.unpack_from(msg), msg[16:]

    def call(self, opcode, unique, nodeid=0, body=b"", extlen=0):
        self.send(request(opcode, unique, nodeid, body, extlen))
        error, got, payload = self.recv()
        assert got == unique
        return error, payload

    def expect_silence(self, seconds=0.3):
        self.sock.settimeout(seconds)
        try:
            with pytest.raises(socket.timeout):
                self.sock.recv(1 << 16)
        finally:
            self.sock.settimeout(5)

    def init(self, minor=45, flags=KERNEL_FLAGS, major=7, unique=2,
             max_readahead=131072):
        body = INIT_IN.pack(major, minor, max_readahead, flags & 0xFFFFFFFF,
                            flags >> 32)
        return self.call(FUSE_INIT, unique, 0, body)

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read().decode(errors="replace")

    def wait(self, timeout=5):
        return self.proc.wait(timeout=timeout)

    def close(self):
        try:
            self.sock.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.errfile.close()


@pytest.fixture
def peer():
    peers = []

    def start(*args):
        p = Peer(*args)
        peers.append(p)
        return p

    yield start
    for p in peers:
        p.close()


@pytest.fixture
def ready(peer):
    """A toy that has completed INIT with default offers."""
    p = peer()
    error, _ = p.init()
    assert error == 0
    return p


def parse_init_out(payload):
    assert len(payload) == 64
    f = INIT_OUT.unpack(payload)
    keys = ("major", "minor", "max_readahead", "flags", "max_background",
            "congestion_threshold", "max_write", "time_gran", "max_pages",
            "map_alignment", "flags2", "max_stack_depth", "request_timeout")
    return dict(zip(keys, f))


def parse_attr(raw):
    f = ATTR.unpack(raw)
    keys = ("ino", "size", "blocks", "atime", "mtime", "ctime", "atimensec",
            "mtimensec", "ctimensec", "mode", "nlink", "uid", "gid", "rdev",
            "blksize", "flags")
    return dict(zip(keys, f))


# --- INIT negotiation -------------------------------------------------------

def test_init_negotiation(peer):
    p = peer()
    error, payload = p.init(max_readahead=65536)
    assert error == 0
    out = parse_init_out(payload)
    agreed = out["flags"] | out["flags2"] << 32
    assert out["major"] == 7
    assert out["minor"] == 45
    assert agreed & ~KERNEL_FLAGS == 0, "reply has flags the kernel did not offer"
    # The engine's own bits: flags2 must be readable, max_pages honoured.
    assert agreed & FUSE_INIT_EXT
    assert agreed & FUSE_MAX_PAGES
    # What fe_toy asks for, minus what was not offered.
    assert agreed & FUSE_DO_READDIRPLUS and agreed & FUSE_ASYNC_READ
    assert not agreed & FUSE_POSIX_LOCKS
    assert out["max_write"] == MAX_WRITE
    assert out["max_pages"] == MAX_WRITE // os.sysconf("SC_PAGESIZE")
    assert out["time_gran"] == 1
    assert out["max_readahead"] == 65536


def test_init_reply_is_want_and_offer(peer):
    # Offer less than the toy wants: only the intersection may come back
    # (plus INIT_EXT and MAX_PAGES, which the engine itself needs).
    p = peer()
    offered = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_INIT_EXT | FUSE_MAX_PAGES
    error, payload = p.init(flags=offered)
    assert error == 0
    out = parse_init_out(payload)
    assert out["flags"] | out["flags2"] << 32 == (
        FUSE_ASYNC_READ | FUSE_INIT_EXT | FUSE_MAX_PAGES)


def test_init_older_kernel_minor(peer):
    p = peer()
    error, payload = p.init(minor=38)
    assert error == 0
    assert parse_init_out(payload)["minor"] == 38


def test_init_without_init_ext_keeps_low_flags(peer):
    p = peer()
    offered = KERNEL_FLAGS & ~FUSE_INIT_EXT & 0xFFFFFFFF
    error, payload = p.init(flags=offered)
    assert error == 0
    out = parse_init_out(payload)
    assert out["flags2"] == 0
    assert not out["flags"] & FUSE_INIT_EXT
    assert out["flags"] & ~offered == 0


def test_init_iomap_kernel_without_iomap_server(peer):
    # A 7.99 kernel offering iomap to a server that does not want it: the
    # reply must not claim iomap nor the experimental minor.
    p = peer()
    error, payload = p.init(minor=99, flags=KERNEL_FLAGS | FUSE_IOMAP)
    assert error == 0
    out = parse_init_out(payload)
    assert out["minor"] == 45
    assert not (out["flags2"] << 32) & FUSE_IOMAP


def test_init_too_old_minor(peer):
    p = peer()
    error, _ = p.init(minor=30)
    assert error == -EPROTO
    # Refused INIT leaves the session uninitialised.
    error, _ = p.call(FUSE_GETATTR, 4, 1, bytes(16))
    assert error == -EIO


def test_init_too_old_major(peer):
    p = peer()
    error, _ = p.init(major=6)
    assert error == -EPROTO


def test_init_newer_major_then_retry(peer):
    p = peer()
    error, payload = p.init(major=8, minor=0)
    assert error == 0
    out = parse_init_out(payload)
    assert (out["major"], out["minor"]) == (7, 45)
    # The kernel then retries with major 7.
    error, payload = p.init(unique=4)
    assert error == 0
    assert parse_init_out(payload)["minor"] == 45


def test_request_before_init_is_eio(peer):
    p = peer()
    error, _ = p.call(FUSE_GETATTR, 2, 1, bytes(16))
    assert error == -EIO
    error, _ = p.init(unique=4)
    assert error == 0


def test_second_init_is_eproto(ready):
    error, _ = ready.init(unique=4)
    assert error == -EPROTO
    # The first negotiation still stands.
    error, _ = ready.call(FUSE_GETATTR, 6, 1, bytes(16))
    assert error == 0


# --- ordinary requests ------------------------------------------------------

def test_getattr_lookup_readlink_read(ready):
    error, payload = ready.call(FUSE_GETATTR, 4, 1, bytes(16))
    assert error == 0 and len(payload) == 104
    attr = parse_attr(payload[16:])
    assert attr["ino"] == 1 and stat.S_ISDIR(attr["mode"])

    error, payload = ready.call(FUSE_LOOKUP, 6, 1, b"hello\0")
    assert error == 0 and len(payload) == 128
    nodeid = ENTRY_OUT_HEAD.unpack_from(payload)[0]
    attr = parse_attr(payload[40:])
    assert nodeid == 2
    assert attr["size"] == len(HELLO)
    assert attr["mode"] == stat.S_IFREG | 0o444
    assert attr["mtime"] == TOY_TIME

    error, _ = ready.call(FUSE_LOOKUP, 8, 1, b"nothere\0")
    assert error == -ENOENT

    error, payload = ready.call(FUSE_READLINK, 10, 3)
    assert (error, payload) == (0, b"hello")

    read_in = struct.pack("<QQIIQII", 0, 6, 100, 0, 0, 0, 0)
    error, payload = ready.call(FUSE_READ, 12, 2, read_in)
    assert (error, payload) == (0, HELLO[6:])

    error, payload = ready.call(FUSE_STATFS, 14, 1)
    assert error == 0 and len(payload) == 80


def parse_dirents(payload, plus):
    entries = []
    pos = 0
    head = 152 if plus else 24
    while pos < len(payload):
        base = pos + (128 if plus else 0)
        ino, off, namelen, typ = DIRENT.unpack_from(payload, base)
        name = payload[pos + head:pos + head + namelen]
        reclen = (head + namelen + 7) & ~7
        pad = payload[pos + head + namelen:pos + reclen]
        assert pad == bytes(len(pad)), "record padding must be zeroed"
        entries.append((name.decode(), ino, off, typ))
        pos += reclen
    assert pos == len(payload), "records must be 8-byte aligned"
    return entries


@pytest.mark.parametrize("plus", [False, True])
def test_readdir_records(ready, plus):
    error, _ = ready.call(FUSE_OPENDIR, 4, 1, bytes(8))
    assert error == 0
    read_in = struct.pack("<QQIIQII", 0, 0, 4096, 0, 0, 0, 0)
    op = FUSE_READDIRPLUS if plus else FUSE_READDIR
    error, payload = ready.call(op, 6, 1, read_in)
    assert error == 0
    entries = parse_dirents(payload, plus)
    assert [e[0] for e in entries] == [".", "..", "hello", "link"]
    assert [e[2] for e in entries] == [1, 2, 3, 4]
    assert entries[2][1] == 2 and entries[2][3] == 8    # DT_REG
    assert entries[3][1] == 3 and entries[3][3] == 10   # DT_LNK
    # A buffer too small for the second record returns just the first.
    small = struct.pack("<QQIIQII", 0, 0, 160 if plus else 32, 0, 0, 0, 0)
    error, payload = ready.call(op, 8, 1, small)
    assert error == 0
    assert [e[0] for e in parse_dirents(payload, plus)] == ["."]


def test_parallel_requests_on_shared_socket(peer):
    p = peer("-t", "4")
    assert p.init()[0] == 0
    uniques = list(range(100, 300, 2))
    for u in uniques:
        p.send(request(FUSE_GETATTR, u, 2, bytes(16)))
    seen = []
    for _ in uniques:
        error, unique, payload = p.recv()
        assert error == 0 and parse_attr(payload[16:])["ino"] == 2
        seen.append(unique)
    assert sorted(seen) == uniques


# --- requests that get no reply, interrupts, errors ---------------------------

def test_forget_gets_no_reply(ready):
    ready.send(request(FUSE_FORGET, 4, 2, struct.pack("<Q", 1)))
    forgets = struct.pack("<II", 2, 0) + struct.pack("<QQQQ", 2, 1, 3, 1)
    ready.send(request(FUSE_BATCH_FORGET, 6, 0, forgets))
    # A malformed BATCH_FORGET (count beyond the request) is dropped too.
    ready.send(request(FUSE_BATCH_FORGET, 8, 0, struct.pack("<II", 5, 0)))
    ready.expect_silence()
    # The next reply belongs to the next request.
    error, _ = ready.call(FUSE_GETATTR, 10, 1, bytes(16))
    assert error == 0


def test_interrupt_unknown_unique_is_eagain(ready):
    ready.send(request(FUSE_INTERRUPT, 4 | 1, 0, struct.pack("<Q", 1000)))
    error, unique, _ = ready.recv()
    assert (error, unique) == (-EAGAIN, 5)


def test_interrupt_request_in_flight(peer):
    # Node 99's GETATTR waits for req->interrupted.  A second worker reads
    # the INTERRUPT; the victim is answered EINTR and the INTERRUPT itself
    # gets no answer.  EAGAIN means "not in flight yet": resend, as the
    # kernel does.
    p = peer("-t", "2")
    assert p.init()[0] == 0
    p.send(request(FUSE_GETATTR, 10, 99, bytes(16)))
    deadline = time.monotonic() + 4
    while True:
        assert time.monotonic() < deadline, "interrupt never took effect"
        p.send(request(FUSE_INTERRUPT, 11, 0, struct.pack("<Q", 10)))
        error, unique, _ = p.recv()
        if unique == 11:
            assert error == -EAGAIN
            time.sleep(0.01)
            continue
        assert (error, unique) == (-EINTR, 10)
        break
    # Nothing else is owed: the INTERRUPT that hit was not answered.
    p.expect_silence()


def test_unknown_and_unimplemented_opcodes(ready):
    assert ready.call(999, 4, 1)[0] == -ENOSYS
    assert ready.call(FUSE_IOMAP_BEGIN, 6, 2, bytes(32))[0] == -ENOSYS
    # RMDIR is a known opcode the toy does not implement.
    assert ready.call(FUSE_RMDIR, 8, 1, b"d\0")[0] == -ENOSYS


def test_malformed_requests_are_einval(ready):
    # Header length disagrees with the message.
    ready.send(in_header(100, FUSE_GETATTR, 4, 1) + bytes(16))
    assert ready.recv()[:2] == (-EINVAL, 4)
    # Shorter than in_header, but the unique is readable.
    ready.send(in_header(24, FUSE_GETATTR, 6, 1)[:24])
    assert ready.recv()[:2] == (-EINVAL, 6)
    # Fixed argument struct cut short.
    assert ready.call(FUSE_GETATTR, 8, 1, bytes(8))[0] == -EINVAL
    # Name without its terminating NUL.
    assert ready.call(FUSE_LOOKUP, 10, 1, b"hello")[0] == -EINVAL
    # Extension area larger than the request.
    assert ready.call(FUSE_MKDIR, 12, 1, bytes(8) + b"d\0",
                      extlen=4)[0] == -EINVAL
    # A negative length in the written header must not confuse anything.
    ready.send(in_header(0xFFFFFFFF, FUSE_GETATTR, 14, 1) + bytes(16))
    assert ready.recv()[:2] == (-EINVAL, 14)


def test_short_message_is_dropped(ready):
    ready.send(b"\x10\x00\x00\x00\x03\x00\x00\x00\x04")
    ready.expect_silence()
    assert ready.call(FUSE_GETATTR, 6, 1, bytes(16))[0] == 0


def test_write_size_must_fit(ready):
    write_in = struct.pack("<QQIIQII", 0, 0, 10, 0, 0, 0, 0)
    assert ready.call(FUSE_WRITE, 4, 2, write_in + b"12345")[0] == -EINVAL
    # Fits: passes validation and reaches the (missing) operation.
    assert ready.call(FUSE_WRITE, 6, 2, write_in + b"1234567890")[0] == -ENOSYS


def test_setxattr_header_size_follows_negotiation(peer):
    # fe_toy does not ask for SETXATTR_EXT, so the header is 8 bytes:
    # size, flags, name, value.
    p = peer()
    assert p.init()[0] == 0
    body = struct.pack("<II", 4, 0) + b"user.a\0" + b"abcd"
    assert p.call(FUSE_SETXATTR, 4, 2, body)[0] == -ENOSYS
    body = struct.pack("<II", 9, 0) + b"user.a\0" + b"abcd"
    assert p.call(FUSE_SETXATTR, 6, 2, body)[0] == -EINVAL


def test_supplementary_group_extension(peer):
    # fe_toy -d logs the groups its mkdir received, then answers EROFS.
    p = peer("-d")
    assert p.init()[0] == 0
    # size covers header + nr_groups + 2 groups, padded to 8: 24.
    groups = struct.pack("<IIIII", 24, FUSE_EXT_GROUPS, 2, 10, 20) + bytes(4)
    # "d\0" after the 8-byte mkdir_in leaves the extension (and the group
    # array) misaligned even for 4-byte access.
    mkdir = struct.pack("<II", 0o755, 0o22) + b"d\0"
    assert p.call(FUSE_MKDIR, 4, 1, mkdir + groups, extlen=3)[0] == -EROFS
    # Unknown extension types are skipped; groups may come after them.
    other = struct.pack("<II", 16, 0) + bytes(8)
    one = struct.pack("<IIII", 16, FUSE_EXT_GROUPS, 1, 77)
    assert p.call(FUSE_MKDIR, 6, 1, b"\0" * 8 + b"three\0" + other + one,
                  extlen=4)[0] == -EROFS
    # nr_groups larger than the record.
    bad = struct.pack("<IIIII", 24, FUSE_EXT_GROUPS, 9, 10, 20) + bytes(4)
    assert p.call(FUSE_MKDIR, 8, 1, mkdir + bad, extlen=3)[0] == -EINVAL
    # Record size not a multiple of 8 / beyond the area.
    bad = struct.pack("<IIII", 12, FUSE_EXT_GROUPS, 0, 0)
    assert p.call(FUSE_MKDIR, 10, 1, mkdir + bad, extlen=2)[0] == -EINVAL
    bad = struct.pack("<IIII", 32, FUSE_EXT_GROUPS, 0, 0)
    assert p.call(FUSE_MKDIR, 12, 1, mkdir + bad, extlen=2)[0] == -EINVAL
    # Without extensions there are no groups.
    assert p.call(FUSE_MKDIR, 14, 1, mkdir)[0] == -EROFS
    p.sock.close()
    assert p.wait() == 0
    log = [line for line in p.stderr().splitlines()
           if line.startswith("fe_toy: mkdir")]
    assert log == ["fe_toy: mkdir 1/d groups=10,20",
                   "fe_toy: mkdir 1/three groups=77",
                   "fe_toy: mkdir 1/d groups="]


def test_oversized_message_is_eio(ready):
    # Bigger than the engine's read buffer: it must notice the truncation.
    ready.sock.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)  # SO_SNDBUFFORCE
    write_in = struct.pack("<QQIIQII", 0, 0, 2 * MAX_WRITE, 0, 0, 0, 0)
    ready.send(request(FUSE_WRITE, 4, 2, write_in + bytes(2 * MAX_WRITE)))
    assert ready.recv()[:2] == (-EIO, 4)
    assert ready.call(FUSE_GETATTR, 6, 1, bytes(16))[0] == 0


def test_debug_trace(peer):
    p = peer("-d")
    assert p.init()[0] == 0
    assert p.call(FUSE_GETATTR, 1234, 1, bytes(16))[0] == 0
    assert p.call(FUSE_LOOKUP, 1236, 1, b"nothere\0")[0] == -ENOENT
    p.sock.close()
    assert p.wait() == 0
    err = p.stderr()
    assert "unique=1234 op=GETATTR(3) nodeid=1 len=56 uid=1000" in err
    assert "reply unique=1234 len=120" in err
    assert "reply unique=1236 error=-2" in err


# --- iomap (protocol 7.99) ----------------------------------------------------
#
# fe_toy -i asks for FUSE_IOMAP and answers the iomap opcodes trivially (see
# fe_toy.c).  No kernel here has the iomap extension, so the test plays an
# iomap kernel and checks every reply against the rules of fuse-abi.md 2.4:
# fixed-size replies must have exactly their size, errors are header-only.

IOMAP_KERNEL_FLAGS = KERNEL_FLAGS | FUSE_IOMAP


def iomap_init(p, minor=99, flags=IOMAP_KERNEL_FLAGS):
    error, payload = p.init(minor=minor, flags=flags)
    assert error == 0
    return parse_init_out(payload)


@pytest.fixture
def iomap(peer):
    """fe_toy -i after an INIT that agreed on iomap."""
    p = peer("-i")
    out = iomap_init(p)
    assert out["flags2"] << 32 & FUSE_IOMAP
    return p


def toy_log(p, prefix):
    return [line for line in p.stderr().splitlines()
            if line.startswith("fe_toy: " + prefix)]


def finish(p):
    """Close the channel and return the toy's stderr once it has exited."""
    p.sock.close()
    assert p.wait() == 0
    return p.stderr()


def parse_iomap_io(raw):
    keys = ("offset", "length", "addr", "type", "flags", "dev")
    return dict(zip(keys, IOMAP_IO.unpack(raw)))


def check_mapping(m, pos, blocksize=4096):
    # The kernel's per-mapping validation (fuse-abi.md 2.9).
    assert m["length"] != 0
    assert m["offset"] % blocksize == 0 and m["length"] % blocksize == 0
    assert m["offset"] <= pos < m["offset"] + m["length"]
    assert m["offset"] + m["length"] < 2**64
    assert m["flags"] & ~0xFF == 0


def test_init_iomap_agreed(peer):
    p = peer("-i")
    out = iomap_init(p)
    agreed = out["flags"] | out["flags2"] << 32
    # The kernel keeps the minor of the reply; iomap needs exactly 99.
    assert out["minor"] == 99
    assert agreed & FUSE_IOMAP
    assert agreed & FUSE_INIT_EXT, "flags2 is read only with INIT_EXT"
    assert agreed & ~IOMAP_KERNEL_FLAGS == 0
    # The engine still sizes everything as for any other kernel.
    assert out["max_write"] == MAX_WRITE
    assert out["request_timeout"] == 0


@pytest.mark.parametrize("minor,flags", [
    (45, KERNEL_FLAGS),                     # stock 6.18
    (45, IOMAP_KERNEL_FLAGS),               # a stray bit at minor 45
    (99, KERNEL_FLAGS),                     # iomap tree, iomap not allowed
    (99, IOMAP_KERNEL_FLAGS & ~FUSE_INIT_EXT),  # flags2 not valid
])
def test_init_iomap_not_offered(peer, minor, flags):
    p = peer("-i")
    out = iomap_init(p, minor=minor, flags=flags)
    assert not (out["flags"] | out["flags2"] << 32) & FUSE_IOMAP
    assert out["minor"] == 45
    # And the iomap opcodes do not reach the filesystem.
    assert p.call(FUSE_IOMAP_BEGIN, 4, 2, BEGIN_IN.pack(0, 0, 2, 0, 1))[0] \
        == -ENOSYS


def test_iomap_opcodes_refused_without_iomap(peer):
    # The toy implements all seven; without FUSE_IOMAP agreed the engine
    # answers ENOSYS itself and the toy never sees them.
    p = peer("-i")
    iomap_init(p, minor=45, flags=KERNEL_FLAGS)
    sizes = {FUSE_FREEZE_FS: 8, FUSE_UNFREEZE_FS: 0, FUSE_SHUTDOWN_FS: 8,
             FUSE_IOMAP_CONFIG: 64, FUSE_IOMAP_IOEND: 48,
             FUSE_IOMAP_BEGIN: 32, FUSE_IOMAP_END: 72}
    for i, op in enumerate(IOMAP_OPCODES):
        nodeid = 0 if op == FUSE_IOMAP_CONFIG else 1
        assert p.call(op, 10 + 2 * i, nodeid, bytes(sizes[op]))[0] == -ENOSYS
    err = finish(p)
    for what in ("freeze", "unfreeze", "shutdown", "backing_open", "ioend"):
        assert "fe_toy: " + what not in err


def test_iomap_config_reply(iomap):
    # A v7 kernel accepts every config flag: all 104 bytes come back.
    body = CONFIG_IN.pack(0x7F, 2**63 - 1, 262144, 0)
    error, payload = iomap.call(FUSE_IOMAP_CONFIG, 4, 0, body)
    assert error == 0
    assert len(payload) == 104
    (flags, s_id, _, uuid_len, s_pad, blocksize, _, _, _, _, _,
     cache_maxbytes) = CONFIG_OUT.unpack(payload)
    assert flags == (IOMAP_CONFIG_SID | IOMAP_CONFIG_BLOCKSIZE |
                     IOMAP_CONFIG_CACHE_MAXBYTES)
    assert s_id.rstrip(b"\0") == b"fe_toy"
    assert uuid_len == 0 and s_pad == bytes(3)
    assert blocksize == 4096
    assert cache_maxbytes == 65536
    # An older revision without the mapping cache: its struct is 96 bytes,
    # and a longer reply would fail the mount.
    body = CONFIG_IN.pack(0x3F, 2**63 - 1, 0, 0)
    error, payload = iomap.call(FUSE_IOMAP_CONFIG, 6, 0, body)
    assert error == 0
    assert len(payload) == 96
    assert payload == CONFIG_OUT.pack(
        IOMAP_CONFIG_SID | IOMAP_CONFIG_BLOCKSIZE, b"fe_toy", b"", 0,
        bytes(3), 4096, 0, 0, 0, 0, 0, 0)[:96]
    # The toy registers its device from IOMAP_CONFIG; on a socket the
    # ioctl fails with ENOTTY, and the engine reports that as is.
    assert toy_log(iomap, "backing_open") == [
        "fe_toy: backing_open %d" % -ENOTTY] * 2


@pytest.mark.parametrize("opflags,pos,count,start,length", [
    (0, 0, 12, 0, 4096),
    (IOMAP_OP_WRITE, 5000, 10000, 4096, 12288),
    (IOMAP_OP_WRITE | IOMAP_OP_DIRECT, 8192, 4096, 8192, 4096),
    (0, 4095, 0, 0, 4096),
])
def test_iomap_begin_reply(iomap, opflags, pos, count, start, length):
    body = BEGIN_IN.pack(opflags, 0, 2, pos, count)
    error, payload = iomap.call(FUSE_IOMAP_BEGIN, 4, 2, body)
    assert error == 0
    assert len(payload) == 64
    read = parse_iomap_io(payload[:32])
    write = parse_iomap_io(payload[32:])
    check_mapping(read, pos)
    check_mapping(write, pos)
    assert read == {"offset": start, "length": length, "addr": NULL_ADDR,
                    "type": IOMAP_TYPE_HOLE, "flags": 0, "dev": 0}
    assert write == dict(read, type=IOMAP_TYPE_PURE_OVERWRITE)


def test_iomap_begin_error_is_header_only(iomap):
    # Peer.recv checks that an error reply is exactly the header.
    body = BEGIN_IN.pack(0, 0, 1, 0, 4096)
    assert iomap.call(FUSE_IOMAP_BEGIN, 4, 1, body)[0] == -EINVAL
    assert iomap.call(FUSE_IOMAP_BEGIN, 6, 42, body)[0] == -ENOENT


def test_iomap_end_reply(iomap):
    body = END_IN.pack(IOMAP_OP_WRITE, 0, 2, 0, 8192, 4096) + \
        IOMAP_IO.pack(0, 8192, NULL_ADDR, IOMAP_TYPE_HOLE, 0, 0)
    assert len(body) == 72
    assert iomap.call(FUSE_IOMAP_END, 4, 2, body) == (0, b"")


def test_iomap_ioend_reply_and_notifications(iomap):
    # The toy sends one of each iomap notification before answering IOEND.
    body = IOEND_IN.pack(IOMAP_IOEND_APPEND, 0, 2, 8192, NULL_ADDR, 4096,
                         0, 0)
    iomap.send(request(FUSE_IOMAP_IOEND, 4, 2, body))
    (length, code, unique), msg = iomap.recv_raw()
    assert (length, code, unique) == (16 + 48, FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS,
                                      0)
    assert msg == struct.pack("<QQ", 2, 2) + RANGE.pack(8192, 4096) * 2
    (length, code, unique), msg = iomap.recv_raw()
    assert (length, code, unique) == (
        16 + 80, FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS, 0)
    assert msg[:16] == struct.pack("<QQ", 2, 2)
    read, write = parse_iomap_io(msg[16:48]), parse_iomap_io(msg[48:])
    check_mapping(read, 8192)
    assert read["type"] == IOMAP_TYPE_HOLE
    assert write == dict(read, type=IOMAP_TYPE_PURE_OVERWRITE)
    (length, code, unique), msg = iomap.recv_raw()
    assert (length, code, unique) == (16 + 24, FUSE_NOTIFY_IOMAP_DEV_INVAL, 0)
    # dev, reserved (must be 0), then the device range.
    assert msg == struct.pack("<II", 1, 0) + RANGE.pack(8192, 4096)
    # The reply: exactly 8 bytes, the new on-disk size.
    error, unique, payload = iomap.recv()
    assert (error, unique) == (0, 4)
    assert payload == struct.pack("<Q", 8192 + 4096)
    # Inside EOF the size stays; the toy's file is 12 bytes long.
    body = IOEND_IN.pack(0, 0, 2, 0, NULL_ADDR, 4, 0, 0)
    iomap.send(request(FUSE_IOMAP_IOEND, 6, 2, body))
    for _ in range(3):
        assert iomap.recv_raw()[0][2] == 0
    error, unique, payload = iomap.recv()
    assert (error, unique, payload) == (0, 6, struct.pack("<Q", len(HELLO)))
    assert toy_log(iomap, "ioend notify") == ["fe_toy: ioend notify 0 0 0"] * 2


@pytest.mark.parametrize("op,size", [
    (FUSE_IOMAP_CONFIG, 64), (FUSE_IOMAP_BEGIN, 32), (FUSE_IOMAP_END, 72),
    (FUSE_IOMAP_IOEND, 48), (FUSE_FREEZE_FS, 8), (FUSE_SHUTDOWN_FS, 8),
])
def test_truncated_iomap_requests_are_einval(iomap, op, size):
    nodeid = 0 if op == FUSE_IOMAP_CONFIG else 2
    for unique, cut in ((4, size - 1), (6, size // 2), (8, 0)):
        assert iomap.call(op, unique, nodeid, bytes(cut))[0] == -EINVAL
    # Exactly the size is accepted, and nothing reached the toy before.
    err_before = iomap.stderr()
    body = bytes(size)
    if op == FUSE_IOMAP_BEGIN:
        body = BEGIN_IN.pack(0, 0, 2, 0, 4096)
    iomap.send(request(op, 10, nodeid, body))
    while True:
        (_, error, unique), payload = iomap.recv_raw()
        if unique:      # skip the notifications the toy sends on IOEND
            break
    assert (error, unique) == (0, 10)
    assert len(payload) == {FUSE_IOMAP_CONFIG: 96, FUSE_IOMAP_BEGIN: 64,
                            FUSE_IOMAP_IOEND: 8}.get(op, 0)
    for what in ("freeze", "shutdown", "backing_open", "ioend"):
        assert "fe_toy: " + what not in err_before


def test_freeze_unfreeze_shutdown_dispatch(iomap):
    assert iomap.call(FUSE_FREEZE_FS, 4, 1, struct.pack("<Q", 3)) == (0, b"")
    assert iomap.call(FUSE_UNFREEZE_FS, 6, 1) == (0, b"")
    assert iomap.call(FUSE_SHUTDOWN_FS, 8, 1, struct.pack("<Q", 0)) == (0, b"")
    err = finish(iomap)
    assert [line for line in err.splitlines()
            if re.match(r"fe_toy: (freeze|unfreeze|shutdown)", line)] == [
        "fe_toy: freeze 1 unlinked=3", "fe_toy: unfreeze 1",
        "fe_toy: shutdown 1 flags=0"]


def test_iomap_probe_on_socket_is_enotty(peer):
    # fe_toy -i probes its channel before serving; a socket has no such
    # ioctl, which fe_iomap_probe reports as -ENOTTY (like a kernel
    # without the extension).
    p = peer("-i")
    iomap_init(p)
    assert toy_log(p, "iomap probe") == [
        "fe_toy: iomap probe %d flags=0" % -ENOTTY]


def test_iomap_debug_trace(peer):
    p = peer("-i", "-d")
    iomap_init(p)
    assert p.call(FUSE_IOMAP_CONFIG, 4, 0,
                  CONFIG_IN.pack(0x7F, 2**63 - 1, 262144, 0))[0] == 0
    body = BEGIN_IN.pack(IOMAP_OP_WRITE | IOMAP_OP_DIRECT, 0, 2, 5000, 10000)
    assert p.call(FUSE_IOMAP_BEGIN, 6, 2, body)[0] == 0
    p.send(request(FUSE_IOMAP_IOEND, 8, 2, IOEND_IN.pack(
        IOMAP_IOEND_APPEND, 0, 2, 8192, NULL_ADDR, 4096, 1, 0)))
    while p.recv_raw()[0][2] != 8:
        pass
    err = finish(p)
    assert "op=IOMAP_CONFIG(4092) nodeid=0 len=104" in err
    assert "flags=0x7f(SID|UUID|BLOCKSIZE|MAX_LINKS|TIME|MAXBYTES|" \
           "CACHE_MAXBYTES) maxbytes=9223372036854775807 " \
           "cache_maxbytes=262144" in err
    assert "iomap config flags=0x45(SID|BLOCKSIZE|CACHE_MAXBYTES) " \
           "blocksize=4096" in err
    assert "op=IOMAP_BEGIN(4094) nodeid=2 len=72" in err
    assert "opflags=0x11(WRITE|DIRECT) attr_ino=2 pos=5000 count=10000" in err
    assert "iomap read={offset=4096 length=12288 type=HOLE flags=0 dev=0 " \
           "addr=null} write={offset=4096 length=12288 " \
           "type=PURE_OVERWRITE flags=0 dev=0 addr=null}" in err
    assert "flags=0x10(APPEND) error=0 attr_ino=2 pos=8192 written=4096 " \
           "dev=1" in err
    assert "ioend newsize=12288" in err
    # ENOTTY from SET_NOFS on a socket is expected and not reported.
    assert "SET_NOFS" not in err


def strace_usable():
    if not shutil.which("strace"):
        return False
    r = subprocess.run(["strace", "-o", "/dev/null", "true"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


# Also matches the first half of a call strace shows as "<unfinished ...>".
SET_NOFS_RE = re.compile(r"^(\d+) +ioctl\(\d+, _IOC\(_IOC_WRITE, 0xe5, 0x64, "
                         r"0x4\)")


@pytest.mark.skipif(not strace_usable(), reason="needs a working strace")
@pytest.mark.parametrize("with_iomap", [True, False])
def test_workers_set_nofs_once_after_iomap_init(tmp_path, with_iomap):
    # Every worker issues FUSE_DEV_IOC_SET_NOFS (_IOW(229, 100, u32)) once
    # after iomap was agreed, and never without iomap.  strace sees the
    # calls although a socket answers them with ENOTTY.
    trace = tmp_path / "strace.txt"
    sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(5)
    fd = theirs.fileno()
    args = ["-i", "-t", "2"] if with_iomap else ["-t", "2"]
    # LeakSanitizer cannot work under ptrace; a sanitized build would fail.
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join(
        filter(None, [env.get("ASAN_OPTIONS"), "detect_leaks=0"]))
    errfile = tmp_path / "stderr.txt"
    with open(errfile, "wb") as err:
        proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-e", "trace=ioctl,sendmsg,recvfrom",
             "-o", str(trace), FE_TOY, *args, "/dev/fd/%d" % fd],
            pass_fds=[fd], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=err, env=env)
    theirs.close()
    try:
        # Let both workers block in recv() first: the one that does not get
        # INIT must catch up after its read returns.
        time.sleep(0.3)
        flags = IOMAP_KERNEL_FLAGS
        sock.send(request(FUSE_INIT, 2, 0, INIT_IN.pack(
            7, 99, 131072, flags & 0xFFFFFFFF, flags >> 32)))
        assert OUT_HEADER.unpack_from(sock.recv(4096))[1:] == (0, 2)
        # Node 99's GETATTR keeps one worker busy until interrupted, so
        # the next request reaches the other one: both read after INIT.
        sock.send(request(FUSE_GETATTR, 4, 99, bytes(16)))
        time.sleep(0.1)
        sock.send(request(FUSE_GETATTR, 6, 1, bytes(16)))
        replies = {}
        deadline = time.monotonic() + 4
        while 4 not in replies:
            assert time.monotonic() < deadline
            if 6 in replies:
                sock.send(request(FUSE_INTERRUPT, 9, 0, struct.pack("<Q", 4)))
            msg = sock.recv(4096)
            _, error, unique = OUT_HEADER.unpack_from(msg)
            replies[unique] = error
            if unique == 9:
                time.sleep(0.01)
        assert replies[6] == 0 and replies[4] == -EINTR
    finally:
        sock.close()
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, errfile.read_text()
    lines = trace.read_text().splitlines()
    nofs = [m.group(1) for m in map(SET_NOFS_RE.match, lines) if m]
    if not with_iomap:
        assert nofs == []
        return
    assert len(nofs) == 2 and len(set(nofs)) == 2, "\n".join(lines)
    # The worker that answered INIT (the first sendmsg) marks itself before
    # it reads again, and every later reply comes from a marked worker.
    first = next(i for i, l in enumerate(lines) if " sendmsg(" in l)
    tid = lines[first].split()[0]
    after = [l for l in lines[first + 1:]
             if l.split()[0] == tid and "resumed>" not in l]
    assert SET_NOFS_RE.match(after[0]), "\n".join(lines)
    marked = set()
    for line in lines[first + 1:]:
        m = SET_NOFS_RE.match(line)
        if m:
            marked.add(m.group(1))
        elif " sendmsg(" in line:
            assert line.split()[0] in marked, "\n".join(lines)


# --- end of session ---------------------------------------------------------

def test_destroy_replies_and_exits(ready):
    error, payload = ready.call(FUSE_DESTROY, 4, 0)
    assert (error, payload) == (0, b"")
    # The toy exits by itself although the channel is still open.
    assert ready.wait() == 0
    assert ready.stderr().count("fe_toy: destroy") == 1


def test_destroy_with_threads(peer):
    p = peer("-t", "4")
    assert p.init()[0] == 0
    assert p.call(FUSE_DESTROY, 4, 0)[0] == 0
    assert p.wait() == 0
    assert p.stderr().count("fe_toy: destroy") == 1


def test_peer_close_still_destroys(ready):
    ready.sock.close()
    assert ready.wait() == 0
    assert ready.stderr().count("fe_toy: destroy") == 1


def test_sigterm_stops_socket_session(peer):
    p = peer("-t", "3")
    assert p.init()[0] == 0
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait() == 0
    assert p.stderr().count("fe_toy: destroy") == 1


# ---------------------------------------------------------------------------
# Real FUSE mounts
# ---------------------------------------------------------------------------

needs_mount = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
    reason="needs root and /dev/fuse")


def is_mounted(path):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] == path and fields[sep + 1] == "fuse.fe_toy":
                return True
    return False


class Mounted:
    def __init__(self, mnt, args):
        self.mnt = mnt
        self.errfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([FE_TOY, *args, mnt],
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.errfile)
        deadline = time.monotonic() + 10
        while not is_mounted(mnt):
            if self.proc.poll() is not None:
                raise AssertionError("fe_toy exited with %d: %s" %
                                     (self.proc.returncode, self.stderr()))
            if time.monotonic() > deadline:
                raise AssertionError("fe_toy did not mount")
            time.sleep(0.02)

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read().decode(errors="replace")

    def cleanup(self):
        try:
            if is_mounted(self.mnt):
                if subprocess.run(["umount", self.mnt]).returncode != 0:
                    subprocess.run(["umount", "-l", self.mnt])
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            self.proc.wait()
            self.errfile.close()


@pytest.fixture
def mount():
    mounts = []
    dirs = []

    def start(*args):
        d = tempfile.mkdtemp(prefix="fe_toy.")
        dirs.append(d)
        m = Mounted(d, args)
        mounts.append(m)
        return m

    yield start
    for m in mounts:
        m.cleanup()
    for d in dirs:
        os.rmdir(d)


@needs_mount
def test_mount_shows_toy_tree(mount):
    m = mount()
    mnt = m.mnt
    assert sorted(os.listdir(mnt)) == ["hello", "link"]
    with open(os.path.join(mnt, "hello"), "rb") as f:
        assert f.read() == HELLO
    assert os.readlink(os.path.join(mnt, "link")) == "hello"
    with open(os.path.join(mnt, "link"), "rb") as f:
        assert f.read() == HELLO

    st = os.stat(os.path.join(mnt, "hello"))
    assert st.st_ino == 2
    assert st.st_mode == stat.S_IFREG | 0o444
    assert st.st_size == len(HELLO)
    assert st.st_nlink == 1
    assert st.st_mtime == TOY_TIME
    st = os.lstat(os.path.join(mnt, "link"))
    assert stat.S_ISLNK(st.st_mode) and st.st_size == 5 and st.st_ino == 3
    st = os.stat(mnt)
    assert st.st_mode == stat.S_IFDIR | 0o755 and st.st_ino == 1
    assert not os.path.exists(os.path.join(mnt, "missing"))
    vfs = os.statvfs(mnt)
    assert vfs.f_bsize == 4096 and vfs.f_namemax == 255


@needs_mount
def test_umount_ends_server(mount):
    m = mount()
    os.listdir(m.mnt)
    assert subprocess.run(["umount", m.mnt]).returncode == 0
    assert m.proc.wait(timeout=10) == 0
    assert m.stderr().count("fe_toy: destroy") == 1


@needs_mount
def test_sigterm_unmounts(mount):
    m = mount("-t", "2")
    os.listdir(m.mnt)
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=10) == 0
    assert not is_mounted(m.mnt)


@needs_mount
def test_mount_multithreaded_parallel_readers(mount):
    m = mount("-t", "4")
    mnt = m.mnt
    pid = m.proc.pid
    # Once a request was answered, every worker's channel is open: one
    # cloned /dev/fuse fd per extra worker, plus the mount's own fd.
    assert sorted(os.listdir(mnt)) == ["hello", "link"]
    fuse_fds = [fd for fd in os.listdir("/proc/%d/fd" % pid)
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "/dev/fuse"]
    assert len(fuse_fds) == 4
    # Workers + supervisor + signal thread.
    assert len(os.listdir("/proc/%d/task" % pid)) >= 5

    errors = []

    def reader(n):
        try:
            for i in range(200):
                with open(os.path.join(mnt, "hello"), "rb") as f:
                    assert f.read() == HELLO
                # Negative lookups are not cached: each one is a request.
                assert not os.path.exists(os.path.join(mnt, "x%d_%d" % (n, i)))
                assert os.readlink(os.path.join(mnt, "link")) == "hello"
        except Exception as e:  # collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(os.listdir(mnt)) == ["hello", "link"]


@needs_mount
def test_mount_iomap_mode_on_this_kernel(mount):
    # On a kernel without the extension the probe answers ENOTTY, INIT
    # offers no iomap, and the toy serves its tree classically.
    m = mount("-i")
    assert sorted(os.listdir(m.mnt)) == ["hello", "link"]
    with open(os.path.join(m.mnt, "hello"), "rb") as f:
        assert f.read() == HELLO
    probe = [line for line in m.stderr().splitlines()
             if line.startswith("fe_toy: iomap probe")]
    assert len(probe) == 1
    if not os.path.exists("/sys/module/fuse/parameters/enable_iomap"):
        assert probe == ["fe_toy: iomap probe %d flags=0" % -ENOTTY]
        assert "fe_toy: backing_open" not in m.stderr()
    else:
        assert re.fullmatch(r"fe_toy: iomap probe (0 flags=(0|0x[0-9a-f]+)|"
                            r"-\d+ flags=0)", probe[0])
