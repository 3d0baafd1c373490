/*
 * Regular files: open, read, release and SEEK_DATA/SEEK_HOLE.
 *
 * Data is never read through libext2fs's per-block file I/O: the mapping
 * engine turns the range into device extents under the filesystem lock, and
 * the bytes are then read from the device with the lock dropped.
 */
#include "config.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuse4fs.h"

#ifndef SEEK_DATA
#define SEEK_DATA 3
#define SEEK_HOLE 4
#endif

int f4_read_inline(struct f4fs *f4, ext2_ino_t ino,
		   struct ext2_inode_large *inode, void **buf, size_t *size)
{
	size_t len = 0;
	errcode_t err;
	void *data;

	err = ext2fs_inline_data_size(f4->fs, ino, &len);
	if (err)
		return f4_errno(err);
	/* Inline data is at most one block; anything larger is damage. */
	if (len > f4->blocksize)
		return EUCLEAN;
	data = calloc(1, len ? len : 1);
	if (!data)
		return ENOMEM;
	err = ext2fs_inline_data_get(f4->fs, ino, (struct ext2_inode *)inode,
				     data, &len);
	if (err) {
		free(data);
		return f4_errno(err);
	}
	*buf = data;
	*size = len;
	return 0;
}

void f4_open(struct fe_req *req, uint64_t nodeid,
	     const struct fuse_open_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	struct fuse_open_out out;
	struct f4_file *fh = NULL;
	ext2_ino_t ino;
	int ret;

	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	f4_unlock(f4);
	if (ret)
		goto out;
	if (LINUX_S_ISDIR(inode.i_mode)) {
		ret = EISDIR;
		goto out;
	}
	if (f4->ro && ((arg->flags & O_ACCMODE) != O_RDONLY ||
		       (arg->flags & O_TRUNC))) {
		ret = EROFS;
		goto out;
	}
	fh = calloc(1, sizeof(*fh));
	if (!fh) {
		ret = ENOMEM;
		goto out;
	}
	fh->ino = ino;
	fh->flags = arg->flags;
	memset(&out, 0, sizeof(out));
	out.fh = (uintptr_t)fh;
	/* Nothing changes file data behind the kernel's back on a read-only
	 * mount, so its page cache stays valid across opens. */
	if (f4->ro)
		out.open_flags |= FOPEN_KEEP_CACHE;
out:
	if (ret)
		fe_reply_err(req, ret);
	else if (fe_reply_open(req, &out) < 0)
		free(fh);
}

void f4_release(struct fe_req *req, uint64_t nodeid,
		const struct fuse_release_in *arg)
{
	(void)nodeid;
	free((struct f4_file *)(uintptr_t)arg->fh);
	fe_reply_ok(req);
}

static int f4_pread_full(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		if (n == 0)	/* the device is shorter than the filesystem */
			return EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/*
 * Fill buf with [pos, pos+len) of the file, which the caller has clamped to
 * i_size.  Maps under the lock, reads without it.
 */
static int f4_read_range(struct f4fs *f4, ext2_ino_t ino, char *buf,
			 uint64_t pos, size_t len)
{
	struct ext2_inode_large inode;
	uint64_t bs = f4->blocksize;
	size_t done = 0;
	int ret = 0;

	while (done < len) {
		uint64_t cur = pos + done;
		uint64_t lblk = cur >> f4->blockbits;
		uint64_t last = (pos + len - 1) >> f4->blockbits;
		struct f4_map map;
		size_t chunk;
		uint64_t inblk;

		f4_lock(f4);
		ret = f4_read_inode(f4, ino, &inode);
		if (ret == 0)
			ret = f4_map_begin(f4, ino, &inode, lblk,
					   last - lblk + 1, F4_MAP_READ, &map);
		if (ret == 0 && map.type == F4_MAP_INLINE) {
			void *data = NULL;
			size_t size = 0;

			ret = f4_read_inline(f4, ino, &inode, &data, &size);
			f4_unlock(f4);
			if (ret)
				break;
			chunk = len - done;
			if (cur < size) {
				size_t n = size - cur < chunk ? size - cur : chunk;

				memcpy(buf + done, (char *)data + cur, n);
				memset(buf + done + n, 0, chunk - n);
			} else {
				memset(buf + done, 0, chunk);
			}
			free(data);
			done += chunk;
			continue;
		}
		f4_unlock(f4);
		if (ret)
			break;

		inblk = cur - lblk * bs;
		chunk = map.len * bs - inblk;
		if (chunk > len - done)
			chunk = len - done;
		if (map.type == F4_MAP_MAPPED) {
			ret = f4_pread_full(f4->devfd, buf + done, chunk,
					    (off_t)(f4->opts.offset +
						    map.pblk * bs + inblk));
			if (ret)
				break;
		} else {
			memset(buf + done, 0, chunk);
		}
		done += chunk;
	}
	return ret;
}

void f4_read(struct fe_req *req, uint64_t nodeid,
	     const struct fuse_read_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	uint64_t size, len = arg->size;
	ext2_ino_t ino;
	char *buf = NULL;
	int ret;

	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	f4_unlock(f4);
	if (ret)
		goto out;
	if (!LINUX_S_ISREG(inode.i_mode)) {
		ret = LINUX_S_ISDIR(inode.i_mode) ? EISDIR : EINVAL;
		goto out;
	}
	size = f4_inode_size(&inode);
	if (arg->offset >= size) {
		len = 0;
		goto out;
	}
	if (len > size - arg->offset)
		len = size - arg->offset;
	buf = malloc(len);
	if (!buf) {
		ret = ENOMEM;
		goto out;
	}
	ret = f4_read_range(f4, ino, buf, arg->offset, len);
out:
	if (ret)
		fe_reply_err(req, ret);
	else
		fe_reply_buf(req, buf, len);
	free(buf);
}

/*
 * SEEK_DATA / SEEK_HOLE over the file's mappings.  Unwritten extents read
 * as zeroes and count as holes, as they do for the kernel's ext4 when no
 * page cache covers them.
 */
void f4_lseek(struct fe_req *req, uint64_t nodeid,
	      const struct fuse_lseek_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	uint64_t size, pos = arg->offset, result = 0, lblk, last;
	ext2_ino_t ino;
	int ret;

	if (arg->whence != SEEK_DATA && arg->whence != SEEK_HOLE) {
		ret = EINVAL;
		goto reply;
	}
	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	size = f4_inode_size(&inode);
	if ((int64_t)pos < 0 || pos >= size) {
		ret = ENXIO;
		goto out;
	}
	if (inode.i_flags & EXT4_INLINE_DATA_FL) {
		result = arg->whence == SEEK_DATA ? pos : size;
		goto out;
	}
	lblk = pos >> f4->blockbits;
	last = (size - 1) >> f4->blockbits;
	while (lblk <= last) {
		struct f4_map map;
		bool data;

		ret = f4_map_begin(f4, ino, &inode, lblk, last - lblk + 1,
				   F4_MAP_READ, &map);
		if (ret)
			goto out;
		data = map.type == F4_MAP_MAPPED;
		if (data == (arg->whence == SEEK_DATA)) {
			uint64_t start = map.lblk << f4->blockbits;

			result = start > pos ? start : pos;
			goto out;
		}
		lblk = map.lblk + map.len;
	}
	/* No data after pos; the end of the file counts as a hole. */
	if (arg->whence == SEEK_DATA)
		ret = ENXIO;
	else
		result = size;
out:
	f4_unlock(f4);
reply:
	if (ret)
		fe_reply_err(req, ret);
	else
		fe_reply_lseek(req, result);
}
