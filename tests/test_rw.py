"""Scenario tests for read-write fuse4fs.

Every test runs a workload on a fuse4fs read-write mount and checks it
against an oracle: `e2fsck -fn` after unmount, dumpe2fs/debugfs for on-disk
state, and the in-kernel ext4 driver, which mounts the image afterwards and
must see the tree fuse4fs showed, or runs the same operations on an
identical image so that results and errno values can be compared.

Sizes are kept small so that the module runs in a few minutes on two cores.
"""

import ctypes
import errno
import hashlib
import json
import mmap
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import f4util as U  # noqa: E402
from f4util import (MiB, PYTHON, e2fsck, fuse4fs_mount, kernel_mount,  # noqa: E402
                    run, snapshot, assert_same)

pytestmark = pytest.mark.usefixtures("fuse4fs_bin", "require_root")

USER = 1000          # an unprivileged user (need not exist in /etc/passwd)
USER2 = 1001
BLK = 4096


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def mkimg(path, size="64M", extra=()):
    """A fresh ext4 image with fixed identities (identical on every call
    with the same arguments)."""
    path = str(path)
    if os.path.exists(path):
        os.unlink(path)
    args = ["mkfs.ext4", "-F", "-q", "-U", U.FS_UUID,
            "-E", "root_owner=0:0,hash_seed=" + U.HASH_SEED,
            "-b", str(BLK), "-I", "256", "-O", "^orphan_file"]
    run(args + list(extra) + [path, size],
        env={"E2FSPROGS_FAKE_TIME": U.FAKE_TIME})
    return path


def copy_image(src, dst):
    run(["cp", "--sparse=always", str(src), str(dst)])
    return str(dst)


def rw_mount(image, opts=None, **kw):
    return fuse4fs_mount(str(image), opts=opts, ro=False, **kw)


def assert_fsck_clean(image, what=""):
    cp = e2fsck(str(image))
    assert cp.returncode == 0, ("e2fsck -fn %s %s: exit %d\n%s%s"
                                % (image, what, cp.returncode, cp.stdout, cp.stderr))


def superblock(image):
    """dumpe2fs -h as a dict of field -> value."""
    cp = run(["dumpe2fs", "-h", str(image)], ok_codes=(0, 1))
    out = {}
    for line in cp.stdout.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def loops_backing(image):
    """Loop devices whose backing file is image."""
    cp = run(["losetup", "-j", os.path.realpath(str(image))], check=False)
    return [l.split(":", 1)[0] for l in cp.stdout.splitlines() if l.strip()]


def _loop_gone_or_holders(image, loops, timeout=5.0):
    """Wait a little for autoclear loop devices over image to go away; what
    is left, with the processes that hold it open."""
    if wait_for(lambda: not loops_backing(image), timeout=timeout):
        return []
    left = loops_backing(image)
    out = []
    for dev in left:
        holders = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                for fd in os.listdir("/proc/%s/fd" % pid):
                    if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == dev:
                        with open("/proc/%s/comm" % pid) as f:
                            holders.append("%s(%s)" % (f.read().strip(), pid))
            except OSError:
                continue
        out.append("%s held by %s" % (dev, holders or "nobody"))
    return out


def kernel_snapshot(image, **kw):
    with kernel_mount(str(image), ro=True) as k:
        return snapshot(k, **kw)


def errname(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def attempt(fn, *a, **kw):
    """'ok' (or the function's result if it is a str/int) or the errno name."""
    try:
        r = fn(*a, **kw)
    except OSError as e:
        return errname(e)
    return "ok" if r is None or not isinstance(r, (int, str)) else r


_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)
    finally:
        os.close(fd)


RENAME_NOREPLACE = 1


def renameat2(old, new, flags):
    r = _libc.renameat2(U.AT_FDCWD, os.fsencode(old), U.AT_FDCWD, os.fsencode(new),
                        ctypes.c_uint(flags))
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old)


AT_SYMLINK_FOLLOW = 0x400


def link_fd(fd, dst):
    """linkat(/proc/self/fd/N, dst, AT_SYMLINK_FOLLOW): give an open file a
    name (os.link() would link the /proc symlink itself)."""
    r = _libc.linkat(U.AT_FDCWD, os.fsencode("/proc/self/fd/%d" % fd), U.AT_FDCWD,
                     os.fsencode(dst), AT_SYMLINK_FOLLOW)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), dst)


def wait_for(pred, timeout=10.0, step=0.05):
    """Poll pred() until it is true (returns its last value)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


def bfree(mnt):
    return os.statvfs(mnt).f_bfree


def user_dir(path, uid=USER, mode=0o755):
    os.mkdir(path, mode)
    os.chown(path, uid, uid)
    return path


def rand_bytes(rng, n):
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def tree_digest(root):
    """{relpath: sha256} of the regular files below root, and the set of
    directories, read through whatever driver serves root."""
    files, dirs = {}, set()
    for dp, dns, fns in os.walk(root):
        rel = os.path.relpath(dp, root)
        dirs.add(rel)
        for n in fns:
            p = os.path.join(dp, n)
            if os.path.islink(p):
                files[os.path.join(rel, n)] = "->" + os.readlink(p)
            else:
                files[os.path.join(rel, n)] = U.sha256_file(p)
    return files, dirs


# --------------------------------------------------------------------------
# 1. Unmount means done
# --------------------------------------------------------------------------

CYCLES = 30


def _cycle_workload(mnt, i, model, rng):
    """One change per cycle, applied both to the mount and to model
    ({relpath: bytes} for files, None for directories)."""
    files = sorted(k for k, v in model.items() if v is not None)
    kind = i % 5
    if kind == 0 or not files:
        name = "f%02d" % i
        data = rand_bytes(rng, rng.randrange(0, 70000))
        with open(os.path.join(mnt, name), "wb") as f:
            f.write(data)
        model[name] = data
    elif kind == 1:
        name = rng.choice(files)
        extra = rand_bytes(rng, rng.randrange(1, 9000))
        with open(os.path.join(mnt, name), "ab") as f:
            f.write(extra)
        model[name] += extra
    elif kind == 2:
        d = "d%02d" % i
        os.mkdir(os.path.join(mnt, d))
        model[d] = None
        name = rng.choice(files)
        new = os.path.join(d, os.path.basename(name) + "-moved")
        os.rename(os.path.join(mnt, name), os.path.join(mnt, new))
        model[new] = model.pop(name)
    elif kind == 3:
        name = rng.choice(files)
        os.unlink(os.path.join(mnt, name))
        del model[name]
        name = "g%02d" % i
        data = rand_bytes(rng, 5000)
        with open(os.path.join(mnt, name), "wb") as f:
            f.write(data)
        model[name] = data
    else:
        name = rng.choice(files)
        data = bytearray(model[name])
        off = rng.randrange(0, len(data) + 1)
        patch = rand_bytes(rng, rng.randrange(1, 5000))
        fd = os.open(os.path.join(mnt, name), os.O_WRONLY)
        try:
            os.pwrite(fd, patch, off)
        finally:
            os.close(fd)
        data[off:off + len(patch)] = patch
        model[name] = bytes(data)


def _check_model(root, model, what):
    files, dirs = tree_digest(root)
    files = {k: v for k, v in files.items() if not k.startswith("lost+found")}
    dirs = {d for d in dirs if d not in (".", "lost+found")}
    want_files = {os.path.normpath(k): hashlib.sha256(v).hexdigest()
                  for k, v in model.items() if v is not None}
    want_dirs = {k for k, v in model.items() if v is None}
    want_dirs |= {os.path.dirname(k) for k in want_files if os.path.dirname(k)}
    files = {os.path.normpath(k): v for k, v in files.items()}
    assert files == want_files, "%s: file contents differ from the model" % what
    assert dirs == want_dirs, "%s: directories differ: %s vs %s" % (what, dirs, want_dirs)


@pytest.mark.parametrize("cache", ["direct", "writeback_cache"])
def test_unmount_means_done(tmp_path, cache):
    """Each umount of a read-write mount returns only once everything is on
    disk and the filesystem is marked clean: e2fsck and dumpe2fs run at once
    (without waiting for the server to exit) find a clean filesystem whose
    mount count went up by one, and the loop device is gone.  With
    -o writeback_cache, the kernel's dirty pages are part of "everything"."""
    img = mkimg(tmp_path / "cycles.img", "64M")
    base = int(superblock(img)["Mount count"])
    rng = random.Random(1)
    model = {}
    last_snap = None
    cycles = CYCLES if cache == "direct" else CYCLES // 3
    opts = [cache] if cache != "direct" else []
    for i in range(cycles):
        with rw_mount(img, opts) as h:
            mnt = str(h)
            ent = U.mount_entry(mnt)
            assert ent["fstype"].startswith("fuseblk"), \
                "a read-write mount by root should be fuseblk: %s" % ent
            loop = ent["source"]
            assert re.match(r"/dev/loop\d+$", loop), ent
            assert loop in loops_backing(img), \
                "%s is not a loop device over %s: %s" % (loop, img, loops_backing(img))
            _check_model(mnt, model, "cycle %d, fuse4fs before the change" % i)
            _cycle_workload(mnt, i, model, rng)
            if i == cycles - 1:
                last_snap = snapshot(mnt)
            cp = subprocess.run(["umount", mnt], capture_output=True, text=True)
            assert cp.returncode == 0, "umount failed: %s" % cp.stderr
            # Immediately: no waiting for the server process.
            fsck = e2fsck(img)
            sb = superblock(img)
            left = loops_backing(img)
            server_alive = h.proc.poll() is None
            if left:
                # Anyone on the machine that has the device open (losetup,
                # blkid, udev) delays the autoclear until they close it.
                left = _loop_gone_or_holders(img, left)
            assert fsck.returncode == 0, (
                "cycle %d: e2fsck -fn right after umount (server still running: %s): "
                "exit %d\n%s" % (i, server_alive, fsck.returncode, fsck.stdout))
            assert sb.get("Filesystem state") == "clean", (
                "cycle %d: state right after umount is %r (server still running: %s)"
                % (i, sb.get("Filesystem state"), server_alive))
            assert int(sb["Mount count"]) == base + i + 1, (
                "cycle %d: mount count %s, expected %d"
                % (i, sb["Mount count"], base + i + 1))
            assert left == [], "cycle %d: loop device(s) still attached to the image " \
                "after umount: %s" % (i, left)
    assert_fsck_clean(img)
    with kernel_mount(img, ro=True) as k:
        _check_model(k, model, "kernel after %d cycles" % cycles)
        assert_same(snapshot(k), last_snap, "kernel vs fuse4fs after the last cycle")


def test_nosync_unmount_clean_after_exit(tmp_path):
    """With -o nosync_unmount the mount is a plain fuse mount and umount may
    return before the server has written everything back; once the server
    has exited the filesystem is clean all the same."""
    img = mkimg(tmp_path / "nosync.img", "64M")
    base = int(superblock(img)["Mount count"])
    rng = random.Random(2)
    model = {}
    for i in range(3):
        with rw_mount(img, ["nosync_unmount"]) as h:
            mnt = str(h)
            ent = U.mount_entry(mnt)
            assert ent["fstype"].startswith("fuse.") or ent["fstype"] == "fuse", ent
            assert loops_backing(img) == [], "nosync_unmount should not use a loop device"
            for j in range(5):
                _cycle_workload(mnt, i * 5 + j, model, rng)
            cp = subprocess.run(["umount", mnt], capture_output=True, text=True)
            assert cp.returncode == 0, "umount failed: %s" % cp.stderr
            rc = h.proc.wait(timeout=30)
            assert rc == 0, "server exited with %s" % rc
            assert_fsck_clean(img, "after the server exited (cycle %d)" % i)
            sb = superblock(img)
            assert sb.get("Filesystem state") == "clean", sb.get("Filesystem state")
            assert int(sb["Mount count"]) == base + i + 1
    with kernel_mount(img, ro=True) as k:
        _check_model(k, model, "kernel after nosync_unmount mounts")


# --------------------------------------------------------------------------
# 2. overlayfs with its upper layer on fuse4fs
# --------------------------------------------------------------------------

def _lower_tree(root):
    os.makedirs(root)
    layout = {
        "keep": b"unchanged lower file\n",
        "modify": b"lower contents to be appended to\n",
        "delete": b"to be deleted\n",
        "rename-me": b"a lower file that is renamed\n",
        "dir-rename/inner": b"inside a lower dir that is renamed\n",
        "dir-rename/sub/deeper": b"deeper\n",
        "dir-delete/a": b"a\n",
        "dir-delete/b": b"b\n",
        "dir-modify/x": b"x\n",
        "dir-modify/y": b"y\n",
        "dir-replace/old": b"replaced by an opaque dir\n",
    }
    for rel, data in layout.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    os.mkdir(os.path.join(root, "empty-lower-dir"))
    os.symlink("keep", os.path.join(root, "link-to-keep"))
    return layout


