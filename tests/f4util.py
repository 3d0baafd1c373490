"""Shared helpers for the fuse4fs test suite.

Everything here uses the Python standard library only and is meant to be
imported by any test module:

  run()              subprocess wrapper whose errors say what ran and what it printed
  make_tree()        a generated source tree covering every inode kind
  build_image()      mkfs.ext4 -d the tree into an image of a given format
  kernel_mount()     read-only loop mount with the in-kernel ext4 driver (the oracle)
  fuse4fs_mount()    mount an image with the server under test, always cleaned up
  snapshot()         everything observable about a mounted tree
  diff_snapshots()   every differing path and field, for assertion messages

The in-kernel driver is the reference for every observable result: tests
compare a fuse4fs mount with a kernel mount of the same image, never with the
source tree.
"""

import bz2
import contextlib
import ctypes
import ctypes.util
import errno
import gzip
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time

PYTHON = "/usr/bin/python3"

# Fixed identities so that images are reproducible from run to run.
FS_UUID = "6b1f4e2a-0c53-4d7e-9a11-f4f5e0d0c0de"
HASH_SEED = "0f4f5e0d-1234-4abc-8def-0123456789ab"
FAKE_TIME = "1700000000"

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer", "ThreadSanitizer")

MiB = 1 << 20
GiB = 1 << 30


# --------------------------------------------------------------------------
# Running commands
# --------------------------------------------------------------------------

class CommandError(AssertionError):
    """A command failed; the message carries the command line and its output."""


def _tail(text, limit=4000):
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if len(text) > limit:
        return "...[%d bytes cut]...\n%s" % (len(text) - limit, text[-limit:])
    return text


def run(cmd, *, check=True, timeout=300, input=None, env=None, cwd=None,
        ok_codes=(0,), text=True):
    """Run cmd (a list, or a string for the shell) and capture its output.

    With check=True an exit code outside ok_codes, or a timeout, raises
    CommandError naming the command, the exit code and the tail of its
    stdout and stderr.  Returns the CompletedProcess.
    """
    shell = isinstance(cmd, str)
    shown = cmd if shell else " ".join(shlex.quote(str(c)) for c in cmd)
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        cp = subprocess.run(cmd, shell=shell, input=input, env=full_env,
                            cwd=cwd, capture_output=True, timeout=timeout,
                            text=text)
    except subprocess.TimeoutExpired as e:
        raise CommandError("command timed out after %ss: %s\nstdout:\n%s\nstderr:\n%s"
                           % (timeout, shown, _tail(e.stdout), _tail(e.stderr)))
    except FileNotFoundError as e:
        raise CommandError("cannot run %s: %s" % (shown, e))
    if check and cp.returncode not in ok_codes:
        raise CommandError("command failed with exit code %d: %s\nstdout:\n%s\nstderr:\n%s"
                           % (cp.returncode, shown, _tail(cp.stdout), _tail(cp.stderr)))
    return cp


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def decompress(src, dst, *, sparse=True):
    """Decompress a .gz or .bz2 file (or copy a plain one) to dst; with
    sparse=True all-zero 64 KiB chunks become holes (same bytes, less I/O)."""
    if src.endswith(".gz"):
        opener = gzip.open
    elif src.endswith(".bz2"):
        opener = bz2.open
    else:
        opener = open
    zero = bytes(65536)
    with opener(src, "rb") as fin, open(dst, "wb") as fout:
        if not sparse:
            shutil.copyfileobj(fin, fout, 4 * MiB)
            return dst
        size = 0
        while True:
            b = fin.read(4 * MiB)
            if not b:
                break
            for i in range(0, len(b), 65536):
                piece = b[i:i + 65536]
                if piece == zero[:len(piece)]:
                    fout.seek(len(piece), os.SEEK_CUR)
                else:
                    fout.write(piece)
            size += len(b)
        fout.truncate(size)
    return dst


def make_public_dir(prefix="f4mnt-", parent=None):
    """A fresh directory with mode 0755 whose parents are traversable, so that
    unprivileged users can reach mounts below it."""
    parent = parent or tempfile.gettempdir()
    d = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(d, 0o755)
    CREATED_DIRS.add(os.path.realpath(d))
    return d


# Every directory make_public_dir() made in this process (mountpoints among
# them), so that leak checks look only at this process's own mounts.
CREATED_DIRS = set()


# --------------------------------------------------------------------------
# The generated source tree
# --------------------------------------------------------------------------

ALL_KINDS = frozenset((
    "files", "sparse", "bigsparse", "dirs", "symlinks", "devices", "fifos",
    "sockets", "hardlinks", "xattrs", "bigxattr", "acls", "modes", "owners",
    "names", "perm", "inline", "times",
))

# (seconds, nanoseconds) values stamped on inodes: pre-1970, the 32-bit edges,
# after 2038 (needs the extra epoch bits), the largest ext4 time, odd nsecs.
TIME_VALUES = [
    (-(1 << 31), 0),               # 1901-12-13, smallest 32-bit time
    (-1234567890, 123456789),      # 1930
    (-2, 999999999),               # just before the epoch (debugfs cannot set -1)
    (0, 0),
    (1, 1),
    (1000000000, 500000000),       # 2001
    (1700000000, 999999999),
    ((1 << 31) - 1, 999999999),    # 2038-01-19 03:14:07
    (1 << 31, 1),                  # just after 2038
    (4102444800, 7),               # 2100-01-01
    ((1 << 32) + 12345, 42),       # 2106
    ((1 << 31) - 1 + (3 << 32), 999999999),  # 2446-05-10, largest ext4 time
]


