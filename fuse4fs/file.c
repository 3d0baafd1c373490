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

/*
 * Open ino for the kernel: take an open reference, which keeps an unlinked
 * inode alive.  Caller holds the lock.
 */
int f4_open_file(struct f4fs *f4, ext2_ino_t ino, struct f4_inode **ipp)
{
	*ipp = f4_itable_get(f4, ino);
	return *ipp ? 0 : ENOMEM;
}

/*
 * ATOMIC_O_TRUNC: the truncation is ours to do, with the times update
 * open(2) makes.  The I/O lock comes before the filesystem lock, as it
 * does for writers, which another descriptor may have running.
 */
static int f4_open_truncate(struct fe_req *req, struct f4_inode *ip,
			    bool kill_suidgid, bool *mode_changed)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	uint16_t mode;
	int ret;

	pthread_rwlock_wrlock(&ip->iolock);
	f4_wb_wait(f4, ip);
	f4_lock(f4);
	ret = f4_read_inode(f4, ip->ino, &inode);
	if (ret)
		goto out;
	if (f4_inode_size(&inode) > 0) {
		ret = f4_truncate(f4, ip->ino, &inode, 0);
		if (ret)
			goto out;
	}
	mode = inode.i_mode;
	if (kill_suidgid)
		f4_kill_suidgid(req, &inode);
	*mode_changed = mode != inode.i_mode;
	f4_touch(f4, &inode, F4_MTIME | F4_CTIME, NULL);
	ret = f4_write_inode(f4, ip->ino, &inode);
out:
	f4_unlock(f4);
	pthread_rwlock_unlock(&ip->iolock);
	return ret;
}

void f4_open(struct fe_req *req, uint64_t nodeid,
	     const struct fuse_open_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	struct fuse_open_out out;
	struct f4_inode *ip = NULL;
	bool writing = (arg->flags & O_ACCMODE) != O_RDONLY ||
		(arg->flags & O_TRUNC);
	bool mode_changed = false;
	ext2_ino_t ino;
	int ret;

	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	if (LINUX_S_ISDIR(inode.i_mode)) {
		ret = EISDIR;
		goto out;
	}
	if (writing && f4->ro) {
		ret = EROFS;
		goto out;
	}
	if (writing && (inode.i_flags & EXT2_IMMUTABLE_FL)) {
		ret = EPERM;
		goto out;
	}
	if ((inode.i_flags & EXT2_APPEND_FL) &&
	    (arg->flags & O_ACCMODE) != O_RDONLY &&
	    (!(arg->flags & O_APPEND) || (arg->flags & O_TRUNC))) {
		ret = EPERM;
		goto out;
	}
	ret = f4_open_file(f4, ino, &ip);
	if (ret)
		goto out;
	if (writing) {
		ip->writer_uid = req->uid;
		ip->writer_gid = req->gid;
	}
	if ((arg->flags & O_TRUNC) && LINUX_S_ISREG(inode.i_mode)) {
		f4_unlock(f4);
		ret = f4_open_truncate(req, ip,
				       arg->open_flags & FUSE_OPEN_KILL_SUIDGID,
				       &mode_changed);
		f4_lock(f4);
		if (ret) {
			f4_itable_put(f4, ip);
			goto out;
		}
	}
	memset(&out, 0, sizeof(out));
	out.fh = ino;
	/* Every change to file data comes through this kernel, so its page
	 * cache stays valid across opens. */
	out.open_flags |= FOPEN_KEEP_CACHE;
out:
	f4_unlock(f4);
	if (ret) {
		f4_reply_err(req, ret);
		return;
	}
	if (fe_reply_open(req, &out) < 0) {
		f4_lock(f4);
		f4_itable_put(f4, ip);
		f4_unlock(f4);
	}
	if (mode_changed)
		fe_notify_inval_inode(f4->se, nodeid, -1, 0);
}

