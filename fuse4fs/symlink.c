/*
 * Symbolic links: fast (target in i_block), inline-data and slow (target
 * in a data block, read through the mapping engine like any file data).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuse4fs.h"

static bool f4_is_fast_symlink(struct f4fs *f4,
			       const struct ext2_inode_large *inode)
{
	/* As the kernel decides it: no data blocks besides an xattr block. */
	if (inode->i_flags & EXT4_INLINE_DATA_FL)
		return false;
	return ext2fs_inode_data_blocks2(f4->fs,
					 (struct ext2_inode *)inode) == 0;
}

void f4_readlink(struct fe_req *req, uint64_t nodeid)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	uint64_t size = 0;
	ext2_ino_t ino;
	char *buf = NULL;
	struct f4_map map;
	int ret;

	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	if (!LINUX_S_ISLNK(inode.i_mode)) {
		ret = EINVAL;
		goto out;
	}
	size = f4_inode_size(&inode);
	/* The kernel's ext4 refuses targets that are empty or longer than a
	 * block: they cannot have been written by it. */
	if (size == 0 || size >= f4->blocksize) {
		ret = EUCLEAN;
		goto out;
	}
	if (inode.i_flags & EXT4_INLINE_DATA_FL) {
		void *data = NULL;
		size_t len = 0;

		ret = f4_read_inline(f4, ino, &inode, &data, &len);
		if (ret == 0 && len < size)
			ret = EUCLEAN;
		buf = data;
		goto out;
	}
	buf = calloc(1, f4->blocksize);
	if (!buf) {
		ret = ENOMEM;
		goto out;
	}
	if (f4_is_fast_symlink(f4, &inode)) {
		if (size >= sizeof(inode.i_block))
			ret = EUCLEAN;
		else
			memcpy(buf, inode.i_block, size);
		goto out;
	}
	ret = f4_map_begin(f4, ino, &inode, 0, 1, F4_MAP_READ, &map);
	if (ret == 0 && map.type != F4_MAP_MAPPED)
		ret = EUCLEAN;
	f4_unlock(f4);
	if (ret == 0 && pread(f4->devfd, buf, f4->blocksize,
			      (off_t)(f4->opts.offset +
				      map.pblk * f4->blocksize)) !=
	    (ssize_t)f4->blocksize)
		ret = EIO;
	goto reply;
out:
	f4_unlock(f4);
reply:
	if (ret == 0 && memchr(buf, 0, size))
		ret = EUCLEAN;
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_buf(req, buf, size);
	free(buf);
}
