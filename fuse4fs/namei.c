/*
 * Name lookup.
 */
#include "config.h"

#include <string.h>

#include "fuse4fs.h"

void f4_lookup(struct fe_req *req, uint64_t parent, const char *name)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large dir_inode, inode;
	struct fuse_entry_out e;
	size_t namelen = strlen(name);
	ext2_ino_t dir, ino;
	int ret;

	if (namelen > EXT2_NAME_LEN) {
		fe_reply_err(req, ENAMETOOLONG);
		return;
	}
	f4_lock(f4);
	ret = f4_iget(f4, parent, &dir, &dir_inode);
	if (ret)
		goto out;
	if (!LINUX_S_ISDIR(dir_inode.i_mode)) {
		ret = ENOTDIR;
		goto out;
	}
	ret = f4_dir_lookup(f4, dir, &dir_inode, name, namelen, &ino);
	if (ret == 0) {
		ret = f4_read_inode(f4, ino, &inode);
		/* An entry pointing at a free inode is damage, as the kernel
		 * reports it. */
		if (ret == 0 && (inode.i_links_count == 0 || inode.i_mode == 0))
			ret = EUCLEAN;
	}
	if (ret == 0)
		f4_fill_entry(f4, ino, &inode, &e);
out:
	f4_unlock(f4);
	if (ret == ENOENT && f4->ro) {
		/* Cache the negative entry: the name cannot appear later. */
		memset(&e, 0, sizeof(e));
		e.entry_valid = (uint64_t)f4->entry_timeout;
		fe_reply_entry(req, &e);
	} else if (ret) {
		fe_reply_err(req, ret);
	} else {
		fe_reply_entry(req, &e);
	}
}
