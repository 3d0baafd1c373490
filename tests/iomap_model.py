"""The kernel's side of a FUSE iomap mount, for tests.

No kernel on our machines has the FUSE iomap extension, so this module
plays it: `IomapMount` starts a fuse4fs in iomap mode on one end of a
SOCK_SEQPACKET socketpair (fusewire.KernelPeer) and drives it the way the
iomap kernel of fuse-abi.md section 2 would.  The ioctls that a socket
cannot answer (FUSE_DEV_IOC_IOMAP_SUPPORT, BACKING_OPEN, ...) are answered
by tests/iomap_shim.c, preloaded into the server; its log tells the model
which block device the server registered under which id.

What the model does, per VFS operation (fuse-abi.md 2.9-2.13):

  buffered read / readahead   IOMAP_BEGIN opflags 0, in readahead windows
  O_DIRECT read               BEGIN DIRECT over the whole request
  buffered write              zero old-EOF..pos (BEGIN ZERO), BEGIN WRITE,
                              copy into the (dirty-block) cache; END when the
                              write grew i_size or was short
  mmap write fault            read the page, BEGIN WRITE|FAULT, dirty it
  page-cache writeback        BEGIN WRITEBACK, device writes, IOEND
                              WRITEBACK [+UNWRITTEN] [+APPEND] per merged
                              physically and logically contiguous run
  O_DIRECT write              BEGIN WRITE|DIRECT, device writes with the
                              sub-block zeroing iomap does, IOEND DIRECT
  truncate                    ZERO, drop cache, write back the whole file,
                              SETATTR(size, mtime, ctime)
  fallocate                   flush+drop, FUSE_FALLOCATE, ZERO of the edges,
                              size update for growing modes
  fiemap, SEEK_DATA/HOLE      BEGIN REPORT
  fsync / syncfs / unmount    writeback, SETATTR(times), FSYNC / SYNCFS,
                              FORGET, DESTROY

The model keeps no clean page cache: only dirty blocks are held, and every
other read goes to the device, so whatever the server mapped is what is
read back.  Device I/O uses O_DIRECT on the registered block device, as
iomap's bios bypass the device's page cache.

Every BEGIN reply is checked against every validation rule of section 2.9
(the 00681926 rules and the stricter ones of the newer snapshot); reply
sizes, IOMAP_CONFIG (2.8), IOEND replies (2.11), attribute replies (2.2) and
the notifications of 2.12 are checked too, as are the parts of the fuse4fs
contract (section 6) that a kernel would only notice as lost or stale data
(a writeback mapping that is a hole, a ZERO op that allocates, ...).  A
violation raises `IomapViolation` naming the rule, the scenario, the
request and the reply.  A shadow copy of every file's bytes is kept and
every read is compared with it (`DataMismatch`).

BEGIN requests are counted and timed per kind (`stats()`): the server time
of a request is the time from sending it to receiving its reply.

Standard library only.
"""

import collections
import errno
import mmap
import os
import re
import stat
import struct
import subprocess
import time

import fusewire as fw
from fusewire import Op, wire_struct

# ---------------------------------------------------------------------------
# Constants (fuse-abi.md 2.3-2.6; v7 / 00681926 values)
# ---------------------------------------------------------------------------

IOMAP_MINOR = 99

OP_FREEZE_FS = 4089
OP_UNFREEZE_FS = 4090
OP_SHUTDOWN_FS = 4091
OP_IOMAP_CONFIG = 4092
OP_IOMAP_IOEND = 4093
OP_IOMAP_BEGIN = 4094
OP_IOMAP_END = 4095

IOC_BACKING_OPEN = 0x4010E501
IOC_BACKING_CLOSE = 0x4004E502
IOC_IOMAP_SUPPORT = 0x8010E563
IOC_SET_NOFS = 0x4004E564

# fuse_attr.flags
ATTR_SUBMOUNT = 0x01
ATTR_DAX = 0x02
ATTR_EXCLUSIVE = 0x04
ATTR_IOMAP = 0x08
ATTR_ATOMIC = 0x10
ATTR_SYNC = 0x20
ATTR_IMMUTABLE = 0x40
ATTR_APPEND = 0x80

# mapping types
TYPE_HOLE = 0
TYPE_DELALLOC = 1
TYPE_MAPPED = 2
TYPE_UNWRITTEN = 3
TYPE_INLINE = 4
TYPE_NOCACHE = 253
TYPE_RETRY_CACHE = 254
TYPE_PURE_OVERWRITE = 255
TYPE_NAMES = {0: "HOLE", 1: "DELALLOC", 2: "MAPPED", 3: "UNWRITTEN",
              4: "INLINE", 253: "NOCACHE", 254: "RETRY_CACHE",
              255: "PURE_OVERWRITE"}
VALID_TYPES = frozenset(TYPE_NAMES)

# mapping flags
F_NEW = 1 << 0
F_DIRTY = 1 << 1
F_SHARED = 1 << 2
F_MERGED = 1 << 3
F_BOUNDARY = 1 << 4
F_ANON_WRITE = 1 << 5
F_ATOMIC_BIO = 1 << 6
F_WANT_IOMAP_END = 1 << 7
F_SIZE_CHANGED = 1 << 8     # kernel -> server
F_STALE = 1 << 9            # kernel -> server
F_SERVER_MASK = 0xFF
F_NAMES = ["NEW", "DIRTY", "SHARED", "MERGED", "BOUNDARY", "ANON_WRITE",
           "ATOMIC_BIO", "WANT_IOMAP_END", "SIZE_CHANGED", "STALE"]

# operation flags
OP_WRITE = 1 << 0
OP_ZERO = 1 << 1
OP_REPORT = 1 << 2
OP_FAULT = 1 << 3
OP_DIRECT = 1 << 4
OP_NOWAIT = 1 << 5
OP_OVERWRITE_ONLY = 1 << 6
OP_UNSHARE = 1 << 7
OP_DAX = 1 << 8
OP_ATOMIC = 1 << 9
OP_DONTCACHE = 1 << 10
OP_SWAPFILE = 1 << 30
OP_WRITEBACK = 1 << 31
OP_NAMES = {OP_WRITE: "WRITE", OP_ZERO: "ZERO", OP_REPORT: "REPORT",
            OP_FAULT: "FAULT", OP_DIRECT: "DIRECT", OP_NOWAIT: "NOWAIT",
            OP_OVERWRITE_ONLY: "OVERWRITE_ONLY", OP_UNSHARE: "UNSHARE",
            OP_DAX: "DAX", OP_ATOMIC: "ATOMIC", OP_DONTCACHE: "DONTCACHE",
            OP_SWAPFILE: "SWAPFILE", OP_WRITEBACK: "WRITEBACK"}
FILE_WRITE_OPS = OP_WRITE | OP_ZERO | OP_UNSHARE | OP_WRITEBACK

# ioend flags
IOEND_SHARED = 1 << 0
IOEND_UNWRITTEN = 1 << 1
IOEND_BOUNDARY = 1 << 2
IOEND_DIRECT = 1 << 3
IOEND_APPEND = 1 << 4
IOEND_WRITEBACK = 1 << 5
IOEND_SWAPOFF = 1 << 6
IOEND_NAMES = {IOEND_SHARED: "SHARED", IOEND_UNWRITTEN: "UNWRITTEN",
               IOEND_BOUNDARY: "BOUNDARY", IOEND_DIRECT: "DIRECT",
               IOEND_APPEND: "APPEND", IOEND_WRITEBACK: "WRITEBACK",
               IOEND_SWAPOFF: "SWAPOFF"}

NULL_ADDR = (1 << 64) - 1
DEV_NULL = 0
INVAL_TO_EOF = (1 << 64) - 1

# config flags
CONFIG_SID = 0x01
CONFIG_UUID = 0x02
CONFIG_BLOCKSIZE = 0x04
CONFIG_MAX_LINKS = 0x08
CONFIG_TIME = 0x10
CONFIG_MAXBYTES = 0x20
CONFIG_CACHE_MAXBYTES = 0x40
CONFIG_ALL = 0x7F

NOTIFY_IOMAP_DEV_INVAL = 99
NOTIFY_IOMAP_UPSERT = 100
NOTIFY_IOMAP_INVAL = 101

MAX_LFS_FILESIZE = (1 << 63) - 1
CACHE_DEFAULT_MAXBYTES = 256 << 10
SECTOR = 512
PAGE = os.sysconf("SC_PAGE_SIZE")

# setattr valid bits
FATTR_MODE = 1 << 0
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_CTIME = 1 << 10

# fallocate modes
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

# ext4 limits the kernel's ext4 driver uses (fs/ext4/super.c, ext4.h)
EXT4_LINK_MAX = 65000
EXT4_TIMESTAMP_MIN = -(1 << 31)
EXT4_EXTRA_TIMESTAMP_MAX = (1 << 34) - 1 - (1 << 31)
EXT4_NON_EXTRA_TIMESTAMP_MAX = (1 << 31) - 1

# ---------------------------------------------------------------------------
# Wire structures of the iomap extension (fusewire has the standard ones)
# ---------------------------------------------------------------------------

IomapIo = wire_struct("IomapIo", [
    ("offset", "Q"), ("length", "Q"), ("addr", "Q"), ("type", "H"),
    ("flags", "H"), ("dev", "I")], size=32)

IomapBeginIn = wire_struct("IomapBeginIn", [
    ("opflags", "I"), ("reserved", "I"), ("attr_ino", "Q"), ("pos", "Q"),
    ("count", "Q")], size=32)

IomapBeginOut = wire_struct("IomapBeginOut", [
    ("read", IomapIo), ("write", IomapIo)], size=64)

IomapEndIn = wire_struct("IomapEndIn", [
    ("opflags", "I"), ("reserved", "I"), ("attr_ino", "Q"), ("pos", "Q"),
    ("count", "Q"), ("written", "q"), ("map", IomapIo)], size=72)

IomapIoendIn = wire_struct("IomapIoendIn", [
    ("flags", "I"), ("error", "i"), ("attr_ino", "Q"), ("pos", "Q"),
    ("new_addr", "Q"), ("written", "Q"), ("dev", "I"), ("pad", "I")],
    size=48)

IomapIoendOut = wire_struct("IomapIoendOut", [("newsize", "Q")], size=8)

IomapConfigIn = wire_struct("IomapConfigIn", [
    ("flags", "Q"), ("maxbytes", "q"), ("cache_maxbytes", "I"),
    ("zero", "I"), ("padding", "40s")], size=64)

IomapConfigOut = wire_struct("IomapConfigOut", [
    ("flags", "Q"), ("s_id", "32s"), ("s_uuid", "16s"), ("s_uuid_len", "B"),
    ("s_pad", "3s"), ("s_blocksize", "I"), ("s_max_links", "I"),
    ("s_time_gran", "I"), ("s_time_min", "q"), ("s_time_max", "q"),
    ("s_maxbytes", "q"), ("cache_maxbytes", "I"), ("tail_pad", "4s")],
    size=104)

IomapSupport = wire_struct("IomapSupport", [
    ("flags", "Q"), ("padding", "Q")], size=16)

BackingMap = wire_struct("BackingMap", [
    ("fd", "i"), ("flags", "I"), ("padding", "Q")], size=16)

FuseRange = wire_struct("FuseRange", [("offset", "Q"), ("length", "Q")],
                        size=16)

IomapDevInvalOut = wire_struct("IomapDevInvalOut", [
    ("dev", "I"), ("reserved", "I"), ("range", FuseRange)], size=24)

IomapInvalMappingsOut = wire_struct("IomapInvalMappingsOut", [
    ("nodeid", "Q"), ("attr_ino", "Q"), ("read", FuseRange),
    ("write", FuseRange)], size=48)

IomapUpsertMappingsOut = wire_struct("IomapUpsertMappingsOut", [
    ("nodeid", "Q"), ("attr_ino", "Q"), ("read", IomapIo),
    ("write", IomapIo)], size=80)