void f4_release(struct fe_req *req, uint64_t nodeid,
		const struct fuse_release_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct f4_inode *ip;
	ext2_ino_t ino;
	int ret;

	f4_lock(f4);
	ret = f4_check_nodeid(f4, nodeid, &ino);
	if (ret == 0)
		ret = f4_itable_handle(f4, arg->fh, ino, &ip);
	if (ret == 0 && ip)
		f4_itable_put(f4, ip);
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
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
 * Large aligned transfers on fuse4fs's own loop device go around its page
 * cache (O_DIRECT): loop then copies straight between the image file's
 * cache and our buffer, where buffering would copy through the loop
 * device's cache as well.  Small ones stay buffered: they gain nothing
 * and would each wait for loop.  The kernel writes back cached pages a
 * direct read covers, and drops those a direct write overwrites, so the
 * two paths stay coherent; the inode's I/O lock keeps reads of blocks
 * being written out meanwhile.
 */
#define F4_DIO_MIN	(64 * 1024)

static bool f4_dio_fits(struct f4fs *f4, const void *buf, size_t len,
			off_t off)
{
	return f4->dio_fd >= 0 && len >= F4_DIO_MIN &&
		!(len % F4_DIO_ALIGN) && !(off % F4_DIO_ALIGN) &&
		!((uintptr_t)buf % F4_DIO_ALIGN);
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
			off_t dev = (off_t)(f4->opts.offset + map.pblk * bs +
					    inblk);

			ret = f4_pread_full(f4_dio_fits(f4, buf + done, chunk,
							dev) ?
					    f4->dio_fd : f4->devfd,
					    buf + done, chunk, dev);
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
	struct f4_inode *ip = NULL;
	uint64_t size, len = arg->size;
	ext2_ino_t ino;
	char *buf = NULL, *own = NULL;
	int ret;

	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret == 0)
		ret = f4_itable_handle(f4, arg->fh, ino, &ip);
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
	/* Read straight into the reply where the transport allows. */
	buf = fe_reply_space(req, len);
	if (!buf && posix_memalign((void **)&own, F4_DIO_ALIGN, len)) {
		ret = ENOMEM;
		goto out;
	}
	if (!buf)
		buf = own;
	if (ip)
		pthread_rwlock_rdlock(&ip->iolock);
	f4_wb_wait(f4, ip);
	ret = f4_read_range(f4, ino, buf, arg->offset, len);
	if (ip)
		pthread_rwlock_unlock(&ip->iolock);
out:
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_buf(req, buf, len);
	free(own);
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
		f4_reply_err(req, ret);
	else
		fe_reply_lseek(req, result);
}

/* ---- writing ---- */

/* Write len bytes at off on the device, all of them. */
int f4_pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		if (n == 0)
			return EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/*
 * Write file data to the device.  With behind, a write large enough to
 * go direct is queued (see writebehind.c) instead; any other write first
 * waits for ip's queued ones, which may cover the same blocks.
 */
static int f4_dev_write(struct f4fs *f4, struct f4_inode *ip, bool behind,
			const void *buf, size_t len, off_t off)
{
	/* The queue's copy is aligned whatever buf is. */
	if (behind && f4_dio_fits(f4, NULL, len, off) &&
	    f4_wb_queue(f4, ip, buf, len, off))
		return 0;
	f4_wb_wait(f4, ip);
	if (f4_dio_fits(f4, buf, len, off))
		return f4_pwrite_full(f4->dio_fd, buf, len, off);
	return f4_pwrite_full(f4->devfd, buf, len, off);
}

static off_t f4_dev_offset(struct f4fs *f4, uint64_t pblk)
{
	return (off_t)(f4->opts.offset + (pblk << f4->blockbits));
}

/*
 * Zero [start, end) of the file where it is backed by written blocks.
 * Holes and unwritten extents already read as zeroes.  Caller holds the
 * lock and the inode's I/O lock exclusively.
 */
int f4_zero_range_on_disk(struct f4fs *f4, ext2_ino_t ino,
			  struct ext2_inode_large *inode, uint64_t start,
			  uint64_t end)
{
	static const char zeroes[65536];

	while (start < end) {
		uint64_t lblk = start >> f4->blockbits;
		uint64_t last = (end - 1) >> f4->blockbits;
		uint64_t inblk = start - (lblk << f4->blockbits);
		struct f4_map map;
		uint64_t chunk;
		int ret;

		ret = f4_map_begin(f4, ino, inode, lblk, last - lblk + 1,
				   F4_MAP_READ, &map);
		if (ret)
			return ret;
		chunk = (map.len << f4->blockbits) - inblk;
		if (chunk > end - start)
			chunk = end - start;
		if (map.type == F4_MAP_MAPPED) {
			uint64_t done = 0;

			while (done < chunk) {
				size_t n = chunk - done < sizeof(zeroes) ?
					chunk - done : sizeof(zeroes);

				ret = f4_pwrite_full(f4->devfd, zeroes, n,
					f4_dev_offset(f4, map.pblk) + inblk + done);
				if (ret)
					return ret;
				done += n;
			}
		}
		start += chunk;
	}
	return 0;
}

