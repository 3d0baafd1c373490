"""The kernel's side of the FUSE wire protocol, for tests.

This module encodes requests and decodes replies exactly as they travel over
/dev/fuse (see docs: fuse-abi.md sections 1 and 5), and provides
`KernelPeer`, which starts a FUSE server on one end of a SOCK_SEQPACKET
socketpair (handed to it as /dev/fd/N) and plays the kernel on the other end.
A SOCK_SEQPACKET socket keeps message boundaries the way /dev/fuse does: one
send() is one request, one recv() is one reply.

Every reply is checked the way the kernel checks it before it is handed to
the test: out_header.len must equal the bytes received, an error reply must
be a bare 16-byte header carrying -errno in (-512, 0), and the unique must
belong to a request that is waiting for an answer.  A violation raises
`ProtocolError`.

Standard library only.  All structures are little-endian with the natural
LP64 layout; the sizes are checked when this module is imported.
"""

import collections
import enum
import errno
import os
import socket
import struct
import subprocess
import tempfile
import time

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

KERNEL_VERSION = 7
KERNEL_MINOR_6_18 = 45          # what a stock 6.18 kernel offers
ROOT_ID = 1
MIN_READ_BUFFER = 8192
COMPAT_ENTRY_OUT_SIZE = 120
COMPAT_ATTR_OUT_SIZE = 96
NAME_OFFSET = 24                # fuse_dirent header
NAME_OFFSET_DIRENTPLUS = 152    # fuse_entry_out + fuse_dirent header
UNIQUE_RESEND = 1 << 63


class Op(enum.IntEnum):
    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SETUPMAPPING = 48
    REMOVEMAPPING = 49
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52
    COPY_FILE_RANGE_64 = 53
    CUSE_INIT = 4096


def op_name(opcode):
    """A readable name for an opcode, known or not."""
    try:
        return Op(opcode).name
    except ValueError:
        return "OPCODE_%d" % opcode


# Requests that never get a reply.
NO_REPLY_OPS = frozenset({Op.FORGET, Op.BATCH_FORGET, Op.NOTIFY_REPLY})


class InitFlag(enum.IntFlag):
    """INIT capability bits; bits 32..63 travel in flags2, shifted down."""
    ASYNC_READ = 1 << 0
    POSIX_LOCKS = 1 << 1
    FILE_OPS = 1 << 2
    ATOMIC_O_TRUNC = 1 << 3
    EXPORT_SUPPORT = 1 << 4
    BIG_WRITES = 1 << 5
    DONT_MASK = 1 << 6
    SPLICE_WRITE = 1 << 7
    SPLICE_MOVE = 1 << 8
    SPLICE_READ = 1 << 9
    FLOCK_LOCKS = 1 << 10
    HAS_IOCTL_DIR = 1 << 11
    AUTO_INVAL_DATA = 1 << 12
    DO_READDIRPLUS = 1 << 13
    READDIRPLUS_AUTO = 1 << 14
    ASYNC_DIO = 1 << 15
    WRITEBACK_CACHE = 1 << 16
    NO_OPEN_SUPPORT = 1 << 17
    PARALLEL_DIROPS = 1 << 18
    HANDLE_KILLPRIV = 1 << 19
    POSIX_ACL = 1 << 20
    ABORT_ERROR = 1 << 21
    MAX_PAGES = 1 << 22
    CACHE_SYMLINKS = 1 << 23
    NO_OPENDIR_SUPPORT = 1 << 24
    EXPLICIT_INVAL_DATA = 1 << 25
    MAP_ALIGNMENT = 1 << 26
    SUBMOUNTS = 1 << 27
    HANDLE_KILLPRIV_V2 = 1 << 28
    SETXATTR_EXT = 1 << 29
    INIT_EXT = 1 << 30
    INIT_RESERVED = 1 << 31
    SECURITY_CTX = 1 << 32
    HAS_INODE_DAX = 1 << 33
    CREATE_SUPP_GROUP = 1 << 34
    HAS_EXPIRE_ONLY = 1 << 35
    DIRECT_IO_ALLOW_MMAP = 1 << 36
    PASSTHROUGH = 1 << 37
    NO_EXPORT_SUPPORT = 1 << 38
    HAS_RESEND = 1 << 39
    ALLOW_IDMAP = 1 << 40
    OVER_IO_URING = 1 << 41
    REQUEST_TIMEOUT = 1 << 42
    IOMAP = 1 << 43