SecctxHeader = wire_struct("SecctxHeader", [("size", "I"), ("nr_secctx", "I")],
                           size=8)

# The INIT flags the model offers: a 6.18 kernel plus the iomap tree's bit.
KERNEL_IOMAP_FLAGS = fw.KERNEL_6_18_FLAGS | fw.InitFlag.IOMAP


# ---------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------

def flag_names(value, names):
    out = [n for bit, n in sorted(names.items()) if value & bit]
    rest = value & ~sum(names)
    if rest:
        out.append("0x%x" % rest)
    return "|".join(out) if out else "0"


def opflags_str(opflags):
    return flag_names(opflags, OP_NAMES)


def ioend_str(flags):
    return flag_names(flags, IOEND_NAMES)


def mapflags_str(flags):
    return flag_names(flags, {1 << i: n for i, n in enumerate(F_NAMES)})


def io_str(io):
    """One mapping, readably."""
    t = TYPE_NAMES.get(io.type, "type %d" % io.type)
    addr = "NULL" if io.addr == NULL_ADDR else "%d" % io.addr
    s = "%s off=%d len=%d addr=%s dev=%d" % (t, io.offset, io.length, addr,
                                             io.dev)
    if io.flags:
        s += " flags=%s" % mapflags_str(io.flags)
    return s


def _fmt_bytes(b, limit=32):
    b = bytes(b)
    s = b[:limit].hex()
    return s + ("..." if len(b) > limit else "")


class IomapViolation(AssertionError):
    """The server broke a kernel rule or the fuse4fs iomap contract."""

    def __init__(self, rule, detail="", *, scenario=None, vfs_op=None,
                 request=None, reply=None):
        self.rule = rule
        self.detail = detail
        self.scenario = scenario
        self.vfs_op = vfs_op
        self.request = request
        self.reply = reply
        parts = ["%s%s" % (rule, ": " + detail if detail else "")]
        if scenario:
            parts.append("scenario: %s" % scenario)
        if vfs_op:
            parts.append("during: %s" % vfs_op)
        if request:
            parts.append("request: %s" % request)
        if reply:
            parts.append("reply: %s" % reply)
        super().__init__("\n  ".join(parts))


class DataMismatch(AssertionError):
    """Bytes read back differ from the shadow copy."""


class IomapIOError(OSError):
    """The emulated VFS operation failed with an errno (a server error
    reply, or what the kernel turns a bad reply into)."""

    def __init__(self, err, what):
        super().__init__(err, "%s: %s" % (what, os.strerror(err)))


# ---------------------------------------------------------------------------
# On-disk facts the model needs for its checks
# ---------------------------------------------------------------------------

def read_superblock(image, offset=0):
    """The ext2/3/4 superblock fields used by the CONFIG checks."""
    with open(image, "rb") as f:
        f.seek(offset + 1024)
        sb = f.read(1024)
    if struct.unpack_from("<H", sb, 56)[0] != 0xEF53:
        raise ValueError("%s: no ext2/3/4 superblock" % image)
    log_bs = struct.unpack_from("<I", sb, 24)[0]
    rev = struct.unpack_from("<I", sb, 76)[0]
    inode_size = struct.unpack_from("<H", sb, 88)[0] if rev else 128
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 92)
    return {
        "block_size": 1024 << log_bs,
        "inode_size": inode_size,
        "feature_compat": compat,
        "feature_incompat": incompat,
        "feature_ro_compat": ro_compat,
        "uuid": sb[104:120],
        "extents": bool(incompat & 0x40),
        "huge_file": bool(ro_compat & 0x8),
        "inline_data": bool(incompat & 0x8000),
    }


def ext4_max_size(blkbits, huge_file):
    """s_maxbytes of an extent-mapped ext4 (fs/ext4/super.c ext4_max_size)."""
    upper = MAX_LFS_FILESIZE
    if not huge_file:
        upper = (((1 << 32) - 1) >> (blkbits - 9)) << blkbits
    return min(((1 << 32) - 1) << blkbits, upper)


def parse_shim_log(path):
    """[(id, path, open_flags, monotonic ns)] of successful BACKING_OPENs,
    and the other lines (for messages)."""
    opens, other = [], []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return opens, other
    for line in lines:
        m = re.match(r"backing_open (\d+) (\S+) (0x[0-9a-f]+)"
                     r"(?: mono=(\d+))?$", line)
        if m:
            opens.append((int(m.group(1)), m.group(2), int(m.group(3), 16),
                          int(m.group(4) or 0)))
        else:
            other.append(line)
    return opens, other


def build_shim(src, out_dir):
    """Compile tests/iomap_shim.c; returns the .so path."""
    so = os.path.join(out_dir, "iomap_shim.so")
    cp = subprocess.run(["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", so,
                         src, "-ldl"], capture_output=True, text=True)
    if cp.returncode != 0:
        raise RuntimeError("building %s failed:\n%s" % (src, cp.stderr))
    return so


SHIM_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "iomap_shim.c")


# ---------------------------------------------------------------------------
# Block devices registered by the server
# ---------------------------------------------------------------------------

class Device:
    """A registered backing device, opened by the model for data I/O with
    O_DIRECT (iomap's bios bypass the device page cache)."""

    CHUNK = 8 << 20

    def __init__(self, dev_id, path, server_oflags):
        self.id = dev_id
        self.path = path
        self.server_oflags = server_oflags
        self.writable = (server_oflags & os.O_ACCMODE) == os.O_RDWR
        self.fd = os.open(path, (os.O_RDWR if self.writable else os.O_RDONLY)
                          | os.O_DIRECT | os.O_CLOEXEC)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        self._buf = mmap.mmap(-1, self.CHUNK)
        self.bytes_read = 0
        self.bytes_written = 0

    def _check(self, addr, n, what):
        if addr % SECTOR or n % SECTOR:
            raise AssertionError("model bug: unaligned device %s %d+%d"
                                 % (what, addr, n))
        if addr + n > self.size:
            raise IomapIOError(errno.EIO, "device %s %s beyond its end "
                               "(%d+%d > %d)" % (self.path, what, addr, n,
                                                 self.size))

    def read(self, addr, n):
        self._check(addr, n, "read")
        out = bytearray()
        while n > 0:
            k = min(n, self.CHUNK)
            view = memoryview(self._buf)[:k]
            got = os.preadv(self.fd, [view], addr)
            view.release()
            if got != k:
                raise IomapIOError(errno.EIO, "short device read at %d" % addr)
            out += self._buf[:k]
            addr += k
            n -= k
        self.bytes_read += len(out)
        return bytes(out)

    def write(self, addr, data):
        data = memoryview(bytes(data))
        self._check(addr, len(data), "write")
        pos = 0
        while pos < len(data):
            k = min(len(data) - pos, self.CHUNK)
            self._buf[:k] = data[pos:pos + k]
            view = memoryview(self._buf)[:k]
            got = os.pwritev(self.fd, [view], addr + pos)
            view.release()
            if got != k:
                raise IomapIOError(errno.EIO, "short device write at %d"
                                   % (addr + pos))
            pos += k
        self.bytes_written += len(data)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self._buf is not None:
            self._buf.close()
            self._buf = None


# ---------------------------------------------------------------------------
# In-core inodes and open files
# ---------------------------------------------------------------------------

class Inode:
    """The kernel's in-core inode for one node id."""

    def __init__(self, nodeid, attr, name):
        self.nodeid = nodeid
        self.ino = attr.ino
        self.mode = attr.mode
        self.name = name
        self.attr_flags = attr.flags
        self.iomap = bool(stat.S_ISREG(attr.mode)
                          and attr.flags & ATTR_IOMAP
                          and attr.flags & ATTR_EXCLUSIVE)
        self.size = attr.size           # in-core i_size (kernel-owned)
        self.disk_size = attr.size      # i_disk_size: what the kernel
                                        # last heard the on-disk size is
        self.server_size = attr.size    # what the on-disk size must be,
                                        # given every request so far
        self.atime = attr.atime * 10**9 + attr.atimensec
        self.mtime = attr.mtime * 10**9 + attr.mtimensec
        self.ctime = attr.ctime * 10**9 + attr.ctimensec
        self.times_dirty = False
        self.times_pushed = False       # a SETATTR carried our times
        self.nlookup = 0
        self.dirty = {}                 # block index -> bytearray(bs)
        self.shadow = None              # expected bytes (bytearray)
        self.upserts = []               # (read, write) IomapIo from UPSERT
        self.files = []
        self.parent = fw.ROOT_ID

    def __repr__(self):
        return "<Inode %s nodeid=%d ino=%d size=%d disk=%d>" % (
            self.name, self.nodeid, self.ino, self.size, self.disk_size)


class File:
    """An open file description."""

    def __init__(self, inode, fh, flags, open_flags):
        self.inode = inode
        self.fh = fh
        self.flags = flags
        self.open_flags = open_flags
        self.closed = False

    @property
    def name(self):
        return self.inode.name


class Mapped:
    """A validated BEGIN answer, as iomap uses it."""

    __slots__ = ("opflags", "pos", "count", "out", "iomap", "srcmap",
                 "length", "size_changed", "request", "reply", "unique")

    def __init__(self, opflags, pos, count, out, iomap, srcmap, length,
                 request, reply):
        self.opflags = opflags
        self.pos = pos
        self.count = count
        self.out = out
        self.iomap = iomap          # the mapping the I/O goes to
        self.srcmap = srcmap        # old data for partial blocks (or None)
        self.length = length        # bytes processable from pos
        self.size_changed = False
        self.request = request
        self.reply = reply

    @property
    def source(self):
        """Where old data for partial-block writes comes from (iomap's
        iomap_iter_srcmap): srcmap unless it is the default HOLE."""
        return self.srcmap if self.srcmap is not None else self.iomap


# ---------------------------------------------------------------------------
# The mount
# ---------------------------------------------------------------------------

