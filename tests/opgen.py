"""Seeded random filesystem workloads, run on a fuse4fs mount and on the
in-kernel ext4 driver, with every result compared.

  run_seed(seed, nops)           the whole differential check for one seed;
                                 returns an Outcome (ok, failures, report())
  run_sequence(ops, ...)         the same for an explicit op list (replays,
                                 minimisation); ops=None generates from seed
  generate_on(root, seed, nops, variant)
                                 generate a sequence while running it below
                                 root (the kernel side); returns (ops,
                                 results, final)
  Executor(root).run_all(ops)    run ops below root; one result per op: a
                                 value, or "E:<ERRNO NAME>"
  tree_snapshot(root)            type, mode, nlink, owner, size, bytes,
                                 symlink target, xattrs (ACLs included),
                                 SEEK_DATA/SEEK_HOLE map, hard-link groups
  minimize(ops, still_fails)     delta debugging over an op list

Ops are plain JSON-able dicts; each carries its index "i" and the
credentials it runs with ("cred" indexes CREDS: root, 1000:1000,
65534:65534).  The generator looks at the real tree (on the kernel side)
before each op, so that most ops act on things that exist; the ops it emits
are explicit, so a sequence replays as it is and any sublist of it is a
valid sequence too (that is what minimize() relies on).  A seed gives the
same sequence every time.

Each side runs in a forked child chrooted into its mount, so that symlinks
the workload makes ("../x", "/abs/x") resolve inside the filesystem under
test, never on the host.  Credentials are per thread (raw setres[ug]id and
setgroups system calls, which unlike the libc wrappers change only the
calling thread); fuse4fs is mounted with allow_other so that the
unprivileged users reach it.

One check (run_sequence):
  1. mkfs.ext4 one image (fixed UUID and hash seed), copy it
  2. mount copy K with the kernel (rw,nosuid,nodev) and copy F with fuse4fs
     (rw,allow_other, plus writeback_cache in the "4k-wbc" variant)
  3. run the ops on K (generating them), then on F; compare the results
  4. snapshot both trees (A_k, A_f) and compare them
  5. unmount both (umount of fuse4fs waits for the write-back); the server
     must exit 0 without sanitizer output; e2fsck -fn: the fuse4fs image
     must give exit 0 and nothing but the five pass lines, the summary and
     offers to make an extent tree shorter or narrower (ext4 leaves such
     trees too after truncate and punch); ext4's own image exit 0 (its
     extra lines become notes)
  6. mount both images read-only with the kernel, snapshot (B_k, B_f): B_f
     must equal A_f including inode numbers and m/c/btimes (what fuse4fs
     showed is what it wrote), B_k must equal B_f (the cold comparison, no
     page cache involved) and A_k must equal B_k (a check of the harness)

Not generated, because the kernel's FUSE client alone decides the result
(the server is never asked), so they would test the kernel, not fuse4fs:
  * lseek to a position past ext4's maximum file size (ext4: EINVAL; a
    FUSE superblock's limit is MAX_LFS_FILESIZE): SEEK_SET offsets stay
    below it, SEEK_END/SEEK_CUR offsets are <= 0; and lseek(SEEK_END) on
    anything but a regular file (ext4 directories answer with their hash
    EOF, LLONG_MAX; fuse_dir_llseek refuses SEEK_END with EINVAL);
  * in the writeback-cache variant, writes at or past ext4's maximum file
    size: the page cache takes them (generic_write_checks against
    MAX_LFS_FILESIZE) and the server's EFBIG only comes at write-back.
    Without the writeback cache such writes are generated (fuse4fs must
    say EFBIG itself, and does);
  * in the writeback-cache variant, explicit timestamps outside ext4's
    range: for regular files the kernel then trusts its own c/mtime and
    keeps the requested value instead of the server's clamped one
    (fuse_do_setattr with trust_local_cmtime), until the inode is evicted;
  * SEEK_DATA/SEEK_HOLE on anything but a regular file (ext4 directories
    answer with their hash EOF, LLONG_MAX).

Allowed, documented difference (kept visible in Outcome.allowed):
  * FALLOC_FL_COLLAPSE_RANGE / FALLOC_FL_INSERT_RANGE: the kernel's FUSE
    client refuses every fallocate mode other than KEEP_SIZE, PUNCH_HOLE
    and ZERO_RANGE with EOPNOTSUPP before asking the server
    (fuse_file_fallocate), so no FUSE filesystem can offer them.  The
    generator emits them only where ext4 fails too (offsets not aligned to
    the block size, and as root, since ext4 kills set-ID bits before it
    checks the range), so the trees do not diverge; ext4's EINVAL against
    fuse4fs's EOPNOTSUPP is accepted, nothing else is.
"""

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import platform
import random
import re
import shutil
import stat
import struct
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import f4util  # noqa: E402

MiB = 1 << 20

# --------------------------------------------------------------------------
# System calls Python does not offer
# --------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

_SYSCALLS = {
    #            setgroups setresuid setresgid renameat2
    "x86_64":   (116, 117, 119, 316),
    "aarch64":  (159, 147, 149, 276),
}
SYS_SETGROUPS, SYS_SETRESUID, SYS_SETRESGID, SYS_RENAMEAT2 = \
    _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

XATTR_CREATE = 1
XATTR_REPLACE = 2

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = \
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20
ACL_TAGS = {ACL_USER_OBJ: "u::", ACL_USER: "u:", ACL_GROUP_OBJ: "g::",
            ACL_GROUP: "g:", ACL_MASK: "m::", ACL_OTHER: "o::"}

_libc.syscall.restype = ctypes.c_long
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.fallocate.restype = ctypes.c_int


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p,
                            ctypes.POINTER(_Timespec), ctypes.c_int]
_libc.utimensat.restype = ctypes.c_int


def _check(r, what=""):
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), what)
    return r


def renameat2(src, dst, flags=0):
    return _check(_libc.syscall(ctypes.c_long(SYS_RENAMEAT2), ctypes.c_int(AT_FDCWD),
                                ctypes.c_char_p(os.fsencode(src)), ctypes.c_int(AT_FDCWD),
                                ctypes.c_char_p(os.fsencode(dst)),
                                ctypes.c_uint(flags)), src)


def fallocate(fd, mode, off, length):
    return _check(_libc.fallocate(fd, mode, off, length))


def utimensat(path, atime, mtime, nofollow=False):
    """atime/mtime: (sec, nsec), "now" or "omit"."""
    ts = (_Timespec * 2)()
    for i, v in enumerate((atime, mtime)):
        if v == "now":
            ts[i].tv_sec, ts[i].tv_nsec = 0, UTIME_NOW
        elif v == "omit":
            ts[i].tv_sec, ts[i].tv_nsec = 0, UTIME_OMIT
        else:
            ts[i].tv_sec, ts[i].tv_nsec = v[0], v[1]
    return _check(_libc.utimensat(AT_FDCWD, os.fsencode(path), ts,
                                  AT_SYMLINK_NOFOLLOW if nofollow else 0), path)


def set_thread_creds(uid, gid, groups=()):
    """Change the calling thread's credentials only.  The saved IDs stay 0,
    so that set_thread_creds(0, 0) can switch back."""
    if uid == 0 and gid == 0:
        _check(_libc.syscall(ctypes.c_long(SYS_SETRESUID), 0, 0, 0), "setresuid")
        _check(_libc.syscall(ctypes.c_long(SYS_SETRESGID), 0, 0, 0), "setresgid")
        arr = (ctypes.c_uint * max(1, len(groups)))(*groups)
        _check(_libc.syscall(ctypes.c_long(SYS_SETGROUPS), ctypes.c_size_t(len(groups)), arr),
               "setgroups")
        return
    arr = (ctypes.c_uint * max(1, len(groups)))(*groups)
    _check(_libc.syscall(ctypes.c_long(SYS_SETGROUPS), ctypes.c_size_t(len(groups)), arr),
           "setgroups")
    _check(_libc.syscall(ctypes.c_long(SYS_SETRESGID), gid, gid, 0), "setresgid")
    _check(_libc.syscall(ctypes.c_long(SYS_SETRESUID), uid, uid, 0), "setresuid")