/*
 * Move an inline-data file's bytes into a block so that it can grow past
 * what the inode holds.  Caller holds the lock.
 */
static int f4_uninline(struct f4fs *f4, ext2_ino_t ino,
		       struct ext2_inode_large *inode)
{
	struct ext2_xattr_handle *h = NULL;
	void *data = NULL;
	size_t size = 0;
	struct f4_map map;
	char *block = NULL;
	errcode_t err;
	int ret;

	ret = f4_read_inline(f4, ino, inode, &data, &size);
	if (ret)
		return ret;
	err = ext2fs_xattrs_open(f4->fs, ino, &h);
	if (!err)
		err = ext2fs_xattrs_read(h);
	if (!err) {
		err = ext2fs_xattr_remove(h, "system.data");
		if (err == EXT2_ET_EA_KEY_NOT_FOUND)
			err = 0;
	}
	if (h)
		ext2fs_xattrs_close(&h);
	if (err) {
		ret = f4_errno(err);
		goto out;
	}
	ret = f4_read_inode(f4, ino, inode);
	if (ret)
		goto out;
	inode->i_flags &= ~EXT4_INLINE_DATA_FL;
	memset(inode->i_block, 0, sizeof(inode->i_block));
	if (ext2fs_has_feature_extents(f4->fs->super))
		f4_init_extent_header(inode);
	ret = f4_write_inode(f4, ino, inode);
	if (ret || size == 0)
		goto out;
	block = calloc(1, f4->blocksize);
	if (!block) {
		ret = ENOMEM;
		goto out;
	}
	memcpy(block, data, size < f4->blocksize ? size : f4->blocksize);
	ret = f4_map_begin(f4, ino, inode, 0, 1, F4_MAP_WRITE | F4_MAP_ROOT,
			   &map);
	if (ret == 0)
		ret = f4_pwrite_full(f4->devfd, block, f4->blocksize,
				     f4_dev_offset(f4, map.pblk));
out:
	free(block);
	free(data);
	return ret;
}

/*
 * Write one mapped run.  Blocks that are fresh or unwritten get zeroes
 * around the data so that no stale device contents become readable.
 */
static int f4_write_run(struct f4fs *f4, struct f4_inode *ip, bool behind,
			const struct f4_map *map, const char *data,
			uint64_t pos, size_t len)
{
	uint64_t bs = f4->blocksize;
	uint64_t inrun = pos - (map->lblk << f4->blockbits);
	off_t dev = f4_dev_offset(f4, map->pblk) + (off_t)inrun;
	uint64_t head, span;
	char *buf;
	int ret;

	head = inrun & (bs - 1);
	/* Fresh or unwritten blocks are written whole, padded with zeroes;
	 * a write covering whole blocks needs no padding. */
	if ((!map->fresh && map->type != F4_MAP_UNWRITTEN) ||
	    (head == 0 && (len & (bs - 1)) == 0))
		return f4_dev_write(f4, ip, behind &&
				    map->type == F4_MAP_MAPPED, data, len, dev);

	span = (head + len + bs - 1) & ~(bs - 1);
	if (posix_memalign((void **)&buf, F4_DIO_ALIGN, span))
		return ENOMEM;
	memset(buf, 0, head);
	memcpy(buf + head, data, len);
	memset(buf + head + len, 0, span - head - len);
	ret = f4_dev_write(f4, ip, false, buf, span, dev - (off_t)head);
	free(buf);
	return ret;
}