def _is_whiteout(path):
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _trusted_overlay_xattrs(path):
    return {n: os.getxattr(path, n, follow_symlinks=False)
            for n in os.listxattr(path, follow_symlinks=False)
            if n.startswith("trusted.overlay.")}


def _overlay_view(root):
    """{relpath: bytes | 'dir' | '->target'} of a merged view."""
    out = {}
    for dp, dns, fns in os.walk(root):
        rel = os.path.relpath(dp, root)
        for n in dns:
            p = os.path.join(dp, n)
            r = os.path.normpath(os.path.join(rel, n))
            out[r] = "->" + os.readlink(p) if os.path.islink(p) else "dir"
        for n in fns:
            p = os.path.join(dp, n)
            r = os.path.normpath(os.path.join(rel, n))
            if os.path.islink(p):
                out[r] = "->" + os.readlink(p)
            else:
                with open(p, "rb") as f:
                    out[r] = f.read()
    return out


RENAME_EXCHANGE, RENAME_WHITEOUT = 2, 4


def _whiteout_scenario(mnt):
    """What overlayfs asks of its upper filesystem, done by hand."""
    P = lambda *a: os.path.join(mnt, *a)
    os.mkdir(P("w"))
    with open(P("w", "a"), "w") as f:
        f.write("a\n")
    with open(P("w", "b"), "w") as f:
        f.write("b\n")
    r = {}
    r["whiteout-rename"] = attempt(renameat2, P("w", "a"), P("w", "a2"), RENAME_WHITEOUT)
    st = os.lstat(P("w", "a"))
    r["whiteout"] = "%o %d:%d rdev=%d nlink=%d size=%d" % (
        st.st_mode, st.st_uid, st.st_gid, st.st_rdev, st.st_nlink, st.st_size)
    r["whiteout-over-existing"] = attempt(renameat2, P("w", "a2"), P("w", "b"),
                                          RENAME_WHITEOUT)
    r["exchange"] = attempt(renameat2, P("w", "a"), P("w", "b"), RENAME_EXCHANGE)
    r["after"] = sorted((n, "%o" % os.lstat(P("w", n)).st_mode) for n in os.listdir(P("w")))
    r["mknod-whiteout"] = attempt(os.mknod, P("w", "m"), stat.S_IFCHR | 0, os.makedev(0, 0))
    r["trusted-xattr"] = attempt(os.setxattr, P("w"), "trusted.overlay.opaque", b"y")
    r["trusted-get"] = attempt(lambda: os.getxattr(P("w"), "trusted.overlay.opaque").decode())
    fd = os.open(P("w"), os.O_TMPFILE | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"tmp")
        os.setxattr(fd, "trusted.overlay.origin", b"o")
        r["tmpfile-link"] = attempt(link_fd, fd, P("w", "from-tmpfile"))
    finally:
        os.close(fd)
    r["tmpfile-xattr"] = os.getxattr(P("w", "from-tmpfile"), "trusted.overlay.origin").decode()
    return r


def test_rename_whiteout_like_ext4(tmp_path):
    """RENAME_WHITEOUT, RENAME_EXCHANGE, 0:0 device nodes, trusted.*
    xattrs and O_TMPFILE (what overlayfs needs from an upper layer) behave
    as on ext4."""
    a = mkimg(tmp_path / "wh-f4.img", "32M")
    b = copy_image(a, tmp_path / "wh-k.img")
    with rw_mount(a) as h:
        got = _whiteout_scenario(str(h))
        fsnap = snapshot(str(h))
    with kernel_mount(b, ro=False) as k:
        ref = _whiteout_scenario(k)
    assert_fsck_clean(a)
    assert got == ref, "fuse4fs %s\nkernel  %s" % (got, ref)
    assert_same(kernel_snapshot(a), fsnap, "kernel vs fuse4fs after whiteouts")