def acl_encode(entries):
    """[(tag, perm, id)] -> system.posix_acl_* xattr value (version 2)."""
    out = struct.pack("<I", 2)
    for tag, perm, qid in entries:
        out += struct.pack("<HHI", tag, perm, qid & 0xffffffff)
    return out


def acl_decode(value):
    """xattr value -> short text like 'u::rw-,u:1000:r--,...', or the hex."""
    if len(value) < 4 or (len(value) - 4) % 8 or struct.unpack_from("<I", value)[0] != 2:
        return "raw:" + value.hex()
    parts = []
    for off in range(4, len(value), 8):
        tag, perm, qid = struct.unpack_from("<HHI", value, off)
        p = "".join(c if perm & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))
        if perm & ~7:
            p += "+%o" % perm
        if tag in (ACL_USER, ACL_GROUP):
            parts.append("%s%d:%s" % (ACL_TAGS[tag], qid, p))
        else:
            parts.append("%s%s" % (ACL_TAGS.get(tag, "?%x:" % tag), p))
    return ",".join(parts)


def errname(e):
    if isinstance(e, OSError) and e.errno is not None:
        return "E:" + errno.errorcode.get(e.errno, str(e.errno))
    return "X:" + repr(e)


# --------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------

CREDS = [(0, 0), (1000, 1000), (65534, 65534)]
NAMES = ["a", "b", "c", "d", "e", "f", "g", "h"]
LONG_NAME = "L" * 255           # the longest valid name
TOO_LONG_NAME = "M" * 256       # ENAMETOOLONG
SLOTS = 6
XATTR_NAMES = ["user.a", "user.b", "user.c", "user." + "n" * 250, "user." + "o" * 251,
               "trusted.t", "trusted.u", "security.s", "user.", "bogus.x"]
XATTR_WEIGHTS = [4, 4, 4, 1, 0.5, 2, 2, 0.5, 0.3, 0.3]
OWNER_IDS = [0, 1000, 65534, 4242, -1]
MODES = [0o644, 0o600, 0o666, 0o755, 0o700, 0o000, 0o777, 0o640, 0o444,
         0o4755, 0o2755, 0o6777, 0o1777, 0o2770, 0o711, 0o4644, 0o2644]
# (sec, nsec): pre-1970, 32-bit edges, after 2038, the ext4 limits and beyond.
TIMES = [(0, 0), (1, 1), (-1, 999999999), (-(1 << 31), 0), (-1234567890, 123456789),
         ((1 << 31) - 1, 999999999), (1 << 31, 0), (1700000000, 500),
         (4102444800, 7), ((1 << 32) + 12345, 42), (((1 << 31) - 1) + (3 << 32), 999999999),
         (1 << 34, 0), (-(1 << 33), 5), (17179869184 + 5, 1)]

# ext4's timestamp range with 256-byte inodes (seconds); the kernel clamps
# to it, and at EXT4_TIME_MAX itself it drops the nanoseconds.
EXT4_TIME_MIN = -(1 << 31)
EXT4_TIME_MAX = (1 << 31) - 1 + (3 << 32)

VARIANTS = {
    # name: (mkfs.ext4 arguments besides -q -F -U -E, fuse4fs -o options)
    "4k": (["-t", "ext4", "-b", "4096", "-I", "256"], []),
    "1k": (["-t", "ext4", "-b", "1024", "-I", "256"], []),
    "4k-wbc": (["-t", "ext4", "-b", "4096", "-I", "256"], ["writeback_cache"]),
}
VARIANT_CYCLE = ["4k", "1k", "4k-wbc"]


def variant_for_seed(seed):
    return VARIANT_CYCLE[seed % len(VARIANT_CYCLE)]