void f4_write(struct fe_req *req, uint64_t nodeid,
	      const struct fuse_write_in *arg, const void *data)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct f4_inode *ip = NULL;
	struct ext2_inode_large inode;
	bool own_ref = false, mode_changed = false;
	/* From the kernel's page cache (writeback_cache): a short count would
	 * be dropped silently there, so limits are errors instead. */
	bool cached = arg->write_flags & FUSE_WRITE_CACHE;
	/* O_SYNC includes O_DSYNC's bit. */
	bool behind = !(arg->flags & (O_DIRECT | O_DSYNC));
	uint64_t pos = arg->offset, end, max;
	size_t len = arg->size, done = 0;
	ext2_ino_t ino;
	bool root;
	int ret;

	if (f4->ro) {
		f4_reply_err(req, EROFS);
		return;
	}
	f4_lock(f4);
	root = f4_req_privileged(f4, req);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret == 0 && !LINUX_S_ISREG(inode.i_mode))
		ret = EINVAL;
	if (ret == 0)
		ret = f4_itable_handle(f4, arg->fh, ino, &ip);
	if (ret == 0 && !ip) {
		/* Inline data written by an iomap kernel comes without a
		 * handle; hold the inode for the duration. */
		ip = f4_itable_get(f4, ino);
		own_ref = true;
		if (!ip)
			ret = ENOMEM;
	}
	if (ret == 0 && cached) {
		struct fe_req writer = *req;

		writer.uid = ip->writer_uid;
		writer.gid = ip->writer_gid;
		root = f4_req_privileged(f4, &writer);
	}
	f4_unlock(f4);
	if (ret)
		goto reply;

	/* One writer per inode: a fresh block is padded with zeroes, which
	 * must not land on another writer's data in the same block. */
	pthread_rwlock_wrlock(&ip->iolock);
	pthread_rwlock_rdlock(&f4->flush_barrier);
	f4_lock(f4);
	ret = f4_read_inode(f4, ino, &inode);
	if (ret)
		goto out_locked;
	if (inode.i_flags & EXT2_IMMUTABLE_FL) {
		ret = EPERM;
		goto out_locked;
	}
	max = f4_max_file_size(f4, &inode);
	if (pos >= max || (cached && len > max - pos)) {
		ret = EFBIG;
		goto out_locked;
	}
	if (len > max - pos)
		len = max - pos;
	if (inode.i_flags & EXT4_INLINE_DATA_FL) {
		ret = f4_uninline(f4, ino, &inode);
		if (ret)
			goto out_locked;
	}
	end = pos + len;
	while (done < len) {
		uint64_t cur = pos + done;
		uint64_t lblk = cur >> f4->blockbits;
		uint64_t last = (end - 1) >> f4->blockbits;
		struct f4_map map;
		size_t chunk;

		ret = f4_map_begin(f4, ino, &inode, lblk, last - lblk + 1,
				   F4_MAP_WRITE | (root ? F4_MAP_ROOT : 0), &map);
		if (ret)
			break;
		chunk = (map.len << f4->blockbits) -
			(cur - (lblk << f4->blockbits));
		if (chunk > len - done)
			chunk = len - done;
		f4_unlock(f4);
		ret = f4_write_run(f4, ip, behind, &map,
				   (const char *)data + done, cur, chunk);
		f4_lock(f4);
		if (ret)
			break;
		if (map.type == F4_MAP_UNWRITTEN) {
			ret = f4_read_inode(f4, ino, &inode);
			if (ret == 0)
				ret = f4_map_convert(f4, ino, &inode, lblk,
					((cur + chunk - 1) >> f4->blockbits) -
					lblk + 1);
			if (ret)
				break;
		}
		done += chunk;
	}
	/* A short write still reports what reached the device. */
	if (done > 0) {
		int ret2 = f4_read_inode(f4, ino, &inode);

		if (ret2 == 0) {
			uint16_t mode = inode.i_mode;

			if (pos + done > f4_inode_size(&inode))
				ext2fs_inode_size_set(f4->fs,
					(struct ext2_inode *)&inode, pos + done);
			if (arg->write_flags & FUSE_WRITE_KILL_SUIDGID)
				f4_kill_suidgid(req, &inode);
			mode_changed = mode != inode.i_mode;
			if (!f4_kernel_keeps_times(f4, &inode))
				f4_touch(f4, &inode, F4_MTIME | F4_CTIME, NULL);
			ret2 = f4_write_inode(f4, ino, &inode);
		}
		ret = ret2;
	}
out_locked:
	f4_unlock(f4);
	pthread_rwlock_unlock(&f4->flush_barrier);
	pthread_rwlock_unlock(&ip->iolock);
	if (own_ref) {
		f4_lock(f4);
		f4_itable_put(f4, ip);
		f4_unlock(f4);
	}
	/* The kernel caches the mode it saw before this write. */
	if (mode_changed)
		fe_notify_inval_inode(f4->se, nodeid, -1, 0);
reply:
	if (ret && done == 0)
		f4_reply_err(req, ret);
	else
		fe_reply_write(req, (uint32_t)done);
}