# What a stock Linux 6.18 kernel offers in INIT (fuse-abi.md section 1.4):
# everything except the DAX/virtiofs-only bits, io_uring (module parameter)
# and the iomap tree's bit.  PASSTHROUGH assumes CONFIG_FUSE_PASSTHROUGH,
# as in distribution kernels.
KERNEL_6_18_FLAGS = (
    InitFlag.ASYNC_READ | InitFlag.POSIX_LOCKS | InitFlag.ATOMIC_O_TRUNC
    | InitFlag.EXPORT_SUPPORT | InitFlag.BIG_WRITES | InitFlag.DONT_MASK
    | InitFlag.SPLICE_WRITE | InitFlag.SPLICE_MOVE | InitFlag.SPLICE_READ
    | InitFlag.FLOCK_LOCKS | InitFlag.HAS_IOCTL_DIR
    | InitFlag.AUTO_INVAL_DATA | InitFlag.DO_READDIRPLUS
    | InitFlag.READDIRPLUS_AUTO | InitFlag.ASYNC_DIO
    | InitFlag.WRITEBACK_CACHE | InitFlag.NO_OPEN_SUPPORT
    | InitFlag.PARALLEL_DIROPS | InitFlag.HANDLE_KILLPRIV
    | InitFlag.POSIX_ACL | InitFlag.ABORT_ERROR | InitFlag.MAX_PAGES
    | InitFlag.CACHE_SYMLINKS | InitFlag.NO_OPENDIR_SUPPORT
    | InitFlag.EXPLICIT_INVAL_DATA | InitFlag.HANDLE_KILLPRIV_V2
    | InitFlag.SETXATTR_EXT | InitFlag.INIT_EXT
    | InitFlag.SECURITY_CTX | InitFlag.CREATE_SUPP_GROUP
    | InitFlag.HAS_EXPIRE_ONLY | InitFlag.DIRECT_IO_ALLOW_MMAP
    | InitFlag.PASSTHROUGH | InitFlag.NO_EXPORT_SUPPORT
    | InitFlag.HAS_RESEND | InitFlag.ALLOW_IDMAP
    | InitFlag.REQUEST_TIMEOUT)

# open_out.open_flags
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_CACHE_DIR = 1 << 3
FOPEN_STREAM = 1 << 4
FOPEN_NOFLUSH = 1 << 5
FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6
FOPEN_PASSTHROUGH = 1 << 7

# getattr_in.getattr_flags
GETATTR_FH = 1 << 0

# lseek whence (os.SEEK_DATA/SEEK_HOLE are the same numbers on Linux)
SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE = 0, 1, 2, 3, 4

# statx mask bits (from <linux/stat.h>)
STATX_BASIC_STATS = 0x07FF
STATX_BTIME = 0x0800


# ---------------------------------------------------------------------------
# Structure codec
# ---------------------------------------------------------------------------

def wire_struct(name, fields, size=None):
    """Define a wire structure as a namedtuple with pack/unpack.

    `fields` is a sequence of (field_name, code): a struct format code
    ("Q", "I", "H", "q", "i", "Ns" for N opaque bytes) or another wire
    structure class, which nests.  Every field defaults to zero (b"" for
    bytes, a zero structure for a nested one).  `size`, if given, is
    checked against the computed size, as a guard on the ABI tables.
    The class gets SIZE (bytes on the wire), FIELDS (the spec above),
    pack() and unpack(buf, offset=0).
    """
    names = [f for f, _ in fields]
    defaults = []
    parts = []          # (code or class, byte size)
    for _fname, code in fields:
        if isinstance(code, type):
            defaults.append(code())
            parts.append((code, code.SIZE))
        else:
            defaults.append(b"" if code.endswith("s") else 0)
            parts.append((code, struct.calcsize("<" + code)))
    base = collections.namedtuple(name, names, defaults=defaults)
    total = sum(n for _, n in parts)
    if size is not None and size != total:
        raise AssertionError("%s: %d bytes, expected %d" % (name, total, size))

    def pack(self):
        out = bytearray()
        for value, (code, _n) in zip(self, parts):
            if isinstance(code, type):
                out += value.pack()
            else:
                out += struct.pack("<" + code, value)
        return bytes(out)

    @classmethod
    def unpack(cls, buf, offset=0):
        """Decode from buf[offset:]; the buffer must hold SIZE bytes."""
        if len(buf) - offset < total:
            raise ValueError("%s needs %d bytes, have %d"
                             % (name, total, len(buf) - offset))
        values = []
        pos = offset
        for code, n in parts:
            if isinstance(code, type):
                values.append(code.unpack(buf, pos))
            else:
                values.append(struct.unpack_from("<" + code, buf, pos)[0])
            pos += n
        return cls(*values)

    return type(name, (base,), {"__slots__": (), "SIZE": total,
                                "FIELDS": tuple(fields),
                                "pack": pack, "unpack": unpack})


InHeader = wire_struct("InHeader", [
    ("len", "I"), ("opcode", "I"), ("unique", "Q"), ("nodeid", "Q"),
    ("uid", "I"), ("gid", "I"), ("pid", "I"), ("total_extlen", "H"),
    ("padding", "H")], size=40)

OutHeader = wire_struct("OutHeader", [
    ("len", "I"), ("error", "i"), ("unique", "Q")], size=16)

InitIn = wire_struct("InitIn", [
    ("major", "I"), ("minor", "I"), ("max_readahead", "I"), ("flags", "I"),
    ("flags2", "I"), ("unused", "44s")], size=64)