class Generator:
    """Emits ops one step at a time (step()), deciding from the seed and
    from the real state it is shown before each step (observe()); see
    generate_on().  Op kinds and their weights are in WEIGHTS; the g_*
    methods build them."""

    WEIGHTS = [
        ("open", 14), ("close", 4), ("write", 16), ("read", 8), ("lseek", 2),
        ("ftruncate", 3), ("truncate", 2), ("fallocate", 6), ("fsync", 1),
        ("seekmap", 2), ("rename", 7), ("link", 3), ("unlink", 3),
        ("unlink_open", 1), ("symlink", 3), ("readlink", 1), ("mkdir", 6),
        ("rmdir", 1.5), ("mknod", 2), ("setxattr", 4), ("getxattr", 2),
        ("listxattr", 2), ("removexattr", 2), ("chmod", 3), ("fchmod", 1),
        ("chown", 3), ("utimens", 3), ("setacl", 3), ("getacl", 1),
        ("removeacl", 1), ("stat", 4), ("fstat", 2), ("readdir", 2),
        ("collapse_insert", 0.3), ("umask", 0.3),
    ]

    def __init__(self, seed, variant):
        self.rng = random.Random("opgen-%d" % seed)
        self.seed = seed
        self.variant = variant
        self.bs = 1024 if variant.startswith("1k") else 4096
        self.kinds = {"": "d"}
        self.owner = {"": (0, 0o755)}
        self.slot_kind = {}
        self.wbc = "writeback_cache" in VARIANTS[variant][1]
        self.open_slots = set()
        self.cred = 0
        self.ops = []
        names, weights = zip(*self.WEIGHTS)
        self._names = names
        self._weights = weights

    # -- picking --
    def name(self):
        r = self.rng.random()
        if r < 0.01:
            return LONG_NAME
        if r < 0.013:
            return TOO_LONG_NAME
        return self.rng.choice(NAMES)

    def existing(self, kinds=None, root_ok=False, writable=False):
        """A random existing path of one of kinds.  Unprivileged users mostly
        get what they own (writable: directories they can add to)."""
        if self.rng.random() < 0.005:
            return "lost+found"
        cands = sorted(p for p, k in self.kinds.items()
                       if (root_ok or p) and (kinds is None or k in kinds))
        if not cands:
            return None
        uid = CREDS[self.cred][0]
        if uid != 0 and self.rng.random() < 0.8:
            if writable:
                mine = [p for p in cands if self.owner.get(p, (0, 0))[1] & 0o002 or
                        self.owner.get(p, (0, 0)) [0] == uid]
            else:
                mine = [p for p in cands if self.owner.get(p, (0, 0))[0] == uid]
            if mine:
                return self.rng.choice(mine)
        return self.rng.choice(cands)

    def new_path(self):
        parent = self.existing("d", root_ok=True, writable=True)
        if parent is None or self.rng.random() < 0.05:
            parent = self.rng.choice(NAMES)          # maybe not a directory
        return os.path.join(parent, self.name()) if parent else self.name()

    def path(self, kinds=None, p_exist=0.8, root_ok=False):
        if self.rng.random() < p_exist:
            p = self.existing(kinds, root_ok=root_ok)
            if p is not None:
                return p
        return self.new_path()

    def slot(self):
        if self.open_slots and self.rng.random() < 0.9:
            return self.rng.choice(sorted(self.open_slots))
        return self.rng.randrange(SLOTS)

    def offset(self, huge=True):
        """A file offset; now and then at or past ext4's maximum file size
        (huge=False: never; see the module docstring)."""
        r = self.rng.random()
        if r < 0.25:
            return 0
        if r < 0.55:
            return self.rng.randrange(0, 64 * 1024)
        if r < 0.75:
            return self.rng.randrange(0, 64) * self.bs
        if r < 0.93:
            return self.rng.randrange(0, 4 * MiB)
        if r < 0.995 or not huge:
            return self.rng.randrange(0, 48 * MiB)
        return (1 << 44) - self.rng.randrange(0, 3) * 4096    # beyond/at the limit

    def length(self):
        r = self.rng.random()
        if r < 0.04:
            return 0
        if r < 0.55:
            return self.rng.randrange(1, 5000)
        if r < 0.8:
            return self.rng.randrange(1, 128 * 1024)
        if r < 0.9:
            return self.rng.randrange(1, 16) * self.bs
        return self.rng.randrange(256 * 1024, 2 * MiB)

    def mode(self):
        return self.rng.choice(MODES)

    # -- op construction --
    def emit(self, op, **kw):
        d = {"i": len(self.ops), "op": op, "cred": self.cred}
        d.update(kw)
        self.ops.append(d)
        return d

    def observe(self, info, open_slots):
        """The real state before the next op: {path: (kind, uid, mode)},
        kind one of "d", "f", "l", "o"; and the slots that hold a
        descriptor.  lost+found is left out (existing() returns it now and
        then)."""
        self.kinds = {p: v[0] for p, v in info.items() if not p.startswith("lost+found")}
        self.owner = {p: (v[1], v[2]) for p, v in info.items()}
        self.open_slots = set(open_slots)

    def step(self):
        """Emit the next op (or a short pattern of ops)."""
        if not self.ops:
            self.emit("chmod", path="", mode=0o777)
            self.emit("umask", mask=self.rng.choice([0, 0o022, 0o002]))
            return
        # Credentials change in streaks, so that a user works on what it
        # created.
        if self.rng.random() < 0.08:
            self.cred = self.rng.choices([0, 1, 2], [6, 3, 2])[0]
        op = self.rng.choices(self._names, self._weights)[0]
        getattr(self, "g_" + op)()

    def g_open(self):
        rng = self.rng
        acc = rng.choices([os.O_RDONLY, os.O_WRONLY, os.O_RDWR], [1, 1, 4])[0]
        flags = acc
        if rng.random() < 0.6:
            flags |= os.O_CREAT
            if rng.random() < 0.2:
                flags |= os.O_EXCL
        if rng.random() < 0.15:
            flags |= os.O_TRUNC
        if rng.random() < 0.15:
            flags |= os.O_APPEND
        if rng.random() < 0.04:
            flags |= os.O_DIRECTORY
        if rng.random() < 0.05:
            flags |= os.O_NOFOLLOW
        creating = flags & os.O_CREAT and rng.random() < 0.6
        if creating:
            path = self.new_path()
        elif rng.random() < 0.9:
            path = self.path(["f"], 0.9)
        else:
            path = self.path(["l", "d", "o"], 0.9)
        slot = rng.randrange(SLOTS) if rng.random() < 0.3 else (
            min(set(range(SLOTS)) - self.open_slots) if len(self.open_slots) < SLOTS
            else rng.randrange(SLOTS))
        self.emit("open", slot=slot, path=path, flags=flags, mode=self.mode())
        self.open_slots.add(slot)
        self.slot_kind[slot] = "f" if creating else self.kinds.get(path)

    def g_close(self):
        s = self.slot()
        self.emit("close", slot=s)
        self.open_slots.discard(s)

    def need_slot(self):
        if not self.open_slots and self.rng.random() < 0.8:
            self.g_open()

    def g_write(self):
        self.need_slot()
        n = self.length()
        fill = self.rng.choices(["rand", "zero", "text"], [8, 1, 1])[0]
        how = "pwrite" if self.rng.random() < 0.8 else "write"
        self.emit("write", slot=self.slot(), how=how, off=self.offset(huge=not self.wbc), len=n,
                  dseed=self.rng.getrandbits(32), fill=fill)

    def g_read(self):
        self.need_slot()
        how = "pread" if self.rng.random() < 0.8 else "read"
        n = self.rng.choice([1, 100, 4096, 5000, 65536, 1 * MiB, self.rng.randrange(1, 300000)])
        self.emit("read", slot=self.slot(), how=how, off=self.offset(), len=n)

    def g_lseek(self):
        slot = self.slot()
        whence = self.rng.choice(["set", "end", "cur"])
        if whence == "end" and self.slot_kind.get(slot) != "f":
            whence = "set"          # see the module docstring
        # SEEK_END/SEEK_CUR only backwards: a position past ext4's maximum
        # file size is refused by ext4 and taken by FUSE (module docstring).
        off = self.offset(huge=False) if whence == "set" else self.rng.randrange(-5000, 1)
        self.emit("lseek", slot=slot, whence=whence, off=off)

    def _size(self):
        r = self.rng.random()
        if r < 0.15:
            return 0
        if r < 0.6:
            return self.rng.randrange(0, 100000)
        if r < 0.95:
            return self.rng.randrange(0, 8 * MiB)
        if r < 0.99:
            return self.rng.randrange(0, 60 * MiB)
        return self.rng.choice([1 << 44, (1 << 44) - 4096, 1 << 62, -1])

    def g_ftruncate(self):
        self.emit("ftruncate", slot=self.slot(), size=self._size())

    def g_truncate(self):
        self.emit("truncate", path=self.path(["f", "l", "d"]), size=self._size())

    def g_fallocate(self):
        self.need_slot()
        rng = self.rng
        mode = rng.choices(
            [0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
             FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
             FALLOC_FL_PUNCH_HOLE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE],
            [4, 3, 5, 3, 2, 0.3, 0.2])[0]
        off = self.offset() if rng.random() < 0.97 else rng.choice([-1, 1 << 62])
        n = self.length() if rng.random() < 0.7 else rng.randrange(0, 4 * MiB)
        if rng.random() < 0.3:
            off = off // self.bs * self.bs
            n = n // self.bs * self.bs
        self.emit("fallocate", slot=self.slot(), mode=mode, off=off, len=n)

    def g_collapse_insert(self):
        # Only where ext4 fails as well (offset not block aligned): see the
        # module docstring.
        # As root only: ext4 kills suid/sgid (file_modified) before it
        # looks at the range, so an unprivileged caller would change the
        # mode on ext4 and not on fuse4fs.
        mode = self.rng.choice([FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE])
        off = self.rng.randrange(0, 64) * 4096 + self.rng.randrange(1, 1024)
        op = self.emit("fallocate", slot=self.slot(), mode=mode, off=off, len=4096)
        op["cred"] = 0

    def g_fsync(self):
        self.emit("fsync", slot=self.slot(), data=self.rng.random() < 0.5)

    def g_seekmap(self):
        slot = self.slot()
        if self.slot_kind.get(slot) != "f":
            self.emit("fstat", slot=slot)       # see the module docstring
            return
        self.emit("seekmap", slot=slot)

    def g_rename(self):
        rng = self.rng
        flags = rng.choices([0, RENAME_NOREPLACE, RENAME_EXCHANGE, 3], [6, 2, 3, 0.2])[0]
        src = self.path(p_exist=0.92)
        dst = self.path(p_exist=0.4 if flags != RENAME_EXCHANGE else 0.9)
        if rng.random() < 0.03:
            dst = os.path.join(src, self.name())      # into itself
        self.emit("rename", src=src, dst=dst, flags=flags)

    def g_link(self):
        src = self.path(["f", "l", "o", "d"], 0.95)
        dst = self.path(p_exist=0.2)
        self.emit("link", src=src, dst=dst, follow=self.rng.random() < 0.2)

    def g_unlink(self):
        p = self.path(["f", "l", "o"], 0.9) if self.rng.random() < 0.93 else self.path(["d"])
        self.emit("unlink", path=p)

    def g_unlink_open(self):
        """Open (creating), write, unlink, keep using the fd, then close."""
        p = self.new_path()
        s = self.rng.randrange(SLOTS)
        self.emit("open", slot=s, path=p, flags=os.O_RDWR | os.O_CREAT, mode=0o644)
        self.slot_kind[s] = "f"
        self.g_write_slot(s)
        self.emit("unlink", path=p)
        for _ in range(self.rng.randrange(1, 4)):
            self.g_write_slot(s)
        self.emit("fstat", slot=s)
        self.emit("read", slot=s, how="pread", off=0, len=256 * 1024)
        if self.rng.random() < 0.5:
            self.emit("ftruncate", slot=s, size=self._size())
            self.emit("fallocate", slot=s, mode=FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      off=self.offset(), len=self.length())
        self.emit("read", slot=s, how="pread", off=0, len=1 * MiB)
        self.emit("close", slot=s)
        self.open_slots.discard(s)

    def g_write_slot(self, s):
        self.emit("write", slot=s, how="pwrite", off=self.offset(huge=not self.wbc),
                  len=self.length(),
                  dseed=self.rng.getrandbits(32), fill="rand")

    def g_symlink(self):
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            target = self.path(p_exist=0.8) or "."
        elif r < 0.7:
            target = "../" + rng.choice(NAMES)
        elif r < 0.8:
            target = "/abs/" + rng.choice(NAMES)
        else:
            n = rng.choice([59, 60, 61, 500, self.bs - 1, self.bs, self.bs + 1,
                            4095, rng.randrange(1, 1200)])
            target = ("t%d-" % n + "xyz/" * 1200)[:n]
        p = self.new_path() if rng.random() < 0.85 else self.path()
        self.emit("symlink", target=target, path=p)

    def g_readlink(self):
        self.emit("readlink", path=self.path(["l"], 0.9))

    def g_mkdir(self):
        p = self.new_path() if self.rng.random() < 0.85 else self.path()
        self.emit("mkdir", path=p, mode=self.dir_mode())

    def g_rmdir(self):
        p = self.path(["d"], 0.9)
        self.emit("rmdir", path=p)

    def g_mknod(self):
        kind = self.rng.choices(["fifo", "chr", "blk", "sock"], [5, 2, 1, 1])[0]
        p = self.new_path() if self.rng.random() < 0.9 else self.path()
        self.emit("mknod", path=p, kind=kind, mode=self.rng.choice([0o644, 0o600, 0o666]),
                  dev=[self.rng.choice([1, 8, 250]), self.rng.choice([3, 0, 70000])])

    def _xvalue(self):
        r = self.rng.random()
        if r < 0.1:
            return 0
        if r < 0.75:
            return self.rng.randrange(1, 100)
        if r < 0.95:
            return self.rng.randrange(100, 900)
        return self.rng.choice([self.bs - 100, 3000, 4000, 65536, 65537])

    def xname(self):
        return self.rng.choices(XATTR_NAMES, XATTR_WEIGHTS)[0]

    def g_setxattr(self):
        self.emit("setxattr", path=self.path(root_ok=True, p_exist=0.95), name=self.xname(),
                  len=self._xvalue(), dseed=self.rng.getrandbits(32),
                  flags=self.rng.choices([0, XATTR_CREATE, XATTR_REPLACE], [5, 1, 1])[0],
                  follow=self.rng.random() < 0.2)

    def g_getxattr(self):
        self.emit("getxattr", path=self.path(root_ok=True, p_exist=0.95), name=self.xname(),
                  follow=self.rng.random() < 0.2)

    def g_listxattr(self):
        self.emit("listxattr", path=self.path(root_ok=True, p_exist=0.95),
                  follow=self.rng.random() < 0.2)

    def g_removexattr(self):
        self.emit("removexattr", path=self.path(root_ok=True, p_exist=0.95),
                  name=self.xname(), follow=self.rng.random() < 0.2)

    def dir_mode(self):
        return self.rng.choices([0o777, 0o755, 0o1777, 0o2775, 0o2777, 0o700, 0o555, 0o000],
                                [6, 2, 1, 1, 1, 0.5, 0.3, 0.2])[0]

    def g_chmod(self):
        if self.rng.random() < 0.03:
            self.emit("chmod", path="", mode=self.rng.choice([0o777, 0o1777, 0o755]))
            return
        p = self.path()
        self.emit("chmod", path=p,
                  mode=self.dir_mode() if self.kinds.get(p) == "d" else self.mode())

    def g_umask(self):
        self.emit("umask", mask=self.rng.choice([0, 0o022, 0o002, 0o077, 0o027]))

    def g_fchmod(self):
        self.emit("fchmod", slot=self.slot(), mode=self.mode())

    def g_chown(self):
        self.emit("chown", path=self.path(), uid=self.rng.choice(OWNER_IDS),
                  gid=self.rng.choice(OWNER_IDS), follow=self.rng.random() < 0.5)

    def _tspec(self):
        r = self.rng.random()
        if r < 0.15:
            return "now"
        if r < 0.3:
            return "omit"
        if r < 0.8:
            t = list(self.rng.choice(TIMES))
        else:
            t = [self.rng.randrange(-(1 << 31), 1 << 33), self.rng.randrange(0, 10 ** 9)]
        if self.wbc and not EXT4_TIME_MIN <= t[0] < EXT4_TIME_MAX:
            t = [t[0] % EXT4_TIME_MAX, t[1]]    # see the module docstring
        return t

    def g_utimens(self):
        self.emit("utimens", path=self.path(), atime=self._tspec(), mtime=self._tspec(),
                  nofollow=self.rng.random() < 0.3)

    def _acl(self, default):
        rng = self.rng
        perm = lambda: rng.choice([7, 7, 7, 6, 6, 5, 4, 0, 1, 2, 3])
        ents = [(ACL_USER_OBJ, perm(), 0xffffffff)]
        users = sorted(rng.sample([1000, 65534, 4242], rng.randrange(0, 3)))
        ents += [(ACL_USER, perm(), u) for u in users]
        ents.append((ACL_GROUP_OBJ, perm(), 0xffffffff))
        groups = sorted(rng.sample([1000, 100, 65534], rng.randrange(0, 3)))
        ents += [(ACL_GROUP, perm(), g) for g in groups]
        named = users or groups
        if named or rng.random() < 0.2:
            ents.append((ACL_MASK, perm(), 0xffffffff))
        ents.append((ACL_OTHER, perm(), 0xffffffff))
        r = rng.random()
        if r < 0.03 and named:
            ents = [e for e in ents if e[0] != ACL_MASK]         # invalid: no mask
        elif r < 0.05:
            ents = ents[::-1]                                    # invalid order
        return ents

    def g_setacl(self):
        default = self.rng.random() < 0.45
        p = self.path(["d"] if default and self.rng.random() < 0.85 else None)
        self.emit("setacl", path=p, which="default" if default else "access",
                  entries=self._acl(default))

    def g_getacl(self):
        self.emit("getacl", path=self.path(root_ok=True),
                  which=self.rng.choice(["default", "access"]))

    def g_removeacl(self):
        self.emit("removeacl", path=self.path(root_ok=True),
                  which=self.rng.choice(["default", "access"]))

    def g_stat(self):
        self.emit("stat", path=self.path(root_ok=True, p_exist=0.9))

    def g_fstat(self):
        self.emit("fstat", slot=self.slot())

    def g_readdir(self):
        self.emit("readdir", path=self.path(["d"], root_ok=True))