@pytest.fixture
def overlay_mounts():
    made = []

    def mount(lower, upper, work, mnt):
        run(["mount", "-t", "overlay", "overlay", "-o",
             "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, upper, work), mnt])
        made.append(mnt)
        return mnt

    yield mount
    for m in reversed(made):
        U.umount(m)


def test_overlayfs_upper_on_fuse4fs(tmp_path, overlay_mounts):
    """overlayfs with upper and work directories on fuse4fs: copy-up,
    whiteouts (RENAME_WHITEOUT, mknod 0:0), opaque directories, renames of
    lower files and directories, all with trusted.overlay.* xattrs; then
    the kernel's ext4 sees the upper layer fuse4fs wrote, and an overlay
    over that kernel mount shows the same merged view."""
    src = tmp_path / "lower-src"
    _lower_tree(str(src))
    lower_img = str(tmp_path / "lower.img")
    run(["mkfs.ext4", "-F", "-q", "-b", "4096", "-d", str(src), lower_img, "16M"])
    upper_img = mkimg(tmp_path / "upper.img", "64M")
    ov = U.make_public_dir("f4mp-ovl-")
    try:
        with kernel_mount(lower_img, ro=True) as lower:
            expected = _overlay_view(lower)
            with rw_mount(upper_img) as h:
                mnt = str(h)
                upper = os.path.join(mnt, "upper")
                work = os.path.join(mnt, "work")
                os.mkdir(upper)
                os.mkdir(work)
                overlay_mounts(lower, upper, work, ov)
                assert _overlay_view(ov) == expected, "fresh overlay differs from lower"
                P = lambda *a: os.path.join(ov, *a)

                # Create, modify (copy-up), delete (whiteouts).
                with open(P("new-file"), "wb") as f:
                    f.write(b"created through the overlay\n")
                expected["new-file"] = b"created through the overlay\n"
                with open(P("modify"), "ab") as f:
                    f.write(b"appended\n")
                expected["modify"] += b"appended\n"
                with open(P("dir-modify", "x"), "wb") as f:
                    f.write(b"rewritten x\n")
                expected["dir-modify/x"] = b"rewritten x\n"
                os.unlink(P("delete"))
                del expected["delete"]
                os.unlink(P("dir-modify", "y"))
                del expected["dir-modify/y"]
                shutil.rmtree(P("dir-delete"))
                for k in [k for k in expected if k == "dir-delete" or k.startswith("dir-delete/")]:
                    del expected[k]
                os.rmdir(P("empty-lower-dir"))
                del expected["empty-lower-dir"]
                # Rename a lower file (copy-up, then rename with a whiteout).
                os.rename(P("rename-me"), P("renamed"))
                expected["renamed"] = expected.pop("rename-me")
                # Rename a lower dir: a redirect, or EXDEV and a copy as mv does.
                try:
                    os.rename(P("dir-rename"), P("dir-renamed"))
                    dir_rename = "redirect"
                except OSError as e:
                    assert e.errno == errno.EXDEV, "rename of a lower dir: %s" % e
                    shutil.copytree(P("dir-rename"), P("dir-renamed"), symlinks=True)
                    shutil.rmtree(P("dir-rename"))
                    dir_rename = "exdev"
                for k in [k for k in expected if k == "dir-rename" or k.startswith("dir-rename/")]:
                    expected["dir-renamed" + k[len("dir-rename"):]] = expected.pop(k)
                # Replace a lower dir by a new (opaque) one.
                shutil.rmtree(P("dir-replace"))
                os.mkdir(P("dir-replace"))
                with open(P("dir-replace", "new"), "wb") as f:
                    f.write(b"in the opaque dir\n")
                del expected["dir-replace/old"]
                expected["dir-replace/new"] = b"in the opaque dir\n"
                # mkdir/rmdir of upper-only dirs, a file replaced by a dir.
                os.makedirs(P("nd", "sub"))
                with open(P("nd", "sub", "f"), "wb") as f:
                    f.write(b"f\n")
                os.mkdir(P("gone"))
                os.rmdir(P("gone"))
                expected.update({"nd": "dir", "nd/sub": "dir", "nd/sub/f": b"f\n"})
                os.unlink(P("keep"))
                os.mkdir(P("keep"))
                expected["keep"] = "dir"
                # A hard link to a copied-up file, and a chmod-only copy-up.
                os.link(P("modify"), P("modify-link"))
                expected["modify-link"] = expected["modify"]
                os.chmod(P("dir-modify"), 0o750)

                got = _overlay_view(ov)
                assert got == expected, "merged view after the changes:\n%s" % "\n".join(
                    "%s: %r vs expected %r" % (k, got.get(k), expected.get(k))
                    for k in sorted(set(got) | set(expected)) if got.get(k) != expected.get(k))
                U.umount(ov)
                assert not U.is_mounted(ov)

                # The upper layer as fuse4fs shows it.
                U_ = lambda *a: os.path.join(upper, *a)
                whiteouts = ["delete", "dir-modify/y", "dir-delete", "empty-lower-dir",
                             "rename-me"]
                if dir_rename == "exdev":
                    whiteouts.append("dir-rename")
                for w in whiteouts:
                    assert os.path.lexists(U_(w)), "no whiteout for %s in the upper layer" % w
                    assert _is_whiteout(U_(w)), "%s in the upper layer is not a whiteout: %s" % (
                        w, os.lstat(U_(w)))
                for rel in ("modify", "dir-modify/x", "renamed"):
                    st = os.lstat(U_(rel))
                    assert stat.S_ISREG(st.st_mode), rel
                    xa = _trusted_overlay_xattrs(U_(rel))
                    assert "trusted.overlay.origin" in xa, \
                        "copied-up %s has no trusted.overlay.origin: %s" % (rel, xa)
                with open(U_("modify"), "rb") as f:
                    assert f.read() == expected["modify"]
                assert os.lstat(U_("modify")).st_nlink == 2
                assert _trusted_overlay_xattrs(U_("dir-replace")).get(
                    "trusted.overlay.opaque") == b"y", "dir-replace is not opaque"
                if dir_rename == "redirect":
                    assert "trusted.overlay.redirect" in _trusted_overlay_xattrs(
                        U_("dir-renamed"))
                assert "trusted.overlay.origin" in _trusted_overlay_xattrs(U_("dir-modify")), \
                    "copied-up directory has no origin"
                upper_snap = snapshot(mnt)
            assert_fsck_clean(upper_img, "(upper layer)")
            assert_same(kernel_snapshot(upper_img), upper_snap,
                        "upper layer: kernel vs fuse4fs")
            # The kernel's ext4 as upper shows the same merged view.
            with kernel_mount(upper_img, ro=False) as kup:
                overlay_mounts(lower, os.path.join(kup, "upper"),
                               os.path.join(kup, "work"), ov)
                got = _overlay_view(ov)
                U.umount(ov)
            assert got == expected, "merged view over the kernel-mounted upper differs"
    finally:
        U.umount(ov)
        os.rmdir(ov)


# --------------------------------------------------------------------------
# 3. A large real tree in and out
# --------------------------------------------------------------------------

BIG_TREE = "/usr/include"


def _meta_walk(root):
    """{relpath: metadata} for everything below root (not following links),
    plus the hard-link groups as sets of relpaths."""
    out = {}
    by_ino = {}
    for dp, dns, fns in os.walk(root):
        for name in dns + fns + ([] if dp != root else ["."]):
            p = os.path.normpath(os.path.join(dp, name))
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            rec = {"mode": "%o" % st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
            if not stat.S_ISDIR(st.st_mode):
                rec["size"] = st.st_size
                rec["mtime"] = st.st_mtime_ns
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
            try:
                names = os.listxattr(p, follow_symlinks=False)
            except OSError as e:
                names = ["<%s>" % errname(e)]
            rec["xattrs"] = {n: os.getxattr(p, n, follow_symlinks=False)
                             for n in sorted(names) if not n.startswith("<")}
            out[rel] = rec
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                by_ino.setdefault(st.st_ino, set()).add(rel)
    # Directory mtimes last: reading does not change them, and cp -a sets
    # them after filling each directory.
    for rel in list(out):
        p = os.path.join(root, rel)
        if stat.S_ISDIR(os.lstat(p).st_mode):
            out[rel]["mtime"] = os.lstat(p).st_mtime_ns
    groups = sorted(sorted(g) for g in by_ino.values() if len(g) > 1)
    return out, groups


def _diff_meta(a, b, limit=40):
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append("%s: source %s copy %s" % (k, a.get(k), b.get(k)))
    return out[:limit]


@pytest.mark.slow
def test_copy_large_tree_in_and_out(tmp_path):
    """cp -a a large real tree (/usr/include) into a read-write mount,
    unmount, remount, and compare bytes (diff -r) and metadata (modes,
    owners, times, symlink targets, xattrs, hard links) with the source;
    the kernel driver then sees the same tree."""
    if not os.path.isdir(BIG_TREE):
        pytest.skip("%s is not there" % BIG_TREE)
    img = mkimg(tmp_path / "big.img", "512M", ["-N", "40000"])
    try:
        _copy_large_tree(img)
    finally:
        os.unlink(img)      # pytest keeps old temporary directories around


def _copy_large_tree(img):
    src_meta, src_groups = _meta_walk(BIG_TREE)
    with rw_mount(img) as h:
        run(["cp", "-a", BIG_TREE, os.path.join(str(h), "tree")], timeout=600)
    assert_fsck_clean(img, "after cp -a")
    with rw_mount(img) as h:
        copy = os.path.join(str(h), "tree")
        cp = run(["diff", "-r", "--no-dereference", BIG_TREE, copy], check=False, timeout=600)
        assert cp.returncode == 0, "diff -r source copy:\n%s" % U._tail(cp.stdout + cp.stderr)
        meta, groups = _meta_walk(copy)
        diffs = _diff_meta(src_meta, meta)
        assert not diffs, "metadata differs after the round trip:\n" + "\n".join(diffs)
        assert groups == src_groups, "hard links differ"
        fsnap = snapshot(str(h))
    assert_fsck_clean(img, "after the read-back")
    with kernel_mount(img, ro=True) as k:
        cp = run(["diff", "-r", "--no-dereference", BIG_TREE, os.path.join(k, "tree")],
                 check=False, timeout=600)
        assert cp.returncode == 0, "kernel: diff -r source copy:\n%s" % U._tail(cp.stdout)
        assert_same(snapshot(k), fsnap, "kernel vs fuse4fs after cp -a")


# --------------------------------------------------------------------------
# 4. Concurrency
# --------------------------------------------------------------------------

def _run_threads(targets):
    """Run callables in threads; re-raise the first exception."""
    errors = []

    def wrap(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(fn,)) for fn in targets]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    assert not any(t.is_alive() for t in ts), "worker threads hung"
    if errors:
        raise errors[0]


def _seq_writer(path, rng, size, chunk):
    data = rand_bytes(rng, size)

    def go():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for off in range(0, size, chunk):
                n = os.write(fd, data[off:off + chunk])
                assert n == len(data[off:off + chunk])
            os.fsync(fd)
        finally:
            os.close(fd)
    return go, lambda: data


def _random_writer(path, rng, size, count):
    model = bytearray(size)
    ops = []
    for _ in range(count):
        off = rng.randrange(0, size - 1)
        n = rng.randrange(1, min(70000, size - off) + 1)
        ops.append((off, rand_bytes(rng, n)))

    def go():
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)
            for i, (off, b) in enumerate(ops):
                assert os.pwrite(fd, b, off) == len(b)
                model[off:off + len(b)] = b
                if i % 16 == 0:
                    back = os.pread(fd, len(b), off)
                    assert back == b, "read back after pwrite at %d differs" % off
        finally:
            os.close(fd)
    return go, lambda: bytes(model)


def _appender(path, rng, count):
    pieces = [rand_bytes(rng, rng.randrange(1, 20000)) for _ in range(count)]

    def go():
        for i, p in enumerate(pieces):
            # Reopen now and then: appends through separate opens.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                assert os.write(fd, p) == len(p)
                if i % 8 == 0:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
    return go, lambda: b"".join(pieces)


def _reader(path, expected, rounds):
    want = hashlib.sha256(expected).hexdigest()

    def go():
        for _ in range(rounds):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                h = hashlib.sha256()
                while True:
                    b = os.read(fd, 65536)
                    if not b:
                        break
                    h.update(b)
            finally:
                os.close(fd)
            assert h.hexdigest() == want, "concurrent reader of %s saw other bytes" % path
    return go


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["direct", "writeback_cache"])
def test_concurrent_writers_and_readers(tmp_path, cache):
    """Threads writing different files at once (sequential, random pwrite,
    O_APPEND from many opens) while others read static files: every file
    holds exactly what was written, read back through the mount, after a
    remount, and through the kernel driver."""
    img = mkimg(tmp_path / "conc.img", "256M")
    rng = random.Random(4)
    static = {"static%d" % i: rand_bytes(rng, 3 * MiB + i * 4097) for i in range(2)}
    with rw_mount(img, [cache] if cache != "direct" else []) as h:
        mnt = str(h)
        for n, d in static.items():
            with open(os.path.join(mnt, n), "wb") as f:
                f.write(d)
        jobs, results = [], {}
        for i in range(3):
            go, res = _seq_writer(os.path.join(mnt, "seq%d" % i), rng,
                                  4 * MiB + rng.randrange(0, 10000), rng.choice([4096, 65536, 1 << 20]))
            jobs.append(go)
            results["seq%d" % i] = res
        for i in range(3):
            go, res = _random_writer(os.path.join(mnt, "rand%d" % i), rng, 3 * MiB, 150)
            jobs.append(go)
            results["rand%d" % i] = res
        for i in range(2):
            go, res = _appender(os.path.join(mnt, "app%d" % i), rng, 120)
            jobs.append(go)
            results["app%d" % i] = res
        os.mkdir(os.path.join(mnt, "many"))

        def creator():
            for i in range(300):
                with open(os.path.join(mnt, "many", "c%03d" % i), "wb") as f:
                    f.write(b"%d\n" % i)
                if i % 3 == 0:
                    os.unlink(os.path.join(mnt, "many", "c%03d" % (i // 2)))
        jobs.append(creator)
        for n, d in static.items():
            jobs.append(_reader(os.path.join(mnt, n), d, 4))
        _run_threads(jobs)
        expect = {n: r() for n, r in results.items()}
        expect.update(static)
        many = {"c%03d" % i for i in range(300)} - {"c%03d" % (i // 2) for i in range(0, 300, 3)}
        for n, d in expect.items():
            with open(os.path.join(mnt, n), "rb") as f:
                assert f.read() == d, "%s differs right after the writers finished" % n
        assert set(os.listdir(os.path.join(mnt, "many"))) == many
    assert_fsck_clean(img, "after the concurrent writers")
    with fuse4fs_mount(img, ro=True) as h:
        for n, d in expect.items():
            with open(os.path.join(str(h), n), "rb") as f:
                assert f.read() == d, "%s differs after remounting" % n
        fsnap = snapshot(str(h))
    with kernel_mount(img, ro=True) as k:
        for n, d in expect.items():
            with open(os.path.join(k, n), "rb") as f:
                assert f.read() == d, "%s differs on the kernel driver" % n
        assert_same(snapshot(k), fsnap, "kernel vs fuse4fs after concurrent writes")


def _task_runtimes(pid):
    """{tid: nanoseconds on CPU} of every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def test_parallel_readers_use_several_workers(tmp_path):
    """Readers of different files are served by several worker threads
    (threads=4): the server has its worker pool, more than one worker
    handles the READs, and every reader gets its own file's bytes."""
    img = mkimg(tmp_path / "par.img", "128M")
    rng = random.Random(5)
    files = {"p%d" % i: rand_bytes(rng, 6 * MiB + i) for i in range(4)}
    with rw_mount(img) as h:
        for n, d in files.items():
            with open(os.path.join(str(h), n), "wb") as f:
                f.write(d)
    with rw_mount(img, ["threads=4"]) as h:
        mnt = str(h)
        pid = h.proc.pid
        before = _task_runtimes(pid)
        # four workers and the thread that started them
        assert len(before) >= 5, "server has %d threads, expected 4 workers and more" % len(
            before)
        jobs = [_reader(os.path.join(mnt, n), d, 3) for n, d in files.items()]
        _run_threads(jobs)
        after = _task_runtimes(pid)
        busy = [t for t in after if after[t] > before.get(t, 0)]
        assert len(busy) >= 2, ("only %d server thread(s) ran while 4 readers read "
                                "different files: %s -> %s" % (len(busy), before, after))
    assert_fsck_clean(img)


def _extents(image, name):
    """(leaf extents, tree depth) of /name, from debugfs on the image."""
    cp = run(["debugfs", "-R", "ex /" + name, str(image)])
    count = depth = 0
    for line in cp.stdout.splitlines():
        m = re.match(r"\s*(\d+)/\s*(\d+)\s+\d+/\s*\d+", line)
        if m:
            depth = int(m.group(2))
            count += m.group(1) == m.group(2)
    return count, depth


def _lockstep_appenders(mnt, files, chunk):
    """Writers that append to their own file in turns: every writer writes
    its next chunk, then all wait for each other, so that their allocations
    alternate as unluckily as possible."""
    rounds = max(len(d) for d in files.values()) // chunk
    barrier = threading.Barrier(len(files), timeout=120)

    def writer(name, data):
        def go():
            fd = os.open(os.path.join(mnt, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for i in range(rounds):
                    piece = data[i * chunk:(i + 1) * chunk]
                    assert os.write(fd, piece) == len(piece)
                    barrier.wait()
                os.fsync(fd)
            finally:
                os.close(fd)
        return go
    _run_threads([writer(n, d) for n, d in files.items()])


# The kernel's ext4 gives each of these files one or two extents (delayed
# allocation and mballoc's per-inode preallocation), and up to four when
# fio writes 32 MiB files the same way; four extents still fit in the
# inode, so that reading needs no extent leaf block.
APPEND_EXTENTS_MAX = 4


def test_concurrent_appenders_get_few_extents(tmp_path):
    """Four writers appending 1 MiB at a time to their own files in turns
    do not interleave their blocks: each file ends up in a few extents held
    in the inode (debugfs), with no block allocated beyond its data, the
    bytes as written and e2fsck clean."""
    img = mkimg(tmp_path / "app.img", "256M")
    rng = random.Random(6)
    files = {"a%d" % i: rand_bytes(rng, 16 * MiB) for i in range(4)}
    with rw_mount(img) as h:
        mnt = str(h)
        _lockstep_appenders(mnt, files, MiB)
        for n, d in files.items():
            p = os.path.join(mnt, n)
            assert os.stat(p).st_blocks * 512 == len(d), (
                "%s: st_blocks %d for %d bytes of data" % (n, os.stat(p).st_blocks, len(d)))
            with open(p, "rb") as f:
                assert f.read() == d, "%s differs" % n
    assert_fsck_clean(img, "after the concurrent appenders")
    for n in files:
        count, depth = _extents(img, n)
        assert count <= APPEND_EXTENTS_MAX and depth == 0, (
            "%s: %d extents, tree depth %d; expected at most %d in the inode"
            % (n, count, depth, APPEND_EXTENTS_MAX))


# --------------------------------------------------------------------------
# 5. ENOSPC
# --------------------------------------------------------------------------

FILL_CODE = r'''
import errno, json, os, sys
d, chunk, per_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = b"\xa5" * chunk
E = lambda e: errno.errorcode.get(e.errno, str(e.errno))
files = total = 0
where = None
for i in range(100000):
    p = os.path.join(d, "f%05d" % i)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        where = ["open", E(e)]
        break
    files += 1
    written = 0
    while written < per_file:
        try:
            n = os.write(fd, buf)
        except OSError as e:
            where = ["write", E(e)]
            break
        written += n
        total += n
    if where is None:
        try:
            os.fsync(fd)
        except OSError as e:
            where = ["fsync", E(e)]
    try:
        os.close(fd)
    except OSError as e:
        where = where or ["close", E(e)]
    if where:
        break
os.sync()
v = os.statvfs(d)
print(json.dumps({"files": files, "bytes": total, "where": where,
                  "bfree": v.f_bfree, "bavail": v.f_bavail, "blocks": v.f_blocks}))
'''

ENOSPC_TOLERANCE = 48       # blocks; the root reserve is 16 times that


def _fill(d, uid=0, chunk=65536, per_file=MiB):
    args = [d, chunk, per_file]
    if uid == 0:
        cp = run([PYTHON, "-c", FILL_CODE] + [str(a) for a in args], timeout=300)
        return json.loads(cp.stdout.strip().splitlines()[-1])
    return U.run_as(uid, uid, FILL_CODE, args, timeout=300)


def _enospc_scenario(mnt):
    """Fill as root, empty, fill as a user, empty, write again.  Returns
    the statvfs numbers at each step."""
    res = {}
    res["start"] = U.statvfs_record(mnt)
    root_dir = os.path.join(mnt, "root-fill")
    os.mkdir(root_dir)
    res["root"] = _fill(root_dir)
    shutil.rmtree(root_dir)
    os.sync()
    res["after-root-delete"] = U.statvfs_record(mnt)
    udir = user_dir(os.path.join(mnt, "user-fill"))
    res["user"] = _fill(udir, uid=USER)
    shutil.rmtree(udir)
    os.sync()
    res["after-user-delete"] = U.statvfs_record(mnt)
    data = bytes(range(256)) * 4096 * 8
    with open(os.path.join(mnt, "again"), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    with open(os.path.join(mnt, "again"), "rb") as f:
        res["again-ok"] = f.read() == data
    return res


def test_large_and_small_writes_stay_coherent(tmp_path):
    """Large block-aligned writes go around the loop device's page cache
    (O_DIRECT), small ones through it: overwriting blocks that were just
    read or written the other way must always read back the newest bytes,
    on this mount, after a remount, and through the kernel's ext4."""
    img = mkimg(tmp_path / "coh.img", "64M")
    rng = random.Random(5)
    size = 8 * MiB
    model = bytearray(size)
    with rw_mount(img) as h:
        p = os.path.join(str(h), "f")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for step in range(200):
                if rng.random() < 0.4:
                    off = rng.randrange(0, size // MiB) * MiB
                    n = MiB * rng.choice((1, 1, 2)) if off + 2 * MiB <= size else MiB
                else:
                    off = rng.randrange(0, size - 8192)
                    n = rng.randrange(1, 8192)
                data = rng.randbytes(n)
                assert os.pwrite(fd, data, off) == n
                model[off:off + n] = data
                # Read a piece back at once, sometimes the whole file.
                if rng.random() < 0.2:
                    got = os.pread(fd, size, 0)
                    assert got == bytes(model[:len(got)]), "step %d: file differs" % step
                else:
                    a = rng.randrange(0, size - 4096)
                    assert os.pread(fd, 4096, a) == bytes(model[a:a + 4096]), \
                        "step %d: bytes at %d differ" % (step, a)
        finally:
            os.close(fd)
    assert_fsck_clean(img)
    with rw_mount(img) as h:
        with open(os.path.join(str(h), "f"), "rb") as f:
            assert f.read() == bytes(model), "after remount"
    with kernel_mount(img) as k:
        with open(os.path.join(k, "f"), "rb") as f:
            assert f.read() == bytes(model), "through the kernel's ext4"


def test_open_truncate_while_another_descriptor_writes(tmp_path):
    """open(O_TRUNC) of a file that another descriptor is writing must not
    stall either of them: both take the file's I/O lock and the
    filesystem's lock, and must take them in the same order."""
    img = mkimg(tmp_path / "trunc.img", "64M")
    with rw_mount(img) as h:
        p = os.path.join(str(h), "f")
        stop = time.monotonic() + 3
        counts = {"writes": 0, "truncs": 0}
        errors = []

        def writer():
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
                data = b"w" * MiB
                try:
                    while time.monotonic() < stop:
                        os.pwrite(fd, data, (counts["writes"] % 8) * MiB)
                        counts["writes"] += 1
                finally:
                    os.close(fd)
            except OSError as e:
                errors.append(e)

        def truncator():
            try:
                while time.monotonic() < stop:
                    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
                    counts["truncs"] += 1
            except OSError as e:
                errors.append(e)

        threads = [threading.Thread(target=t, daemon=True) for t in (writer, truncator)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), \
            "writer or O_TRUNC open stalled: %s" % counts
        assert not errors, errors
        assert counts["writes"] > 10 and counts["truncs"] > 10, counts
        size = os.stat(p).st_size
        assert size % MiB == 0 and size <= 8 * MiB
        with open(p, "rb") as f:
            data = f.read()
        # Each MiB was last written whole, or cut away by a truncation.
        for i in range(0, size, MiB):
            assert data[i:i + MiB] in (b"w" * MiB, bytes(MiB)), "MiB %d mixed" % (i // MiB)
    assert_fsck_clean(img)


def _direct_read(path, off, n):
    """n bytes at off read with O_DIRECT (off and n block-aligned): the
    request reaches the server, whatever the kernel's page cache holds."""
    buf = mmap.mmap(-1, max(n, 4096))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        got = os.preadv(fd, [memoryview(buf)[:n]], off)
        return bytes(buf[:got])
    finally:
        os.close(fd)
        buf.close()


def test_write_behind_queued_writes_are_seen_by_everything(tmp_path):
    """Large buffered writes are answered once queued (write-behind): a
    read that bypasses the kernel's cache, a truncation, a hole punch, a
    small overwrite, an unlink and the reuse of its blocks, issued right
    after, must all act as if the queued data were already on the disk."""
    img = mkimg(tmp_path / "wb.img", "128M")
    rng = random.Random(11)
    nchunks = 12
    model = bytearray()
    with rw_mount(img) as h:
        p = os.path.join(str(h), "f")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for step in range(120):
                off = rng.randrange(nchunks) * MiB
                data = rng.randbytes(MiB)
                assert os.pwrite(fd, data, off) == MiB
                if len(model) < off:
                    model.extend(bytes(off - len(model)))
                model[off:off + MiB] = data
                what = rng.choice(("read", "read", "truncate", "punch", "small",
                                   "unlink-reuse"))
                if what == "read":
                    a = rng.randrange(len(model) // BLK) * BLK
                    n = min(MiB, len(model) - a)
                    assert _direct_read(p, a, n) == bytes(model[a:a + n]), \
                        "step %d: O_DIRECT read at %d" % (step, a)
                elif what == "truncate":
                    size = rng.randrange(len(model) + 1)
                    os.ftruncate(fd, size)
                    del model[size:]
                elif what == "punch":
                    a = rng.randrange(len(model))
                    n = rng.randrange(1, 2 * MiB)
                    run(["fallocate", "--punch-hole", "--keep-size", "-o", str(a),
                         "-l", str(n), p])
                    end = min(a + n, len(model))
                    model[a:end] = bytes(end - a)
                elif what == "small":
                    a = rng.randrange(len(model))
                    data = rng.randbytes(rng.randrange(1, 5000))
                    assert os.pwrite(fd, data, a) == len(data)
                    if len(model) < a + len(data):
                        model.extend(bytes(a + len(data) - len(model)))
                    model[a:a + len(data)] = data
                else:
                    # Blocks freed while their writes may still be queued
                    # go to the next file; it must read only its own bytes.
                    q = os.path.join(str(h), "g")
                    with open(q, "wb") as g:
                        g.write(rng.randbytes(2 * MiB))
                    os.unlink(q)
                    fresh = rng.randbytes(2 * MiB)
                    with open(q, "wb") as g:
                        g.write(fresh)
                    assert _direct_read(q, 0, 2 * MiB) == fresh, "step %d: reuse" % step
                    os.unlink(q)
                assert os.fstat(fd).st_size == len(model), "step %d: size" % step
            os.fsync(fd)
        finally:
            os.close(fd)
        assert _direct_read(p, 0, (len(model) + BLK - 1) // BLK * BLK)[:len(model)] == \
            bytes(model)
        # Unmount with an unlinked file's writes still queued: its blocks
        # are freed only after they are written, before the filesystem
        # is closed.
        with open(os.path.join(str(h), "last"), "wb") as g:
            for _ in range(16):
                g.write(rng.randbytes(MiB))
            os.unlink(g.name)
    assert_fsck_clean(img)
    with kernel_mount(img) as k:
        with open(os.path.join(k, "f"), "rb") as f:
            assert f.read() == bytes(model), "through the kernel's ext4"


@pytest.mark.parametrize("value", ["1025", "-1", "lots"])
def test_write_behind_option_is_checked(tmp_path, value):
    """A write_behind= value outside 0..1024 MiB is refused before mounting,
    with a message naming the option."""
    img = mkimg(tmp_path / "opt.img", "16M")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cp = subprocess.run([os.environ["FUSE4FS"], "-f", img, str(mnt), "-o",
                         "write_behind=" + value], capture_output=True, text=True,
                        timeout=60)
    assert cp.returncode != 0 and "write_behind" in cp.stderr, cp
    assert not os.path.ismount(mnt)


def _write_until_error(path, mib, flags=0):
    """Write mib MiB in 1 MiB writes, fsync, close: how many writes
    succeeded, and the errno names of write / fsync / close (None: ok)."""
    res = {"writes": 0, "write": None, "fsync": None, "close": None}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    # Page-aligned, so that O_DIRECT requests are whole 1 MiB pieces.
    buf = mmap.mmap(-1, MiB)
    buf.write(os.urandom(MiB))
    for _ in range(mib):
        try:
            os.write(fd, buf)
        except OSError as e:
            res["write"] = errno.errorcode[e.errno]
            break
        res["writes"] += 1
    for op, fn in (("fsync", os.fsync), ("close", os.close)):
        try:
            fn(fd)
        except OSError as e:
            res[op] = errno.errorcode[e.errno]
    return res


def test_device_errors_are_reported_like_ext4(tmp_path):
    """The image's own filesystem runs out of space under it, so the device
    fails writes.  The kernel's ext4 accepts the writes into its cache and
    fails fsync(2); fuse4fs with its write-behind queue must do the same,
    and without the queue (write_behind=0), for O_DIRECT and O_DSYNC
    and on a sync mount, the failing write(2) itself reports it.  Never is the loss silent, and the server neither crashes
    nor hangs."""
    host = tmp_path / "host"
    host.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=24M", "tmpfs", str(host)])
    results = {}
    try:
        for name, opts, flags in (("kernel", None, 0), ("fuse4fs", None, 0),
                                  ("fuse4fs-sync", ["write_behind=0"], 0),
                                  ("fuse4fs-odirect", None, os.O_DIRECT),
                                  ("fuse4fs-dsync", None, os.O_DSYNC),
                                  ("fuse4fs-mount-sync", ["sync"], 0)):
            img = mkimg(host / "img", "128M")
            if name == "kernel":
                with kernel_mount(img, ro=False) as k:
                    results[name] = _write_until_error(os.path.join(k, "f"), 48)
            else:
                with rw_mount(img, opts, check_exit=False) as h:
                    results[name] = _write_until_error(os.path.join(str(h), "f"), 48,
                                                       flags)
                    # Logged before the fsync that reports it returns.
                    log = h.stderr()
                assert h.returncode is not None and h.returncode >= 0, \
                    "%s: server ended by signal %s" % (name, h.returncode)
                if name == "fuse4fs":
                    assert "failed: No space left on device" in log, log
            os.unlink(img)
    finally:
        run(["umount", str(host)], check=False)
    k, wb = results["kernel"], results["fuse4fs"]
    assert k["writes"] == 48 and k["fsync"] in ("ENOSPC", "EIO"), results
    assert (wb["writes"], wb["fsync"]) == (k["writes"], k["fsync"]), results
    # O_DIRECT writes are never queued.  O_DSYNC writes and those on a sync
    # mount are not either, and the kernel follows each with an FSYNC.
    for name in ("fuse4fs-sync", "fuse4fs-odirect", "fuse4fs-dsync",
                 "fuse4fs-mount-sync"):
        r = results[name]
        assert r["write"] in ("ENOSPC", "EIO") and r["writes"] < 48, (name, results)


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["direct", "writeback_cache"])
def test_enospc_root_and_user_like_ext4(tmp_path, cache):
    """Filling the filesystem stops with ENOSPC where ext4 stops: root may
    use the reserved blocks, an unprivileged user stops a reserve earlier;
    the free space at each stop point is close to the kernel's.  After
    deleting, space is back and writing works again; fsck is clean.  With
    -o writeback_cache the error may surface at fsync or close instead of
    write, but the stop points must be the same."""
    a = mkimg(tmp_path / "enospc-f4.img", "64M", ["-m", "5"])
    b = copy_image(a, tmp_path / "enospc-k.img")
    opts = ["allow_other"] + ([cache] if cache != "direct" else [])
    with rw_mount(a, opts) as h:
        got = _enospc_scenario(str(h))
    assert_fsck_clean(a, "(fuse4fs after ENOSPC)")
    with kernel_mount(b, ro=False) as k:
        ref = _enospc_scenario(k)
    assert_fsck_clean(b, "(kernel after ENOSPC)")
    report = json.dumps({"fuse4fs": got, "kernel": ref}, indent=1, sort_keys=True)
    for who in ("root", "user"):
        assert got[who]["where"] and got[who]["where"][1] == "ENOSPC", \
            "%s fill did not end in ENOSPC on fuse4fs:\n%s" % (who, report)
        assert ref[who]["where"] and ref[who]["where"][1] == "ENOSPC", report
        # With the writeback cache a whole writeback request (up to 1 MiB)
        # may be refused, so the fill may stop up to that much earlier;
        # it must never go further than ext4 lets the same user go.
        slack = MiB // BLK if cache != "direct" else 0
        lo, hi = ref[who]["bfree"] - ENOSPC_TOLERANCE, ref[who]["bfree"] + ENOSPC_TOLERANCE + slack
        assert lo <= got[who]["bfree"] <= hi, (
            "%s fill stopped with %d free blocks on fuse4fs, %d on ext4 (allowed %d..%d):\n%s"
            % (who, got[who]["bfree"], ref[who]["bfree"], lo, hi, report))
    assert got["user"]["bfree"] - got["root"]["bfree"] > 10 * ENOSPC_TOLERANCE, \
        "the user was not kept out of the root reserve:\n" + report
    for step in ("start", "after-root-delete", "after-user-delete"):
        assert got[step] == ref[step], "statvfs %s differs:\n%s" % (step, report)
    assert got["again-ok"], report


def test_enospc_with_large_writes_like_ext4(tmp_path):
    """1 MiB writes into a filling filesystem: the last one is short, as
    on ext4 (which writes what fits), so the fill stops with the same
    free space as ext4's, not up to a whole write earlier."""
    a = mkimg(tmp_path / "big-enospc-f4.img", "64M", ["-m", "5"])
    b = copy_image(a, tmp_path / "big-enospc-k.img")
    res = {}
    for who, ctx in (("fuse4fs", lambda: rw_mount(a)), ("kernel", lambda: kernel_mount(b, ro=False))):
        with ctx() as m:
            d = os.path.join(str(m), "fill")
            os.mkdir(d)
            res[who] = _fill(d, chunk=MiB, per_file=256 * MiB)
    assert_fsck_clean(a, "(fuse4fs after ENOSPC)")
    report = json.dumps(res, indent=1, sort_keys=True)
    for who in res:
        assert res[who]["where"] == ["write", "ENOSPC"], report
    got, ref = res["fuse4fs"]["bfree"], res["kernel"]["bfree"]
    assert ref - ENOSPC_TOLERANCE <= got <= ref + ENOSPC_TOLERANCE, (
        "fill with 1 MiB writes stopped with %d free blocks on fuse4fs, %d on ext4:\n%s"
        % (got, ref, report))


def _inode_fill(mnt):
    d = os.path.join(mnt, "inodes")
    os.mkdir(d)
    n = 0
    err = None
    while n < 100000:
        try:
            os.close(os.open(os.path.join(d, "i%05d" % n), os.O_CREAT | os.O_WRONLY, 0o644))
        except OSError as e:
            err = errname(e)
            break
        n += 1
    v = os.statvfs(mnt)
    res = {"created": n, "err": err, "ffree": v.f_ffree}
    for i in range(0, n, 2):
        os.unlink(os.path.join(d, "i%05d" % i))
    # An unlinked inode is freed once nothing holds it: on fuse4fs that is
    # when the kernel's FORGET for it arrives, a moment after unlink(2).
    expect = v.f_ffree + (n + 1) // 2
    wait_for(lambda: os.statvfs(mnt).f_ffree >= expect, timeout=5.0)
    res["ffree-after-delete"] = os.statvfs(mnt).f_ffree
    os.mkdir(os.path.join(d, "new-dir"))
    os.close(os.open(os.path.join(d, "new-dir", "x"), os.O_CREAT | os.O_WRONLY, 0o644))
    return res


def _last_block_in_file(img, name):
    """The file block of `name` mapped to the filesystem's last block, or
    None (from debugfs's extent listing of the unmounted image)."""
    last = int(superblock(img)["Block count"]) - 1
    cp = run(["debugfs", "-R", "ex " + name, str(img)], ok_codes=(0, 1))
    for m in re.finditer(r"^\s*\d+/\s*\d+\s+\d+/\s*\d+\s+(\d+)\s+-\s+(\d+)\s+(\d+)\s+-\s+(\d+)",
                         cp.stdout, re.M):
        lstart, _, pstart, pend = map(int, m.groups())
        if pstart <= last <= pend:
            return lstart + (last - pstart)
    return None


def test_freeing_the_filesystems_last_block(tmp_path):
    """A file that owns the filesystem's last block can have it punched,
    truncated away and freed by unlink (libext2fs's own punch cannot free
    that block): e2fsck clean after each step, and all the space back."""
    img = mkimg(tmp_path / "last.img", "16M")
    with rw_mount(img) as h:
        free0 = os.statvfs(str(h)).f_bfree
        # Leave the free blocks at the front, not at the end: a pad first,
        # then fill up, drop the pad, and append block by block, which
        # continues into the last blocks after the file's end.
        with open(os.path.join(str(h), "pad"), "wb") as f:
            f.write(b"p" * MiB)
        p = os.path.join(str(h), "fill")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            # A write that does not fit is refused whole, as on ext4: fill
            # with ever smaller ones.
            for chunk in (MiB, 64 * 1024, BLK):
                try:
                    while True:
                        os.write(fd, b"\xa5" * chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)
        full = os.statvfs(str(h)).f_bfree
        os.unlink(os.path.join(str(h), "pad"))
        # Its blocks come back once the kernel forgets the inode.
        deadline = time.monotonic() + 10
        while os.statvfs(str(h)).f_bfree < full + MiB // BLK:
            assert time.monotonic() < deadline, "the pad's blocks never came back"
            time.sleep(0.02)
        with open(p, "ab") as f:
            for _ in range(128):
                f.write(b"\x5a" * BLK)
                f.flush()
    assert_fsck_clean(img, "after filling")
    lblk = _last_block_in_file(img, "fill")
    assert lblk is not None, "the file did not get the filesystem's last block"
    steps = [
        ("punching it", lambda p: run(["fallocate", "--punch-hole", "-o",
                                       str(lblk * BLK), "-l", str(BLK), p])),
        ("truncating it away", lambda p: os.truncate(p, lblk * BLK)),
        ("unlinking the file", os.unlink),
    ]
    for what, act in steps:
        with rw_mount(img) as h:
            p = os.path.join(str(h), "fill")
            if _last_block_in_file(img, "fill") is None:
                # Take the block back: rewrite where it was mapped.
                fd = os.open(p, os.O_WRONLY)
                try:
                    assert os.pwrite(fd, b"\x77" * BLK, lblk * BLK) == BLK
                finally:
                    os.close(fd)
            act(p)
        assert_fsck_clean(img, "after " + what)
        if what != "unlinking the file":
            assert _last_block_in_file(img, "fill") is None, "%s left it mapped" % what
    with rw_mount(img) as h:
        free1 = U.statvfs_record(str(h))["f_bfree"]
    assert free1 == free0, "space not all back: %d free blocks, %d before" % (free1, free0)


def test_enospc_out_of_inodes(tmp_path):
    """Creating files until the inode table is full gives ENOSPC after as
    many files as on ext4; deleting some makes room again."""
    a = mkimg(tmp_path / "inodes-f4.img", "32M", ["-N", "200"])
    b = copy_image(a, tmp_path / "inodes-k.img")
    with rw_mount(a) as h:
        got = _inode_fill(str(h))
    assert_fsck_clean(a)
    with kernel_mount(b, ro=False) as k:
        ref = _inode_fill(k)
    assert_fsck_clean(b)
    assert got == ref, "fuse4fs %s, kernel %s" % (got, ref)


# --------------------------------------------------------------------------
# 6. Unlinked but open
# --------------------------------------------------------------------------

def _first_orphan(image):
    v = superblock(image).get("First orphan inode")
    return int(v) if v else 0


def test_unlinked_open_file_lives_on_orphan_list(tmp_path):
    """An open file that is unlinked keeps working through its descriptor,
    sits on the on-disk orphan list (seen by dumpe2fs after syncfs) while
    open, and its space is freed when it is closed."""
    img = mkimg(tmp_path / "orphan.img", "64M")
    rng = random.Random(6)
    data = bytearray(rand_bytes(rng, 3 * MiB + 123))
    with rw_mount(img) as h:
        mnt = str(h)
        syncfs(mnt)
        base = bfree(mnt)
        p = os.path.join(mnt, "doomed")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
            ino = os.fstat(fd).st_ino
            os.unlink(p)
            assert not os.path.exists(p)
            syncfs(mnt)
            assert _first_orphan(img) == ino, \
                "open unlinked inode %d is not on the on-disk orphan list: %s" % (
                    ino, superblock(img).get("First orphan inode"))
            st = os.fstat(fd)
            assert st.st_nlink == 0 and st.st_size == len(data), st
            # Keep using it.
            extra = rand_bytes(rng, MiB)
            os.pwrite(fd, extra, len(data) + 5000)
            data += bytes(5000) + extra
            patch = rand_bytes(rng, 7777)
            os.pwrite(fd, patch, 4096 * 3 + 1)
            data[4096 * 3 + 1:4096 * 3 + 1 + len(patch)] = patch
            os.fsync(fd)
            assert os.fstat(fd).st_size == len(data)
            os.lseek(fd, 0, os.SEEK_SET)
            back = b""
            while True:
                b = os.read(fd, MiB)
                if not b:
                    break
                back += b
            assert back == bytes(data), "an unlinked open file reads back other bytes"
            used = bfree(mnt)
            assert used < base - len(data) // BLK + 64, (base, used)
            syncfs(mnt)
            assert _first_orphan(img) == ino
        finally:
            os.close(fd)
        freed = wait_for(lambda: bfree(mnt) == base, timeout=10)
        assert freed, "space of the closed unlinked file was not freed: bfree %d, before %d" % (
            bfree(mnt), base)
        syncfs(mnt)
        assert _first_orphan(img) == 0, "orphan list not empty after the last close"
    assert_fsck_clean(img)
    assert _first_orphan(img) == 0


def _unlinked_handles(mnt):
    """Operations on descriptors of names that are gone; results only."""
    res = {}
    P = lambda n: os.path.join(mnt, n)
    with open(P("opath"), "w") as f:
        f.write("o_path target\n")
    fd = os.open(P("opath"), os.O_PATH)
    os.unlink(P("opath"))
    try:
        res["opath-fstat"] = attempt(lambda: (lambda st: "nlink=%d size=%d" % (
            st.st_nlink, st.st_size))(os.fstat(fd)))
    finally:
        os.close(fd)
    with open(P("rdonly"), "w") as f:
        f.write("read only\n")
    fd = os.open(P("rdonly"), os.O_RDONLY)
    os.unlink(P("rdonly"))
    try:
        res["rdonly-fstat"] = attempt(lambda: "nlink=%d" % os.fstat(fd).st_nlink)
        res["rdonly-read"] = attempt(lambda: os.pread(fd, 100, 0).decode())
        res["rdonly-fchmod"] = attempt(os.fchmod, fd, 0o600)
        res["rdonly-mode"] = "%o" % os.fstat(fd).st_mode
        res["rdonly-fsetxattr"] = attempt(os.setxattr, fd, "user.k", b"v")
        res["rdonly-fgetxattr"] = attempt(lambda: os.getxattr(fd, "user.k").decode())
        res["rdonly-ftruncate-ro"] = attempt(os.ftruncate, fd, 0)
    finally:
        os.close(fd)
    os.mkdir(P("gone-dir"))
    dfd = os.open(P("gone-dir"), os.O_RDONLY | os.O_DIRECTORY)
    os.rmdir(P("gone-dir"))
    try:
        res["dir-fstat"] = attempt(lambda: "nlink=%d" % os.fstat(dfd).st_nlink)
        res["dir-create-in"] = attempt(lambda: os.close(os.open(
            "x", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd)))
        res["dir-listdir"] = attempt(lambda: ",".join(os.listdir(dfd)))
    finally:
        os.close(dfd)
    syncfs(mnt)
    return res


def test_unlinked_handles_like_ext4(tmp_path):
    """fstat/read/fchmod/xattrs through descriptors whose names were
    removed (O_PATH, O_RDONLY, directories) behave as on ext4: the inode
    lives until the last reference goes, it is not stale."""
    a = mkimg(tmp_path / "uh-f4.img", "32M")
    b = copy_image(a, tmp_path / "uh-k.img")
    with rw_mount(a) as h:
        got = _unlinked_handles(str(h))
    with kernel_mount(b, ro=False) as k:
        ref = _unlinked_handles(k)
    assert_fsck_clean(a)
    assert got == ref, "fuse4fs %s\nkernel  %s" % (got, ref)


def test_orphan_after_kill_is_cleaned_by_next_mount(tmp_path):
    """kill -9 the server while a file is unlinked but open: e2fsck -fn then
    finds the orphan (a nonzero exit is expected), and the next read-write
    mount processes the orphan list, after which fsck is clean and the
    space is free again."""
    img = mkimg(tmp_path / "kill-orphan.img", "64M")
    free0 = int(superblock(img)["Free blocks"])
    with fuse4fs_mount(img, ro=False, opts=["nosync_unmount"], check_exit=False) as h:
        mnt = str(h)
        with open(os.path.join(mnt, "survivor"), "wb") as f:
            f.write(b"kept\n")
        p = os.path.join(mnt, "doomed")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"\x5a" * (2 * MiB))
            os.fsync(fd)
            ino = os.fstat(fd).st_ino
            os.unlink(p)
            # A plain fuse mount gets no SYNCFS from the kernel: fsync the
            # unlinked file to have the server write its metadata.
            os.fsync(fd)
            assert _first_orphan(img) == ino, superblock(img).get("First orphan inode")
            os.kill(h.proc.pid, signal.SIGKILL)
            h.proc.wait(timeout=30)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        run(["umount", "-l", mnt], check=False)
    assert h.returncode == -signal.SIGKILL
    fsck = e2fsck(img)
    assert fsck.returncode != 0, "e2fsck -fn found nothing after kill -9 with an orphan:\n" \
        + fsck.stdout
    assert _first_orphan(img) == ino
    with rw_mount(img) as h:
        mnt = str(h)
        assert sorted(os.listdir(mnt)) == ["lost+found", "survivor"]
        with open(os.path.join(mnt, "survivor"), "rb") as f:
            assert f.read() == b"kept\n"
    assert_fsck_clean(img, "after the orphan-processing mount")
    sb = superblock(img)
    assert _first_orphan(img) == 0
    # "survivor" holds one block: everything else is free again.
    assert int(sb["Free blocks"]) >= free0 - 2, (sb["Free blocks"], free0)


# --------------------------------------------------------------------------
# 7. O_TMPFILE
# --------------------------------------------------------------------------

def test_o_tmpfile_link_and_discard(tmp_path):
    """O_TMPFILE: an unnamed file is written, sits on the orphan list, and
    is linked into the namespace through /proc/self/fd; a second one is
    closed unlinked and its space is freed.  The kernel then sees the
    linked file with its bytes and nothing of the other."""
    img = mkimg(tmp_path / "tmpfile.img", "64M")
    rng = random.Random(7)
    data = rand_bytes(rng, MiB + 17)
    with rw_mount(img) as h:
        mnt = str(h)
        os.mkdir(os.path.join(mnt, "d"), 0o755)
        syncfs(mnt)
        base = bfree(mnt)
        fd = os.open(os.path.join(mnt, "d"), os.O_TMPFILE | os.O_RDWR, 0o640)
        try:
            os.write(fd, data)
            st = os.fstat(fd)
            assert st.st_nlink == 0 and stat.S_IMODE(st.st_mode) == 0o640, st
            assert sorted(os.listdir(os.path.join(mnt, "d"))) == []
            os.fsync(fd)
            syncfs(mnt)
            assert _first_orphan(img) == st.st_ino, "O_TMPFILE inode not on the orphan list"
            link_fd(fd, os.path.join(mnt, "d", "linked"))
            assert os.fstat(fd).st_nlink == 1
            os.write(fd, b"after link\n")
        finally:
            os.close(fd)
        syncfs(mnt)
        assert _first_orphan(img) == 0, "linked O_TMPFILE inode %d still on the orphan list (first orphan %d)" % (st.st_ino, _first_orphan(img))
        with open(os.path.join(mnt, "d", "linked"), "rb") as f:
            assert f.read() == data + b"after link\n"
        used = bfree(mnt)
        fd = os.open(os.path.join(mnt, "d"), os.O_TMPFILE | os.O_WRONLY, 0o600)
        try:
            os.write(fd, rand_bytes(rng, 2 * MiB))
            os.fsync(fd)
            assert bfree(mnt) <= used - 2 * MiB // BLK
        finally:
            os.close(fd)
        assert wait_for(lambda: bfree(mnt) == used), \
            "discarded O_TMPFILE space not freed: %d vs %d" % (bfree(mnt), used)
        # O_TMPFILE|O_EXCL can never be linked.
        fd = os.open(os.path.join(mnt, "d"), os.O_TMPFILE | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            err = attempt(link_fd, fd, os.path.join(mnt, "d", "no"))
        finally:
            os.close(fd)
        assert err == "ENOENT", "linking an O_TMPFILE|O_EXCL file: %s" % err
        # freed once the kernel forgets it, a moment after the close

        def orphans_gone():
            syncfs(mnt)
            return _first_orphan(img) == 0
        assert wait_for(orphans_gone, timeout=5.0), \
            "discarded O_TMPFILE still on the orphan list"
        assert base - bfree(mnt) >= (MiB + 17) // BLK
        fsnap = snapshot(mnt)
    assert_fsck_clean(img)
    assert_same(kernel_snapshot(img), fsnap, "kernel vs fuse4fs after O_TMPFILE")


# --------------------------------------------------------------------------
# 8. fsync durability across kill -9
# --------------------------------------------------------------------------

FSCK_NOISE = re.compile(r"^(e2fsck \d|Pass \d|.*: \d+/\d+ files|\s*$|"
                        r".*was not cleanly unmounted|Free (blocks|inodes) count wrong \(\d+, "
                        r"counted=\d+\)\.\s*(Fix\? yes)?$|\s*$)")


def _durable_workload(mnt, rng):
    """Files and names made durable with fsync; returns {relpath: bytes}."""
    durable = {}
    os.mkdir(os.path.join(mnt, "dir"))
    for i in range(6):
        rel = "dir/f%d" % i if i % 2 else "g%d" % i
        d = rand_bytes(rng, rng.randrange(1, 3 * MiB))
        fd = os.open(os.path.join(mnt, rel), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, d)
            if i == 3:
                # rewrite a range and extend through a hole
                patch = rand_bytes(rng, 5000)
                os.pwrite(fd, patch, 100)
                os.pwrite(fd, b"tail", len(d) + 300000)
                d = d[:100] + patch + d[100 + len(patch):] + bytes(300000) + b"tail"
            os.fsync(fd)
        finally:
            os.close(fd)
        durable[rel] = d
    # Names: fsync the directories that hold them.
    for dname in (mnt, os.path.join(mnt, "dir")):
        dfd = os.open(dname, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return durable


def _kill_server(h):
    os.kill(h.proc.pid, signal.SIGKILL)
    h.proc.wait(timeout=30)
    run(["umount", "-l", h.mnt], check=False)


def _check_durable(img, durable):
    with kernel_mount(img, ro=True) as k:
        for rel, d in durable.items():
            with open(os.path.join(k, rel), "rb") as f:
                got = f.read()
            assert got == d, "fsynced %s differs after kill -9 (%d vs %d bytes)" % (
                rel, len(got), len(d))


def test_fsync_survives_kill(tmp_path):
    """Data and names made durable with fsync survive kill -9 of the server
    (plain fuse mount): e2fsck finds nothing to repair beyond the summary
    counts of a filesystem that was not unmounted, and the kernel driver
    then reads every fsynced byte."""
    img = mkimg(tmp_path / "durable.img", "128M")
    with fuse4fs_mount(img, ro=False, opts=["nosync_unmount"], check_exit=False) as h:
        durable = _durable_workload(str(h), random.Random(8))
        _kill_server(h)
    assert h.returncode == -signal.SIGKILL
    assert superblock(img).get("Filesystem state") != "clean", \
        "a killed read-write mount left the filesystem marked clean"
    check = e2fsck(img)
    problems = [l for l in check.stdout.splitlines() if not FSCK_NOISE.match(l)]
    assert not problems, "e2fsck -fn after kill -9 following fsync (exit %d):\n%s" % (
        check.returncode, check.stdout)
    fix = run(["e2fsck", "-fy", img], check=False)
    assert fix.returncode in (0, 1), "e2fsck -fy exit %d:\n%s" % (fix.returncode, fix.stdout)
    assert_fsck_clean(img, "after e2fsck -fy")
    _check_durable(img, durable)


def test_kill_with_unsynced_work_is_repairable(tmp_path):
    """kill -9 with changes that were not fsynced after the durable ones:
    e2fsck -fy can repair whatever is left half done, and the fsynced
    files are intact."""
    img = mkimg(tmp_path / "durable2.img", "128M")
    rng = random.Random(9)
    with fuse4fs_mount(img, ro=False, opts=["nosync_unmount"], check_exit=False) as h:
        mnt = str(h)
        durable = _durable_workload(mnt, rng)
        for i in range(20):
            with open(os.path.join(mnt, "volatile%d" % i), "wb") as f:
                f.write(rand_bytes(rng, 50000))
        os.mkdir(os.path.join(mnt, "vdir"))
        os.rename(os.path.join(mnt, "volatile0"), os.path.join(mnt, "vdir", "v0"))
        os.unlink(os.path.join(mnt, "volatile1"))
        _kill_server(h)
    check = e2fsck(img)
    fix = run(["e2fsck", "-fy", img], check=False)
    assert fix.returncode in (0, 1), "e2fsck -fy exit %d:\n%s" % (fix.returncode, fix.stdout)
    assert_fsck_clean(img, "after e2fsck -fy (e2fsck -fn before it: exit %d\n%s)"
                      % (check.returncode, check.stdout))
    _check_durable(img, durable)


# --------------------------------------------------------------------------
# 9. Errors as ext4 gives them
# --------------------------------------------------------------------------

LINK_BASE = 64998           # EXT4_LINK_MAX is 65000
XATTR_CREATE, XATTR_REPLACE = os.XATTR_CREATE, os.XATTR_REPLACE
TIB16 = 1 << 44             # ext4's limit with 4 KiB blocks is 16 TiB - 4 KiB


def _errno_image(path, tree):
    """An image whose /many (a file) and /manydir (a directory) have link
    counts just below ext4's limit (set with debugfs)."""
    os.makedirs(os.path.join(tree, "manydir"), exist_ok=True)
    with open(os.path.join(tree, "many"), "w") as f:
        f.write("many links\n")
    run(["mkfs.ext4", "-F", "-q", "-U", U.FS_UUID, "-E",
         "root_owner=0:0,hash_seed=" + U.HASH_SEED, "-b", "4096", "-I", "256",
         "-O", "^orphan_file", "-d", tree, path, "64M"],
        env={"E2FSPROGS_FAKE_TIME": U.FAKE_TIME})
    run(["debugfs", "-w", "-R", "sif /many links_count %d" % LINK_BASE, path])
    run(["debugfs", "-w", "-R", "sif /manydir links_count %d" % LINK_BASE, path])
    return path


def _restore_links(path):
    run(["debugfs", "-w", "-R", "sif /many links_count 1", path])
    run(["debugfs", "-w", "-R", "sif /manydir links_count 2", path])


def _creat(p, flags=0):
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY | flags, 0o644))


def _errno_scenario(mnt):
    P = lambda *a: os.path.join(mnt, *a)
    with open(P("f"), "w") as f:
        f.write("file\n")
    os.mkdir(P("d"))
    _creat(P("d", "x"))
    os.mkdir(P("e"))
    os.mkdir(P("e2"))
    os.mkdir(P("only-subdir"))
    os.mkdir(P("only-subdir", "sub"))
    os.symlink("l2", P("l1"))
    os.symlink("l1", P("l2"))
    os.symlink("ls", P("ls"))
    os.symlink("f", P("lf"))
    r = {}
    n255, n256 = "n" * 255, "n" * 256
    # ENAMETOOLONG
    r["create-255"] = attempt(_creat, P(n255))
    r["create-256"] = attempt(_creat, P(n256))
    r["mkdir-256"] = attempt(os.mkdir, P("d", n256))
    r["symlink-name-256"] = attempt(os.symlink, "f", P(n256))
    r["symlink-target-4095"] = attempt(os.symlink, "t" * 4095, P("longlink"))
    r["readlink-4095"] = attempt(lambda: len(os.readlink(P("longlink"))))
    r["symlink-target-4096"] = attempt(os.symlink, "t" * 4096, P("longlink2"))
    r["rename-to-256"] = attempt(os.rename, P("f"), P(n256))
    r["link-to-256"] = attempt(os.link, P("f"), P(n256))
    r["mknod-256"] = attempt(os.mkfifo, P(n256))
    r["lookup-256"] = attempt(os.stat, P(n256))
    # xattrs
    r["xattr-name-256"] = attempt(os.setxattr, P("f"), "user." + "x" * 251, b"v")
    r["xattr-value-64k+1"] = attempt(os.setxattr, P("f"), "user.big", b"v" * 65537)
    r["xattr-value-3000"] = attempt(os.setxattr, P("f"), "user.v3000", b"v" * 3000)
    r["xattr-value-5000"] = attempt(os.setxattr, P("f"), "user.v5000", b"v" * 5000)
    r["xattr-create-existing"] = attempt(os.setxattr, P("f"), "user.v3000", b"w",
                                         XATTR_CREATE)
    r["xattr-replace-missing"] = attempt(os.setxattr, P("f"), "user.nope", b"w",
                                         XATTR_REPLACE)
    r["xattr-get-missing"] = attempt(os.getxattr, P("f"), "user.nope")
    r["xattr-remove-missing"] = attempt(os.removexattr, P("f"), "user.nope")
    r["xattr-bad-namespace"] = attempt(os.setxattr, P("f"), "bogus.name", b"v")
    r["xattr-get-small-buffer"] = attempt(lambda: _getxattr_size(P("f"), "user.v3000", 10))
    # EMLINK
    for i in range(3):
        r["link-many-%d" % i] = attempt(os.link, P("many"), P("many-%d" % i))
    r["many-nlink"] = os.stat(P("many")).st_nlink
    for i in range(3):
        r["mkdir-manydir-%d" % i] = attempt(os.mkdir, P("manydir", "s%d" % i))
    r["manydir-nlink"] = os.stat(P("manydir")).st_nlink
    for i in range(3):
        if os.path.exists(P("many-%d" % i)):
            os.unlink(P("many-%d" % i))
        if os.path.isdir(P("manydir", "s%d" % i)):
            os.rmdir(P("manydir", "s%d" % i))
    r["many-nlink-after"] = os.stat(P("many")).st_nlink
    r["manydir-nlink-after"] = os.stat(P("manydir")).st_nlink
    # EFBIG
    fd = os.open(P("big"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        r["pwrite-16T"] = attempt(os.pwrite, fd, b"x", TIB16)
        r["pwrite-16T-4k"] = attempt(os.pwrite, fd, b"x", TIB16 - 4096)
        r["ftruncate-16T"] = attempt(os.ftruncate, fd, TIB16)
        r["ftruncate-16T-4k"] = attempt(os.ftruncate, fd, TIB16 - 4096)
        r["ftruncate-16T-4k+1"] = attempt(os.ftruncate, fd, TIB16 - 4096 + 1)
        r["ftruncate-0"] = attempt(os.ftruncate, fd, 0)
        r["pwrite-last-byte"] = attempt(os.pwrite, fd, b"y", TIB16 - 4097)
        r["pwrite-across-limit"] = attempt(os.pwrite, fd, b"z" * 8192, TIB16 - 4096 - 100)
        r["size"] = os.fstat(fd).st_size
        r["fsync-big"] = attempt(os.fsync, fd)
    finally:
        r["close-big"] = attempt(os.close, fd)
    r["size-after-close"] = os.stat(P("big")).st_size
    # ENOTEMPTY, EEXIST, EISDIR, ENOTDIR
    r["rmdir-nonempty"] = attempt(os.rmdir, P("d"))
    r["rmdir-only-subdir"] = attempt(os.rmdir, P("only-subdir"))
    r["rename-dir-over-nonempty"] = attempt(os.rename, P("e"), P("d"))
    r["mkdir-existing"] = attempt(os.mkdir, P("d"))
    r["mkdir-over-file"] = attempt(os.mkdir, P("f"))
    r["creat-excl-existing"] = attempt(_creat, P("f"), os.O_EXCL)
    r["link-existing"] = attempt(os.link, P("f"), P("d", "x"))
    r["symlink-existing"] = attempt(os.symlink, "x", P("f"))
    r["mkfifo-existing"] = attempt(os.mkfifo, P("f"))
    r["rename-noreplace"] = attempt(renameat2, P("f"), P("d", "x"), RENAME_NOREPLACE)
    r["open-dir-wronly"] = attempt(lambda: os.close(os.open(P("d"), os.O_WRONLY)))
    r["unlink-dir"] = attempt(os.unlink, P("d"))
    r["rename-file-over-dir"] = attempt(os.rename, P("f"), P("e"))
    r["rmdir-file"] = attempt(os.rmdir, P("f"))
    r["open-under-file"] = attempt(lambda: os.close(os.open(P("f", "x"), os.O_RDONLY)))
    r["mkdir-under-file"] = attempt(os.mkdir, P("f", "x"))
    r["rename-dir-over-file"] = attempt(os.rename, P("e"), P("f"))
    r["open-file-odirectory"] = attempt(lambda: os.close(os.open(P("f"), os.O_DIRECTORY)))
    r["link-dir"] = attempt(os.link, P("d"), P("dlink"))
    r["rename-into-self"] = attempt(os.rename, P("d"), P("d", "sub"))
    r["rename-missing"] = attempt(os.rename, P("missing"), P("x"))
    r["unlink-missing"] = attempt(os.unlink, P("missing"))
    # ELOOP
    r["open-loop"] = attempt(lambda: os.close(os.open(P("l1"), os.O_RDONLY)))
    r["open-selfloop"] = attempt(lambda: os.close(os.open(P("ls"), os.O_RDONLY)))
    r["stat-loop"] = attempt(os.stat, P("l1"))
    r["mkdir-through-loop"] = attempt(os.mkdir, P("l1", "x"))
    r["open-nofollow"] = attempt(lambda: os.close(os.open(P("lf"), os.O_RDONLY | os.O_NOFOLLOW)))
    r["creat-through-dangling-loop"] = attempt(_creat, P("l1"))
    # Never EXDEV within one filesystem.
    r["rename-across-dirs"] = attempt(os.rename, P("f"), P("d", "f-moved"))
    r["rename-dir-across"] = attempt(os.rename, P("e2"), P("d", "e2-moved"))
    r["link-across-dirs"] = attempt(os.link, P("d", "f-moved"), P("e", "f-link"))
    r["rename-dir-over-empty"] = attempt(os.rename, P("d", "e2-moved"), P("e2-back"))
    r["rename-nonempty-over-empty"] = attempt(os.rename, P("only-subdir"), P("e2-back"))
    r["rename-exchange-ok"] = attempt(renameat2, P("d", "f-moved"), P("e", "f-link"), 2)
    return r


def _getxattr_size(path, name, size):
    buf = ctypes.create_string_buffer(size)
    n = _libc.getxattr(os.fsencode(path), name.encode(), buf, ctypes.c_size_t(size))
    if n < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return n


def _user_errno_scenario(mnt):
    """Errors an unprivileged user gets (permission checks)."""
    P = lambda *a: os.path.join(mnt, *a)
    os.mkdir(P("sticky"), 0o1777)
    with open(P("sticky", "roots"), "w") as f:
        f.write("root's\n")
    with open(P("rootfile"), "w") as f:
        f.write("x\n")
    os.chmod(P("rootfile"), 0o644)
    os.mkdir(P("closed"), 0o700)
    code = r'''
import errno, json, os, sys
m = sys.argv[1]
P = lambda *a: os.path.join(m, *a)
def t(fn, *a):
    try:
        fn(*a)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
r = {}
r["write-root-file"] = t(lambda: open(P("rootfile"), "a").close())
r["chmod-root-file"] = t(os.chmod, P("rootfile"), 0o666)
r["chown-own-file-to-root"] = t(lambda: (open(P("sticky", "mine"), "w").close(),
                                           os.chown(P("sticky", "mine"), 0, -1)))
r["unlink-in-sticky"] = t(os.unlink, P("sticky", "roots"))
r["rename-in-sticky"] = t(os.rename, P("sticky", "roots"), P("sticky", "stolen"))
r["create-in-root-dir"] = t(lambda: open(P("newfile"), "w").close())
r["list-closed"] = t(os.listdir, P("closed"))
r["utime-root-file"] = t(os.utime, P("rootfile"), (1, 1))
r["utime-now-root-file"] = t(os.utime, P("rootfile"), None)
r["setxattr-trusted"] = t(os.setxattr, P("sticky", "mine"), "trusted.x", b"v")
r["setxattr-user-own"] = t(os.setxattr, P("sticky", "mine"), "user.x", b"v")
r["setxattr-user-root"] = t(os.setxattr, P("rootfile"), "user.x", b"v")
r["mknod-chr"] = t(os.mknod, P("sticky", "dev"), 0o600 | 0o020000, os.makedev(1, 3))
r["link-root-file"] = t(os.link, P("rootfile"), P("sticky", "hardlink"))
print(json.dumps(r))
'''
    return U.run_as(USER, USER, code, [mnt])


@pytest.mark.parametrize("cache", ["direct", "writeback_cache"])
def test_errors_like_ext4(tmp_path, cache):
    """The same operations give the same errno values on fuse4fs and on the
    kernel's ext4 (identical images): ENAMETOOLONG, EMLINK, EFBIG,
    ENOTEMPTY, EEXIST, EISDIR, ENOTDIR, ELOOP, xattr errors, and never
    EXDEV within one filesystem; then fsck is clean and the kernel sees the
    tree fuse4fs left."""
    tree = str(tmp_path / "tree")
    a = _errno_image(str(tmp_path / "errno-f4.img"), tree)
    b = copy_image(a, tmp_path / "errno-k.img")
    with rw_mount(a, [cache] if cache != "direct" else []) as h:
        got = _errno_scenario(str(h))
        fsnap = snapshot(str(h))
    with kernel_mount(b, ro=False) as k:
        ref = _errno_scenario(k)
    for img in (a, b):
        _restore_links(img)
        assert_fsck_clean(img)
    wb_limit = ("pwrite-16T", "pwrite-16T-4k", "pwrite-across-limit", "size",
                "fsync-big", "size-after-close")
    if cache == "writeback_cache":
        # With the kernel's page cache in front, the kernel (not fuse4fs)
        # accepts writes past ext4's limit; what is promised is that the
        # loss is reported at fsync and nothing past the limit reaches
        # the disk (README, "The writeback cache").
        assert got["fsync-big"] == "EFBIG", got["fsync-big"]
        ref = {k: v for k, v in ref.items() if k not in wb_limit}
    diffs = ["%-28s fuse4fs %-14s ext4 %s" % (k, got.get(k), ref.get(k))
             for k in ref if got.get(k) != ref.get(k)]
    ksnap = kernel_snapshot(a)
    for rel in ("many", "manydir"):
        # debugfs set the link counts after the fuse4fs snapshot
        ksnap[rel]["nlink"] = fsnap[rel]["nlink"]
    if cache == "writeback_cache":
        assert ksnap["big"]["size"] <= TIB16 - 4096, ksnap["big"]
        del ksnap["big"], fsnap["big"]
    tree_diffs = U.diff_snapshots(ksnap, fsnap)
    assert not diffs and not tree_diffs, (
        "errors that differ from ext4:\n%s\nkernel vs fuse4fs tree afterwards:\n%s"
        % ("\n".join(diffs), "\n".join(tree_diffs[:50])))


def test_permission_errors_like_ext4(tmp_path):
    """An unprivileged user gets the same EACCES/EPERM as on ext4."""
    a = mkimg(tmp_path / "perm-f4.img", "32M")
    b = copy_image(a, tmp_path / "perm-k.img")
    with rw_mount(a, ["allow_other"]) as h:
        got = _user_errno_scenario(str(h))
    with kernel_mount(b, ro=False) as k:
        ref = _user_errno_scenario(k)
    assert_fsck_clean(a)
    diffs = ["%-28s fuse4fs %-14s ext4 %s" % (k, got.get(k), ref.get(k))
             for k in ref if got.get(k) != ref.get(k)]
    assert not diffs, "errors differ from ext4:\n" + "\n".join(diffs)


def _erofs_scenario(mnt):
    P = lambda *a: os.path.join(mnt, *a)
    r = {}
    r["create"] = attempt(_creat, P("new"))
    r["open-wronly"] = attempt(lambda: os.close(os.open(P("f"), os.O_WRONLY)))
    r["open-rdwr"] = attempt(lambda: os.close(os.open(P("f"), os.O_RDWR)))
    r["open-trunc"] = attempt(lambda: os.close(os.open(P("f"), os.O_RDONLY | os.O_TRUNC)))
    r["mkdir"] = attempt(os.mkdir, P("nd"))
    r["rmdir"] = attempt(os.rmdir, P("d"))
    r["unlink"] = attempt(os.unlink, P("f"))
    r["rename"] = attempt(os.rename, P("f"), P("g"))
    r["link"] = attempt(os.link, P("f"), P("g"))
    r["symlink"] = attempt(os.symlink, "f", P("s"))
    r["mkfifo"] = attempt(os.mkfifo, P("fifo"))
    r["chmod"] = attempt(os.chmod, P("f"), 0o600)
    r["chown"] = attempt(os.chown, P("f"), 1, 1)
    r["utime"] = attempt(os.utime, P("f"), (1, 1))
    r["truncate"] = attempt(os.truncate, P("f"), 0)
    r["setxattr"] = attempt(os.setxattr, P("f"), "user.x", b"v")
    r["removexattr"] = attempt(os.removexattr, P("f"), "user.present")
    r["read"] = attempt(lambda: open(P("f")).read())
    r["getxattr"] = attempt(lambda: os.getxattr(P("f"), "user.present").decode())
    r["access-w"] = "yes" if os.access(P("f"), os.W_OK) else "no"
    r["statvfs-rdonly"] = bool(os.statvfs(mnt).f_flag & os.ST_RDONLY)
    return r


def test_erofs_on_read_only_mount(tmp_path):
    """Every change on an -o ro mount fails with EROFS, as on a read-only
    ext4 mount, and the image is not modified at all."""
    img = mkimg(tmp_path / "ro.img", "32M")
    with rw_mount(img) as h:
        with open(os.path.join(str(h), "f"), "w") as f:
            f.write("content\n")
        os.setxattr(os.path.join(str(h), "f"), "user.present", b"yes")
        os.mkdir(os.path.join(str(h), "d"))
    digest = U.sha256_file(img)
    with fuse4fs_mount(img, ro=True) as h:
        got = _erofs_scenario(str(h))
    assert U.sha256_file(img) == digest, "an -o ro mount modified the image"
    with kernel_mount(img, ro=True) as k:
        ref = _erofs_scenario(k)
    assert got == ref, "fuse4fs %s\nkernel  %s" % (got, ref)
    assert got["create"] == "EROFS"


# --------------------------------------------------------------------------
# 10. Mount refusals
# --------------------------------------------------------------------------

CORPUS = "/work/shared/corpus/e2fsprogs-images"
if not os.path.isdir(CORPUS):
    CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                          "shared", "corpus", "e2fsprogs-images")


def _refusal_image(kind, path):
    if kind == "journal-replay-corpus":
        src = os.path.join(CORPUS, "j_recover_csum2_64bit.img.bz2")
        if not os.path.exists(src):
            pytest.skip("corpus image %s is not there" % src)
        U.decompress(src, path)
        return path
    if kind == "orphan_file-feature":
        run(["mkfs.ext4", "-F", "-q", "-b", "4096", "-O", "orphan_file", path, "32M"])
        return path
    mkimg(path, "32M")
    with kernel_mount(path, ro=False) as k:
        with open(os.path.join(k, "hello"), "w") as f:
            f.write("hello\n")
    cmd = {"state-errors": "ssv state 2",
           "errors-count": "ssv error_count 1",
           "needs-recovery": "feature needs_recovery"}[kind]
    run(["debugfs", "-w", "-R", cmd, path])
    return path


@pytest.mark.parametrize("kind", ["state-errors", "errors-count", "needs-recovery",
                                  "journal-replay-corpus", "orphan_file-feature"])
def test_refuses_read_write_when_unsafe(tmp_path, kind):
    """A filesystem with recorded errors or a journal to replay is not
    mounted read-write: fuse4fs exits 32 with a message naming the e2fsck
    command to run, writes nothing, and mounts the same image read-only."""
    img = _refusal_image(kind, str(tmp_path / ("refuse-%s.img" % kind)))
    before = U.sha256_file(img)
    with pytest.raises(U.MountError) as ei:
        with rw_mount(img):
            pass
    err = ei.value.stderr
    assert ei.value.returncode == 32, "exit %s, stderr:\n%s" % (ei.value.returncode, err)
    assert not U.sanitizer_report(err), err
    if kind == "orphan_file-feature":
        assert "read-only" in err, "refusal does not say what works:\n" + err
    else:
        assert re.search(r"e2fsck [^'\n]*" + re.escape(img), err), \
            "refusal does not name an e2fsck command for %s:\n%s" % (img, err)
    assert U.sha256_file(img) == before, "a refused read-write mount modified the image"
    with fuse4fs_mount(img, ro=True) as h:
        os.listdir(str(h))
        if kind not in ("journal-replay-corpus", "orphan_file-feature"):
            with open(os.path.join(str(h), "hello")) as f:
                assert f.read() == "hello\n"
    assert U.sha256_file(img) == before, "a read-only mount modified the image"


# --------------------------------------------------------------------------
# 11. suid/sgid removal on write, truncate and chown
# --------------------------------------------------------------------------

SUID_FILES = [
    # name, uid, gid, mode
    ("user-owned-suid", USER, USER, 0o4755),
    ("root-suid-sgid-world-writable", 0, 0, 0o6777),
    ("root-sgid-no-gx-world-writable", 0, 0, 0o2767),
    ("root-suid-root-writes", 0, 0, 0o4777),
    ("root-suid-sgid-chown", 0, 0, 0o6755),
    ("root-sgid-chgrp", 0, 0, 0o2755),
    ("root-sgid-no-gx-chown", 0, 0, 0o2745),
    ("user-suid-truncate", USER, USER, 0o4755),
    ("user-file-other-group", USER, 0, 0o0755),
    ("root-suid-chown-same", 0, 0, 0o6755),
    ("user-sgid-group-member-write", USER, USER, 0o2775),
    ("user-suid-user-chmod", USER, USER, 0o0755),
    ("user-suid-root-writes", USER, USER, 0o6755),
]

SUID_USER_CODE = r'''
import errno, json, os, sys
m = sys.argv[1]
P = lambda n: os.path.join(m, "s", n)
def t(fn, *a):
    try:
        fn(*a)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def write(n):
    fd = os.open(P(n), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"user wrote\n")
    finally:
        os.close(fd)
def trunc(n):
    fd = os.open(P(n), os.O_WRONLY)
    try:
        os.ftruncate(fd, 3)
    finally:
        os.close(fd)
r = {}
r["user-owned-suid"] = t(write, "user-owned-suid")
r["root-suid-sgid-world-writable"] = t(write, "root-suid-sgid-world-writable")
r["root-sgid-no-gx-world-writable"] = t(write, "root-sgid-no-gx-world-writable")
r["user-suid-truncate"] = t(trunc, "user-suid-truncate")
r["user-file-other-group"] = t(os.chmod, P("user-file-other-group"), 0o2755)
r["user-sgid-group-member-write"] = t(write, "user-sgid-group-member-write")
r["user-suid-user-chmod"] = t(os.chmod, P("user-suid-user-chmod"), 0o4755)
print(json.dumps(r))
'''


def _suid_scenario(mnt):
    P = lambda n: os.path.join(mnt, "s", n)
    os.mkdir(os.path.join(mnt, "s"), 0o755)
    for name, uid, gid, mode in SUID_FILES:
        with open(P(name), "w") as f:
            f.write("%s\n" % name)
        os.chown(P(name), uid, gid)
        os.chmod(P(name), mode)
    res = {"user": U.run_as(USER, USER, SUID_USER_CODE, [mnt])}
    with open(P("root-suid-root-writes"), "a") as f:
        f.write("root wrote\n")
    with open(P("user-suid-root-writes"), "a") as f:
        f.write("root wrote\n")
    os.chown(P("root-suid-sgid-chown"), USER, USER)
    os.chown(P("root-sgid-chgrp"), -1, USER)
    os.chown(P("root-sgid-no-gx-chown"), USER, -1)
    os.chown(P("root-suid-chown-same"), 0, 0)
    for name, _, _, _ in SUID_FILES:
        st = os.stat(P(name))
        with open(P(name), "rb") as f:
            res[name] = "%o %d:%d size=%d %r" % (st.st_mode, st.st_uid, st.st_gid,
                                                 st.st_size, f.read())
    return res


def test_suid_sgid_kill_like_ext4(tmp_path):
    """Writing, truncating, chmod and chown drop setuid/setgid bits exactly
    as on ext4 (identical images, same operations as root and as a user)."""
    a = mkimg(tmp_path / "suid-f4.img", "32M")
    b = copy_image(a, tmp_path / "suid-k.img")
    with rw_mount(a, ["allow_other"]) as h:
        got = _suid_scenario(str(h))
        fsnap = snapshot(str(h))
    with kernel_mount(b, ro=False) as k:
        ref = _suid_scenario(k)
    assert_fsck_clean(a)
    diffs = ["%-34s fuse4fs %s\n%-34s ext4    %s" % (k, got.get(k), "", ref.get(k))
             for k in ref if got.get(k) != ref.get(k)]
    assert not diffs, "suid/sgid handling differs from ext4:\n" + "\n".join(diffs)
    assert_same(kernel_snapshot(a), fsnap, "kernel vs fuse4fs after the suid scenario")


# --------------------------------------------------------------------------
# 12. POSIX ACLs
# --------------------------------------------------------------------------

ACL_USER_CODE = r'''
import errno, json, os, sys
m = sys.argv[1]
P = lambda *a: os.path.join(m, "acl", *a)
def t(fn, *a):
    try:
        r = fn(*a)
        return r if isinstance(r, str) else "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def read(p):
    with open(p) as f:
        return f.read()
def write(p):
    with open(p, "a") as f:
        f.write("appended by %d\n" % os.getuid())
def create(p):
    os.umask(0o022)
    with open(p, "w") as f:
        f.write("created by %d\n" % os.getuid())
r = {}
r["read-acl-file"] = t(read, P("secret"))
r["write-acl-file"] = t(write, P("secret"))
r["read-denied-file"] = t(read, P("denied"))
r["read-masked"] = t(read, P("masked"))
r["create-in-acl-dir"] = t(create, P("by-%d" % os.getuid()))
r["list-acl-dir"] = t(lambda: ",".join(sorted(os.listdir(P("inner")))))
print(json.dumps(r))
'''


def _getfacl(mnt, rels):
    cp = run(["getfacl", "-n", "-p"] + rels, cwd=mnt)
    return cp.stdout


def _acl_scenario(mnt):
    P = lambda *a: os.path.join(mnt, "acl", *a)
    os.mkdir(P(), 0o755)
    run(["setfacl", "-m", "u:%d:rwx" % USER, P()])
    run(["setfacl", "-d", "-m", "u::rwx,g::r-x,o::---,u:%d:rwx,g:%d:r-x,m::rwx"
         % (USER, USER2), P()])
    old = os.umask(0o022)
    try:
        with open(P("inherit-file"), "w") as f:
            f.write("inherits\n")
        fd = os.open(P("inherit-0600"), os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
        os.mkdir(P("inner"), 0o777)
        os.mkdir(P("inner", "deeper"), 0o750)
        os.mkfifo(P("inner", "fifo"), 0o666)
        os.symlink("inherit-file", P("link"))
    finally:
        os.umask(old)
    with open(P("secret"), "w") as f:
        f.write("secret\n")
    os.chmod(P("secret"), 0o600)
    run(["setfacl", "-b", P("secret")])
    run(["setfacl", "-m", "u:%d:r" % USER, P("secret")])
    with open(P("denied"), "w") as f:
        f.write("denied\n")
    os.chmod(P("denied"), 0o644)
    run(["setfacl", "-b", "-m", "u:%d:---,u::rw,g::r,o::r" % USER, P("denied")])
    with open(P("masked"), "w") as f:
        f.write("masked\n")
    run(["setfacl", "-b", "-m", "u:%d:rw,u::rw,g::-,o::-,m::rw" % USER, P("masked")])
    # chmod updates the mask (the group bits) of a file with an ACL
    os.chmod(P("masked"), 0o600)
    os.chmod(P("inherit-file"), 0o640)
    res = {"user": U.run_as(USER, USER, ACL_USER_CODE, [mnt]),
           "user2": U.run_as(USER2, USER2, ACL_USER_CODE, [mnt])}
    rels = ["acl", "acl/inherit-file", "acl/inherit-0600", "acl/inner", "acl/inner/deeper",
            "acl/inner/fifo", "acl/secret", "acl/denied", "acl/masked"]
    rels += ["acl/by-%d" % u for u in (USER, USER2) if os.path.exists(P("by-%d" % u))]
    res["getfacl"] = _getfacl(mnt, rels)
    res["modes"] = {r: "%o" % os.lstat(os.path.join(mnt, r)).st_mode for r in rels}
    # Removing the ACL leaves plain mode bits.
    run(["setfacl", "-b", P("masked")])
    res["after-remove"] = _getfacl(mnt, ["acl/masked"])
    res["xattrs-after-remove"] = sorted(os.listxattr(P("masked")))
    return res


def test_posix_acls_like_ext4(tmp_path):
    """Default ACLs are inherited by new files and directories, chmod
    updates the mask, and access through ACL entries is granted and denied
    for other users exactly as on ext4."""
    a = mkimg(tmp_path / "acl-f4.img", "32M")
    b = copy_image(a, tmp_path / "acl-k.img")
    with rw_mount(a, ["allow_other"]) as h:
        got = _acl_scenario(str(h))
        fsnap = snapshot(str(h))
    with kernel_mount(b, ro=False) as k:
        ref = _acl_scenario(k)
    assert_fsck_clean(a)
    diffs = []
    for k in ref:
        if got.get(k) != ref.get(k):
            diffs.append("%s:\n  fuse4fs %s\n  ext4    %s" % (k, got.get(k), ref.get(k)))
    assert not diffs, "ACL behaviour differs from ext4:\n" + "\n".join(diffs)
    assert ref["user"]["read-acl-file"] == "secret\n" and ref["user2"]["read-acl-file"] == "EACCES"
    assert_same(kernel_snapshot(a), fsnap, "kernel vs fuse4fs after the ACL scenario")