InitOut = wire_struct("InitOut", [
    ("major", "I"), ("minor", "I"), ("max_readahead", "I"), ("flags", "I"),
    ("max_background", "H"), ("congestion_threshold", "H"),
    ("max_write", "I"), ("time_gran", "I"), ("max_pages", "H"),
    ("map_alignment", "H"), ("flags2", "I"), ("max_stack_depth", "I"),
    ("request_timeout", "H"), ("unused", "22s")], size=64)

Attr = wire_struct("Attr", [
    ("ino", "Q"), ("size", "Q"), ("blocks", "Q"), ("atime", "Q"),
    ("mtime", "Q"), ("ctime", "Q"), ("atimensec", "I"), ("mtimensec", "I"),
    ("ctimensec", "I"), ("mode", "I"), ("nlink", "I"), ("uid", "I"),
    ("gid", "I"), ("rdev", "I"), ("blksize", "I"), ("flags", "I")], size=88)

EntryOut = wire_struct("EntryOut", [
    ("nodeid", "Q"), ("generation", "Q"), ("entry_valid", "Q"),
    ("attr_valid", "Q"), ("entry_valid_nsec", "I"),
    ("attr_valid_nsec", "I"), ("attr", Attr)], size=128)

AttrOut = wire_struct("AttrOut", [
    ("attr_valid", "Q"), ("attr_valid_nsec", "I"), ("dummy", "I"),
    ("attr", Attr)], size=104)

GetattrIn = wire_struct("GetattrIn", [
    ("getattr_flags", "I"), ("dummy", "I"), ("fh", "Q")], size=16)

SetattrIn = wire_struct("SetattrIn", [
    ("valid", "I"), ("padding", "I"), ("fh", "Q"), ("size", "Q"),
    ("lock_owner", "Q"), ("atime", "Q"), ("mtime", "Q"), ("ctime", "Q"),
    ("atimensec", "I"), ("mtimensec", "I"), ("ctimensec", "I"),
    ("mode", "I"), ("unused4", "I"), ("uid", "I"), ("gid", "I"),
    ("unused5", "I")], size=88)

OpenIn = wire_struct("OpenIn", [("flags", "I"), ("open_flags", "I")], size=8)

OpenOut = wire_struct("OpenOut", [
    ("fh", "Q"), ("open_flags", "I"), ("backing_id", "i")], size=16)

CreateIn = wire_struct("CreateIn", [
    ("flags", "I"), ("mode", "I"), ("umask", "I"), ("open_flags", "I")],
    size=16)

MknodIn = wire_struct("MknodIn", [
    ("mode", "I"), ("rdev", "I"), ("umask", "I"), ("padding", "I")], size=16)

MkdirIn = wire_struct("MkdirIn", [("mode", "I"), ("umask", "I")], size=8)

RenameIn = wire_struct("RenameIn", [("newdir", "Q")], size=8)

Rename2In = wire_struct("Rename2In", [
    ("newdir", "Q"), ("flags", "I"), ("padding", "I")], size=16)

LinkIn = wire_struct("LinkIn", [("oldnodeid", "Q")], size=8)

ReleaseIn = wire_struct("ReleaseIn", [
    ("fh", "Q"), ("flags", "I"), ("release_flags", "I"),
    ("lock_owner", "Q")], size=24)

FlushIn = wire_struct("FlushIn", [
    ("fh", "Q"), ("unused", "I"), ("padding", "I"), ("lock_owner", "Q")],
    size=24)

ReadIn = wire_struct("ReadIn", [
    ("fh", "Q"), ("offset", "Q"), ("size", "I"), ("read_flags", "I"),
    ("lock_owner", "Q"), ("flags", "I"), ("padding", "I")], size=40)

WriteIn = wire_struct("WriteIn", [
    ("fh", "Q"), ("offset", "Q"), ("size", "I"), ("write_flags", "I"),
    ("lock_owner", "Q"), ("flags", "I"), ("padding", "I")], size=40)

WriteOut = wire_struct("WriteOut", [("size", "I"), ("padding", "I")], size=8)

FsyncIn = wire_struct("FsyncIn", [
    ("fh", "Q"), ("fsync_flags", "I"), ("padding", "I")], size=16)

SetxattrIn = wire_struct("SetxattrIn", [
    ("size", "I"), ("flags", "I"), ("setxattr_flags", "I"),
    ("padding", "I")], size=16)

GetxattrIn = wire_struct("GetxattrIn", [("size", "I"), ("padding", "I")],
                         size=8)

GetxattrOut = wire_struct("GetxattrOut", [("size", "I"), ("padding", "I")],
                          size=8)

FileLock = wire_struct("FileLock", [
    ("start", "Q"), ("end", "Q"), ("type", "I"), ("pid", "I")], size=24)

LkIn = wire_struct("LkIn", [
    ("fh", "Q"), ("owner", "Q"), ("lk", FileLock), ("lk_flags", "I"),
    ("padding", "I")], size=48)

