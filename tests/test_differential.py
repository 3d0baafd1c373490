"""Differential test: seeded random workloads on fuse4fs and on in-kernel ext4.

Each seed generates a sequence of filesystem operations (tests/opgen.py:
create/open with O_CREAT/O_EXCL/O_TRUNC/O_APPEND, writes and reads at random
offsets, holes, large writes, truncate, fallocate modes, rename/renameat2
NOREPLACE/EXCHANGE, hard and symbolic links, unlink of open files, mkdir/
rmdir, mknod, user.*/trusted.* xattrs, chmod/chown/utimensat, access and
default ACLs, stat/readdir), part of it run as the unprivileged users
1000:1000 and 65534:65534.  The sequence runs on a fuse4fs read-write mount
(allow_other) and on a kernel ext4 mount of an identical fresh image; every
op's result or errno must be the same, the final trees must be the same,
e2fsck -fn must pass on both images (the fuse4fs image without a single
extra line), and the kernel must see on the fuse4fs image what fuse4fs
showed.  Each seed is its own test; a failure names the seed, the op index,
the op and both results, and the command that reproduces or minimises it:

    tools/soak --seed-list SEED --ops N -v
    tools/soak --seed-list SEED --ops N --minimize --out DIR

The default suite is seeds 1-60 with 500 ops each (the image variant
cycles with the seed: 4 KiB blocks, 1 KiB blocks, 4 KiB blocks with
fuse4fs -o writeback_cache); it takes about 45 s on two cores, a little
more under the sanitizers.  FUSE4FS_DIFF_SEEDS ("1-20" or "3,7,9") and
FUSE4FS_DIFF_OPS override the seeds and the sequence length; tools/soak
runs many more.
"""

import errno
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import f4util  # noqa: E402
import opgen  # noqa: E402

pytestmark = pytest.mark.usefixtures("fuse4fs_bin", "require_root")


def _seeds():
    spec = os.environ.get("FUSE4FS_DIFF_SEEDS", "1-60")
    out = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


SEEDS = _seeds()
NOPS = int(os.environ.get("FUSE4FS_DIFF_OPS", "500"))


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: "seed%d" % s)
def test_random_sequence_matches_ext4(seed, fuse4fs_bin, f4_workdir):
    out = opgen.run_seed(seed, NOPS, binary=fuse4fs_bin, workdir=f4_workdir)
    if not out.ok:
        raise AssertionError(
            out.report() + "\n\nreproduce: tools/soak --seed-list %d --ops %d -v"
            "\nminimise:  tools/soak --seed-list %d --ops %d --minimize --out DIR"
            % (seed, NOPS, seed, NOPS))


# --------------------------------------------------------------------------
# The harness itself: it must be able to see a difference, and it must not
# see one where there is none.
# --------------------------------------------------------------------------

def test_generator_is_productive_and_deterministic(f4_workdir):
    """The sequences do real work: most ops succeed, every op kind occurs,
    the unprivileged users act; and a seed always gives the same sequence
    and the same ext4 results."""
    counts = {}
    runs = []
    for attempt in range(2):
        img = os.path.join(f4_workdir, "gen-%d.img" % attempt)
        opgen.make_image(img, "4k")
        try:
            with f4util.kernel_mount(img, ro=False, options=["nosuid", "nodev"]) as mnt:
                ops, res, _ = opgen.in_chroot(mnt, opgen.generate_on, 7, 600, "4k")
        finally:
            os.unlink(img)
        runs.append((ops, res))
    assert runs[0][0] == runs[1][0], "seed 7 gave two different sequences"
    same = [i for i, (a, b) in enumerate(zip(runs[0][1], runs[1][1]))
            if a != b and runs[0][0][i]["op"] != "utimens"]
    assert not same, "ext4 gave different results for the same sequence at ops %s" % same[:10]
    ops, res = runs[0]
    ok = 0
    users = 0
    for op, r in zip(ops, res):
        good = not (isinstance(r, str) and (r.startswith(("E:", "X:")) or r == "noslot"))
        ok += good
        counts.setdefault(op["op"], [0, 0])[0 if good else 1] += 1
        if op["cred"] and good:
            users += 1
        assert not (isinstance(r, str) and r.startswith("X:")), \
            "executor error at op %d %s: %s" % (op["i"], opgen.fmt_op(op), r)
    assert ok >= 0.5 * len(ops), "only %d of %d ops succeeded: %s" % (ok, len(ops), counts)
    assert users >= 0.1 * len(ops), "only %d successful unprivileged ops" % users
    missing = {name for name, _ in opgen.Generator.WEIGHTS} - {
        "unlink_open", "collapse_insert"} - set(counts)
    assert not missing, "op kinds never generated: %s" % sorted(missing)
    never_ok = [k for k in ("open", "write", "read", "rename", "link", "unlink", "mkdir",
                            "symlink", "setxattr", "setacl", "chmod", "chown", "utimens",
                            "fallocate", "truncate", "ftruncate", "mknod", "rmdir")
                if counts.get(k, [0])[0] == 0]
    assert not never_ok, "these ops never succeeded: %s" % never_ok