/*
 * Truncate to size: free the blocks past the new end and zero the tail of
 * the last block on disk, so that growing the file again reads zeroes.
 * Caller holds the lock and the inode's I/O lock exclusively.
 */
int f4_truncate(struct f4fs *f4, ext2_ino_t ino,
		struct ext2_inode_large *inode, uint64_t size)
{
	uint64_t old = f4_inode_size(inode);
	uint64_t bs = f4->blocksize;
	int ret;

	if (size > f4_max_file_size(f4, inode))
		return EFBIG;
	if (inode->i_flags & EXT4_INLINE_DATA_FL) {
		ret = f4_uninline(f4, ino, inode);
		if (ret)
			return ret;
	}
	if (size < old) {
		ret = f4_map_punch(f4, ino, inode, (size + bs - 1) >>
				   f4->blockbits, ~0ULL);
		if (ret)
			return ret;
		if (size & (bs - 1)) {
			ret = f4_zero_range_on_disk(f4, ino, inode, size,
						    (size + bs - 1) & ~(bs - 1));
			if (ret)
				return ret;
		}
	}
	ret = f4_errno(ext2fs_inode_size_set(f4->fs, (struct ext2_inode *)inode,
					     size));
	if (ret)
		return ret;
	return f4_write_inode(f4, ino, inode);
}

/* The open file behind fh, with a reference the caller drops, or NULL. */
static struct f4_inode *f4_handle_get(struct f4fs *f4, uint64_t nodeid,
				      uint64_t fh)
{
	struct f4_inode *ip = NULL;
	ext2_ino_t ino;

	f4_lock(f4);
	if (f4_check_nodeid(f4, nodeid, &ino) == 0 &&
	    f4_itable_handle(f4, fh, ino, &ip) == 0 && ip)
		ip = f4_itable_get(f4, ino);
	f4_unlock(f4);
	return ip;
}

static void f4_handle_put(struct f4fs *f4, struct f4_inode *ip)
{
	if (!ip)
		return;
	f4_lock(f4);
	f4_itable_put(f4, ip);
	f4_unlock(f4);
}

/* close(2): the file's queued writes reach the device, and one that
 * failed fails the close, so that data is not lost without a word. */
void f4_flush_op(struct fe_req *req, uint64_t nodeid,
		 const struct fuse_flush_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct f4_inode *ip;
	int ret = 0;

	/* Most closes: nothing queued anywhere, nothing to look up. */
	if (f4_wb_quiet(f4)) {
		fe_reply_ok(req);
		return;
	}
	ip = f4_handle_get(f4, nodeid, arg->fh);
	if (ip) {
		f4_wb_wait(f4, ip);
		ret = f4_wb_take_error(f4, ip);
	}
	f4_handle_put(f4, ip);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}

/* Every metadata change is written back, whichever file asks: datasync
 * or not, the result is at least as durable as requested. */
void f4_fsync(struct fe_req *req, uint64_t nodeid,
	      const struct fuse_fsync_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct f4_inode *ip = f4_handle_get(f4, nodeid, arg->fh);
	int ret = f4->ro ? 0 : f4_flush(f4, true);

	if (ret == 0 && ip)
		ret = f4_wb_take_error(f4, ip);
	f4_handle_put(f4, ip);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}

#define F4_FALLOC_KEEP_SIZE	0x01
#define F4_FALLOC_PUNCH_HOLE	0x02
#define F4_FALLOC_ZERO_RANGE	0x10