LkOut = wire_struct("LkOut", [("lk", FileLock)], size=24)

AccessIn = wire_struct("AccessIn", [("mask", "I"), ("padding", "I")], size=8)

ForgetIn = wire_struct("ForgetIn", [("nlookup", "Q")], size=8)

ForgetOne = wire_struct("ForgetOne", [("nodeid", "Q"), ("nlookup", "Q")],
                        size=16)

BatchForgetIn = wire_struct("BatchForgetIn", [("count", "I"), ("dummy", "I")],
                            size=8)

InterruptIn = wire_struct("InterruptIn", [("unique", "Q")], size=8)

BmapIn = wire_struct("BmapIn", [
    ("block", "Q"), ("blocksize", "I"), ("padding", "I")], size=16)

BmapOut = wire_struct("BmapOut", [("block", "Q")], size=8)

IoctlIn = wire_struct("IoctlIn", [
    ("fh", "Q"), ("flags", "I"), ("cmd", "I"), ("arg", "Q"),
    ("in_size", "I"), ("out_size", "I")], size=32)

IoctlOut = wire_struct("IoctlOut", [
    ("result", "i"), ("flags", "I"), ("in_iovs", "I"), ("out_iovs", "I")],
    size=16)

PollIn = wire_struct("PollIn", [
    ("fh", "Q"), ("kh", "Q"), ("flags", "I"), ("events", "I")], size=24)

PollOut = wire_struct("PollOut", [("revents", "I"), ("padding", "I")],
                      size=8)

FallocateIn = wire_struct("FallocateIn", [
    ("fh", "Q"), ("offset", "Q"), ("length", "Q"), ("mode", "I"),
    ("padding", "I")], size=32)

LseekIn = wire_struct("LseekIn", [
    ("fh", "Q"), ("offset", "Q"), ("whence", "I"), ("padding", "I")],
    size=24)

LseekOut = wire_struct("LseekOut", [("offset", "Q")], size=8)

CopyFileRangeIn = wire_struct("CopyFileRangeIn", [
    ("fh_in", "Q"), ("off_in", "Q"), ("nodeid_out", "Q"), ("fh_out", "Q"),
    ("off_out", "Q"), ("len", "Q"), ("flags", "Q")], size=56)

CopyFileRangeOut = wire_struct("CopyFileRangeOut", [("bytes_copied", "Q")],
                               size=8)

SyncfsIn = wire_struct("SyncfsIn", [("padding", "Q")], size=8)

Kstatfs = wire_struct("Kstatfs", [
    ("blocks", "Q"), ("bfree", "Q"), ("bavail", "Q"), ("files", "Q"),
    ("ffree", "Q"), ("bsize", "I"), ("namelen", "I"), ("frsize", "I"),
    ("padding", "I"), ("spare", "24s")], size=80)
StatfsOut = Kstatfs

StatxIn = wire_struct("StatxIn", [
    ("getattr_flags", "I"), ("reserved", "I"), ("fh", "Q"),
    ("sx_flags", "I"), ("sx_mask", "I")], size=24)

SxTime = wire_struct("SxTime", [
    ("tv_sec", "q"), ("tv_nsec", "I"), ("reserved", "i")], size=16)

Statx = wire_struct("Statx", [
    ("mask", "I"), ("blksize", "I"), ("attributes", "Q"), ("nlink", "I"),
    ("uid", "I"), ("gid", "I"), ("mode", "H"), ("spare0", "H"),
    ("ino", "Q"), ("size", "Q"), ("blocks", "Q"), ("attributes_mask", "Q"),
    ("atime", SxTime), ("btime", SxTime), ("ctime", SxTime),
    ("mtime", SxTime), ("rdev_major", "I"), ("rdev_minor", "I"),
    ("dev_major", "I"), ("dev_minor", "I"), ("spare2", "112s")], size=256)

StatxOut = wire_struct("StatxOut", [
    ("attr_valid", "Q"), ("attr_valid_nsec", "I"), ("flags", "I"),
    ("spare", "16s"), ("stat", Statx)], size=288)

DirentHeader = wire_struct("DirentHeader", [
    ("ino", "Q"), ("off", "Q"), ("namelen", "I"), ("type", "I")],
    size=NAME_OFFSET)

NotifyRetrieveIn = wire_struct("NotifyRetrieveIn", [
    ("dummy1", "Q"), ("offset", "Q"), ("size", "I"), ("dummy2", "I"),
    ("dummy3", "Q"), ("dummy4", "Q")], size=40)

# A decoded directory record: `name` is bytes; `entry` is the EntryOut of a
# READDIRPLUS record (None for READDIR).
Dirent = collections.namedtuple("Dirent", "ino off type name entry")


def _align8(n):
    return (n + 7) & ~7