def test_harness_sees_no_difference_between_two_ext4_mounts(f4_workdir):
    """The same sequence on two kernel ext4 mounts compares equal: whatever
    the harness reports for fuse4fs is not noise of its own."""
    out = opgen.run_seed(11, 300, workdir=f4_workdir, fuse_side="kernel")
    assert out.ok, out.report()
    assert out.results and len(out.results[0]) == 300


def test_harness_reports_a_difference(f4_workdir, fuse4fs_bin):
    """A result that differs is reported with the seed, the op index, the op
    and both results."""
    ops = [{"i": 0, "op": "mkdir", "cred": 0, "path": "d", "mode": 0o755},
           {"i": 1, "op": "stat", "cred": 0, "path": "d"}]
    out = opgen.run_sequence(ops, seed=99, variant="4k", binary=fuse4fs_bin,
                             workdir=f4_workdir, tamper=lambda rk, rf: rf.__setitem__(1, "E:EIO"))
    assert not out.ok
    rep = out.report()
    assert "seed 99" in rep and "#1: stat(path='d')" in rep and '"E:EIO"' in rep, rep


# --------------------------------------------------------------------------
# The one allowed difference, checked directly
# --------------------------------------------------------------------------

def test_collapse_and_insert_range_are_refused(f4_workdir, fuse4fs_bin):
    """FUSE has no COLLAPSE_RANGE/INSERT_RANGE (the kernel's FUSE client
    refuses them before asking the server), so the generator emits them only
    where ext4 fails too.  Here the aligned forms: ext4 does them, fuse4fs
    says EOPNOTSUPP and leaves the file as it was."""
    data = bytes(range(256)) * 64          # 16 KiB
    img = os.path.join(f4_workdir, "collapse.img")
    fimg = img + ".f"
    opgen.make_image(img, "4k")
    try:
        f4util.run(["cp", "--sparse=always", img, fimg])
        results = {}
        with f4util.kernel_mount(img, ro=False) as kmnt, \
                f4util.fuse4fs_mount(fimg, ro=False, binary=fuse4fs_bin) as h:
            for name, root in (("ext4", kmnt), ("fuse4fs", str(h))):
                p = os.path.join(root, "f")
                with open(p, "wb") as f:
                    f.write(data)
                fd = os.open(p, os.O_RDWR)
                try:
                    r = []
                    for mode in (opgen.FALLOC_FL_COLLAPSE_RANGE, opgen.FALLOC_FL_INSERT_RANGE):
                        try:
                            opgen.fallocate(fd, mode, 4096, 4096)
                            r.append(0)
                        except OSError as e:
                            r.append(e.errno)
                    r.append(os.fstat(fd).st_size)
                    r.append(os.pread(fd, len(data) + 10, 0) == data)
                finally:
                    os.close(fd)
                results[name] = r
        assert results["ext4"][:2] == [0, 0], results
        assert results["fuse4fs"] == [errno.EOPNOTSUPP, errno.EOPNOTSUPP, len(data), True], results
    finally:
        for p in (img, fimg):
            if os.path.exists(p):
                os.unlink(p)