class IomapMount:
    """Plays the iomap kernel for one fuse4fs serving `image`.

    Typical use:

        m = IomapMount(binary, image, shim_so, scenario="x")
        m.start()
        f = m.create("a")
        m.write(f, 0, b"hello")
        m.fsync(f)
        assert m.read(f, 0, 5) == b"hello"
        m.unmount()           # DESTROY; checks a clean exit
    """

    def __init__(self, binary, image, shim, *, opts=(), scenario="",
                 timeout=None, readahead=128 << 10,
                 strict_zero=True, expect_noniomap=(), log_path=None,
                 extra_env=None):
        self.binary = binary
        self.image = image
        self.shim = shim
        self.opts = list(opts)
        self.scenario = scenario
        self.timeout = timeout
        self.readahead = readahead
        self.strict_zero = strict_zero
        # names of regular files expected without FUSE_ATTR_IOMAP
        # (inline-data files); None accepts either for every file
        self.expect_noniomap = (None if expect_noniomap is None
                                else set(expect_noniomap))
        self.log_path = log_path or (str(image) + ".shimlog")
        self.extra_env = extra_env or {}
        self.sb = read_superblock(image) if image else None
        self.peer = None
        self.devices = {}
        self.config = None
        self.blocksize = None
        self.maxbytes = MAX_LFS_FILESIZE
        self.inodes = {}                # nodeid -> Inode
        self.by_name = {}               # (parent nodeid, name) -> Inode
        self.files = []
        self.vfs_op = None
        self.no_end = False
        self.no_ioend = False
        self.no_flush = False
        self.no_fsync = False
        self.no_syncfs = False
        self.agreed = None
        self._notes_seen = 0
        self.stats_reset()
        self.exit_code = None

    # -- diagnostics -------------------------------------------------------

    def violation(self, rule, detail="", request=None, reply=None):
        return IomapViolation(rule, detail, scenario=self.scenario,
                              vfs_op=self.vfs_op, request=request,
                              reply=reply)

    def _op(self, text):
        self.vfs_op = text

    # -- statistics ----------------------------------------------------------

    def stats_reset(self):
        self._stats = collections.defaultdict(lambda: [0, 0.0])
        self.counts = collections.Counter()

    def _kind(self, opflags):
        if opflags & OP_REPORT:
            return "report"
        if opflags & OP_WRITEBACK:
            return "writeback"
        if opflags & OP_ZERO:
            return "zero"
        if opflags & OP_WRITE:
            if opflags & OP_DIRECT:
                return "direct-write"
            if opflags & OP_FAULT:
                return "fault"
            return "write"
        if opflags & OP_DIRECT:
            return "direct-read"
        return "read"

    def stats(self):
        """{kind: (BEGIN count, total server seconds)} plus 'END'/'IOEND'
        counts in self.counts."""
        return {k: (v[0], v[1]) for k, v in self._stats.items()}

    # -- start-up -------------------------------------------------------------

    def argv(self):
        opts = ["iomap=on", "iomap_debug"] + self.opts
        return [self.binary, "-f", "-o", ",".join(opts), self.image, fw.DEVFD]

    def env(self):
        env = dict(os.environ)
        env["LD_PRELOAD"] = self.shim
        env["F4SHIM_LOG"] = self.log_path
        # A sanitizer runtime must otherwise come first in the link order.
        asan = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + \
            "verify_asan_link_order=0"
        env.update(self.extra_env)
        return env

    def start(self):
        """Spawn the server, INIT with FUSE_IOMAP, IOMAP_CONFIG, and open
        the registered devices."""
        if os.path.exists(self.log_path):
            os.unlink(self.log_path)
        self.peer = fw.KernelPeer.spawn(self.argv(), timeout=self.timeout,
                                        env=self.env())
        try:
            self._init()
            self._config()
        except BaseException:
            self.kill()
            raise
        return self

    def _init(self):
        self._op("FUSE_INIT")
        self.init_sent_ns = time.monotonic_ns()
        out = self.peer.init(flags=KERNEL_IOMAP_FLAGS, minor=IOMAP_MINOR)
        req = "INIT minor %d flags 0x%x" % (IOMAP_MINOR,
                                            int(KERNEL_IOMAP_FLAGS))
        rep = "major %d minor %d flags 0x%x flags2 0x%x" % (
            out.major, out.minor, out.flags, out.flags2)
        if out.major != fw.KERNEL_VERSION:
            raise self.violation("INIT: major must be 7", request=req,
                                 reply=rep)
        if not out.flags & fw.InitFlag.INIT_EXT:
            raise self.violation("INIT: FUSE_INIT_EXT not set, so flags2 "
                                 "(and FUSE_IOMAP) is ignored", request=req,
                                 reply=rep)
        agreed = self.peer.agreed_flags
        if not agreed & fw.InitFlag.IOMAP:
            log = open(self.log_path).read() if os.path.exists(
                self.log_path) else "(no shim log)"
            raise self.violation("INIT: server did not accept FUSE_IOMAP",
                                 "shim log:\n" + log, request=req, reply=rep)
        extra = int(agreed) & ~int(KERNEL_IOMAP_FLAGS)
        if extra:
            raise self.violation("INIT: server accepted flags the kernel did "
                                 "not offer", "0x%x" % extra, request=req,
                                 reply=rep)
        if out.minor != IOMAP_MINOR:
            raise self.violation("INIT: minor must be 99 with FUSE_IOMAP "
                                 "(FUSE_ATTR_EXCLUSIVE is ignored otherwise)",
                                 request=req, reply=rep)
        self.agreed = agreed
        self.max_write = max(4096, out.max_write)

    def _config(self):
        self._op("FUSE_IOMAP_CONFIG")
        cin = IomapConfigIn(CONFIG_ALL, MAX_LFS_FILESIZE,
                            CACHE_DEFAULT_MAXBYTES)
        r = self.peer.request(OP_IOMAP_CONFIG, 0, cin.pack())
        req = "IOMAP_CONFIG nodeid 0 %r" % (cin,)
        if r.error == -errno.ENOSYS:
            raise self.violation("IOMAP_CONFIG answered ENOSYS",
                                 "the contract registers the device and "
                                 "sets the block size here", request=req)
        if r.error:
            raise self.violation("IOMAP_CONFIG error %s: the mount fails "
                                 "(\"could not configure iomap\")"
                                 % fw.errname(r.error), request=req)
        if len(r.data) > IomapConfigOut.SIZE:
            raise self.violation("reply size rule: IOMAP_CONFIG reply larger "
                                 "than 104 bytes -> EINVAL",
                                 "%d bytes" % len(r.data), request=req)
        c = IomapConfigOut.unpack(r.data.ljust(IomapConfigOut.SIZE, b"\0"))
        rep = repr(c)

        def bad(rule, d=""):
            return self.violation(rule, d, request=req, reply=rep)

        if c.flags & ~CONFIG_ALL:
            raise bad("config rule: flags outside 0x7F -> EINVAL",
                      "0x%x" % c.flags)
        if c.s_uuid_len > 16:
            raise bad("config rule: s_uuid_len > 16 -> EINVAL",
                      "%d" % c.s_uuid_len)
        if c.s_pad != b"\0\0\0":
            raise bad("config rule: s_pad not zero -> EINVAL")
        sb = self.sb
        if not c.flags & CONFIG_BLOCKSIZE:
            raise bad("contract: CONFIG must set BLOCKSIZE (the default, "
                      "PAGE_SIZE, is wrong for other ext4 block sizes)")
        bs = c.s_blocksize
        if bs < 512 or bs > 65536 or bs & (bs - 1):
            raise bad("config rule (newer snapshot): s_blocksize must be a "
                      "power of two in 512..64KiB", "%d" % bs)
        if bs != sb["block_size"]:
            raise bad("contract: s_blocksize must be the ext4 block size",
                      "%d != %d" % (bs, sb["block_size"]))
        if c.flags & CONFIG_TIME:
            if not 1 <= c.s_time_gran <= 10**9:
                raise bad("config rule (newer snapshot): s_time_gran "
                          "outside 1..1e9", "%d" % c.s_time_gran)
            if sb["inode_size"] >= 144:
                want = (1, EXT4_TIMESTAMP_MIN, EXT4_EXTRA_TIMESTAMP_MAX)
            else:
                want = (10**9, EXT4_TIMESTAMP_MIN,
                        EXT4_NON_EXTRA_TIMESTAMP_MAX)
            got = (c.s_time_gran, c.s_time_min, c.s_time_max)
            if got != want:
                raise bad("config: time gran/min/max differ from ext4's "
                          "for %d-byte inodes" % sb["inode_size"],
                          "got %r, ext4 uses %r" % (got, want))
        if c.flags & CONFIG_MAXBYTES:
            if not 0 <= c.s_maxbytes <= MAX_LFS_FILESIZE:
                raise bad("config rule (newer snapshot): s_maxbytes outside "
                          "0..MAX_LFS_FILESIZE", "%d" % c.s_maxbytes)
            limit = ext4_max_size(bs.bit_length() - 1, sb["huge_file"])
            if sb["extents"] and c.s_maxbytes != limit:
                raise bad("config: s_maxbytes differs from ext4's for an "
                          "extent-mapped filesystem",
                          "got %d, ext4 uses %d" % (c.s_maxbytes, limit))
            if not sb["extents"] and not 0 < c.s_maxbytes <= limit:
                raise bad("config: s_maxbytes out of range",
                          "%d" % c.s_maxbytes)
            self.maxbytes = c.s_maxbytes
        if c.flags & CONFIG_MAX_LINKS and c.s_max_links != EXT4_LINK_MAX:
            raise bad("config: s_max_links differs from ext4's",
                      "%d != %d" % (c.s_max_links, EXT4_LINK_MAX))
        if c.flags & CONFIG_UUID:
            if c.s_uuid_len != 16 or c.s_uuid != sb["uuid"]:
                raise bad("config: s_uuid is not the filesystem UUID",
                          "%s/%d vs %s" % (c.s_uuid.hex(), c.s_uuid_len,
                                           sb["uuid"].hex()))
        self.config = c
        self.blocksize = bs
        # The device must have been registered by now.
        opens, other = parse_shim_log(self.log_path)
        if not opens:
            raise bad("contract: no block device registered during "
                      "IOMAP_CONFIG (BACKING_OPEN type IOMAP)",
                      "shim log: %r" % other)
        for dev_id, path, oflags, mono in opens:
            if mono and mono < self.init_sent_ns:
                raise bad("BACKING_OPEN before INIT: the kernel answers "
                          "EPERM until FUSE_IOMAP is agreed",
                          "device %s registered %.3fs before INIT was sent"
                          % (path, (self.init_sent_ns - mono) / 1e9))
            if dev_id in self.devices:
                continue
            self.devices[dev_id] = Device(dev_id, path, oflags)
        for d in self.devices.values():
            if not d.writable and "ro" not in self.opts:
                raise bad("contract: the block device must be registered "
                          "O_RDWR (the newer snapshot gives EACCES for write "
                          "mappings otherwise)", "%s flags 0x%x"
                          % (d.path, d.server_oflags))
        self._check_notifications()

    # -- teardown -------------------------------------------------------------

    def kill(self):
        """Best-effort cleanup: kill the server, close devices."""
        if self.peer is not None:
            self.peer.cleanup()
        for d in self.devices.values():
            d.close()

    def stderr_text(self):
        return self.peer.stderr_text() if self.peer else ""

    def unmount(self, timeout=None):
        """What umount does: close files, sync, FORGET, DESTROY; then the
        server must exit 0 on its own.  Returns the exit code."""
        self._op("umount")
        for f in list(self.files):
            if not f.closed:
                self.close(f)
        self.syncfs()
        self._op("umount: FORGET")
        pairs = [(i.nodeid, i.nlookup) for i in self.inodes.values()
                 if i.nlookup > 0 and i.nodeid != fw.ROOT_ID]
        for k in range(0, len(pairs), 64):
            self.peer.batch_forget(pairs[k:k + 64])
        for i in self.inodes.values():
            i.nlookup = 0
        self._op("umount: DESTROY")
        r = self.peer.request(Op.DESTROY, 0)
        if r.error:
            raise self.violation("DESTROY failed", fw.errname(r.error))
        if r.data:
            raise self.violation("DESTROY reply with a payload")
        self._check_notifications()
        rc = self.peer.wait_exit(timeout)
        self.exit_code = rc
        for d in self.devices.values():
            d.close()
        if self.peer.sock is not None:
            self.peer.sock.close()
            self.peer.sock = None
        return rc

    # -- requests -------------------------------------------------------------

    def _request(self, opcode, nodeid, body):
        r = self.peer.request(opcode, nodeid, body)
        if len(self.peer.notifications) != self._notes_seen:
            self._check_notifications()
        return r

    def _check_notifications(self):
        notes = self.peer.notifications
        while self._notes_seen < len(notes):
            n = notes[self._notes_seen]
            self._notes_seen += 1
            self._check_notification(n)

    def _check_notification(self, n):
        code, body = n.error, n.data
        self.counts["notify %d" % code] += 1
        sizes = {NOTIFY_IOMAP_DEV_INVAL: IomapDevInvalOut.SIZE,
                 NOTIFY_IOMAP_UPSERT: IomapUpsertMappingsOut.SIZE,
                 NOTIFY_IOMAP_INVAL: IomapInvalMappingsOut.SIZE}
        if code in sizes and len(body) != sizes[code]:
            raise self.violation("notify rule: body size must match exactly "
                                 "-> EINVAL", "code %d: %d bytes, want %d"
                                 % (code, len(body), sizes[code]))
        if code == NOTIFY_IOMAP_DEV_INVAL:
            d = IomapDevInvalOut.unpack(body)
            dev = self.devices.get(d.dev)
            if d.dev == 0 or d.reserved:
                raise self.violation("notify DEV_INVAL: dev 0 or reserved "
                                     "!= 0 -> EINVAL", repr(d))
            if dev is None:
                raise self.violation("notify DEV_INVAL: unknown device -> "
                                     "ENODEV", repr(d))
            if (d.range.offset + d.range.length >= 1 << 64
                    or d.range.offset >= dev.size):
                raise self.violation("notify DEV_INVAL: range overflows or "
                                     "starts beyond the device -> EINVAL",
                                     repr(d))
            # The model keeps no device page cache: nothing to drop.
        elif code == NOTIFY_IOMAP_UPSERT:
            u = IomapUpsertMappingsOut.unpack(body)
            ino = self.inodes.get(u.nodeid)
            if ino is None:
                raise self.violation("notify UPSERT: unknown nodeid -> ESTALE",
                                     repr(u))
            if u.attr_ino != ino.ino:
                raise self.violation("notify UPSERT: attr_ino mismatch -> "
                                     "EINVAL", repr(u))
            for which, io in (("read", u.read), ("write", u.write)):
                if io.type == TYPE_NOCACHE:
                    continue
                if io.type == TYPE_RETRY_CACHE:
                    raise self.violation("notify UPSERT: RETRY_CACHE -> "
                                         "EFSCORRUPTED", repr(u))
                self._check_io(io, which, "UPSERT %s" % which, repr(u))
                if io.type in (TYPE_MAPPED, TYPE_UNWRITTEN):
                    dev = self.devices.get(io.dev)
                    if dev is None or io.addr + io.length > dev.size:
                        raise self.violation("notify UPSERT: device unknown "
                                             "or mapping beyond its end -> "
                                             "EFSCORRUPTED", repr(u))
            # The model never serves BEGIN from a mapping cache (a kernel
            # may drop its cache at any time); upserts only answer
            # RETRY_CACHE replies.
            ino.upserts.append((u.read, u.write))
        elif code == NOTIFY_IOMAP_INVAL:
            v = IomapInvalMappingsOut.unpack(body)
            ino = self.inodes.get(v.nodeid)
            if ino is None:
                raise self.violation("notify INVAL_MAPPINGS: unknown nodeid "
                                     "-> ESTALE", repr(v))
            if v.attr_ino != ino.ino:
                raise self.violation("notify INVAL_MAPPINGS: attr_ino "
                                     "mismatch -> EINVAL", repr(v))
            for rng in (v.read, v.write):
                if rng.length == 0:
                    continue
                if (rng.offset >= self.maxbytes
                        or rng.offset % self.blocksize
                        or (rng.length != INVAL_TO_EOF
                            and rng.length % self.blocksize)):
                    raise self.violation("notify INVAL_MAPPINGS: range not "
                                         "aligned or beyond maxbytes -> "
                                         "EFSCORRUPTED", repr(v))
            ino.upserts = []

    # -- attributes -----------------------------------------------------------

    def _check_attr(self, attr, name, what, known=None):
        """attr.flags per the contract.  The kernel reads them when it
        instantiates an inode; for a known inode only EXCLUSIVE is checked
        (an inline-data file that became extent-mapped may say IOMAP)."""
        flags = attr.flags
        if known is not None:
            if not flags & ATTR_EXCLUSIVE:
                raise self.violation(
                    "contract: every inode carries FUSE_ATTR_EXCLUSIVE",
                    "%s of %r: attr.flags 0x%x" % (what, name, flags))
            if known.iomap and not flags & ATTR_IOMAP:
                raise self.violation(
                    "contract: an iomap inode lost FUSE_ATTR_IOMAP",
                    "%s of %r: attr.flags 0x%x" % (what, name, flags))
            return
        if stat.S_ISREG(attr.mode):
            want_iomap = True
            if self.expect_noniomap is None:
                want_iomap = None
            elif name in self.expect_noniomap:
                want_iomap = False
            have = flags & (ATTR_IOMAP | ATTR_EXCLUSIVE)
            if want_iomap is True and have != ATTR_IOMAP | ATTR_EXCLUSIVE:
                raise self.violation(
                    "contract: regular files carry FUSE_ATTR_IOMAP|"
                    "FUSE_ATTR_EXCLUSIVE", "%s of %r: attr.flags 0x%x"
                    % (what, name, flags))
            if want_iomap is False and have != ATTR_EXCLUSIVE:
                raise self.violation(
                    "contract: inline-data files carry FUSE_ATTR_EXCLUSIVE "
                    "only", "%s of %r: attr.flags 0x%x" % (what, name, flags))
            if want_iomap is None and not flags & ATTR_EXCLUSIVE:
                raise self.violation(
                    "contract: every inode carries FUSE_ATTR_EXCLUSIVE",
                    "%s of %r: attr.flags 0x%x" % (what, name, flags))
        else:
            if flags & (ATTR_IOMAP | ATTR_EXCLUSIVE) != ATTR_EXCLUSIVE:
                raise self.violation(
                    "contract: non-regular inodes carry FUSE_ATTR_EXCLUSIVE "
                    "(and not IOMAP)", "%s of %r: attr.flags 0x%x"
                    % (what, name, flags))

    def _attr_reply(self, ino, attr, what):
        """An attr in a reply for a known inode: iomap inodes report the
        on-disk size, which the kernel stores as i_disk_size."""
        self._check_attr(attr, ino.name, what, known=ino)
        if attr.ino != ino.ino:
            raise self.violation("attr: ino changed", "%s: %d -> %d"
                                 % (what, ino.ino, attr.ino))
        if ino.iomap:
            if attr.size != ino.server_size:
                raise self.violation(
                    "attr rule: an iomap inode's attr.size must be its "
                    "on-disk size", "%s of %r: attr.size %d, on-disk size %d "
                    "(in-core %d)" % (what, ino.name, attr.size,
                                      ino.server_size, ino.size))
            ino.disk_size = attr.size   # fuse_iomap_set_disk_size
        else:
            ino.size = ino.disk_size = ino.server_size = attr.size

    def _instantiate(self, parent, name, entry, what):
        attr = entry.attr
        ino = self.inodes.get(entry.nodeid)
        if ino is None:
            self._check_attr(attr, name, what)
            ino = Inode(entry.nodeid, attr, name)
            self.inodes[entry.nodeid] = ino
        else:
            self._attr_reply(ino, attr, what)
        ino.nlookup += 1
        ino.parent = parent
        self.by_name[(parent, name)] = ino
        return ino

    def _secctx(self):
        """The create-op extension a kernel without an LSM sends once
        FUSE_SECURITY_CTX is agreed: a header with no contexts."""
        if self.agreed & fw.InitFlag.SECURITY_CTX:
            return SecctxHeader(8, 0).pack(), 1
        return b"", 0

    def lookup(self, name, parent=fw.ROOT_ID):
        self._op("lookup(%r)" % name)
        r = self._request(Op.LOOKUP, parent, fw.cstr(name))
        e = r.struct(fw.EntryOut)
        return self._instantiate(parent, name, e, "LOOKUP")

    def getattr(self, ino):
        self._op("getattr(%r)" % ino.name)
        a = self._request(Op.GETATTR, ino.nodeid,
                          fw.GetattrIn().pack()).struct(fw.AttrOut)
        self._attr_reply(ino, a.attr, "GETATTR")
        return a.attr

    def mkdir(self, name, parent=fw.ROOT_ID, mode=0o755):
        self._op("mkdir(%r)" % name)
        ext, extlen = self._secctx()
        body = fw.MkdirIn(mode, 0o022).pack() + fw.cstr(name) + ext
        r = self.peer.request(Op.MKDIR, parent, body, total_extlen=extlen)
        return self._instantiate(parent, name, r.struct(fw.EntryOut), "MKDIR")

    def create(self, name, parent=fw.ROOT_ID, mode=0o644,
               flags=os.O_RDWR | os.O_CREAT | os.O_EXCL):
        """CREATE; returns an open File with an empty shadow."""
        self._op("create(%r)" % name)
        ext, extlen = self._secctx()
        body = fw.CreateIn(flags, stat.S_IFREG | mode, 0o022, 0).pack() + \
            fw.cstr(name) + ext
        r = self.peer.request(Op.CREATE, parent, body, total_extlen=extlen)
        if len(self.peer.notifications) != self._notes_seen:
            self._check_notifications()
        r.check()
        if len(r.data) != fw.EntryOut.SIZE + fw.OpenOut.SIZE:
            raise self.violation("CREATE reply size", "%d bytes"
                                 % len(r.data))
        e = fw.EntryOut.unpack(r.data)
        o = fw.OpenOut.unpack(r.data, fw.EntryOut.SIZE)
        ino = self._instantiate(parent, name, e, "CREATE")
        if ino.size != 0:
            raise self.violation("CREATE: new file with size %d" % ino.size)
        ino.shadow = bytearray()
        return self._new_file(ino, o, flags)

    def _new_file(self, ino, o, flags):
        if ino.iomap and o.open_flags & (fw.FOPEN_PASSTHROUGH
                                         | fw.FOPEN_STREAM
                                         | fw.FOPEN_NONSEEKABLE):
            raise self.violation("open rule: PASSTHROUGH/STREAM/NONSEEKABLE "
                                 "on an iomap inode -> EINVAL",
                                 "open_flags 0x%x" % o.open_flags)
        f = File(ino, o.fh, flags, o.open_flags)
        ino.files.append(f)
        self.files.append(f)
        return f

    def open(self, name, flags=os.O_RDWR, parent=fw.ROOT_ID, shadow=None):
        """LOOKUP (if needed) and OPEN.  `shadow`: the file's expected
        bytes when the model does not know them yet (pre-built images)."""
        ino = self.by_name.get((parent, name))
        if ino is None or ino.nlookup == 0:
            ino = self.lookup(name, parent)
        self._op("open(%r, 0x%x)" % (name, flags))
        r = self._request(Op.OPEN, ino.nodeid, fw.OpenIn(flags).pack())
        o = r.struct(fw.OpenOut)
        if shadow is not None:
            ino.shadow = bytearray(shadow)
            if len(ino.shadow) != ino.size:
                raise AssertionError("shadow of %r has %d bytes, file %d"
                                     % (name, len(shadow), ino.size))
        if flags & os.O_TRUNC and self.agreed & fw.InitFlag.ATOMIC_O_TRUNC:
            # fuse_finish_open: size 0, page cache dropped, disk size 0
            ino.dirty.clear()
            ino.size = ino.disk_size = ino.server_size = 0
            ino.shadow = bytearray()
            self._touch(ino)
        if ino.shadow is None:
            raise AssertionError("open(%r): the model needs the expected "
                                 "contents (shadow=)" % name)
        return self._new_file(ino, o, flags)

    def close(self, f):
        """close(2): write_inode_now (writeback + times), FLUSH, RELEASE."""
        if f.closed:
            return
        ino = f.inode
        self._op("close(%r)" % ino.name)
        if ino.iomap:
            self._writeback(ino)
            self._write_inode(ino, f)
        if not self.no_flush:
            r = self._request(Op.FLUSH, ino.nodeid,
                              fw.FlushIn(f.fh).pack())
            if r.error == -errno.ENOSYS:
                self.no_flush = True
            elif r.error:
                raise IomapIOError(-r.error, "FLUSH of %r" % ino.name)
        r = self._request(Op.RELEASE, ino.nodeid,
                          fw.ReleaseIn(f.fh, f.flags).pack())
        r.check()
        f.closed = True
        ino.files.remove(f)
        self.files.remove(f)

    def _touch(self, ino):
        now = time.time_ns()
        ino.mtime = ino.ctime = now
        ino.times_dirty = True

    def _write_inode(self, ino, f=None):
        """fuse_write_inode -> fuse_flush_times: SETATTR(MTIME|CTIME|ATIME)."""
        if not ino.times_dirty:
            return
        valid = FATTR_MTIME | FATTR_CTIME | FATTR_ATIME
        fh = 0
        if f is not None:
            valid |= FATTR_FH
            fh = f.fh
        s = fw.SetattrIn(valid=valid, fh=fh,
                         atime=ino.atime // 10**9, atimensec=ino.atime % 10**9,
                         mtime=ino.mtime // 10**9, mtimensec=ino.mtime % 10**9,
                         ctime=ino.ctime // 10**9, ctimensec=ino.ctime % 10**9)
        r = self._request(Op.SETATTR, ino.nodeid, s.pack())
        a = r.struct(fw.AttrOut)
        self._attr_reply(ino, a.attr, "SETATTR(times)")
        ino.times_dirty = False
        ino.times_pushed = True

    # -- BEGIN / END ----------------------------------------------------------

    def _check_io(self, io, which, req, rep):
        """Section 2.9 rules 1-8 for one mapping."""
        bad = lambda rule, d="": self.violation(
            rule, "%s mapping: %s%s" % (which, io_str(io),
                                        "; " + d if d else ""),
            request=req, reply=rep)
        if io.type not in VALID_TYPES:
            raise bad("rule 1: unknown mapping type")
        if io.type == TYPE_RETRY_CACHE:
            return
        if io.type == TYPE_NOCACHE:
            return
        if io.flags & ~F_SERVER_MASK:
            raise bad("rule 2: flags outside 0xFF")
        if io.length == 0:
            raise bad("rule 3: zero length")
        bs = self.blocksize
        if io.offset % bs:
            raise bad("rule 4: offset not block aligned", "block size %d" % bs)
        if io.length % bs:
            raise bad("rule 4: length not block aligned", "block size %d" % bs)
        if io.offset + io.length >= 1 << 64:
            raise bad("rule 5: offset + length overflows")
        if io.offset >= self.maxbytes:
            raise bad("rule 6: offset beyond s_maxbytes",
                      "maxbytes %d" % self.maxbytes)
        if io.type in (TYPE_MAPPED, TYPE_UNWRITTEN):
            if io.dev == DEV_NULL:
                raise bad("rule 7: MAPPED/UNWRITTEN without a device")
            if io.addr == NULL_ADDR:
                raise bad("rule 7: MAPPED/UNWRITTEN without an address")
        elif io.type in (TYPE_HOLE, TYPE_DELALLOC, TYPE_INLINE):
            if io.dev != DEV_NULL:
                raise bad("rule 7: HOLE/DELALLOC/INLINE with a device")
            if io.addr != NULL_ADDR:
                raise bad("rule 7: HOLE/DELALLOC/INLINE with an address")
        elif io.type == TYPE_PURE_OVERWRITE:
            if which != "write":
                raise bad("rule 7: PURE_OVERWRITE is allowed only in the "
                          "write mapping")
            if io.flags or io.dev != DEV_NULL or io.addr != NULL_ADDR:
                raise bad("rule 7 (newer snapshot): PURE_OVERWRITE needs "
                          "flags 0, dev 0 and addr NULL")
        if io.addr != NULL_ADDR and io.addr + io.length >= 1 << 64:
            raise bad("rule 8: addr + length overflows")

    def _begin(self, ino, opflags, pos, count):
        """Send one IOMAP_BEGIN, validate the reply as the kernel does and
        return a Mapped (or raise)."""
        if not ino.iomap:
            raise AssertionError("model bug: BEGIN for a non-iomap inode")
        bin_ = IomapBeginIn(opflags, 0, ino.ino, pos, count)
        req = "IOMAP_BEGIN nodeid %d ino %d opflags %s pos %d count %d" % (
            ino.nodeid, ino.ino, opflags_str(opflags), pos, count)
        kind = self._kind(opflags)
        retries = 0
        while True:
            t0 = time.perf_counter()
            r = self.peer.request(OP_IOMAP_BEGIN, ino.nodeid, bin_.pack())
            dt = time.perf_counter() - t0
            st = self._stats[kind]
            st[0] += 1
            st[1] += dt
            if len(self.peer.notifications) != self._notes_seen:
                self._check_notifications()
            if r.error:
                raise IomapIOError(-r.error, req)
            if len(r.data) != IomapBeginOut.SIZE:
                raise self.violation("reply size rule: IOMAP_BEGIN reply must "
                                     "be exactly 64 bytes -> EIO",
                                     "%d bytes" % len(r.data), request=req)
            out = IomapBeginOut.unpack(r.data)
            rep = "read {%s} write {%s}" % (io_str(out.read),
                                            io_str(out.write))
            self._check_io(out.read, "read", req, rep)
            self._check_io(out.write, "write", req, rep)
            for which, io in (("read", out.read), ("write", out.write)):
                if io.type == TYPE_NOCACHE:
                    raise self.violation("pair rule: NOCACHE is not a BEGIN "
                                         "answer", which, request=req,
                                         reply=rep)
                if io.type == TYPE_RETRY_CACHE and which == "write":
                    continue
                if not io.offset <= pos < io.offset + io.length:
                    raise self.violation("pair rule: the %s mapping must "
                                         "cover pos" % which,
                                         "pos %d" % pos, request=req,
                                         reply=rep)
            if out.read.type == TYPE_RETRY_CACHE:
                if not ino.upserts:
                    raise self.violation("rule 2: RETRY_CACHE but the inode "
                                         "has no mapping cache (nothing was "
                                         "upserted)", request=req, reply=rep)
                hit = self._cache_lookup(ino, pos)
                if hit is not None:
                    out = hit
                    rep += " (from upserted cache: read {%s} write {%s})" % (
                        io_str(out.read), io_str(out.write))
                else:
                    retries += 1
                    if retries > 100:
                        raise self.violation("RETRY_CACHE loop: the "
                                             "upserted mappings never cover "
                                             "pos", request=req, reply=rep)
                    continue
            return self._use(ino, opflags, pos, count, out, req, rep)

    def _cache_lookup(self, ino, pos):
        for rd, wr in reversed(ino.upserts):
            if (rd.type != TYPE_NOCACHE
                    and rd.offset <= pos < rd.offset + rd.length):
                if wr.type == TYPE_NOCACHE or not (
                        wr.offset <= pos < wr.offset + wr.length):
                    wr = IomapIo(rd.offset, rd.length, NULL_ADDR,
                                 TYPE_PURE_OVERWRITE, 0, 0)
                return IomapBeginOut(rd, wr)
        return None

    def _dev_for(self, io, req, rep, write):
        if io.type not in (TYPE_MAPPED, TYPE_UNWRITTEN):
            return None
        d = self.devices.get(io.dev) if io.dev < (1 << 31) - 1 else None
        if d is None:
            raise self.violation("device rule: MAPPED/UNWRITTEN names a "
                                 "device that is not a registered iomap "
                                 "backing id -> EFSCORRUPTED",
                                 io_str(io), request=req, reply=rep)
        if write and not d.writable:
            raise self.violation("device rule (newer snapshot): write "
                                 "mapping on a device registered without "
                                 "write access -> EACCES", io_str(io),
                                 request=req, reply=rep)
        return d

    def _use(self, ino, opflags, pos, count, out, req, rep):
        file_write = bool(opflags & FILE_WRITE_OPS)
        self._dev_for(out.read, req, rep, False)
        if file_write and out.write.type != TYPE_PURE_OVERWRITE:
            self._dev_for(out.write, req, rep, True)
            iomap, srcmap = out.write, out.read
        else:
            iomap, srcmap = out.read, None
            if file_write:
                self._dev_for(out.read, req, rep, True)
        if out.write.type == TYPE_PURE_OVERWRITE and (
                out.write.offset, out.write.length) != (out.read.offset,
                                                        out.read.length):
            raise self.violation("contract: PURE_OVERWRITE copies the read "
                                 "mapping's offset/length", request=req,
                                 reply=rep)
        end = min(iomap.offset + iomap.length, pos + count)
        if srcmap is not None and srcmap.type != TYPE_HOLE:
            end = min(end, srcmap.offset + srcmap.length)
        length = end - pos
        t = iomap.type
        # What the kernel does with each type, per operation.
        if t == TYPE_INLINE:
            if iomap.offset != 0:
                raise self.violation("inline rule: INLINE mappings start at "
                                     "file offset 0 -> EFSCORRUPTED",
                                     request=req, reply=rep)
            if iomap.length > self.blocksize or iomap.length > PAGE:
                raise self.violation("inline rule: INLINE mapping longer "
                                     "than one block/page -> EFSCORRUPTED",
                                     request=req, reply=rep)
        if opflags & OP_WRITEBACK:
            if t == TYPE_INLINE:
                raise self.violation("writeback rule: INLINE mapping for "
                                     "WRITEBACK -> EIO (folio discarded)",
                                     request=req, reply=rep)
            if t not in (TYPE_MAPPED, TYPE_UNWRITTEN):
                raise self.violation("writeback rule: WRITEBACK must get "
                                     "MAPPED or UNWRITTEN; %s makes iomap "
                                     "skip dirty data (lost)"
                                     % TYPE_NAMES.get(t, t),
                                     request=req, reply=rep)
        elif opflags & OP_ZERO:
            if iomap.flags & F_NEW:
                raise self.violation("contract: ZERO ops never allocate "
                                     "(F_NEW returned)", request=req,
                                     reply=rep)
        elif opflags & OP_WRITE:
            if opflags & OP_DIRECT and t in (TYPE_HOLE, TYPE_DELALLOC):
                raise self.violation("dio rule: a direct write to a "
                                     "HOLE/DELALLOC mapping -> EIO "
                                     "(WARN in iomap_dio_iter)",
                                     request=req, reply=rep)
            if t == TYPE_HOLE:
                raise self.violation("contract: a write into a hole must "
                                     "allocate (got HOLE)", request=req,
                                     reply=rep)
        elif opflags & OP_DIRECT and not opflags & OP_REPORT:
            if t == TYPE_DELALLOC:
                raise self.violation("dio rule: a direct read of DELALLOC "
                                     "-> EIO", request=req, reply=rep)
        return Mapped(opflags, pos, count, out, iomap, srcmap, length, req,
                      rep)

    def _end(self, ino, m, written):
        """iomap_end -> fuse_iomap_end: inline write-through, or
        FUSE_IOMAP_END when the kernel sends one."""
        opflags = m.opflags
        file_write = bool(opflags & FILE_WRITE_OPS)
        if m.iomap.type == TYPE_INLINE:
            return
        send = (not self.no_end and (
            m.iomap.flags & F_WANT_IOMAP_END
            or (file_write and (m.size_changed or written < m.length))))
        if not send:
            return
        mp = m.iomap
        flags = mp.flags | (F_SIZE_CHANGED if m.size_changed else 0)
        emap = IomapIo(mp.offset, mp.length, mp.addr, mp.type, flags, mp.dev)
        ein = IomapEndIn(opflags, 0, ino.ino, m.pos, m.length, written, emap)
        self.counts["END"] += 1
        r = self._request(OP_IOMAP_END, ino.nodeid, ein.pack())
        req = "IOMAP_END nodeid %d opflags %s pos %d count %d written %d " \
              "map {%s}" % (ino.nodeid, opflags_str(opflags), m.pos, m.length,
                            written, io_str(emap))
        if r.error == -errno.ENOSYS:
            self.no_end = True
            return
        if r.error:
            raise IomapIOError(-r.error, req)
        if r.data:
            raise self.violation("reply size rule: IOMAP_END reply is the "
                                 "header only", "%d bytes" % len(r.data),
                                 request=req)

    def _iter(self, ino, opflags, pos, length, actor, pre=None):
        """iomap_iter: BEGIN for what is left, let `actor(m)` process up to
        m.length bytes from m.pos (returns how many), END, repeat.
        Returns the bytes processed (short if an actor stopped early)."""
        done = 0
        while done < length:
            if pre is not None:
                pre(pos + done)
            m = self._begin(ino, opflags, pos + done, length - done)
            n = actor(m)
            if n > m.length or n < 0:
                raise AssertionError("model bug: actor processed %d of %d"
                                     % (n, m.length))
            self._end(ino, m, n)
            done += n
            if n < m.length or n == 0:
                break
        return done

    # -- block cache helpers --------------------------------------------------

    def _blk(self, off):
        return off // self.blocksize

    def _inline_read(self, ino, m, io=None):
        """fuse_iomap_inline_read: FUSE_READ with fh 0 at the BEGIN pos and
        count; returns the inline mapping `io` (default: m.iomap) as a
        zero-filled buffer."""
        io = m.iomap if io is None else io
        rin = fw.ReadIn(0, m.pos, m.count, 0, 0, 0)
        r = self._request(Op.READ, ino.nodeid, rin.pack())
        what = "inline FUSE_READ nodeid %d fh 0 offset %d size %d" % (
            ino.nodeid, m.pos, m.count)
        if r.error and r.error != -errno.ENOSYS:
            raise IomapIOError(-r.error, what)
        if len(r.data) == 0:
            raise IomapIOError(errno.EIO, what + ": empty reply")
        if len(r.data) > m.count:
            raise self.violation("READ reply longer than asked", what)
        buf = bytearray(io.length)
        at = m.pos - io.offset
        data = r.data[:max(0, len(buf) - at)]
        buf[at:at + len(data)] = data
        if ino.size - io.offset > io.length:
            raise self.violation("inline rule: i_size beyond the INLINE "
                                 "mapping -> EIO (iomap_read_inline_data)",
                                 "size %d" % ino.size, request=m.request,
                                 reply=m.reply)
        return buf

    def _inline_write(self, ino, pos, data):
        """fuse_iomap_inline_write: FUSE_WRITE fh 0 of the written bytes."""
        win = fw.WriteIn(0, pos, len(data), 0, 0, 0)
        what = "inline FUSE_WRITE nodeid %d fh 0 offset %d size %d" % (
            ino.nodeid, pos, len(data))
        r = self._request(Op.WRITE, ino.nodeid, win.pack() + bytes(data))
        if r.error == -errno.ENOSYS:
            return
        if r.error:
            raise IomapIOError(-r.error, what)
        w = r.struct(fw.WriteOut)
        if w.size < len(data):
            raise IomapIOError(errno.EIO, what + ": short write %d" % w.size)
        ino.disk_size = max(ino.disk_size, pos + len(data))
        ino.server_size = max(ino.server_size, pos + len(data))

    def _read_blocks(self, ino, m, start, n):
        """Old contents of [start, start+n) (block aligned, within m) read
        through mapping m.iomap for data reads; returns bytes."""
        io = m.iomap
        if io.type == TYPE_MAPPED:
            d = self.devices[io.dev]
            return d.read(io.addr + (start - io.offset), n)
        if io.type == TYPE_INLINE:
            buf = self._inline_read(ino, m)
            a = start - io.offset
            return bytes(buf[a:a + n]).ljust(n, b"\0")
        return bytes(n)         # HOLE, UNWRITTEN, DELALLOC read as zeroes

    def _old_block(self, ino, m, blk):
        """The contents a write_begin finds for block blk before copying:
        the dirty cache, else zeroes when iomap_block_needs_zeroing, else
        read from the source mapping."""
        bs = self.blocksize
        if blk in ino.dirty:
            return ino.dirty[blk]
        start = blk * bs
        src = m.source
        if (src.type != TYPE_MAPPED or src.flags & F_NEW
                or start >= ino.size):
            if src.type == TYPE_INLINE and start < ino.size:
                buf = self._inline_read(ino, m, src)
                return bytearray(bytes(buf[start - src.offset:][:bs])
                                 .ljust(bs, b"\0"))
            return bytearray(bs)
        d = self.devices[src.dev]
        return bytearray(d.read(src.addr + (start - src.offset), bs))

    # -- reads ----------------------------------------------------------------

    def read(self, f, pos, n, direct=False):
        """read(2) (buffered, or O_DIRECT); compared with the shadow."""
        ino = f.inode
        if direct or f.open_flags & fw.FOPEN_DIRECT_IO:
            data = self._direct_read(f, pos, n)
        else:
            data = self._buffered_read(f, pos, n)
        self._compare(ino, pos, data, "read" + (" (direct)" if direct else ""))
        return data

    def _compare(self, ino, pos, data, what):
        want = bytes(ino.shadow[pos:pos + len(data)])
        if len(data) != len(want):
            raise DataMismatch("%s: %s of %r at %d returned %d bytes, "
                               "expected %d (size %d)" % (
                                   self.scenario, what, ino.name, pos,
                                   len(data), len(want), len(ino.shadow)))
        if data != want:
            i = next(k for k in range(len(data)) if data[k] != want[k])
            j = i
            while j < len(data) and data[j] != want[j]:
                j += 1
            maps = self._describe_offset(ino, pos + i)
            raise DataMismatch(
                "%s: %s of %r at %d+%d: first difference at file offset %d "
                "(%d differing bytes from there)\n  expected %s\n  got      %s"
                "\n  layout at that offset: %s" % (
                    self.scenario, what, ino.name, pos, len(data), pos + i,
                    j - i, _fmt_bytes(want[i:i + 32]),
                    _fmt_bytes(data[i:i + 32]), maps))

    def _describe_offset(self, ino, off):
        if not ino.iomap:
            return "(not an iomap inode)"
        try:
            save = self.vfs_op
            m = self._begin(ino, OP_REPORT, off - off % self.blocksize,
                            self.blocksize)
            self.vfs_op = save
            return "REPORT -> %s" % io_str(m.iomap)
        except Exception as e:      # diagnostics only
            return "REPORT failed: %s" % e

    def _buffered_read(self, f, pos, n):
        ino = f.inode
        self._op("buffered_read(%r, %d, %d)" % (ino.name, pos, n))
        if not ino.iomap:
            return self._classic_read(f, pos, n)
        end = min(pos + n, ino.size)
        if pos >= end:
            return b""
        bs = self.blocksize
        b0, b1 = self._blk(pos), -(-end // bs)
        blocks = {}
        blk = b0
        while blk < b1:
            if blk in ino.dirty:
                blk += 1
                continue
            run_end = blk
            while run_end < b1 and run_end not in ino.dirty:
                run_end += 1
            self._readahead(ino, blk * bs, run_end * bs, blocks)
            blk = run_end
        out = bytearray()
        for blk in range(b0, b1):
            out += ino.dirty[blk] if blk in ino.dirty else blocks[blk]
        a = pos - b0 * bs
        return bytes(out[a:a + end - pos])

    def _readahead(self, ino, start, end, blocks):
        """Read [start, end) in readahead windows (iomap_readahead /
        read_folio: BEGIN opflags 0 for the rest of the window)."""
        bs = self.blocksize
        ra = max(self.readahead, bs)
        cur = start
        while cur < end:
            wend = min(end, (cur // ra + 1) * ra)

            def actor(m):
                data = self._read_blocks(ino, m, m.pos, m.length)
                for k in range(0, m.length, bs):
                    blocks[(m.pos + k) // bs] = data[k:k + bs]
                return m.length
            got = self._iter(ino, 0, cur, wend - cur, actor)
            if got != wend - cur:
                raise IomapIOError(errno.EIO, "readahead stalled")
            cur = wend

    def _direct_read(self, f, pos, n):
        ino = f.inode
        self._op("direct_read(%r, %d, %d)" % (ino.name, pos, n))
        if not ino.iomap:
            return self._classic_read(f, pos, n)
        if (pos | n) % SECTOR:
            raise IomapIOError(errno.EINVAL, "unaligned O_DIRECT read")
        if n == 0 or pos >= ino.size:
            return b""
        # iomap_dio_rw: write back dirty pages over the range first
        self._writeback(ino, pos, pos + n)
        out = bytearray()

        def actor(m):
            if m.pos >= ino.size:
                return 0            # iomap_dio_iter stops at EOF
            k = min(m.length, -(-(ino.size - m.pos) // SECTOR) * SECTOR)
            io = m.iomap
            if io.type == TYPE_MAPPED:
                out.extend(self.devices[io.dev].read(
                    io.addr + (m.pos - io.offset), k))
            elif io.type == TYPE_INLINE:
                buf = self._inline_read(ino, m)
                a = m.pos - io.offset
                out.extend(bytes(buf[a:a + k]).ljust(k, b"\0"))
            else:
                out.extend(bytes(k))
            return k
        self._iter(ino, OP_DIRECT, pos, n, actor)
        return bytes(out[:max(0, min(n, ino.size - pos))])

    def _classic_read(self, f, pos, n):
        ino = f.inode
        out = bytearray()
        while n > 0:
            k = min(n, 1 << 20)
            data = self.peer.read(ino.nodeid, f.fh, pos, k)
            out += data
            if len(data) < k:
                break
            pos += k
            n -= k
        return bytes(out)

    # -- writes ---------------------------------------------------------------

    def write(self, f, pos, data, direct=False, short=None, io_error=None):
        """write(2).  short=N makes a buffered write copy only N bytes (a
        fault during the copy); io_error=-errno fails a direct write's bio.
        Returns the bytes written."""
        data = bytes(data)
        ino = f.inode
        if not ino.iomap:
            return self._classic_write(f, pos, data)
        if direct or f.open_flags & fw.FOPEN_DIRECT_IO:
            n = self._direct_write(f, pos, data, io_error=io_error)
        else:
            n = self._buffered_write(f, pos, data, short=short)
        return n

    def _shadow_write(self, ino, pos, data):
        sh = ino.shadow
        if pos > len(sh):
            sh.extend(bytes(pos - len(sh)))
        sh[pos:pos + len(data)] = data

    def _zero_eof(self, ino, pos):
        """fuse_iomap_write_zero_eof: zero old EOF..pos before a write."""
        if pos > ino.size:
            self._zero_range(ino, ino.size, pos - ino.size)

    def _buffered_write(self, f, pos, data, short=None):
        ino = f.inode
        self._op("buffered_write(%r, %d, %d%s)" % (
            ino.name, pos, len(data), "" if short is None else
            ", short=%d" % short))
        if not data:
            return 0
        self._zero_eof(ino, pos)
        bs = self.blocksize
        limit = len(data) if short is None else short
        copied = [0]

        def actor(m):
            n = min(m.length, limit - copied[0])
            if m.iomap.type == TYPE_INLINE:
                chunk = data[copied[0]:copied[0] + n]
                if n:
                    self._inline_write(ino, m.pos, chunk)
            else:
                a = m.pos
                end = m.pos + n
                while a < end:
                    blk = a // bs
                    b_end = min(end, (blk + 1) * bs)
                    if a == blk * bs and b_end == (blk + 1) * bs:
                        block = bytearray(bs)
                    else:
                        block = self._old_block(ino, m, blk)
                    src = copied[0] + (a - m.pos)
                    block[a - blk * bs:b_end - blk * bs] = \
                        data[src:src + (b_end - a)]
                    ino.dirty[blk] = block
                    a = b_end
            if n and m.pos + n > ino.size:
                ino.size = m.pos + n
                m.size_changed = True
            copied[0] += n
            return n
        done = self._iter(ino, OP_WRITE, pos, len(data), actor)
        if done:
            self._shadow_write(ino, pos, data[:done])
            self._touch(ino)
        return done

    def mmap_write(self, f, pos, data):
        """Store into a shared writable mapping: read_folio for the page,
        page_mkwrite (BEGIN WRITE|FAULT over the page within EOF), dirty."""
        ino = f.inode
        data = bytes(data)
        self._op("mmap_write(%r, %d, %d)" % (ino.name, pos, len(data)))
        if pos + len(data) > ino.size:
            raise IomapIOError(errno.EFAULT, "SIGBUS: store beyond EOF")
        bs = self.blocksize
        fsz = max(PAGE, bs)
        page = pos - pos % fsz
        while page < pos + len(data):
            plen = min(fsz, ino.size - page)
            # the fault reads the folio (read_folio), blocks within EOF
            cur = self._buffered_read(f, page, plen)
            self._op("mmap_write(%r, %d, %d): page_mkwrite at %d" % (
                ino.name, pos, len(data), page))
            self._touch(ino)        # file_update_time in page_mkwrite
            got = self._iter(ino, OP_WRITE | OP_FAULT, page, plen,
                             lambda m: m.length)
            if got != plen:
                raise IomapIOError(errno.EIO, "page_mkwrite short")
            buf = bytearray(cur)
            a, b = max(pos, page), min(pos + len(data), page + plen)
            buf[a - page:b - page] = data[a - pos:b - pos]
            for k in range(0, plen, bs):
                blk = (page + k) // bs
                block = bytearray(bs)
                chunk = buf[k:k + bs]
                block[:len(chunk)] = chunk
                ino.dirty[blk] = block
            page += fsz
        self._shadow_write(ino, pos, data)

    def _direct_write(self, f, pos, data, io_error=None):
        ino = f.inode
        self._op("direct_write(%r, %d, %d)" % (ino.name, pos, len(data)))
        n = len(data)
        if (pos | n) % SECTOR:
            raise IomapIOError(errno.EINVAL, "O_DIRECT write not aligned to "
                               "the device's logical block size")
        if n == 0:
            return 0
        bs = self.blocksize
        self._zero_eof(ino, pos)
        # kiocb_invalidate_pages: write back and drop the cached range
        self._writeback(ino, pos, pos + n)
        for blk in [b for b in ino.dirty if pos <= b * bs + bs - 1
                    and b * bs < pos + n]:
            del ino.dirty[blk]
        dioflags = {"unwritten": False, "cow": False}
        old_size = ino.size

        def actor(m):
            io = m.iomap
            k = m.length
            chunk = data[m.pos - pos:m.pos - pos + k]
            if io.type == TYPE_INLINE:
                self._inline_write(ino, m.pos, chunk)
                return k
            d = self.devices[io.dev]
            if io.type == TYPE_UNWRITTEN:
                dioflags["unwritten"] = True
            if io.flags & F_SHARED:
                dioflags["cow"] = True
            need_zero = io.type == TYPE_UNWRITTEN or bool(io.flags & F_NEW)
            start, end = m.pos, m.pos + k
            head = start % bs
            if need_zero and head:
                d.write(io.addr + (start - head - io.offset), bytes(head))
            d.write(io.addr + (start - io.offset), chunk)
            tail = end % bs
            if tail and (need_zero or end >= old_size):
                d.write(io.addr + (end - io.offset), bytes(bs - tail))
            return k
        done = self._iter(ino, OP_WRITE | OP_DIRECT, pos, n, actor)
        flags = IOEND_DIRECT
        if dioflags["unwritten"]:
            flags |= IOEND_UNWRITTEN
        if dioflags["cow"]:
            flags |= IOEND_SHARED
        err = io_error or 0
        self._ioend(ino, flags, err, pos, done, DEV_NULL, NULL_ADDR)
        if err:
            raise IomapIOError(-err, "direct write I/O error (injected)")
        if done:
            ino.size = max(ino.size, pos + done)
            self._shadow_write(ino, pos, data[:done])
            self._touch(ino)
        return done

    def _classic_write(self, f, pos, data):
        ino = f.inode
        self._op("classic_write(%r, %d, %d)" % (ino.name, pos, len(data)))
        done = 0
        while done < len(data):
            k = min(len(data) - done, self.max_write)
            win = fw.WriteIn(f.fh, pos + done, k, 0, 0, f.flags)
            r = self._request(Op.WRITE, ino.nodeid,
                              win.pack() + data[done:done + k])
            w = r.struct(fw.WriteOut)
            if w.size != k:
                raise IomapIOError(errno.EIO, "short classic WRITE")
            done += k
        self._shadow_write(ino, pos, data)
        ino.size = ino.disk_size = ino.server_size = max(ino.size,
                                                         pos + len(data))
        return done

    # -- zeroing --------------------------------------------------------------

    def _zero_range(self, ino, pos, length):
        """iomap_zero_range: BEGIN ZERO; HOLE/UNWRITTEN are skipped (dirty
        cached data over them is zeroed), MAPPED/DELALLOC blocks are zeroed
        through the page cache."""
        if length <= 0:
            return
        save = self.vfs_op
        self._op("%s: zero_range(%d, %d)" % (save, pos, length))
        bs = self.blocksize

        before = {}

        def pre(cur):
            # What REPORT says before zeroing, to catch allocation.
            if self.strict_zero:
                before[cur] = self._begin(ino, OP_REPORT, cur,
                                          pos + length - cur).iomap

        def actor(m):
            io = m.source
            a, end = m.pos, m.pos + m.length
            if self.strict_zero:
                was = before.pop(m.pos)
                if was.type == TYPE_HOLE and io.type != TYPE_HOLE:
                    raise self.violation(
                        "contract: ZERO ops never allocate",
                        "REPORT before said %s, ZERO says %s"
                        % (io_str(was), io_str(io)), request=m.request,
                        reply=m.reply)
                if io.type == TYPE_HOLE:
                    after = self._begin(ino, OP_REPORT, m.pos, m.length)
                    if after.iomap.type != TYPE_HOLE:
                        raise self.violation(
                            "contract: ZERO ops never allocate",
                            "ZERO said HOLE but REPORT afterwards says %s"
                            % io_str(after.iomap), request=m.request,
                            reply=m.reply)
            skip = io.type in (TYPE_HOLE, TYPE_UNWRITTEN)
            while a < end:
                blk = a // bs
                b_end = min(end, (blk + 1) * bs)
                if skip:
                    if blk in ino.dirty:
                        ino.dirty[blk][a - blk * bs:b_end - blk * bs] = \
                            bytes(b_end - a)
                else:
                    if a == blk * bs and b_end == (blk + 1) * bs:
                        block = bytearray(bs)
                    else:
                        block = self._old_block(ino, m, blk)
                        block[a - blk * bs:b_end - blk * bs] = bytes(b_end - a)
                    ino.dirty[blk] = block
                a = b_end
            return m.length
        self._iter(ino, OP_ZERO, pos, length, actor, pre=pre)
        self.vfs_op = save
        sh = ino.shadow
        if pos < len(sh):
            e = min(len(sh), pos + length)
            sh[pos:e] = bytes(e - pos)

    # -- writeback ------------------------------------------------------------

    def _writeback(self, ino, start=0, end=None):
        """writepages over [start, end): BEGIN WRITEBACK per mapping, device
        writes, then IOEND per merged ioend."""
        if not ino.iomap or not ino.dirty:
            return
        bs = self.blocksize
        end = (1 << 63) if end is None else end
        blks = sorted(b for b in ino.dirty
                      if b * bs < end and (b + 1) * bs > start)
        if not blks:
            return
        save = self.vfs_op
        self._op("%s: writeback(%r, %d..%d)" % (save, ino.name, blks[0] * bs,
                                                (blks[-1] + 1) * bs))
        size = ino.size
        wpc = None          # the cached writeback mapping (Mapped)
        ioends = []         # [pos, len, addr, flags, dev]
        runs = []
        for b in blks:
            if b * bs >= size:
                # beyond EOF: truncated folios are never written back
                del ino.dirty[b]
                continue
            if runs and runs[-1][1] == b:
                runs[-1][1] = b + 1
            else:
                runs.append([b, b + 1])
        for r0, r1 in runs:
            cur, rend = r0 * bs, r1 * bs
            while cur < rend:
                if wpc is None or not (wpc.iomap.offset <= cur
                                       < wpc.iomap.offset + wpc.iomap.length):
                    wpc = self._begin(ino, OP_WRITEBACK, cur, rend - cur)
                io = wpc.iomap
                n = min(io.offset + io.length, rend) - cur
                if wpc.srcmap is not None and wpc.srcmap.type != TYPE_HOLE:
                    n = min(n, wpc.srcmap.offset + wpc.srcmap.length - cur)
                buf = bytearray()
                for k in range(0, n, bs):
                    blk = ino.dirty[(cur + k) // bs]
                    blk_start = cur + k
                    if blk_start + bs > size:   # zero the post-EOF tail
                        blk = bytearray(blk)
                        blk[size - blk_start:] = bytes(bs - (size - blk_start))
                    buf += blk
                addr = io.addr + (cur - io.offset)
                self.devices[io.dev].write(addr, buf)
                fl = 0
                if io.type == TYPE_UNWRITTEN:
                    fl |= IOEND_UNWRITTEN
                if io.flags & F_SHARED:
                    fl |= IOEND_SHARED
                length = min(cur + n, size) - cur
                last = ioends[-1] if ioends else None
                if (last is not None and last[0] + last[1] == cur
                        and last[2] + last[1] == addr and last[4] == io.dev
                        and last[3] == fl and not io.flags & F_BOUNDARY
                        and last[1] % bs == 0):
                    last[1] += length
                else:
                    ioends.append([cur, length, addr, fl, io.dev])
                cur += n
        for p, length, addr, fl, dev in ioends:
            self._ioend(ino, IOEND_WRITEBACK | fl, 0, p, length, dev,
                        addr // SECTOR)
        for b in blks:
            ino.dirty.pop(b, None)
        self.vfs_op = save

    def _ioend(self, ino, flags, error, pos, written, dev, new_addr):
        """fuse_iomap_ioend: APPEND is added here; sent only when needed."""
        if pos + written > ino.disk_size:
            flags |= IOEND_APPEND
        prefill = max(ino.disk_size, pos + written)
        send = not self.no_ioend and (
            error or flags & IOEND_SWAPOFF
            or (written > 0 and flags & (IOEND_SHARED | IOEND_UNWRITTEN
                                         | IOEND_APPEND)))
        if not send:
            if not error:
                ino.disk_size = prefill
            return
        iin = IomapIoendIn(flags, error, ino.ino, pos, new_addr, written, dev)
        req = "IOMAP_IOEND nodeid %d ino %d flags %s error %d pos %d " \
              "written %d dev %d new_addr %s" % (
                  ino.nodeid, ino.ino, ioend_str(flags), error, pos, written,
                  dev, "NULL" if new_addr == NULL_ADDR else new_addr)
        self.counts["IOEND"] += 1
        r = self._request(OP_IOMAP_IOEND, ino.nodeid, iin.pack())
        if r.error == -errno.ENOSYS:
            self.no_ioend = True
            if not error:
                ino.disk_size = prefill
            return
        if r.error:
            if error:
                return          # the I/O error wins either way
            raise IomapIOError(-r.error, req)
        if len(r.data) != IomapIoendOut.SIZE:
            raise self.violation("reply size rule: IOMAP_IOEND reply must be "
                                 "exactly 8 bytes -> EIO",
                                 "%d bytes" % len(r.data), request=req)
        newsize = IomapIoendOut.unpack(r.data).newsize
        if error:
            if newsize != ino.server_size:
                raise self.violation("ioend rule: a failed I/O must not "
                                     "change the on-disk size",
                                     "newsize %d, on-disk size %d"
                                     % (newsize, ino.server_size),
                                     request=req)
            return
        want = ino.server_size
        if flags & IOEND_APPEND:
            want = max(want, pos + written)
        if newsize != want:
            raise self.violation("ioend rule: newsize must be the on-disk "
                                 "size after the update",
                                 "newsize %d, expected %d (on-disk was %d, "
                                 "the kernel's i_disk_size %d)"
                                 % (newsize, want, ino.server_size,
                                    ino.disk_size),
                                 request=req, reply="newsize %d" % newsize)
        ino.disk_size = ino.server_size = newsize

    def writeback(self, f):
        self._op("writeback(%r)" % f.name)
        self._writeback(f.inode)

    def drop_caches(self):
        """Write back every file and drop its cache (clean pages are not
        kept anyway), so later reads go to the device."""
        for ino in self.inodes.values():
            if ino.iomap and ino.dirty:
                self._op("drop_caches")
                self._writeback(ino)

    # -- sync -----------------------------------------------------------------

    def fsync(self, f, datasync=False):
        ino = f.inode
        self._op("fsync(%r)" % ino.name)
        self._writeback(ino)
        if not datasync:
            self._write_inode(ino, f)
        if self.no_fsync:
            return
        r = self._request(Op.FSYNC, ino.nodeid,
                          fw.FsyncIn(f.fh, 1 if datasync else 0).pack())
        if r.error == -errno.ENOSYS:
            self.no_fsync = True
        elif r.error:
            raise IomapIOError(-r.error, "FSYNC of %r" % ino.name)
        elif r.data:
            raise self.violation("FSYNC reply with a payload")

    def syncfs(self):
        self._op("syncfs")
        for ino in list(self.inodes.values()):
            if ino.iomap:
                self._writeback(ino)
                self._write_inode(ino)
        if self.no_syncfs:
            return
        r = self._request(Op.SYNCFS, fw.ROOT_ID, fw.SyncfsIn().pack())
        if r.error == -errno.ENOSYS:
            self.no_syncfs = True
        elif r.error:
            raise IomapIOError(-r.error, "SYNCFS")

    # -- truncate / fallocate -------------------------------------------------

    def truncate(self, f, size):
        """ftruncate(2) on an iomap inode (fuse_iomap_setsize_start, then
        SETATTR, then setsize_finish)."""
        ino = f.inode
        self._op("truncate(%r, %d)" % (ino.name, size))
        if not ino.iomap:
            return self._classic_truncate(f, size)
        old = ino.size
        bs = self.blocksize
        if size > old:
            self._zero_range(ino, old, size - old)
        elif size % bs:
            self._zero_range(ino, size, bs - size % bs)
        # truncate_setsize: new i_size, drop the cache beyond it and zero
        # the cached tail of the block that holds the new EOF
        ino.size = size
        for b in [b for b in ino.dirty if b * bs >= size]:
            del ino.dirty[b]
        if size % bs and size // bs in ino.dirty:
            blk = ino.dirty[size // bs]
            blk[size % bs:] = bytes(bs - size % bs)
        self._writeback(ino)
        now = time.time_ns()
        ino.mtime = ino.ctime = now
        valid = FATTR_SIZE | FATTR_MTIME | FATTR_CTIME | FATTR_FH
        s = fw.SetattrIn(valid=valid, fh=f.fh, size=size,
                         mtime=now // 10**9, mtimensec=now % 10**9,
                         ctime=now // 10**9, ctimensec=now % 10**9)
        r = self._request(Op.SETATTR, ino.nodeid, s.pack())
        a = r.struct(fw.AttrOut)
        self._check_attr(a.attr, ino.name, "SETATTR(size)", known=ino)
        if a.attr.size != size:
            raise self.violation("attr rule: SETATTR(size) reply must carry "
                                 "the new on-disk size",
                                 "attr.size %d, new size %d" % (a.attr.size,
                                                                size))
        ino.disk_size = ino.server_size = size  # setsize_finish
        ino.times_pushed = True
        sh = ino.shadow
        if size < len(sh):
            del sh[size:]
        else:
            sh.extend(bytes(size - len(sh)))

    def _classic_truncate(self, f, size):
        ino = f.inode
        s = fw.SetattrIn(valid=FATTR_SIZE | FATTR_FH, fh=f.fh, size=size)
        a = self._request(Op.SETATTR, ino.nodeid, s.pack()).struct(fw.AttrOut)
        ino.size = ino.disk_size = ino.server_size = a.attr.size
        sh = ino.shadow
        if size < len(sh):
            del sh[size:]
        else:
            sh.extend(bytes(size - len(sh)))

    def fallocate(self, f, mode, off, length):
        """fallocate(2) as fuse_file_fallocate + fuse_iomap_fallocate do it."""
        ino = f.inode
        self._op("fallocate(%r, mode 0x%x, %d, %d)" % (ino.name, mode, off,
                                                        length))
        allowed = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | \
            FALLOC_FL_ZERO_RANGE
        if mode & ~allowed:
            raise IomapIOError(errno.EOPNOTSUPP, "fallocate mode")
        if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
            raise IomapIOError(errno.EOPNOTSUPP, "PUNCH_HOLE needs KEEP_SIZE")
        bs = self.blocksize
        if ino.iomap and mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            # fuse_iomap_flush_unmap_range
            rounding = max(bs, PAGE)
            s = off - off % rounding
            e = -(-(off + length) // rounding) * rounding
            self._writeback(ino, s, e)
            for b in [b for b in ino.dirty if s <= b * bs < e]:
                del ino.dirty[b]
        new_size = 0
        if not mode & FALLOC_FL_KEEP_SIZE and off + length > ino.size:
            new_size = off + length
        fin = fw.FallocateIn(f.fh, off, length, mode)
        r = self._request(Op.FALLOCATE, ino.nodeid, fin.pack())
        if r.error:
            raise IomapIOError(-r.error, "FALLOCATE of %r" % ino.name)
        if r.data:
            raise self.violation("FALLOCATE reply with a payload")
        if not mode & FALLOC_FL_KEEP_SIZE:
            # the server grows the on-disk size as ext4 does
            ino.server_size = max(ino.server_size, off + length)
        if not ino.iomap:
            if new_size:
                ino.size = ino.disk_size = new_size
            self._fallocate_shadow(ino, mode, off, length, new_size)
            return
        ino.upserts = []
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            # fuse_iomap_punch_range
            isize = ino.size
            if off < isize:
                ln = min(length, isize - off)
                self._zero_range(ino, off, ln)
                if off + ln >= isize and (off + ln) % PAGE:
                    s = off + ln - (off + ln) % PAGE
                    self._writeback(ino, s)
        if new_size:
            # fuse_iomap_setsize_start + finish
            self._zero_range(ino, ino.size, new_size - ino.size)
            ino.size = new_size
            self._writeback(ino)
            ino.disk_size = new_size
        self._touch(ino)
        self._fallocate_shadow(ino, mode, off, length, new_size)

    def _fallocate_shadow(self, ino, mode, off, length, new_size):
        sh = ino.shadow
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            e = min(len(sh), off + length)
            if off < e:
                sh[off:e] = bytes(e - off)
        if new_size and new_size > len(sh):
            sh.extend(bytes(new_size - len(sh)))

    # -- layout ---------------------------------------------------------------

    def report(self, f, start=0, length=None):
        """FIEMAP through REPORT: [(logical, physical, length, kind)] with
        kind "data", "unwritten", "delalloc" or "inline"; holes omitted."""
        ino = f.inode
        self._op("fiemap(%r)" % ino.name)
        if length is None:
            length = -(-max(ino.size, 1) // self.blocksize) * self.blocksize
        out = []

        def actor(m):
            io = m.iomap
            n = m.length
            kind = {TYPE_MAPPED: "data", TYPE_UNWRITTEN: "unwritten",
                    TYPE_DELALLOC: "delalloc", TYPE_INLINE: "inline"}.get(
                        io.type)
            if kind is not None:
                phys = None if io.addr == NULL_ADDR else \
                    io.addr + (m.pos - io.offset)
                out.append((m.pos, phys, n, kind))
            return n
        self._iter(ino, OP_REPORT, start, length, actor)
        return out

    def seek(self, f, off, whence):
        """lseek SEEK_DATA/SEEK_HOLE through REPORT (iomap_seek_data /
        iomap_seek_hole; dirty cached blocks count as data over unwritten
        extents)."""
        ino = f.inode
        self._op("lseek(%r, %d, %s)" % (ino.name, off, "SEEK_DATA"
                                         if whence == os.SEEK_DATA
                                         else "SEEK_HOLE"))
        size = ino.size
        if off >= size:
            raise IomapIOError(errno.ENXIO, "lseek beyond EOF")
        bs = self.blocksize
        found = [None]

        def dirty_in(a, b, want_dirty):
            blk = a // bs
            while blk * bs < b:
                if (blk in ino.dirty) == want_dirty:
                    return max(a, blk * bs)
                blk += 1
            return None

        def actor(m):
            t = m.iomap.type
            a, b = m.pos, m.pos + m.length
            if whence == os.SEEK_DATA:
                if t == TYPE_HOLE:
                    return m.length
                if t == TYPE_UNWRITTEN:
                    hit = dirty_in(a, b, True)
                    if hit is None:
                        return m.length
                    found[0] = hit
                    return 0
                found[0] = a
                return 0
            if t == TYPE_HOLE:
                found[0] = a
                return 0
            if t == TYPE_UNWRITTEN:
                hit = dirty_in(a, b, False)
                if hit is not None:
                    found[0] = hit
                    return 0
            return m.length
        self._iter(ino, OP_REPORT, off, size - off, actor)
        if found[0] is None:
            if whence == os.SEEK_DATA:
                raise IomapIOError(errno.ENXIO, "no data after %d" % off)
            return size
        return min(found[0], size) if whence == os.SEEK_HOLE else found[0]

    def seek_map(self, f):
        """[(data_start, data_end)] like f4util.seek_map."""
        segs, pos, size = [], 0, f.inode.size
        while pos < size:
            try:
                d = self.seek(f, pos, os.SEEK_DATA)
            except IomapIOError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            h = self.seek(f, d, os.SEEK_HOLE)
            segs.append((d, h))
            pos = h
        return segs

    # -- whole-file checks ----------------------------------------------------

    def verify(self, f, direct=False, chunk=1 << 20):
        """Read the whole file and compare it with the shadow."""
        ino = f.inode
        if len(ino.shadow) != ino.size:
            raise AssertionError("model bug: shadow %d, size %d"
                                 % (len(ino.shadow), ino.size))
        pos = 0
        while pos < ino.size:
            n = min(chunk, ino.size - pos)
            if direct:
                n = -(-n // SECTOR) * SECTOR
            self.read(f, pos, n, direct=direct)
            pos += n


def normalize_extents(exts):
    """Merge extents that continue each other logically and physically and
    have the same kind: [(logical, physical, length, kind)]."""
    out = []
    for lo, ph, ln, kind in sorted(exts):
        if out:
            plo, pph, pln, pkind = out[-1]
            if (plo + pln == lo and pkind == kind and pph is not None
                    and ph is not None and pph + pln == ph):
                out[-1] = (plo, pph, pln + ln, kind)
                continue
        out.append((lo, ph, ln, kind))
    return out


# ---------------------------------------------------------------------------
# FIEMAP on a kernel mount (the oracle)
# ---------------------------------------------------------------------------

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_DELALLOC = 0x4
FIEMAP_EXTENT_DATA_INLINE = 0x200
FIEMAP_EXTENT_UNWRITTEN = 0x800


def kernel_fiemap(path, start=0, length=(1 << 64) - 1):
    """[(logical, physical, length, kind)] from FS_IOC_FIEMAP."""
    import fcntl
    out = []
    count = 256
    with open(path, "rb") as fobj:
        while True:
            hdr = struct.pack("<QQIIII", start, length, FIEMAP_FLAG_SYNC, 0,
                              count, 0)
            buf = bytearray(hdr + bytes(56 * count))
            fcntl.ioctl(fobj.fileno(), FS_IOC_FIEMAP, buf)
            mapped = struct.unpack_from("<I", buf, 20)[0]
            last = False
            for i in range(mapped):
                lo, ph, ln, _r1, _r2, fl = struct.unpack_from(
                    "<QQQQQI", buf, 32 + 56 * i)
                if fl & FIEMAP_EXTENT_DATA_INLINE:
                    kind = "inline"
                elif fl & FIEMAP_EXTENT_DELALLOC:
                    kind = "delalloc"
                elif fl & FIEMAP_EXTENT_UNWRITTEN:
                    kind = "unwritten"
                else:
                    kind = "data"
                out.append((lo, ph, ln, kind))
                if fl & FIEMAP_EXTENT_LAST:
                    last = True
            if last or mapped == 0:
                return out
            lo, ph, ln = out[-1][:3]
            nstart = lo + ln
            if length != (1 << 64) - 1:
                length -= nstart - start
            start = nstart


def clip_extents(exts, end):
    """Extents cut at file offset `end`."""
    out = []
    for lo, ph, ln, kind in exts:
        if lo >= end:
            continue
        if lo + ln > end:
            ln = end - lo
        out.append((lo, ph, ln, kind))
    return out