def parse_dirents(data):
    """Decode a READDIR reply into a list of Dirent.

    Raises ProtocolError on a record that runs past the buffer or has a
    zero-length name (the kernel rejects both)."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < NAME_OFFSET:
            raise ProtocolError("dirent header truncated at %d" % pos)
        h = DirentHeader.unpack(data, pos)
        if h.namelen == 0 or pos + NAME_OFFSET + h.namelen > len(data):
            raise ProtocolError("bad dirent namelen %d at %d" % (h.namelen, pos))
        name = bytes(data[pos + NAME_OFFSET:pos + NAME_OFFSET + h.namelen])
        out.append(Dirent(h.ino, h.off, h.type, name, None))
        pos += _align8(NAME_OFFSET + h.namelen)
    return out


def parse_direntplus(data):
    """Decode a READDIRPLUS reply into a list of Dirent with `entry` set."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < NAME_OFFSET_DIRENTPLUS:
            raise ProtocolError("direntplus header truncated at %d" % pos)
        entry = EntryOut.unpack(data, pos)
        h = DirentHeader.unpack(data, pos + EntryOut.SIZE)
        start = pos + NAME_OFFSET_DIRENTPLUS
        if h.namelen == 0 or start + h.namelen > len(data):
            raise ProtocolError("bad direntplus namelen %d at %d"
                                % (h.namelen, pos))
        name = bytes(data[start:start + h.namelen])
        out.append(Dirent(h.ino, h.off, h.type, name, entry))
        pos += _align8(NAME_OFFSET_DIRENTPLUS + h.namelen)
    return out


def cstr(name):
    """A name as the kernel sends it: bytes with a terminating NUL."""
    if isinstance(name, str):
        name = os.fsencode(name)
    return name + b"\0"


def pack_request(opcode, unique, nodeid=0, body=b"", uid=0, gid=0, pid=0,
                 total_extlen=0, length=None, padding=0):
    """Encode a request.  `length` overrides in_header.len (to lie)."""
    if length is None:
        length = InHeader.SIZE + len(body)
    hdr = InHeader(length, opcode, unique, nodeid, uid, gid, pid,
                   total_extlen, padding)
    return hdr.pack() + bytes(body)


# ---------------------------------------------------------------------------
# Replies and errors
# ---------------------------------------------------------------------------

class ProtocolError(AssertionError):
    """The server broke the wire protocol (a reply the kernel would reject,
    a reply to a request nobody sent, a missing reply, ...)."""


class ServerGone(ProtocolError):
    """The server closed its end of the channel or exited."""


class FuseError(OSError):
    """A well-formed error reply, raised by the typed helpers."""

    def __init__(self, err, opcode=None):
        name = op_name(opcode) if opcode is not None else "request"
        super().__init__(err, "%s: %s" % (name, os.strerror(err)))


class Reply:
    """One message from the server: the out_header and what follows it."""

    __slots__ = ("unique", "error", "data", "opcode")

    def __init__(self, unique, error, data, opcode=None):
        self.unique = unique
        self.error = error      # 0 or -errno (a notify code for unique 0)
        self.data = data        # bytes after the out_header
        self.opcode = opcode    # of the request it answers, if known

    @property
    def errno(self):
        return -self.error if self.error < 0 else 0

    @property
    def ok(self):
        return self.error == 0

    def check(self):
        """Raise FuseError if this is an error reply; return self."""
        if self.error:
            raise FuseError(-self.error, self.opcode)
        return self

    def struct(self, cls, exact=True):
        """Decode the payload as `cls`.  Like the kernel, require exactly
        cls.SIZE bytes unless exact is False (then at least)."""
        self.check()
        n = len(self.data)
        if n < cls.SIZE or (exact and n != cls.SIZE):
            raise ProtocolError("%s reply: %d bytes, expected %s%d"
                                % (op_name(self.opcode), n,
                                   "" if exact else ">=", cls.SIZE))
        return cls.unpack(self.data)

    def __repr__(self):
        err = ""
        if self.error:
            try:
                err = " error=-%s" % errno.errorcode[-self.error]
            except KeyError:
                err = " error=%d" % self.error
        return "<Reply %s unique=%d%s %d bytes>" % (
            op_name(self.opcode) if self.opcode is not None else "?",
            self.unique, err, len(self.data))


def errname(err):
    """'EINVAL' for 22 or -22; for readable assertion messages."""
    return errno.errorcode.get(abs(err), str(err))


# ---------------------------------------------------------------------------
# The kernel's end of a connection
# ---------------------------------------------------------------------------

DEVFD = "{devfd}"       # placeholder in argv for the /dev/fd/N path


