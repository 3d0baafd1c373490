/*
 * The operation table handed to the protocol engine, and connection setup.
 */
#include "config.h"

#include "fuse4fs.h"

static void f4_init(void *fs, struct fe_conn *conn)
{
	struct f4fs *f4 = fs;

	conn->want = FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES |
		FUSE_DO_READDIRPLUS | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES |
		FUSE_CACHE_SYMLINKS | FUSE_SETXATTR_EXT | FUSE_INIT_EXT |
		FUSE_DONT_MASK;
	/* With POSIX ACLs on, the kernel evaluates them exactly as it does for
	 * ext4, using the ACL xattrs this server returns; new inodes get
	 * their inherited ACLs and umask here (DONT_MASK). */
	if (f4->acl)
		conn->want |= FUSE_POSIX_ACL;
	/* Off by default: with it, ENOSPC and I/O errors reach the writer
	 * only at fsync or close, not from write(2) as on ext4. */
	if (!f4->ro && f4->opts.writeback_cache)
		conn->want |= FUSE_WRITEBACK_CACHE;
	/* The kernel's FUSE layer keeps set-group-ID on writes by callers
	 * outside the file's group, which ext4 clears; doing it here gets
	 * ext4's rule. */
	if (!f4->ro)
		conn->want |= FUSE_HANDLE_KILLPRIV_V2;
	conn->time_gran = f4->nsec_times ? 1 : 1000000000;
	if (f4->iomap_wanted) {
		if (conn->kernel_flags & FUSE_IOMAP) {
			conn->want |= FUSE_IOMAP;
			f4->iomap = true;
		} else {
			/* The probe said yes but this connection cannot:
			 * serve it the classic way rather than not at all. */
			f4_log("the kernel did not offer iomap for this mount; "
			       "using classic I/O");
		}
	}
}

const struct fe_ops f4_ops = {
	.init = f4_init,
	.destroy = f4_destroy,
	.lookup = f4_lookup,
	.forget = f4_forget,
	.getattr = f4_getattr,
	.readlink = f4_readlink,
	.open = f4_open,
	.read = f4_read,
	.release = f4_release,
	.statfs = f4_statfs,
	.getxattr = f4_getxattr,
	.listxattr = f4_listxattr,
	.opendir = f4_opendir,
	.readdir = f4_readdir,
	.readdirplus = f4_readdirplus,
	.releasedir = f4_releasedir,
	.access = f4_access,
	.lseek = f4_lseek,
	.statx = f4_statx,
	.setattr = f4_setattr,
	.mknod = f4_mknod,
	.mkdir = f4_mkdir,
	.symlink = f4_symlink,
	.create = f4_create,
	.tmpfile = f4_tmpfile,
	.link = f4_link,
	.unlink = f4_unlink,
	.rmdir = f4_rmdir,
	.rename = f4_rename,
	.write = f4_write,
	.flush = f4_flush_op,
	.fsync = f4_fsync,
	.fsyncdir = f4_fsyncdir,
	.fallocate = f4_fallocate,
	.setxattr = f4_setxattr,
	.removexattr = f4_removexattr,
	.syncfs = f4_syncfs,
	.iomap_config = f4_iomap_config,
	.iomap_begin = f4_iomap_begin,
	.iomap_end = f4_iomap_end,
	.iomap_ioend = f4_iomap_ioend,
	.freezefs = f4_freezefs,
	.unfreezefs = f4_unfreezefs,
	.shutdownfs = f4_shutdownfs,
	/* No copy_file_range: ENOSYS lets the kernel copy through the page
	 * cache, which is as fast as anything this server could do. */
};