def _rand_bytes(rng, n):
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def _write_at(path, chunks, size=None):
    """Create path with data chunks [(offset, bytes)] and a final size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off, data in chunks:
            os.pwrite(fd, data, off)
        if size is not None:
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _setfacl(args):
    run(["setfacl"] + args)


def make_tree(root, kind_set=None, seed=0, *, big_xattr_size=3000,
              max_symlink=1000):
    """Populate root with a tree covering every inode kind.

    kind_set: subset of ALL_KINDS (None means all).  Returns a manifest dict:
      {"times": {relpath: [[a_sec,a_ns],[m_sec,m_ns],[c_sec,c_ns],[cr_sec,cr_ns]]},
       "perm": {...}, "kinds": [...]}
    The times are stamped onto the image by build_image() (mkfs.ext4 -d only
    keeps whole seconds and cannot set ctime or crtime); they are also set on
    the source tree where the VFS allows it.
    """
    kinds = ALL_KINDS if kind_set is None else frozenset(kind_set)
    unknown = kinds - ALL_KINDS
    if unknown:
        raise ValueError("unknown kinds: %s" % sorted(unknown))
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    old_umask = os.umask(0o022)
    P = lambda *a: os.path.join(root, *a)
    created = []

    def note(rel):
        created.append(rel)
        return P(rel)

    try:
        if "files" in kinds:
            os.mkdir(note("files"))
            sizes = {"empty": 0, "one": 1, "b4095": 4095, "b4096": 4096,
                     "b4097": 4097, "b1M123": MiB + 123, "b65536": 65536}
            for i in range(4):
                sizes["rand%d" % i] = rng.randrange(1, 300000)
            for name, size in sorted(sizes.items()):
                with open(note("files/" + name), "wb") as f:
                    f.write(_rand_bytes(rng, size))
            with open(note("files/text.txt"), "w") as f:
                f.write("".join("line %d of a text file\n" % i for i in range(500)))
            # Data that has whole zero blocks in the middle (written, not a hole).
            with open(note("files/zeros-inside"), "wb") as f:
                f.write(_rand_bytes(rng, 5000) + bytes(3 * 4096) + _rand_bytes(rng, 100))

        if "inline" in kinds:
            # Small files and small dirs that an inline_data fs keeps in the inode.
            os.mkdir(note("inline"))
            for size in (0, 1, 30, 59, 60, 61, 100, 140, 150, 160, 200, 400):
                with open(note("inline/s%d" % size), "wb") as f:
                    f.write(_rand_bytes(rng, size))
            os.mkdir(note("inline/tiny-dir"))
            for n in ("a", "bb", "ccc"):
                with open(note("inline/tiny-dir/" + n), "w") as f:
                    f.write(n)
            os.mkdir(note("inline/empty-dir"))
            os.mkdir(note("inline/six-dir"))
            for n in range(6):
                os.mkdir(note("inline/six-dir/sub%d" % n))

        if "sparse" in kinds:
            os.mkdir(note("sparse"))
            _write_at(note("sparse/hole-start"), [(256 * 1024, _rand_bytes(rng, 5000))])
            _write_at(note("sparse/hole-middle"),
                      [(0, _rand_bytes(rng, 10000)), (600 * 1024, _rand_bytes(rng, 7000))])
            _write_at(note("sparse/hole-end"), [(0, _rand_bytes(rng, 8192))], 2 * MiB)
            _write_at(note("sparse/all-hole"), [], 3 * MiB + 17)
            _write_at(note("sparse/unaligned"),
                      [(70001, _rand_bytes(rng, 3)), (200003, _rand_bytes(rng, 9000)),
                       (1 * MiB - 1, b"\x01")])
            chunks = [(off * 8192, _rand_bytes(rng, 1000)) for off in range(0, 200, 3)]
            _write_at(note("sparse/many-extents"), chunks, 200 * 8192 + 5)

        if "bigsparse" in kinds:
            os.makedirs(P("sparse"), exist_ok=True)
            if "sparse" not in kinds:
                note("sparse")
            big = 5 * GiB + 13345
            _write_at(note("sparse/big-5G"),
                      [(0, _rand_bytes(rng, 4096)),
                       (GiB + 3, _rand_bytes(rng, 100)),
                       (4 * GiB - 2048, _rand_bytes(rng, 4096)),
                       (5 * GiB + 12345, _rand_bytes(rng, 1000))], big)

        if "dirs" in kinds:
            os.mkdir(note("dirs"))
            d = "dirs"
            for lvl in "abcdefg":
                d = d + "/" + lvl
                os.mkdir(note(d))
                with open(note(d + "/file-" + lvl), "w") as f:
                    f.write("level %s\n" % lvl)
            os.mkdir(note("dirs/empty"))
            os.mkdir(note("dirs/many"))
            for i in range(300):
                name = "entry-%04d-%s" % (i, "x" * rng.randrange(0, 40))
                if i % 10 == 0:
                    os.mkdir(note("dirs/many/" + name))
                else:
                    with open(note("dirs/many/" + name), "w") as f:
                        f.write(str(i))
            for i in range(5):
                os.mkdir(note("dirs/subdirs-%d" % i))

        if "symlinks" in kinds:
            os.mkdir(note("symlinks"))
            lengths = [1, 10, 58, 59, 60, 61, 100, 255, 500, max_symlink]
            for n in lengths:
                target = ("t%d-" % n + "abcdefghij" * 200)[:n]
                os.symlink(target, note("symlinks/len%d" % n))
            os.symlink("../dirs" if "dirs" in kinds else "..", note("symlinks/to-dir"))
            os.symlink("does/not/exist", note("symlinks/dangling"))
            os.symlink("/etc/passwd", note("symlinks/absolute"))
            os.symlink("len10", note("symlinks/to-symlink"))
            os.symlink("self-loop", note("symlinks/self-loop"))
            os.symlink("caf\u00e9/\u2603", note("symlinks/utf8-target"))

        if "devices" in kinds:
            os.mkdir(note("devices"))
            devs = [("chr-1-3", stat.S_IFCHR, 1, 3), ("chr-0-0", stat.S_IFCHR, 0, 0),
                    ("blk-8-1", stat.S_IFBLK, 8, 1), ("chr-255-255", stat.S_IFCHR, 255, 255),
                    ("chr-256-0", stat.S_IFCHR, 256, 0), ("blk-0-256", stat.S_IFBLK, 0, 256),
                    ("chr-300-70000", stat.S_IFCHR, 300, 70000),
                    ("blk-259-1048575", stat.S_IFBLK, 259, 1048575),
                    ("chr-4095-1048575", stat.S_IFCHR, 4095, 1048575)]
            for name, kind, ma, mi in devs:
                os.mknod(note("devices/" + name), kind | 0o640, os.makedev(ma, mi))

        if "fifos" in kinds:
            os.makedirs(P("special"), exist_ok=True)
            os.mkfifo(note("special/fifo"), 0o644)
            os.mkfifo(note("special/fifo-600"), 0o600)

        if "sockets" in kinds:
            os.makedirs(P("special"), exist_ok=True)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(note("special/socket"))
            finally:
                s.close()
            os.chmod(P("special/socket"), 0o755)

        if "hardlinks" in kinds:
            os.mkdir(note("hardlinks"))
            os.mkdir(note("hardlinks/sub"))
            with open(note("hardlinks/one"), "wb") as f:
                f.write(_rand_bytes(rng, 9000))
            os.link(P("hardlinks/one"), note("hardlinks/two"))
            os.link(P("hardlinks/one"), note("hardlinks/sub/three"))
            with open(note("hardlinks/empty-a"), "wb"):
                pass
            os.link(P("hardlinks/empty-a"), note("hardlinks/empty-b"))
            os.mkfifo(note("hardlinks/fifo-a"))
            os.link(P("hardlinks/fifo-a"), note("hardlinks/sub/fifo-b"))

        if "xattrs" in kinds:
            os.mkdir(note("xattrs"))
            f = note("xattrs/small")
            with open(f, "w") as fh:
                fh.write("xattr carrier\n")
            os.setxattr(f, "user.small", b"x")
            os.setxattr(f, "user.empty", b"")
            os.setxattr(f, "user.binary", bytes(range(256)))
            os.setxattr(f, "trusted.t1", b"trusted value")
            os.setxattr(f, "security.s1", b"security value")
            f = note("xattrs/many")
            open(f, "w").close()
            for i in range(20):
                os.setxattr(f, "user.a%02d" % i, ("%d" % i).encode() * 3)
            os.mkdir(note("xattrs/dir"))
            os.setxattr(P("xattrs/dir"), "user.on-dir", b"directory xattr")
            os.symlink("small", note("xattrs/link"))
            os.setxattr(P("xattrs/link"), "trusted.on-link", b"symlink xattr",
                        follow_symlinks=False)
            os.mkfifo(note("xattrs/fifo"))
            os.setxattr(P("xattrs/fifo"), "trusted.on-fifo", b"fifo xattr")
            if "bigxattr" in kinds:
                f = note("xattrs/big")
                with open(f, "w") as fh:
                    fh.write("big xattr carrier\n")
                os.setxattr(f, "user.big", _rand_bytes(rng, big_xattr_size))
                os.setxattr(f, "user.small-too", b"s")

        if "acls" in kinds:
            os.mkdir(note("acls"))
            f = note("acls/file")
            with open(f, "w") as fh:
                fh.write("acl file\n")
            _setfacl(["-m", "u:1000:rw,g:100:r,u:65534:r", f])
            os.mkdir(note("acls/defdir"))
            _setfacl(["-m", "u:1000:rwx", "-d", "-m", "u:1000:rx,g:100:rwx,o::r",
                      P("acls/defdir")])
            os.mkdir(note("acls/default-only"))
            _setfacl(["-d", "-m", "u:1001:rw", P("acls/default-only")])

        if "perm" in kinds:
            # Files for the unprivileged-access test (see PERM_EXPECT).
            os.mkdir(note("perm"))
            for name, mode, content in (("secret", 0o600, "secret\n"),
                                        ("acl-read", 0o600, "acl read\n"),
                                        ("acl-deny", 0o644, "acl deny\n"),
                                        ("public", 0o644, "public\n"),
                                        ("group-read", 0o640, "group read\n"),
                                        ("owner-nobody", 0o400, "owned by nobody\n"),
                                        ("nobody-no-owner-bits", 0o044, "other bits\n")):
                p = note("perm/" + name)
                with open(p, "w") as fh:
                    fh.write(content)
                os.chmod(p, mode)
            os.chown(P("perm/group-read"), 0, 65534)
            os.chown(P("perm/owner-nobody"), 65534, 65534)
            os.chown(P("perm/nobody-no-owner-bits"), 65534, 0)
            _setfacl(["-m", "u:65534:r", P("perm/acl-read")])
            _setfacl(["-m", "u:65534:-", P("perm/acl-deny")])
            os.mkdir(note("perm/closed-dir"), 0o700)
            os.mkdir(note("perm/acl-dir"), 0o700)
            os.mkdir(note("perm/exec-only-dir"), 0o711)
            for d in ("closed-dir", "acl-dir", "exec-only-dir"):
                with open(note("perm/%s/inner" % d), "w") as fh:
                    fh.write("inner of %s\n" % d)
            _setfacl(["-m", "u:65534:rx", P("perm/acl-dir")])
            os.chmod(P("perm/closed-dir"), 0o700)
            os.chmod(P("perm/exec-only-dir"), 0o711)

        if "modes" in kinds:
            os.mkdir(note("modes"))
            for mode in (0o4755, 0o2755, 0o6750, 0o1777, 0o000, 0o777, 0o444, 0o2070, 0o4000):
                p = note("modes/file-%04o" % mode)
                with open(p, "w") as fh:
                    fh.write("%o\n" % mode)
            for mode in (0o1777, 0o2775, 0o000, 0o711):
                os.mkdir(note("modes/dir-%04o" % mode))

        if "owners" in kinds:
            os.mkdir(note("owners"))
            for uid, gid in ((0, 0), (1000, 1000), (65534, 65534), (100000, 100000),
                             (1000, 100000), (4000000000, 1), (65535, 65536)):
                p = note("owners/u%d-g%d" % (uid, gid))
                with open(p, "w") as fh:
                    fh.write("%d:%d\n" % (uid, gid))
                os.chown(p, uid, gid)
            os.mkdir(note("owners/dir-100000"))
            os.chown(P("owners/dir-100000"), 100000, 100001)
            os.symlink("u1000-g1000", note("owners/link-100000"))
            os.chown(P("owners/link-100000"), 100000, 100000, follow_symlinks=False)

        if "names" in kinds:
            os.mkdir(note("names"))
            names = ["with space", "caf\u00e9", "\u65e5\u672c\u8a9e", "-leading-dash",
                     ".hidden", "..dots", "a" * 255, "\u00e9" * 127, "tab\there",
                     "newline\nname", "quote\"s", "back\\slash", "x"]
            for n in names:
                with open(note("names/" + n), "w") as fh:
                    fh.write(n + "\n")

        # Modes in "modes": set after creation (umask, and chown clears suid).
        if "modes" in kinds:
            for mode in (0o4755, 0o2755, 0o6750, 0o1777, 0o000, 0o777, 0o444, 0o2070, 0o4000):
                os.chmod(P("modes/file-%04o" % mode), mode)
            for mode in (0o1777, 0o2775, 0o000, 0o711):
                os.chmod(P("modes/dir-%04o" % mode), mode)

        manifest = {"kinds": sorted(kinds), "times": {}}
        if "times" in kinds:
            # Deterministic, distinct times per inode; deepest paths first so
            # that setting a child's times does not disturb its parent's.
            idx = 0
            for rel in sorted(created, key=lambda r: (-r.count("/"), r)):
                if "\n" in rel or "\t" in rel or "\"" in rel or "\\" in rel:
                    continue    # debugfs cannot name these; they keep mkfs times
                vals = []
                for k in range(4):
                    vals.append(list(TIME_VALUES[(idx + k * 5) % len(TIME_VALUES)]))
                idx += 1
                manifest["times"][rel] = vals
                a, m = vals[0], vals[1]
                try:
                    os.utime(P(rel), ns=(a[0] * 10**9 + a[1], m[0] * 10**9 + m[1]),
                             follow_symlinks=False)
                except OSError:
                    pass
        return manifest
    finally:
        os.umask(old_umask)


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------

FORMATS = {
    #  name           mkfs arguments                                 post-processing
    "ext2":        (["-t", "ext2", "-b", "4096", "-I", "256"], ""),
    "ext3":        (["-t", "ext3", "-b", "4096", "-I", "256"], ""),
    "ext4":        (["-t", "ext4", "-b", "4096", "-I", "256"], "rehash"),
    "ext4-inline": (["-t", "ext4", "-b", "4096", "-I", "256", "-O", "inline_data"], ""),
    "ext4-1k":     (["-t", "ext4", "-b", "1024", "-I", "256"], ""),
    "ext4-128":    (["-t", "ext4", "-b", "4096", "-I", "128"], ""),
}

BIGDIR_MKFS = ["-t", "ext4", "-b", "4096", "-I", "256", "-N", "120000"]


def tree_options_for(fmt):
    """make_tree keyword arguments that fit a format (the 1k-block format
    cannot hold a 3000-byte xattr or a symlink longer than a block)."""
    if fmt == "ext4-1k":
        return {"big_xattr_size": 700, "max_symlink": 1000}
    return {}


def build_image(tree, path, fmt, *, size="96M", manifest=None):
    """mkfs.ext4 -d tree into path (created/overwritten) with format fmt.

    manifest (from make_tree) supplies nanosecond/ctime/crtime values that
    are stamped with debugfs, since mkfs -d keeps whole seconds only.
    "rehash" formats get e2fsck -fyD so that large directories are indexed
    (htree), giving both linear and hashed directories across the formats.
    """
    args, post = FORMATS[fmt]
    if os.path.exists(path):
        os.unlink(path)
    env = {"E2FSPROGS_FAKE_TIME": FAKE_TIME, "MKE2FS_CONFIG": "/etc/mke2fs.conf"}
    run(["mkfs.ext4", "-F", "-q", "-U", FS_UUID, "-L", "f4-" + fmt[:10],
         "-E", "root_owner=0:0,hash_seed=" + HASH_SEED] + args + ["-d", tree, path, size],
        env=env, timeout=600)
    large_inode = "128" not in args
    if manifest and manifest.get("times"):
        lines = []
        for rel, vals in sorted(manifest["times"].items()):
            q = '"/%s"' % rel
            fields = ("atime", "mtime", "ctime", "crtime")
            for name, (sec, ns) in zip(fields, vals):
                if name == "crtime" and not large_inode:
                    continue
                lines.append("sif %s %s @%d" % (q, name, sec))
                if large_inode:
                    epoch = ((sec - _s32(sec)) >> 32) & 3
                    lines.append("sif %s %s_extra %d" % (q, name, (ns << 2) | epoch))
        script = path + ".debugfs"
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        cp = run(["debugfs", "-w", "-f", script, path], env=env, timeout=600)
        os.unlink(script)
        bad = [l for l in cp.stderr.splitlines()
               if l.strip() and not l.startswith("debugfs ")]
        if bad:
            raise CommandError("debugfs could not stamp times on %s:\n%s"
                               % (path, "\n".join(bad[:20])))
    if post == "rehash":
        run(["e2fsck", "-fyD", path], ok_codes=(0, 1), env=env, timeout=600)
    check = e2fsck(path)
    if check.returncode != 0:
        raise CommandError("freshly built %s image is not clean:\n%s"
                           % (fmt, _tail(check.stdout + check.stderr)))
    return path


def build_bigdir_image(path, count=100000, seed=1, *, size="256M"):
    """An ext4 image whose /big directory holds count empty files (plus three
    subdirectories), with varied name lengths.  mkfs -d links entries one by
    one with linear scans (hours for 100,000), so the entries are created
    through a kernel read-write mount instead; the kernel indexes the
    directory (htree) as it grows.  Returns the sorted entry names."""
    rng = random.Random(seed)
    if os.path.exists(path):
        os.unlink(path)
    env = {"E2FSPROGS_FAKE_TIME": FAKE_TIME}
    run(["mkfs.ext4", "-F", "-q", "-U", FS_UUID, "-L", "f4-bigdir",
         "-E", "root_owner=0:0,hash_seed=" + HASH_SEED] + BIGDIR_MKFS + [path, size],
        env=env)
    names = []
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    for i in range(count):
        names.append("f%06d%s" % (i, alphabet[:rng.randrange(0, len(alphabet) + 1)]))
    names.extend("subdir%d" % i for i in range(3))
    with kernel_mount(path, ro=False) as mnt:
        big = os.path.join(mnt, "big")
        os.mkdir(big, 0o755)
        dfd = os.open(big, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for n in names[:count]:
                os.close(os.open(n, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd))
            for n in names[count:]:
                os.mkdir(n, 0o755, dir_fd=dfd)
        finally:
            os.close(dfd)
    check = e2fsck(path)
    if check.returncode != 0:
        raise CommandError("freshly built big-directory image is not clean:\n%s"
                           % _tail(check.stdout + check.stderr))
    return sorted(names)


class Image:
    """A built image: fmt, path, manifest (make_tree's), sha256 at build time,
    names (the big directory's entries, for "ext4-bigdir")."""

    def __init__(self, fmt, path, manifest=None, names=None):
        self.fmt = fmt
        self.path = path
        self.manifest = manifest or {}
        self.names = names
        self.sha256 = sha256_file(path)

    def __repr__(self):
        return "Image(%s, %s)" % (self.fmt, self.path)


class ImageCache:
    """Builds each format's image once, on first use, below workdir.

    get(fmt) returns a shared Image that callers must not modify (mount it
    read-only); copy(fmt, dst) gives a private copy to write to.  Formats:
    the keys of FORMATS plus "ext4-bigdir"."""

    def __init__(self, workdir, seed=1):
        self.workdir = workdir
        self.seed = seed
        self._images = {}
        self._lock = threading.Lock()

    def formats(self):
        return list(FORMATS) + ["ext4-bigdir"]

    def get(self, fmt):
        with self._lock:
            img = self._images.get(fmt)
            if img is None:
                img = self._build(fmt)
                self._images[fmt] = img
            return img

    def _build(self, fmt):
        path = os.path.join(self.workdir, "%s.img" % fmt)
        if fmt == "ext4-bigdir":
            names = build_bigdir_image(path, seed=self.seed)
            return Image(fmt, path, names=names)
        if fmt not in FORMATS:
            raise ValueError("unknown image format %r" % fmt)
        opts = tree_options_for(fmt)
        tree = os.path.join(self.workdir, "tree-" + "-".join(
            "%s%s" % kv for kv in sorted(opts.items())) if opts else "tree-default")
        manifest_path = tree + ".json"
        if not os.path.exists(manifest_path):
            if os.path.exists(tree):
                shutil.rmtree(tree)
            manifest = make_tree(tree, seed=self.seed, **opts)
            with open(manifest_path, "w") as f:
                json.dump(manifest, f)
        with open(manifest_path) as f:
            manifest = json.load(f)
        build_image(tree, path, fmt, manifest=manifest)
        return Image(fmt, path, manifest=manifest)

    def copy(self, fmt, dst):
        img = self.get(fmt)
        run(["cp", "--sparse=always", img.path, dst])
        return dst


def _s32(v):
    v &= 0xffffffff
    return v - (1 << 32) if v & 0x80000000 else v


def e2fsck(image):
    """e2fsck -fn; returns the CompletedProcess (returncode 0 means clean)."""
    return run(["e2fsck", "-fn", image], check=False, timeout=600)


# --------------------------------------------------------------------------
# Mount helpers
# --------------------------------------------------------------------------

def mountinfo():
    """Parsed /proc/self/mountinfo: list of dicts (mnt, fstype, source, dev, opts)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            out.append({
                "dev": parts[2],
                "mnt": _unescape(parts[4]),
                "opts": parts[5],
                "fstype": parts[sep + 1],
                "source": _unescape(parts[sep + 2]),
                "super_opts": parts[sep + 3] if len(parts) > sep + 3 else "",
            })
    return out


def _unescape(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mount_entry(mnt):
    mnt = os.path.realpath(mnt)
    found = None
    for e in mountinfo():
        if e["mnt"] == mnt:
            found = e
    return found


def is_mounted(mnt):
    return mount_entry(mnt) is not None


def fuse_abort(mnt):
    """Abort the FUSE connection behind mnt (unblocks every waiter)."""
    e = mount_entry(mnt)
    if not e or not e["fstype"].startswith("fuse"):
        return False
    major, minor = (int(x) for x in e["dev"].split(":"))
    conns = "/sys/fs/fuse/connections"
    if not os.path.isdir(os.path.join(conns, str((major << 20) | minor))):
        # fusectl is not mounted in every mount namespace
        subprocess.run(["mount", "-t", "fusectl", "fusectl", conns], capture_output=True)
    conn = "%s/%d/abort" % (conns, (major << 20) | minor)
    try:
        with open(conn, "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


def umount(mnt, *, lazy_fallback=True):
    """Unmount mnt; if busy, lazily.  Returns a problem string or None."""
    if not is_mounted(mnt):
        return None
    problem = None
    for _ in range(3):
        cp = subprocess.run(["umount", mnt], capture_output=True, text=True)
        if cp.returncode == 0 or not is_mounted(mnt):
            return problem
        problem = "umount %s failed: %s" % (mnt, cp.stderr.strip())
        time.sleep(0.2)
    if lazy_fallback:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    return problem


@contextlib.contextmanager
def kernel_mount(image, *, ro=True, options=None, mnt=None, fstype="ext4"):
    """Mount image with the in-kernel driver on a loop device.

    ro=True attaches the loop device read-only, so the kernel cannot write the
    image at all (a journal that needs recovery then needs
    options=["norecovery"]).  Yields the mountpoint; always unmounts and
    detaches.
    """
    own_mnt = mnt is None
    if own_mnt:
        mnt = make_public_dir("f4kmnt-")
    loop = run(["losetup", "--find", "--show"] + (["-r"] if ro else []) + [image]).stdout.strip()
    try:
        opts = ["ro" if ro else "rw"] + list(options or [])
        run(["mount", "-t", fstype, "-o", ",".join(opts), loop, mnt])
        try:
            yield mnt
        finally:
            umount(mnt)
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True)
        if own_mnt:
            with contextlib.suppress(OSError):
                os.rmdir(mnt)


class MountError(AssertionError):
    """The server did not come up.  kind says how:
      "exited"     it exited before mounting (returncode, stderr)
      "timeout"    no mount within the time limit (the server was killed)
      "root-stat"  mounted, but stat() of the root failed (errno in .errno)
      "root-hung"  mounted, but stat() of the root did not return
    For the root-* kinds the server's exit is still checked at cleanup and
    any problem found is attached as a note."""

    def __init__(self, msg, returncode=None, stderr="", kind="exited", errno=None):
        super().__init__(msg)
        self.returncode = returncode
        self.stderr = stderr
        self.kind = kind
        self.errno = errno


class ServerHandle:
    """A running fuse4fs: mountpoint, process, captured stderr."""

    def __init__(self, mnt, proc, stderr_path, cmd):
        self.mnt = mnt
        self.proc = proc
        self.stderr_path = stderr_path
        self.cmd = cmd
        self.returncode = None
        self.watchdog_fired = False

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __str__(self):
        return self.mnt

    def __fspath__(self):
        return self.mnt


URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


def transport():
    """The request transport the suite asks of every fuse4fs mount (env
    FUSE4FS_TRANSPORT): "uring", "classic" (/dev/fuse), or "" for fuse4fs's
    own default."""
    return os.environ.get("FUSE4FS_TRANSPORT", "")


def transport_opts(opts):
    """The -o option that selects the suite's transport, unless opts already
    choose one."""
    if any(o.startswith("uring=") for o in opts):
        return []
    return {"uring": ["uring=on"], "classic": ["uring=off"]}.get(transport(), [])


def uring_param():
    """The fuse module's enable_uring as a bool, or None without one."""
    try:
        with open(URING_PARAM) as f:
            return f.read().strip() in ("Y", "y", "1")
    except OSError:
        return None


def set_uring_param(on):
    with open(URING_PARAM, "w") as f:
        f.write("Y" if on else "N")


@contextlib.contextmanager
def uring_enabled(on=True):
    """Set the fuse module's enable_uring for the body; restore it after."""
    old = uring_param()
    if old is None:
        raise RuntimeError("this kernel has no %s" % URING_PARAM)
    set_uring_param(on)
    try:
        yield
    finally:
        set_uring_param(old)


def fuse4fs_binary():
    b = os.environ.get("FUSE4FS")
    if not b:
        raise RuntimeError("FUSE4FS is not set")
    return b


def sanitizer_report(text):
    """The lines of text that come from a sanitizer, or []."""
    return [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKERS)]


def _wait_mounted(mnt, proc, deadline):
    while True:
        e = mount_entry(mnt)
        if e is not None and e["fstype"].startswith("fuse"):
            return e
        if proc.poll() is not None:
            return None
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


@contextlib.contextmanager
def fuse4fs_mount(image, opts=None, *, ro=True, binary=None, mnt=None,
                  extra_args=(), timeout=20, exit_timeout=20, env=None,
                  check_exit=True, watchdog=300):
    """Run `FUSE4FS -f IMAGE MNT -o ro,OPTS` and yield a ServerHandle once the
    mount is up and its root can be stat()ed.

    On exit: unmount (lazy fallback), wait for the server (kill after
    exit_timeout) and, with check_exit, fail if it did not exit 0 or if its
    stderr contains sanitizer output.  Raises MountError if it never mounts.
    If the body runs longer than watchdog seconds the FUSE connection is
    aborted (every pending and later request fails with ENOTCONN), so a hung
    server fails the test instead of hanging the suite.
    """
    binary = binary or fuse4fs_binary()
    own_mnt = mnt is None
    if own_mnt:
        mnt = make_public_dir("f4fmnt-")
    logdir = tempfile.mkdtemp(prefix="f4log-")
    stderr_path = os.path.join(logdir, "stderr")
    o = (["ro"] if ro else []) + list(opts or [])
    o += transport_opts(o)
    cmd = [binary, "-f"] + list(extra_args) + [image, mnt] + (["-o", ",".join(o)] if o else [])
    full_env = dict(os.environ)
    full_env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
    full_env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if env:
        full_env.update(env)
    errf = open(stderr_path, "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                            env=full_env, start_new_session=True)
    errf.close()
    h = ServerHandle(mnt, proc, stderr_path, cmd)
    problems = []
    body_exc = None
    e = None
    try:
        e = _wait_mounted(mnt, proc, time.monotonic() + timeout)
        if e is None:
            if proc.poll() is None:
                _stop(proc, 2)
                raise MountError("%s did not mount within %ss\nstderr:\n%s"
                                 % (" ".join(cmd), timeout, _tail(h.stderr())),
                                 None, h.stderr(), kind="timeout")
            raise MountError("%s exited with %s before mounting\nstderr:\n%s"
                             % (" ".join(cmd), proc.returncode, _tail(h.stderr())),
                             proc.returncode, h.stderr())
        _stat_root(mnt, timeout)

        def fire():
            h.watchdog_fired = True
            fuse_abort(mnt)

        timer = threading.Timer(watchdog, fire) if watchdog else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            yield h
        finally:
            if timer:
                timer.cancel()
    except BaseException as exc:
        body_exc = exc
        raise
    finally:
        if e is not None and not is_mounted(mnt) and proc.poll() is None and not h.watchdog_fired:
            # Unmounted inside the block (by the test, or by someone else):
            # the server must then finish by itself, which a sanitizer
            # build's exit-time leak check makes take a moment.
            try:
                proc.wait(timeout=exit_timeout)
            except subprocess.TimeoutExpired:
                problems.append("the mount vanished but the server kept running "
                                "(unmounted by another process?)")
        if h.watchdog_fired:
            problems.append("watchdog: the mount was still in use after %ss; "
                            "connection aborted (server hung?)" % watchdog)
        if is_mounted(mnt):
            p = umount(mnt)
            if p:
                problems.append(p)
        try:
            proc.wait(timeout=exit_timeout)
        except subprocess.TimeoutExpired:
            problems.append("server still running %ss after unmount; killed" % exit_timeout)
            _stop(proc, 2)
        h.returncode = proc.returncode
        err = h.stderr()
        if check_exit and not (isinstance(body_exc, MountError) and
                               body_exc.kind in ("exited", "timeout")):
            if proc.returncode != 0:
                if proc.returncode < 0:
                    problems.append("server killed by signal %s" % signal.Signals(-proc.returncode).name)
                else:
                    problems.append("server exited with code %d" % proc.returncode)
            san = sanitizer_report(err)
            if san:
                problems.append("sanitizer report:\n" + "\n".join(san[:40]))
        if is_mounted(mnt):
            problems.append("mount still present after cleanup")
        if own_mnt:
            with contextlib.suppress(OSError):
                os.rmdir(mnt)
        shutil.rmtree(logdir, ignore_errors=True)
        if problems:
            msg = ("fuse4fs server problems (%s):\n%s\nserver stderr:\n%s"
                   % (" ".join(cmd), "\n".join(problems), _tail(err)))
            if body_exc is not None:
                if hasattr(body_exc, "add_note"):
                    body_exc.add_note(msg)
            else:
                raise AssertionError(msg)


def _stop(proc, grace):
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _stat_root(mnt, timeout):
    """stat() the mount root in a thread so a hung server cannot hang us."""
    res = {}

    def target():
        try:
            res["st"] = os.stat(mnt)
        except OSError as e:
            res["err"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        fuse_abort(mnt)
        raise MountError("stat(%s) hung for %ss after mounting" % (mnt, timeout),
                         kind="root-hung")
    if "err" in res:
        raise MountError("stat(%s) failed after mounting: %s" % (mnt, res["err"]),
                         kind="root-stat", errno=res["err"].errno)
    return res["st"]


# --------------------------------------------------------------------------
# statx (btime) through ctypes
# --------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_statx = getattr(_libc, "statx", None)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
STATX_BASIC_STATS = 0x7ff
STATX_BTIME = 0x800


def statx_btime(path):
    """(sec, nsec) birth time of path (not following links), or None when the
    filesystem does not report one."""
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(256)
    r = _statx(AT_FDCWD, os.fsencode(path), AT_SYMLINK_NOFOLLOW,
               STATX_BASIC_STATS | STATX_BTIME, buf)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    mask = struct.unpack_from("<I", buf.raw, 0)[0]
    if not mask & STATX_BTIME:
        return None
    sec, nsec = struct.unpack_from("<qI", buf.raw, 80)
    return (sec, nsec)


# --------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------

PIECE = 1024            # granularity of the sparse-aware content digest
READ_CHUNK = MiB
_ZERO_PIECE = bytes(PIECE)
_ZERO_CHUNK = bytes(READ_CHUNK)


def _errname(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) else repr(e)


def seek_map(fd, size, limit=100000):
    """[(data_start, data_end)] from SEEK_DATA/SEEK_HOLE, or a string on error."""
    segs = []
    pos = 0
    while pos < size:
        try:
            d = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            return "SEEK_DATA(%d): %s" % (pos, _errname(e))
        try:
            h = os.lseek(fd, d, os.SEEK_HOLE)
        except OSError as e:
            return "SEEK_HOLE(%d): %s" % (d, _errname(e))
        if d < pos or h <= d:
            segs.append(("bad", d, h))
            break
        segs.append((d, h))
        pos = h
        if len(segs) >= limit:
            segs.append(("truncated",))
            break
    return segs


def content_digest(fd, size, segs):
    """A digest of the file's logical bytes that does not depend on the hole
    map: sha256 over (offset, piece) for every non-zero PIECE-aligned piece.
    Only the data ranges in segs are read (holes are verified separately by
    sampled reads); segs=None reads everything.  Returns (hexdigest, notes)."""
    h = hashlib.sha256()
    notes = []
    ranges = [(0, size)] if not isinstance(segs, list) else \
        [s for s in segs if len(s) == 2]
    for start, end in ranges:
        end = min(end, size)
        pos = start
        while pos < end:
            n = min(READ_CHUNK, end - pos)
            try:
                data = os.pread(fd, n, pos)
            except OSError as e:
                notes.append("read(%d,%d): %s" % (pos, n, _errname(e)))
                break
            if not data:
                notes.append("short read: EOF at %d (size %d)" % (pos, size))
                break
            if data != _ZERO_CHUNK[:len(data)]:
                # pieces end at absolute multiples of PIECE
                a, stop = pos, pos + len(data)
                while a < stop:
                    b = min(stop, (a // PIECE + 1) * PIECE)
                    piece = data[a - pos:b - pos]
                    if piece != _ZERO_PIECE[:len(piece)]:
                        h.update(a.to_bytes(8, "little"))
                        h.update(piece)
                    a = b
            pos += len(data)
    return h.hexdigest(), notes


def hole_samples_nonzero(fd, size, segs, per_hole=3):
    """Read a few bytes inside each hole; return offsets that were not zero."""
    if not isinstance(segs, list):
        return []
    bad = []
    prev = 0
    holes = []
    for s in segs:
        if len(s) != 2:
            break
        if s[0] > prev:
            holes.append((prev, s[0]))
        prev = s[1]
    if prev < size:
        holes.append((prev, size))
    for a, b in holes[:200]:
        offs = {a, max(a, b - 512), a + (b - a) // 2}
        for off in sorted(offs)[:per_hole]:
            n = min(512, b - off)
            if n <= 0:
                continue
            try:
                data = os.pread(fd, n, off)
            except OSError as e:
                bad.append("%d:%s" % (off, _errname(e)))
                continue
            if data != bytes(len(data)) or len(data) != n:
                bad.append("%d:%s" % (off, "nonzero" if data.strip(b"\0") else "short"))
    return bad


def _kind(mode):
    for test, name in ((stat.S_ISREG, "reg"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "lnk"),
                       (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "sock")):
        if test(mode):
            return name
    return "unknown"


def _dentry_kind(entry):
    try:
        if entry.is_symlink():
            return "lnk"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_file(follow_symlinks=False):
            return "reg"
        return "other"
    except OSError as e:
        return "error:" + _errname(e)


def _xattrs(path):
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError as e:
        return {"<listxattr>": _errname(e)}
    out = {}
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[n] = "error:" + _errname(e)
    return out


def stat_record(path, *, times=True):
    st = os.lstat(path)
    rec = {
        "type": _kind(st.st_mode),
        "mode": "%06o" % st.st_mode,
        "nlink": st.st_nlink,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "size": st.st_size,
        "blocks": st.st_blocks,
        "blksize": st.st_blksize,
        "ino": st.st_ino,
    }
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        rec["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    if times:
        rec["atime"] = st.st_atime_ns
        rec["mtime"] = st.st_mtime_ns
        rec["ctime"] = st.st_ctime_ns
        try:
            rec["btime"] = statx_btime(path)
        except OSError as e:
            rec["btime"] = "error:" + _errname(e)
    return rec, st


def statvfs_record(mnt, settle=1.0):
    """statvfs of mnt, once it has stopped changing (for up to settle
    seconds).  Over FUSE, an unlinked file's blocks and inode are freed
    when the kernel's FORGET arrives, which travels on /dev/fuse and may
    trail a STATFS taking the io_uring queue; ext4 frees them at once."""
    keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
            "f_ffree", "f_namemax")
    rec = lambda: {k: getattr(v, k) for k in keys}
    v = os.statvfs(mnt)
    cur = rec()
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        time.sleep(0.02)
        v = os.statvfs(mnt)
        if rec() == cur:
            break
        cur = rec()
    return cur


def snapshot(mnt, *, contents=True, xattrs=True, skip=()):
    """Everything observable about the tree at mnt, keyed by relative path.

    Per path: type, mode, nlink, uid, gid, size, blocks, blksize, ino, rdev,
    a/m/c/btime in ns; symlink targets; for regular files the SEEK_DATA/
    SEEK_HOLE map, a sparse-aware content digest and zero checks inside holes;
    for directories the sorted entries with d_ino and d_type; xattrs.  The
    key "" holds the root's statvfs.  skip: relative paths not to descend into.
    """
    snap = {"": {"statvfs": statvfs_record(mnt)}}
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(mnt, rel) if rel else mnt
        try:
            rec, st = stat_record(path)
        except OSError as e:
            snap[rel or "."] = {"lstat": _errname(e)}
            continue
        key = rel or "."
        if rec["type"] == "lnk":
            try:
                rec["target"] = os.fsencode(os.readlink(path))
            except OSError as e:
                rec["target"] = "error:" + _errname(e)
        elif rec["type"] == "reg" and contents:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError as e:
                rec["open"] = _errname(e)
            else:
                try:
                    segs = seek_map(fd, st.st_size)
                    rec["seek"] = segs
                    rec["digest"], notes = content_digest(fd, st.st_size, segs)
                    if notes:
                        rec["read_errors"] = notes
                    bad = hole_samples_nonzero(fd, st.st_size, segs)
                    if bad:
                        rec["hole_reads"] = bad
                finally:
                    os.close(fd)
        elif rec["type"] == "dir":
            try:
                entries = []
                with os.scandir(path) as it:
                    for ent in it:
                        entries.append((ent.name, ent.inode(), _dentry_kind(ent)))
                entries.sort()
                rec["entries"] = entries
                for name, _, _ in entries:
                    crel = os.path.join(rel, name) if rel else name
                    if crel not in skip:
                        stack.append(crel)
            except OSError as e:
                rec["entries"] = "error:" + _errname(e)
        if xattrs:
            rec["xattrs"] = _xattrs(path)
        snap[key] = rec
    return snap


def _short(v, limit=160, field=None):
    if field in ("atime", "mtime", "ctime") and isinstance(v, int):
        return "%d.%09d" % divmod(v, 10**9)
    r = repr(v)
    return r if len(r) <= limit else r[:limit] + "...(%d chars)" % len(r)


def diff_snapshots(ref, got, *, ignore=(), ref_name="kernel", got_name="fuse4fs"):
    """List of human-readable differences between two snapshots."""
    out = []
    for path in sorted(set(ref) | set(got)):
        if path not in got:
            out.append("%r: missing on %s" % (path, got_name))
            continue
        if path not in ref:
            out.append("%r: only on %s" % (path, got_name))
            continue
        a, b = ref[path], got[path]
        for field in sorted(set(a) | set(b)):
            if field in ignore:
                continue
            va, vb = a.get(field, "<absent>"), b.get(field, "<absent>")
            if va == vb:
                continue
            if isinstance(va, dict) and isinstance(vb, dict):
                for k in sorted(set(va) | set(vb)):
                    xa, xb = va.get(k, "<absent>"), vb.get(k, "<absent>")
                    if xa != xb:
                        out.append("%r: %s[%s]: %s=%s %s=%s"
                                   % (path, field, k, ref_name, _short(xa), got_name, _short(xb)))
            elif field == "entries" and isinstance(va, list) and isinstance(vb, list):
                sa, sb = set(va), set(vb)
                na = {e[0] for e in va}
                nb = {e[0] for e in vb}
                for n in sorted(na - nb)[:20]:
                    out.append("%r: entry %r missing on %s" % (path, n, got_name))
                for n in sorted(nb - na)[:20]:
                    out.append("%r: entry %r only on %s" % (path, n, got_name))
                for e in sorted(sb - sa)[:20]:
                    if e[0] in na:
                        other = [x for x in va if x[0] == e[0]][0]
                        out.append("%r: entry %r (d_ino, d_type): %s=%s %s=%s"
                                   % (path, e[0], ref_name, other[1:], got_name, e[1:]))
            else:
                out.append("%r: %s: %s=%s %s=%s"
                           % (path, field, ref_name, _short(va, field=field),
                              got_name, _short(vb, field=field)))
    return out


def format_diffs(diffs, limit=300):
    """A count of differences per field, then the first limit lines."""
    counts = {}
    for line in diffs:
        rest = line.split("': ", 1)[-1]
        field = re.split(r"[:\[ ]", rest, 1)[0]
        counts[field] = counts.get(field, 0) + 1
    summary = ", ".join("%s: %d" % kv for kv in sorted(counts.items(), key=lambda kv: -kv[1]))
    more = "" if len(diffs) <= limit else "\n... and %d more" % (len(diffs) - limit)
    return "%d differences (by field: %s):\n%s%s" % (
        len(diffs), summary, "\n".join(diffs[:limit]), more)


def assert_same(ref, got, what, *, ignore=(), limit=300, **names):
    diffs = diff_snapshots(ref, got, ignore=ignore, **names)
    if diffs:
        raise AssertionError("%s: %s" % (what, format_diffs(diffs, limit)))


# --------------------------------------------------------------------------
# Running code as another user
# --------------------------------------------------------------------------

def run_as(uid, gid, code, args=(), timeout=60):
    """Run Python code as uid/gid (no supplementary groups); returns the JSON
    the code printed on its last stdout line."""
    cmd = ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups",
           PYTHON, "-c", code] + [str(a) for a in args]
    cp = run(cmd, timeout=timeout)
    return json.loads(cp.stdout.strip().splitlines()[-1])
