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
		FUSE_CACHE_SYMLINKS | FUSE_SETXATTR_EXT;
	/* With POSIX ACLs on, the kernel evaluates them exactly as it does for
	 * ext4, using the ACL xattrs this server returns. */
	if (f4->acl)
		conn->want |= FUSE_POSIX_ACL;
}

static void f4_destroy(void *fs)
{
	(void)fs;
}

const struct fe_ops f4_ops = {
	.init = f4_init,
	.destroy = f4_destroy,
	.lookup = f4_lookup,
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
};