class KernelPeer:
    """Plays the kernel against one FUSE server over a SOCK_SEQPACKET pair.

    Requests get increasing even uniques.  Replies are matched by unique;
    ones that arrive for other requests while waiting are kept until asked
    for.  Every wait has a timeout so that a hung server fails a test
    instead of hanging it.
    """

    # Generous by default: sanitizer builds are slow.
    DEFAULT_TIMEOUT = float(os.environ.get("FUSEWIRE_TIMEOUT", "10"))
    # Largest reply accepted; the kernel's own limit is max_pages pages.
    RECV_BUFFER = 8 << 20
    # Socket buffers big enough for 1 MiB reads and the oversize tests;
    # /dev/fuse has no such limit, so neither side should hit one.
    SOCKET_BUFFER = 16 << 20

    def __init__(self, sock, proc=None, timeout=None, stderr=None):
        self.sock = sock
        self.proc = proc
        self.timeout = self.DEFAULT_TIMEOUT if timeout is None else timeout
        self._stderr = stderr           # file the server's stderr goes to
        self._next_unique = 2
        self.inflight = {}              # unique -> opcode, reply required
        self.optional = {}              # unique -> opcode, reply allowed
        self.replies = {}               # unique -> Reply, not yet collected
        self.notifications = []         # Replies with unique 0
        self.log = collections.deque(maxlen=64)   # recent traffic, for errors
        self.init_in = None
        self.init_out = None
        self.init_reply = None
        self._buf = bytearray(self.RECV_BUFFER)
        self.uid, self.gid, self.pid = os.getuid(), os.getgid(), os.getpid()

    # -- process management --------------------------------------------

    @classmethod
    def spawn(cls, argv, timeout=None, env=None, cwd=None):
        """Start `argv` with one end of a socketpair as /dev/fd/N.

        Every argument equal to DEVFD is replaced by that path; if there is
        none, the path is appended.  The server's stdout and stderr go to a
        temporary file (see stderr_text())."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            _grow_buffers(s, cls.SOCKET_BUFFER)
        path = "/dev/fd/%d" % theirs.fileno()
        if DEVFD in argv:
            argv = [path if a == DEVFD else a for a in argv]
        else:
            argv = list(argv) + [path]
        err = tempfile.TemporaryFile(prefix="fusewire-stderr-")
        try:
            proc = subprocess.Popen([str(a) for a in argv],
                                    pass_fds=(theirs.fileno(),),
                                    stdin=subprocess.DEVNULL, stdout=err,
                                    stderr=err, env=env, cwd=cwd)
        except BaseException:
            ours.close()
            err.close()
            raise
        finally:
            theirs.close()
        peer = cls(ours, proc, timeout=timeout, stderr=err)
        peer.argv = argv
        return peer

    def stderr_text(self):
        """Everything the server wrote to stdout/stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def returncode(self):
        return None if self.proc is None else self.proc.poll()

    def wait_exit(self, timeout=None):
        """Wait for the server to exit on its own; return its exit code.
        Raises ProtocolError (after killing it) if it does not exit."""
        if self.proc is None:
            return None
        timeout = self.timeout if timeout is None else timeout
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProtocolError("server did not exit within %.1fs" % timeout)

    def close(self, timeout=None):
        """Close our end (as the kernel does on abort/unmount) and wait for
        the server to exit; return its exit code."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        return self.wait_exit(timeout)

    def kill(self):
        """Kill and reap the server if it is still running (for cleanup)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        """Best-effort teardown: kill, reap, release the stderr file."""
        self.kill()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    # -- sending -----------------------------------------------------------

    def new_unique(self):
        unique = self._next_unique
        self._next_unique += 2
        return unique

    def send(self, opcode, nodeid=0, body=b"", unique=None, expect_reply=True,
             **hdr):
        """Send one request; return its unique.

        expect_reply: True (a reply is required and can be waited for),
        False (any reply is a protocol error: FORGET and friends), or None
        (a reply is allowed but not required: INTERRUPT).  Header fields
        can be overridden: uid, gid, pid, total_extlen, padding, and
        length (in_header.len, to lie about the size)."""
        if unique is None:
            unique = self.new_unique()
        hdr.setdefault("uid", self.uid)
        hdr.setdefault("gid", self.gid)
        hdr.setdefault("pid", self.pid)
        msg = pack_request(opcode, unique, nodeid, body, **hdr)
        self._register(unique, opcode, expect_reply)
        self.send_raw(msg)
        self.log.append(("->", op_name(opcode), unique, nodeid, len(msg)))
        return unique

    def send_raw(self, data, unique=None, opcode=None, expect_reply=True):
        """Send arbitrary bytes as one message.  If `unique` is given, a
        reply to it is registered as expected (or allowed, see send())."""
        if unique is not None:
            self._register(unique, opcode, expect_reply)
        if self.sock is None:
            raise ServerGone("channel already closed")
        try:
            self.sock.send(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ServerGone("send failed: %s%s" % (e, self._exit_note()))
        if unique is None:
            self.log.append(("->", "raw", None, None, len(data)))

    def _register(self, unique, opcode, expect_reply):
        if expect_reply is True:
            self.inflight[unique] = opcode
        elif expect_reply is None:
            self.optional[unique] = opcode

    # -- receiving ---------------------------------------------------------

    def _recv_one(self, deadline):
        """Receive and validate one message; None on timeout."""
        if self.sock is None:
            raise ServerGone("channel already closed")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            n, _anc, flags, _addr = self.sock.recvmsg_into([self._buf])
        except socket.timeout:
            return None
        except ConnectionResetError:
            n, flags = 0, 0
        if n == 0:
            raise ServerGone("server closed the channel%s" % self._exit_note())
        if flags & socket.MSG_TRUNC:
            raise ProtocolError("reply larger than %d bytes" % len(self._buf))
        if n < OutHeader.SIZE:
            raise ProtocolError("reply of %d bytes, shorter than out_header" % n)
        oh = OutHeader.unpack(self._buf)
        data = bytes(self._buf[OutHeader.SIZE:n])
        if oh.len != n:
            raise ProtocolError("out_header.len %d but %d bytes sent (unique %d)"
                                % (oh.len, n, oh.unique))
        if oh.unique == 0:
            reply = Reply(0, oh.error, data)
            self.log.append(("<-", "notify", oh.error, None, n))
            self.notifications.append(reply)
            return reply
        if oh.error > 0 or oh.error <= -512:
            raise ProtocolError("reply error %d out of range (unique %d)"
                                % (oh.error, oh.unique))
        if oh.error != 0 and n != OutHeader.SIZE:
            raise ProtocolError("error reply %s with %d payload bytes (unique %d)"
                                % (errname(oh.error), len(data), oh.unique))
        if oh.unique in self.inflight:
            opcode = self.inflight.pop(oh.unique)
        elif oh.unique in self.optional:
            opcode = self.optional.pop(oh.unique)
        else:
            raise ProtocolError("reply to unique %d, which is not waiting for "
                                "one (error %d, %d bytes)"
                                % (oh.unique, oh.error, n))
        reply = Reply(oh.unique, oh.error, data, opcode)
        self.log.append(("<-", op_name(opcode) if opcode is not None else "?",
                         oh.unique, oh.error, n))
        self.replies[oh.unique] = reply
        return reply

    def wait(self, unique, timeout=None):
        """Wait for the reply to `unique` and return it."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while unique not in self.replies:
            if unique not in self.inflight and unique not in self.optional:
                raise ProtocolError("waiting for unique %d, which expects "
                                    "no reply" % unique)
            if self._recv_one(deadline) is None:
                opcode = self.inflight.get(unique, self.optional.get(unique))
                raise ProtocolError(
                    "no reply to unique %d (%s) within %.1fs%s"
                    % (unique, op_name(opcode) if opcode is not None else "?",
                       timeout, self._exit_note()))
        return self.replies.pop(unique)

    def poll(self, timeout=0.0):
        """Receive whatever arrives within `timeout`; return the number of
        messages received (replies are kept for wait())."""
        deadline = time.monotonic() + timeout
        count = 0
        while self._recv_one(deadline) is not None:
            count += 1
        return count

    def expect_silence(self, timeout=0.3):
        """Assert that no message at all arrives within `timeout`."""
        before = len(self.replies) + len(self.notifications)
        self.poll(timeout)
        after = len(self.replies) + len(self.notifications)
        if after != before:
            raise ProtocolError("unexpected message(s): %r"
                                % list(self.log)[-(after - before):])

    def request(self, opcode, nodeid=0, body=b"", timeout=None, **hdr):
        """Send a request and wait for its reply."""
        return self.wait(self.send(opcode, nodeid, body, **hdr), timeout)

    def _exit_note(self):
        if self.proc is not None and self.sock is not None:
            try:            # give a dying server a moment to be reaped
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        rc = self.returncode()
        if rc is None:
            return ""
        tail = self.stderr_text()[-2000:]
        return "; server exited with %d; stderr:\n%s" % (rc, tail)

    # -- INIT ----------------------------------------------------------------

    def init(self, flags=KERNEL_6_18_FLAGS, minor=KERNEL_MINOR_6_18,
             major=KERNEL_VERSION, max_readahead=128 << 10, check=True):
        """The INIT handshake.  Returns the Reply if check is False, else
        the decoded InitOut (also kept in self.init_out)."""
        flags = int(flags)
        self.init_in = InitIn(major, minor, max_readahead, flags & 0xFFFFFFFF,
                              flags >> 32)
        reply = self.request(Op.INIT, 0, self.init_in.pack())
        self.init_reply = reply
        if not check:
            return reply
        reply.check()
        if len(reply.data) < 8 or len(reply.data) > InitOut.SIZE:
            raise ProtocolError("INIT reply of %d bytes" % len(reply.data))
        # The kernel zero-fills a short reply.
        self.init_out = InitOut.unpack(reply.data.ljust(InitOut.SIZE, b"\0"))
        return self.init_out

    @property
    def agreed_flags(self):
        """INIT flags the server accepted (flags2 only counts with INIT_EXT)."""
        o = self.init_out
        f = o.flags
        if f & InitFlag.INIT_EXT:
            f |= o.flags2 << 32
        return InitFlag(f)

    # -- typed helpers (raise FuseError on an error reply) --------------------

    def lookup(self, parent, name):
        return self.request(Op.LOOKUP, parent, cstr(name)).struct(EntryOut)

    def forget(self, nodeid, nlookup=1):
        self.send(Op.FORGET, nodeid, ForgetIn(nlookup).pack(),
                  expect_reply=False)

    def batch_forget(self, pairs, count=None):
        """pairs: [(nodeid, nlookup)]; count overrides the header (to lie)."""
        body = BatchForgetIn(len(pairs) if count is None else count).pack()
        body += b"".join(ForgetOne(n, k).pack() for n, k in pairs)
        self.send(Op.BATCH_FORGET, 0, body, expect_reply=False)

    def getattr(self, nodeid, fh=None):
        arg = GetattrIn(GETATTR_FH if fh is not None else 0, 0, fh or 0)
        return self.request(Op.GETATTR, nodeid, arg.pack()).struct(AttrOut)

    def readlink(self, nodeid):
        return self.request(Op.READLINK, nodeid).check().data

    def open(self, nodeid, flags=os.O_RDONLY, opcode=Op.OPEN):
        return self.request(opcode, nodeid, OpenIn(flags).pack()).struct(OpenOut)

    def opendir(self, nodeid, flags=os.O_RDONLY | os.O_DIRECTORY):
        return self.open(nodeid, flags, Op.OPENDIR)

    def read(self, nodeid, fh, offset, size, opcode=Op.READ):
        arg = ReadIn(fh, offset, size, 0, 0, os.O_RDONLY)
        data = self.request(opcode, nodeid, arg.pack()).check().data
        if len(data) > size:
            raise ProtocolError("%s returned %d bytes for size %d"
                                % (op_name(opcode), len(data), size))
        return data

    def readdir(self, nodeid, fh, offset=0, size=4096, plus=False):
        """One READDIR(PLUS) call; a list of Dirent."""
        op = Op.READDIRPLUS if plus else Op.READDIR
        data = self.read(nodeid, fh, offset, size, opcode=op)
        return parse_direntplus(data) if plus else parse_dirents(data)

    def readdir_all(self, nodeid, fh, size=4096, plus=False, limit=100000):
        """READDIR(PLUS) from offset 0 until an empty reply."""
        out, offset = [], 0
        for _ in range(limit):
            batch = self.readdir(nodeid, fh, offset, size, plus)
            if not batch:
                return out
            out.extend(batch)
            offset = batch[-1].off
        raise ProtocolError("directory listing does not end")

    def release(self, nodeid, fh, opcode=Op.RELEASE):
        r = self.request(opcode, nodeid, ReleaseIn(fh, os.O_RDONLY).pack())
        r.check()
        if r.data:
            raise ProtocolError("%s reply with a payload" % op_name(opcode))

    def releasedir(self, nodeid, fh):
        self.release(nodeid, fh, Op.RELEASEDIR)

    def getxattr(self, nodeid, name, size):
        """size 0: the value's length (int); else the value (bytes)."""
        r = self.request(Op.GETXATTR, nodeid,
                         GetxattrIn(size).pack() + cstr(name))
        return self._xattr_reply(r, size)

    def listxattr(self, nodeid, size):
        r = self.request(Op.LISTXATTR, nodeid, GetxattrIn(size).pack())
        return self._xattr_reply(r, size)

    @staticmethod
    def _xattr_reply(r, size):
        if size == 0:
            return r.struct(GetxattrOut).size
        data = r.check().data
        if len(data) > size:
            raise ProtocolError("xattr reply of %d bytes for size %d"
                                % (len(data), size))
        return data

    def statfs(self, nodeid=ROOT_ID):
        return self.request(Op.STATFS, nodeid).struct(StatfsOut)

    def lseek(self, nodeid, fh, offset, whence):
        arg = LseekIn(fh, offset, whence)
        return self.request(Op.LSEEK, nodeid, arg.pack()).struct(LseekOut).offset

    def statx(self, nodeid, mask=STATX_BASIC_STATS | STATX_BTIME, fh=None,
              sx_flags=0):
        arg = StatxIn(GETATTR_FH if fh is not None else 0, 0, fh or 0,
                      sx_flags, mask)
        return self.request(Op.STATX, nodeid, arg.pack()).struct(StatxOut)

    def interrupt(self, victim):
        """Send INTERRUPT for `victim`; return the (odd) unique used."""
        unique = victim | 1
        self.send(Op.INTERRUPT, 0, InterruptIn(victim).pack(), unique=unique,
                  expect_reply=None)
        return unique

    def destroy(self):
        """DESTROY; the server answers with a bare header."""
        r = self.request(Op.DESTROY, 0)
        r.check()
        return r


def _grow_buffers(sock, size):
    """Raise a socket's send/receive buffer limits; as root the limits in
    /proc/sys/net/core/*mem_max can be exceeded with the *FORCE options."""
    for force, plain in ((getattr(socket, "SO_SNDBUFFORCE", 32),
                          socket.SO_SNDBUF),
                         (getattr(socket, "SO_RCVBUFFORCE", 33),
                          socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