def scan_kinds(root):
    """{relpath: (kind, uid, mode)} of everything below root, as the
    generator sees it."""
    st = os.lstat(root)
    kinds = {"": ("d", st.st_uid, st.st_mode)}
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            names = os.listdir(os.path.join(root, rel) if rel else root)
        except OSError:
            continue
        for n in names:
            q = os.path.join(rel, n) if rel else n
            try:
                st = os.lstat(os.path.join(root, q))
            except OSError:
                continue
            m = st.st_mode
            if stat.S_ISDIR(m):
                k = "d"
                stack.append(q)
            elif stat.S_ISREG(m):
                k = "f"
            elif stat.S_ISLNK(m):
                k = "l"
            else:
                k = "o"
            kinds[q] = (k, st.st_uid, m)
    return kinds


def generate_on(root, seed, nops, variant):
    """Generate a sequence of nops ops for seed while running it below root
    (a kernel ext4 mount of a fresh image): the generator looks at the real
    tree and open descriptors before each op, so that most ops act on
    things that exist.  Returns (ops, results, final)."""
    gen = Generator(seed, variant)
    ex = Executor(root)
    results = []
    with ex:
        while len(gen.ops) < nops:
            gen.observe(scan_kinds(root), ex.slots.keys())
            start = len(gen.ops)
            gen.step()
            del gen.ops[nops:]
            for op in gen.ops[start:]:
                results.append(ex.run(op))
        final = ex.close_all()
    return gen.ops, results, final