void f4_fallocate(struct fe_req *req, uint64_t nodeid,
		  const struct fuse_fallocate_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	struct f4_inode *ip = NULL;
	uint32_t mode = arg->mode;
	uint64_t start = arg->offset, end, first, last_excl;
	unsigned int mapflags;
	uint64_t bs;
	ext2_ino_t ino;
	int ret;

	if (f4->ro) {
		f4_reply_err(req, EROFS);
		return;
	}
	if (mode & ~(F4_FALLOC_KEEP_SIZE | F4_FALLOC_PUNCH_HOLE |
		     F4_FALLOC_ZERO_RANGE) ||
	    ((mode & F4_FALLOC_PUNCH_HOLE) && (mode & F4_FALLOC_ZERO_RANGE))) {
		f4_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (arg->length == 0 || arg->offset > INT64_MAX ||
	    arg->length > INT64_MAX - arg->offset) {
		f4_reply_err(req, arg->length == 0 ? EINVAL : EFBIG);
		return;
	}
	end = start + arg->length;
	bs = f4->blocksize;

	f4_lock(f4);
	ret = f4_check_nodeid(f4, nodeid, &ino);
	if (ret == 0)
		ret = f4_itable_handle(f4, arg->fh, ino, &ip);
	if (ret == 0 && !ip)
		ret = EBADF;
	f4_unlock(f4);
	if (ret) {
		f4_reply_err(req, ret);
		return;
	}
	pthread_rwlock_wrlock(&ip->iolock);
	f4_wb_wait(f4, ip);
	pthread_rwlock_rdlock(&f4->flush_barrier);
	f4_lock(f4);
	mapflags = f4_req_privileged(f4, req) ? F4_MAP_ROOT : 0;
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	if (inode.i_flags & (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL)) {
		ret = EPERM;
		goto out;
	}
	if (!(mode & F4_FALLOC_PUNCH_HOLE) &&
	    !(inode.i_flags & EXT4_EXTENTS_FL) &&
	    !(inode.i_flags & EXT4_INLINE_DATA_FL)) {
		ret = EOPNOTSUPP;
		goto out;
	}
	/* The VFS checks this against ext4's limit for every mode; FUSE's
	 * limit is larger, so the check is here. */
	if (end > f4_max_file_size(f4, &inode)) {
		ret = EFBIG;
		goto out;
	}
	if (inode.i_flags & EXT4_INLINE_DATA_FL) {
		ret = f4_uninline(f4, ino, &inode);
		if (ret)
			goto out;
	}
	first = (start + bs - 1) >> f4->blockbits;	/* first whole block */
	last_excl = end >> f4->blockbits;		/* past the last whole one */

	if (mode & F4_FALLOC_PUNCH_HOLE) {
		/* As ext4_punch_hole(): nothing past EOF, and a range running
		 * past EOF ends at EOF rounded up to a page, so preallocated
		 * blocks further out stay. */
		uint64_t size = f4_inode_size(&inode);
		uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

		if (start >= size)
			goto done;
		if (end > size) {
			end = size + page - (size & (page - 1));
			last_excl = end >> f4->blockbits;
		}
	}
	if (mode & (F4_FALLOC_PUNCH_HOLE | F4_FALLOC_ZERO_RANGE)) {
		uint64_t size = f4_inode_size(&inode);
		uint64_t zend = (mode & F4_FALLOC_PUNCH_HOLE) && end > size ?
			size : end;

		/* Partial blocks at the edges are zeroed in place. */
		if (start < zend && first > last_excl) {
			ret = f4_zero_range_on_disk(f4, ino, &inode, start, zend);
		} else if (start < zend) {
			ret = f4_zero_range_on_disk(f4, ino, &inode, start,
				first << f4->blockbits < zend ?
				first << f4->blockbits : zend);
			if (ret == 0 && (last_excl << f4->blockbits) < zend)
				ret = f4_zero_range_on_disk(f4, ino, &inode,
					last_excl << f4->blockbits, zend);
		}
		if (ret == 0 && first < last_excl)
			ret = f4_map_punch(f4, ino, &inode, first,
					   last_excl - 1);
		if (ret == 0 && (mode & F4_FALLOC_ZERO_RANGE) &&
		    first < last_excl)
			ret = f4_map_prealloc(f4, ino, &inode, first,
					      last_excl - first, mapflags);
	} else {
		ret = f4_map_prealloc(f4, ino, &inode, start >> f4->blockbits,
				      ((end + bs - 1) >> f4->blockbits) -
				      (start >> f4->blockbits), mapflags);
	}
	if (ret)
		goto out;
	ret = f4_read_inode(f4, ino, &inode);
	if (ret)
		goto out;
	if (!(mode & (F4_FALLOC_KEEP_SIZE | F4_FALLOC_PUNCH_HOLE)) &&
	    end > f4_inode_size(&inode))
		ext2fs_inode_size_set(f4->fs, (struct ext2_inode *)&inode, end);
	if (!f4_kernel_keeps_times(f4, &inode))
		f4_touch(f4, &inode, F4_MTIME | F4_CTIME, NULL);
	ret = f4_write_inode(f4, ino, &inode);
	goto out;
done:
	ret = 0;
out:
	f4_unlock(f4);
	pthread_rwlock_unlock(&f4->flush_barrier);
	pthread_rwlock_unlock(&ip->iolock);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}