def in_chroot(root, fn, *args):
    """fn("/", *args) in a forked child chrooted to root; returns its
    JSON-able result.  Symlinks the workload makes ("../x", "/abs/x") then
    resolve inside the filesystem under test, never on the host, and both
    sides see the same thing."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(r)
            os.chroot(root)
            os.chdir("/")
            data = json.dumps(["ok", fn("/", *args)])
        except BaseException:
            data = json.dumps(["error", traceback.format_exc()])
            status = 1
        try:
            with os.fdopen(w, "w") as f:
                f.write(data)
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError("the executor process died without a result")
    kind, res = json.loads(data)
    if kind != "ok":
        raise RuntimeError("the executor failed:\n" + res)
    return res


def _run_all(root, ops):
    return Executor(root).run_all(ops)


# --------------------------------------------------------------------------
# The executor
# --------------------------------------------------------------------------

def op_data(op):
    n = op["len"]
    fill = op.get("fill", "rand")
    if fill == "zero":
        return bytes(n)
    if fill == "text":
        line = b"line %d of op %d\n" % (op["dseed"] % 1000, op["i"])
        return (line * (n // len(line) + 1))[:n]
    return random.Random(op["dseed"]).randbytes(n)


def _digest(b):
    return hashlib.sha256(b).hexdigest()[:16]


def _kind(mode):
    return f4util._kind(mode)


def stat_summary(st, size=True):
    r = [_kind(st.st_mode), "%o" % st.st_mode, st.st_nlink, st.st_uid, st.st_gid]
    if size and not stat.S_ISDIR(st.st_mode):
        r.append(st.st_size)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        r.append("%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
    return r


class Executor:
    """Runs ops below root.  Results are JSON-able: a value or "E:ERRNO"."""

    def __init__(self, root):
        self.root = root
        self.slots = {}
        self.groups = os.getgroups()

    def p(self, rel):
        return os.path.join(self.root, rel) if rel else self.root

    def fd(self, op):
        fd = self.slots.get(op["slot"])
        if fd is None:
            raise _NoSlot()
        return fd

    @contextlib.contextmanager
    def as_root(self, op):
        cur = CREDS[op["cred"]]
        if cur == (0, 0):
            yield
            return
        set_thread_creds(0, 0, self.groups)
        try:
            yield
        finally:
            set_thread_creds(cur[0], cur[1])

    def __enter__(self):
        self._old_umask = os.umask(0o022)
        return self

    def __exit__(self, *exc):
        os.umask(self._old_umask)
        for fd in self.slots.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.slots = {}

    def close_all(self):
        """Close every descriptor still open: {slot: 0 or "E:..."}."""
        final = {}
        for s in sorted(self.slots):
            try:
                os.close(self.slots[s])
                final[s] = 0
            except OSError as e:
                final[s] = errname(e)
        self.slots = {}
        return final

    def run_all(self, ops):
        with self:
            results = [self.run(op) for op in ops]
            return results, self.close_all()

    def run(self, op):
        uid, gid = CREDS[op["cred"]]
        switched = False
        try:
            if (uid, gid) != (0, 0):
                set_thread_creds(uid, gid)
                switched = True
            return getattr(self, "x_" + op["op"])(op)
        except _NoSlot:
            return "noslot"
        except OSError as e:
            return errname(e)
        except Exception as e:      # a bug here, or a very odd result
            return "X:%s: %s" % (type(e).__name__, e)
        finally:
            if switched:
                set_thread_creds(0, 0, self.groups)

    # -- files and descriptors --
    def x_umask(self, op):
        return "%o" % os.umask(op["mask"])

    def x_open(self, op):
        old = self.slots.pop(op["slot"], None)
        if old is not None:
            with contextlib.suppress(OSError):
                os.close(old)
        # O_NONBLOCK: opening a FIFO must not wait for a peer.
        fd = os.open(self.p(op["path"]), op["flags"] | os.O_NONBLOCK | os.O_CLOEXEC, op["mode"])
        self.slots[op["slot"]] = fd
        return stat_summary(os.fstat(fd))

    def x_close(self, op):
        fd = self.slots.pop(op["slot"], None)
        if fd is None:
            raise _NoSlot()
        os.close(fd)
        return 0

    def x_write(self, op):
        fd = self.fd(op)
        data = op_data(op)
        if op["how"] == "pwrite":
            n = os.pwrite(fd, data, op["off"])
        else:
            n = os.write(fd, data)
        return [n, os.fstat(fd).st_size]

    def x_read(self, op):
        fd = self.fd(op)
        if op["how"] == "pread":
            b = os.pread(fd, op["len"], op["off"])
        else:
            b = os.read(fd, op["len"])
        return [len(b), _digest(b)]

    def x_lseek(self, op):
        whence = {"set": os.SEEK_SET, "end": os.SEEK_END, "cur": os.SEEK_CUR}[op["whence"]]
        return os.lseek(self.fd(op), op["off"], whence)

    def x_ftruncate(self, op):
        fd = self.fd(op)
        os.ftruncate(fd, op["size"])
        return os.fstat(fd).st_size

    def x_truncate(self, op):
        os.truncate(self.p(op["path"]), op["size"])
        return 0

    def x_fallocate(self, op):
        fd = self.fd(op)
        fallocate(fd, op["mode"], op["off"], op["len"])
        return os.fstat(fd).st_size

    def x_fsync(self, op):
        (os.fdatasync if op["data"] else os.fsync)(self.fd(op))
        return 0

    def x_seekmap(self, op):
        """SEEK_DATA/SEEK_HOLE map, after fsync and dropping the clean
        cached pages: ext4 counts cached pages over unwritten extents as
        data (pages that a read filled with zeroes included), which is page
        cache state, not file state."""
        fd = self.fd(op)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        size = os.fstat(fd).st_size
        return file_seek_map(fd, size)

    def x_fstat(self, op):
        return stat_summary(os.fstat(self.fd(op)))

    def x_fchmod(self, op):
        fd = self.fd(op)
        os.fchmod(fd, op["mode"])
        return "%o" % os.fstat(fd).st_mode

    # -- names --
    def x_rename(self, op):
        renameat2(self.p(op["src"]), self.p(op["dst"]), op["flags"])
        return 0

    def x_link(self, op):
        os.link(self.p(op["src"]), self.p(op["dst"]), follow_symlinks=op["follow"])
        return os.lstat(self.p(op["dst"])).st_nlink

    def x_unlink(self, op):
        os.unlink(self.p(op["path"]))
        return 0

    def x_symlink(self, op):
        os.symlink(op["target"], self.p(op["path"]))
        return stat_summary(os.lstat(self.p(op["path"])))

    def x_readlink(self, op):
        return os.readlink(self.p(op["path"]))

    def x_mkdir(self, op):
        os.mkdir(self.p(op["path"]), op["mode"])
        return stat_summary(os.lstat(self.p(op["path"])))

    def x_rmdir(self, op):
        os.rmdir(self.p(op["path"]))
        return 0

    def x_mknod(self, op):
        kind = {"fifo": stat.S_IFIFO, "chr": stat.S_IFCHR, "blk": stat.S_IFBLK,
                "sock": stat.S_IFSOCK}[op["kind"]]
        os.mknod(self.p(op["path"]), kind | op["mode"], os.makedev(*op["dev"]))
        return stat_summary(os.lstat(self.p(op["path"])))

    def x_readdir(self, op):
        return sorted(os.listdir(self.p(op["path"])))

    def x_stat(self, op):
        return stat_summary(os.lstat(self.p(op["path"])))

    # -- attributes --
    def x_chmod(self, op):
        os.chmod(self.p(op["path"]), op["mode"])
        return "%o" % os.stat(self.p(op["path"])).st_mode

    def x_chown(self, op):
        p = self.p(op["path"])
        os.chown(p, op["uid"], op["gid"], follow_symlinks=op["follow"])
        with self.as_root(op):
            st = os.stat(p) if op["follow"] else os.lstat(p)
        return stat_summary(st, size=False)

    def x_utimens(self, op):
        """Explicit times must come back exactly; UTIME_NOW as "now" (within
        a few seconds of the wall clock); UTIME_OMIT as "unchanged"."""
        p = self.p(op["path"])
        nofollow = op["nofollow"]
        st_fn = os.lstat if nofollow else os.stat
        with self.as_root(op):
            try:
                before = st_fn(p)
            except OSError:
                before = None
        t0 = time.time()
        utimensat(p, tuple(op["atime"]) if isinstance(op["atime"], list) else op["atime"],
                  tuple(op["mtime"]) if isinstance(op["mtime"], list) else op["mtime"],
                  nofollow)
        t1 = time.time()
        with self.as_root(op):
            after = st_fn(p)
        out = []
        for spec, field in ((op["atime"], "st_atime_ns"), (op["mtime"], "st_mtime_ns")):
            v = getattr(after, field)
            if spec == "now":
                out.append("now" if (t0 - 2) * 1e9 <= v <= (t1 + 2) * 1e9 else "not-now:%d" % v)
            elif spec == "omit":
                out.append("unchanged" if before is not None and
                           v == getattr(before, field) else "changed:%d" % v)
            else:
                out.append(v)
        return out

    def x_setxattr(self, op):
        value = random.Random(op["dseed"]).randbytes(op["len"])
        os.setxattr(self.p(op["path"]), op["name"], value, op["flags"],
                    follow_symlinks=op["follow"])
        return 0

    def x_getxattr(self, op):
        v = os.getxattr(self.p(op["path"]), op["name"], follow_symlinks=op["follow"])
        return [len(v), _digest(v)]

    def x_listxattr(self, op):
        return sorted(os.listxattr(self.p(op["path"]), follow_symlinks=op["follow"]))

    def x_removexattr(self, op):
        os.removexattr(self.p(op["path"]), op["name"], follow_symlinks=op["follow"])
        return 0

    def x_setacl(self, op):
        p = self.p(op["path"])
        os.setxattr(p, "system.posix_acl_" + op["which"],
                    acl_encode([tuple(e) for e in op["entries"]]))
        with self.as_root(op):
            return "%o" % os.stat(p).st_mode

    def x_getacl(self, op):
        return acl_decode(os.getxattr(self.p(op["path"]), "system.posix_acl_" + op["which"]))

    def x_removeacl(self, op):
        p = self.p(op["path"])
        os.removexattr(p, "system.posix_acl_" + op["which"])
        with self.as_root(op):
            return "%o" % os.stat(p).st_mode


class _NoSlot(Exception):
    pass


def file_seek_map(fd, size):
    segs = f4util.seek_map(fd, size)
    if isinstance(segs, list):
        return [list(s) for s in segs]
    return segs


# --------------------------------------------------------------------------
# Tree snapshots
# --------------------------------------------------------------------------

FULL_HASH_LIMIT = 80 * MiB


def _file_digest(fd, size, segs):
    """sha256 of every byte when the file is not huge; otherwise a digest of
    the data ranges (the hole ranges are then checked by sampling)."""
    if size <= FULL_HASH_LIMIT:
        h = hashlib.sha256()
        pos = 0
        while True:
            b = os.pread(fd, 4 * MiB, pos)
            if not b:
                break
            h.update(b)
            pos += len(b)
        return {"sha256": h.hexdigest(), "bytes_read": pos}
    dig, notes = f4util.content_digest(fd, size, segs)
    out = {"sparse_digest": dig}
    if notes:
        out["read_errors"] = notes
    bad = f4util.hole_samples_nonzero(fd, size, segs)
    if bad:
        out["hole_reads"] = bad
    return out


def tree_snapshot(root, *, same_image_fields=False):
    """{relpath: record} for everything below root (root itself is ".").

    Records: type, mode, nlink, uid, gid, size (not for directories), rdev,
    sha256 (regular files), seek (SEEK_DATA/SEEK_HOLE map), target
    (symlinks), xattrs (all names and values, ACLs decoded), links (the
    sorted paths that share the inode, when there are several).
    same_image_fields adds ino, mtime, ctime and btime: fields that must
    agree between two views of one image, not between two images.
    """
    snap = {}
    by_ino = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        key = rel or "."
        path = os.path.join(root, rel) if rel else root
        try:
            st = os.lstat(path)
        except OSError as e:
            snap[key] = {"lstat": errname(e)}
            continue
        rec = {"type": _kind(st.st_mode), "mode": "%o" % st.st_mode,
               "nlink": st.st_nlink, "uid": st.st_uid, "gid": st.st_gid}
        if not stat.S_ISDIR(st.st_mode):
            rec["size"] = st.st_size
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            rec["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        if same_image_fields:
            rec["ino"] = st.st_ino
            rec["mtime"] = st.st_mtime_ns
            rec["ctime"] = st.st_ctime_ns
            try:
                rec["btime"] = f4util.statx_btime(path)
            except OSError as e:
                rec["btime"] = errname(e)
        if stat.S_ISREG(st.st_mode):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as e:
                rec["open"] = errname(e)
            else:
                try:
                    # Drop clean cached pages: the kernel's SEEK_DATA counts
                    # cached pages over unwritten extents as data.
                    with contextlib.suppress(OSError):
                        os.fsync(fd)
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    segs = file_seek_map(fd, st.st_size)
                    rec["seek"] = segs
                    rec.update(_file_digest(fd, st.st_size, segs))
                except OSError as e:
                    rec["read"] = errname(e)
                finally:
                    os.close(fd)
        elif stat.S_ISLNK(st.st_mode):
            try:
                rec["target"] = os.readlink(path)
            except OSError as e:
                rec["target"] = errname(e)
        elif stat.S_ISDIR(st.st_mode):
            try:
                names = sorted(os.listdir(path))
            except OSError as e:
                rec["entries"] = errname(e)
                names = []
            for n in names:
                stack.append(os.path.join(rel, n) if rel else n)
        rec["xattrs"] = _xattr_record(path)
        if not stat.S_ISDIR(st.st_mode):
            by_ino.setdefault(st.st_ino, []).append(key)
        snap[key] = rec
    for group in by_ino.values():
        if len(group) > 1:
            for k in group:
                snap[k]["links"] = sorted(group)
    return snap


def _xattr_record(path):
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError as e:
        return {"<listxattr>": errname(e)}
    out = {}
    for n in names:
        try:
            v = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[n] = errname(e)
            continue
        if n.startswith("system.posix_acl_"):
            out[n] = acl_decode(v)
        else:
            out[n] = "%d:%s" % (len(v), hashlib.sha256(v).hexdigest()[:16])
    return out


def diff_trees(ref, got, ref_name, got_name, ignore=()):
    return f4util.diff_snapshots(ref, got, ignore=ignore, ref_name=ref_name,
                                 got_name=got_name)


# --------------------------------------------------------------------------
# Images and e2fsck
# --------------------------------------------------------------------------

IMAGE_SIZE = "64M"


def make_image(path, variant):
    env = {"E2FSPROGS_FAKE_TIME": f4util.FAKE_TIME}
    f4util.run(["mkfs.ext4", "-q", "-F", "-U", f4util.FS_UUID,
                "-E", "root_owner=0:0,hash_seed=" + f4util.HASH_SEED]
               + VARIANTS[variant][0] + [path, IMAGE_SIZE], env=env)
    return path


_FSCK_OK = [
    re.compile(r"^Pass 1: Checking inodes, blocks, and sizes$"),
    re.compile(r"^Pass 2: Checking directory structure$"),
    re.compile(r"^Pass 3: Checking directory connectivity$"),
    re.compile(r"^Pass 4: Checking reference counts$"),
    re.compile(r"^Pass 5: Checking group summary information$"),
    re.compile(r"^\S+: \d+/\d+ files \([\d.]+% non-contiguous\), \d+/\d+ blocks$"),
    re.compile(r"^e2fsck \d+\.\d+(\.\d+)? \(.*\)$"),
]


# e2fsck's offer to rebuild an extent tree more compactly: no error (exit
# 0), and ext4 leaves such trees too after truncate or punch.
_FSCK_OPTIMIZE = re.compile(r"^Inode \d+ extent tree \(at level \d+\) could be "
                            r"(shorter|narrower)\.\s+Optimize\? no$")


def fsck_problems(image, allow_optimize=False):
    """e2fsck -fn image: [] when it exits 0 printing only the standard
    lines (and, with allow_optimize, extent-tree optimisation offers),
    else the exit code and the unexpected lines."""
    cp = f4util.e2fsck(image)
    out = (cp.stdout or "") + (cp.stderr or "")
    ok = _FSCK_OK + ([_FSCK_OPTIMIZE] if allow_optimize else [])
    extra = [l for l in out.splitlines()
             if l.strip() and not any(r.match(l) for r in ok)]
    if cp.returncode != 0 or extra:
        return ["e2fsck -fn exit %d" % cp.returncode] + out.splitlines()
    return []


# --------------------------------------------------------------------------
# One differential run
# --------------------------------------------------------------------------

def results_match(op, rk, rf):
    """(ok, allowed_note): is fuse4fs's result rf acceptable given ext4's rk?"""
    if rk == rf:
        return True, None
    if (op["op"] == "fallocate" and op["mode"] & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)
            and rf == errname(OSError(errno.EOPNOTSUPP, "")) and isinstance(rk, str) and rk.startswith("E:")):
        return True, ("op %d %s: ext4 %s, fuse4fs %s (FUSE has no collapse/insert range)"
                      % (op["i"], fmt_op(op), rk, rf))
    return False, None


def fmt_op(op):
    d = {k: v for k, v in op.items() if k not in ("i",)}
    name = d.pop("op")
    cred = CREDS[d.pop("cred")]
    if name == "open":
        d["flags"] = flags_str(d["flags"])
    if "mode" in d and name != "fallocate":
        d["mode"] = "%o" % d["mode"]
    if name == "fallocate":
        d["mode"] = falloc_str(d["mode"])
    if name == "rename":
        d["flags"] = {0: "0", 1: "NOREPLACE", 2: "EXCHANGE", 3: "NOREPLACE|EXCHANGE"}[d["flags"]]
    args = ", ".join("%s=%s" % (k, _short(v)) for k, v in d.items())
    who = "" if cred == (0, 0) else " as %d:%d" % cred
    return "%s(%s)%s" % (name, args, who)


def _short(v):
    r = repr(v)
    return r if len(r) <= 80 else r[:60] + "...(%d chars)" % len(r)


def flags_str(flags):
    acc = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}[flags & 3]
    names = [acc]
    for f in ("O_CREAT", "O_EXCL", "O_TRUNC", "O_APPEND", "O_DIRECTORY", "O_NOFOLLOW"):
        if flags & getattr(os, f):
            names.append(f)
    return "|".join(names)


def falloc_str(mode):
    names = [n for n, b in (("KEEP_SIZE", 1), ("PUNCH_HOLE", 2), ("COLLAPSE_RANGE", 8),
                            ("ZERO_RANGE", 0x10), ("INSERT_RANGE", 0x20)) if mode & b]
    return "|".join(names) or "0"


class Outcome:
    """What one differential run found.  failures: list of (category, text);
    category is one of result, final, tree-warm, tree-fuse-vs-disk,
    tree-cold, tree-kernel-warm-vs-cold, fsck-fuse, fsck-kernel, server,
    error."""

    def __init__(self, seed, variant, ops):
        self.seed = seed
        self.variant = variant
        self.ops = ops
        self.failures = []
        self.allowed = []
        self.mismatches = []      # (index, op, rk, rf)
        self.results = None       # (ext4 results, fuse4fs results)
        self.notes = []
        self.fuse_stderr = ""
        self.elapsed = 0.0

    @property
    def ok(self):
        return not self.failures

    def fail(self, category, text):
        self.failures.append((category, text))

    def signature(self):
        """A short key for 'the same failure' (used when minimising)."""
        if not self.failures:
            return None
        cat, _ = self.failures[0]
        if cat == "result" and self.mismatches:
            return ("result", self.mismatches[0][1]["op"])
        return (cat,)

    def report(self, limit=40):
        lines = ["seed %s (variant %s, %d ops): %s"
                 % (self.seed, self.variant, len(self.ops),
                    "OK" if self.ok else "%d problem(s)" % len(self.failures))]
        for cat, text in self.failures:
            tl = text.splitlines()
            lines.append("[%s] " % cat + "\n    ".join(tl[:limit])
                         + ("\n    ...(%d more lines)" % (len(tl) - limit) if len(tl) > limit else ""))
        for n in self.notes:
            lines.append("note: " + n)
        if self.allowed:
            lines.append("allowed differences (%d), e.g. %s" % (len(self.allowed), self.allowed[0]))
        if not self.ok and self.fuse_stderr.strip():
            lines.append("fuse4fs stderr:\n" + f4util._tail(self.fuse_stderr, 3000))
        return "\n".join(lines)


def _compare_results(out, ops, rk, rf):
    bad = []
    for op, a, b in zip(ops, rk, rf):
        ok, note = results_match(op, a, b)
        if note:
            out.allowed.append(note)
        if not ok:
            bad.append((op["i"], op, a, b))
    out.mismatches = bad
    if bad:
        text = ["%d of %d ops differ; first ones (index: op -> ext4 | fuse4fs):"
                % (len(bad), len(ops))]
        for i, op, a, b in bad[:12]:
            text.append("#%d: %s\n      ext4:    %s\n      fuse4fs: %s"
                        % (i, fmt_op(op), _short_res(a), _short_res(b)))
        out.fail("result", "\n".join(text))


def _short_res(r):
    s = json.dumps(r)
    return s if len(s) <= 300 else s[:300] + "...(%d chars)" % len(s)


def _compare(out, cat, ref, got, rn, gn, ignore=()):
    d = diff_trees(ref, got, rn, gn, ignore=ignore)
    if d:
        out.fail(cat, "%d differences (%s vs %s):\n%s"
                 % (len(d), rn, gn, "\n".join(d[:60])))


class _KernelSide:
    """Stands in for a fuse4fs handle when fuse_side="kernel"."""

    def __init__(self, mnt):
        self.mnt = mnt

    def __str__(self):
        return self.mnt

    def stderr(self):
        return ""


@contextlib.contextmanager
def _other_side(fimg, mnt, variant, binary, watchdog, fuse_side):
    if fuse_side == "kernel":
        with f4util.kernel_mount(fimg, ro=False, options=["nosuid", "nodev"], mnt=mnt) as m:
            yield _KernelSide(m)
        return
    with f4util.fuse4fs_mount(fimg, ro=False, opts=["allow_other"] + VARIANTS[variant][1],
                              binary=binary, watchdog=watchdog, mnt=mnt) as h:
        yield h


def run_sequence(ops=None, *, seed=None, nops=None, variant="4k", workdir=None,
                 binary=None, watchdog=240, keep_images=None, fuse_side="fuse4fs",
                 tamper=None):
    """Run one differential check; returns an Outcome (never raises for a
    finding; infrastructure errors become category "error").

    With ops=None the sequence is generated from (seed, nops) while it
    runs on the kernel side (see generate_on); Outcome.ops holds it.
    fuse_side="kernel" puts a second kernel mount where fuse4fs would be
    (to check the harness); tamper(rk, rf) may edit the result lists
    before they are compared (to check that differences are reported)."""
    out = Outcome(seed, variant, ops or [])
    t0 = time.monotonic()
    wd = tempfile.mkdtemp(prefix="f4diff-", dir=workdir)
    os.chmod(wd, 0o755)
    kimg = os.path.join(wd, "kernel.img")
    fimg = os.path.join(wd, "fuse.img")
    # Mount points of our own, below wd (public: the users 1000 and 65534
    # must reach the mounts).
    kdir = os.path.join(wd, "ext4")
    fdir = os.path.join(wd, "fuse4fs")
    for d in (kdir, fdir):
        os.mkdir(d)
        os.chmod(d, 0o755)
    try:
        make_image(kimg, variant)
        shutil.copyfile(kimg, fimg)
        snap_ak = snap_af = None
        try:
            with f4util.kernel_mount(kimg, ro=False, options=["nosuid", "nodev"],
                                     mnt=kdir) as kmnt:
                h = None
                try:
                    with _other_side(fimg, fdir, variant, binary, watchdog, fuse_side) as h:
                        if ops is None:
                            ops, rk, fk = in_chroot(kmnt, generate_on, seed, nops, variant)
                            out.ops = ops
                        else:
                            rk, fk = in_chroot(kmnt, _run_all, ops)
                        rf, ff = in_chroot(str(h), _run_all, ops)
                        if tamper:
                            tamper(rk, rf)
                        out.results = (rk, rf)
                        _compare_results(out, ops, rk, rf)
                        if fk != ff:
                            out.fail("final", "closing the descriptors left open: ext4 %s, "
                                     "fuse4fs %s" % (fk, ff))
                        snap_ak = tree_snapshot(kmnt)
                        snap_af = tree_snapshot(str(h), same_image_fields=True)
                        out.fuse_stderr = h.stderr()
                finally:
                    if h is not None:
                        out.fuse_stderr = h.stderr() or out.fuse_stderr
        except AssertionError as e:
            # fuse4fs_mount: server exit status, sanitizer output, hang
            out.fail("server", str(e) + "".join("\n" + n for n in getattr(e, "__notes__", [])))
            return out
        _compare(out, "tree-warm", snap_ak, {k: {f: v for f, v in r.items()
                                                   if f not in ("ino", "mtime", "ctime", "btime")}
                                               for k, r in snap_af.items()},
                 "ext4", "fuse4fs")
        # The fuse4fs image must be clean but for e2fsck's offers to make
        # an extent tree shorter, which ext4 leaves as well; ext4's own
        # image only needs e2fsck's exit code 0: its extra lines are kept
        # as notes.
        p = fsck_problems(fimg, allow_optimize=True)
        if p:
            out.fail("fsck-fuse", "\n".join(p))
        p = fsck_problems(kimg)
        if p and not p[0].endswith(" exit 0"):
            out.fail("fsck-kernel", "\n".join(p))
        elif p:
            out.notes.append("e2fsck -fn of ext4's image (exit 0): "
                             + "; ".join(l.strip() for l in p[1:]
                                         if l.strip() and not any(r.match(l) for r in _FSCK_OK)))
        with f4util.kernel_mount(fimg, ro=True, mnt=fdir) as m:
            snap_bf = tree_snapshot(m, same_image_fields=True)
        with f4util.kernel_mount(kimg, ro=True, mnt=kdir) as m:
            snap_bk = tree_snapshot(m)
        _compare(out, "tree-fuse-vs-disk", snap_af, snap_bf,
                 "fuse4fs-mounted", "fuse4fs-image-via-kernel")
        strip = lambda s: {k: {f: v for f, v in r.items()
                               if f not in ("ino", "mtime", "ctime", "btime")}
                           for k, r in s.items()}
        _compare(out, "tree-cold", snap_bk, strip(snap_bf),
                 "ext4-image", "fuse4fs-image")
        _compare(out, "tree-kernel-warm-vs-cold", snap_ak, snap_bk,
                 "ext4-mounted", "ext4-image")
    except Exception:
        out.fail("error", traceback.format_exc())
    finally:
        if keep_images and not out.ok:
            os.makedirs(keep_images, exist_ok=True)
            for f in (kimg, fimg):
                if os.path.exists(f):
                    shutil.copyfile(f, os.path.join(keep_images, "seed%s-%s"
                                                    % (seed, os.path.basename(f))))
        _cleanup(wd, (kimg, fimg), (kdir, fdir), out)
        out.elapsed = time.monotonic() - t0
    return out


def _cleanup(wd, files, dirs, out):
    """Remove what run_sequence made, never descending into a mount that
    is somehow still there (that is reported instead)."""
    for d in dirs:
        if f4util.is_mounted(d):
            f4util.umount(d)
        if f4util.is_mounted(d):
            out.fail("error", "%s is still mounted after the run; left in place" % d)
            return
    for f in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f)
    for d in dirs:
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError as e:
            out.fail("error", "cannot remove %s: %s" % (d, e))
            return
    with contextlib.suppress(OSError):
        os.rmdir(wd)


def run_seed(seed, nops, **kw):
    variant = kw.pop("variant", None) or variant_for_seed(seed)
    return run_sequence(None, seed=seed, nops=nops, variant=variant, **kw)


# --------------------------------------------------------------------------
# Minimisation
# --------------------------------------------------------------------------

def minimize(ops, still_fails, log=None, max_runs=400):
    """Delta debugging: a smallest-found sublist of ops for which
    still_fails(sublist) is True.  still_fails(ops) must be True."""
    runs = 0

    def test(sub):
        nonlocal runs
        runs += 1
        r = still_fails(sub)
        if log:
            log("  try %d ops -> %s" % (len(sub), "fails" if r else "passes"))
        return r

    n = 2
    cur = list(ops)
    while len(cur) >= 2 and runs < max_runs:
        chunk = max(1, len(cur) // n)
        reduced = False
        for start in range(0, len(cur), chunk):
            comp = cur[:start] + cur[start + chunk:]
            if comp and test(comp):
                cur = comp
                n = max(n - 1, 2)
                reduced = True
                break
            if runs >= max_runs:
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(cur), n * 2)
    return cur


def minimize_outcome(out, nops_cut=True, log=None, **kw):
    """Minimise a failing Outcome's ops, keeping its failure signature.
    Returns (ops, final Outcome)."""
    sig = out.signature()
    ops = out.ops
    if nops_cut and sig and sig[0] == "result" and out.mismatches:
        first = out.mismatches[0][0]
        ops = [o for o in ops if o["i"] <= first]

    def still(sub):
        o = run_sequence(sub, seed=out.seed, variant=out.variant, **kw)
        return o.signature() == sig

    if not still(ops):
        ops = out.ops
    small = minimize(ops, still, log=log)
    final = run_sequence(small, seed=out.seed, variant=out.variant, **kw)
    return small, final


def format_ops(ops):
    return "\n".join("#%d %s" % (o["i"], fmt_op(o)) for o in ops)
