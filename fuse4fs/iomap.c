/*
 * The iomap protocol: the kernel moves file data to and from the block
 * device itself and asks this server only for mappings.
 *
 * BEGIN answers from the same mapping engine the classic READ/WRITE path
 * uses.  Writes into holes allocate unwritten extents (so that a crash
 * before the data lands exposes nothing) which IOEND converts once the
 * data is on the device; IOEND also moves i_size for appends.  The kernel
 * owns i_size and the timestamps of iomap inodes while they are cached,
 * and sends them back with SETATTR.
 */
#include "config.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fuse4fs.h"

/* statx(2) STATX_DIOALIGN. */
#define F4_STATX_DIOALIGN	0x00002000U

static bool f4_has_cap_sys_rawio(void)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3,
	};
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) != 0)
		return false;
	return data[CAP_SYS_RAWIO / 32].effective &
		(1U << (CAP_SYS_RAWIO % 32));
}

static bool f4_module_allows_iomap(void)
{
	char c = 'N';
	int fd = open("/sys/module/fuse/parameters/enable_iomap",
		      O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	if (read(fd, &c, 1) != 1)
		c = 'N';
	close(fd);
	return c == 'Y' || c == '1';
}

/*
 * Decide, before mounting, whether this mount will ask for iomap: the
 * kernel must have the extension and let this process use it, and the
 * filesystem must sit on a block device (a loop device for images).
 * With iomap=on a missing piece is an error; with auto it is a note.
 */
int f4_iomap_prepare(struct f4fs *f4, int fusefd)
{
	const char *why = NULL;
	uint64_t flags = 0;
	struct stat st;
	int ret;

	if (f4->opts.iomap == F4_OFF)
		return 0;
	ret = fusefd >= 0 ? fe_iomap_probe(fusefd, &flags) : -ENODEV;
	if (ret == -ENOTTY || ret == -ENODEV)
		why = "this kernel has no FUSE iomap support";
	else if (ret < 0)
		why = strerror(-ret);
	else if (!(flags & FUSE_IOMAP_SUPPORT_FILEIO))
		why = !f4_module_allows_iomap() ?
			"the fuse module parameter enable_iomap is off" :
			!f4_has_cap_sys_rawio() ?
			"iomap needs CAP_SYS_RAWIO" :
			"the kernel does not allow iomap for this mount";
	if (!why && fstat(f4->devfd, &st) == 0 && S_ISBLK(st.st_mode)) {
		f4->iomap_fd = open(f4->opts.device, (f4->ro ? O_RDONLY : O_RDWR) |
				    O_CLOEXEC);
		if (f4->iomap_fd < 0)
			why = strerror(errno);
		f4->iomap_addr_offset = f4->opts.offset;
	} else if (!why) {
		char name[64];

		ret = f4_loop_attach(f4->opts.device, f4->ro, f4->opts.offset,
				     name, sizeof(name), &f4->iomap_fd);
		if (ret)
			why = "an image file needs a loop device, which could "
				"not be set up";
		else
			snprintf(f4->iomap_loop, sizeof(f4->iomap_loop), "%s",
				 name);
	}
	if (why) {
		if (f4->opts.iomap == F4_ON) {
			f4_log("cannot use iomap (-o iomap=on): %s", why);
			return EOPNOTSUPP;
		}
		f4_log("iomap unavailable (%s); using classic I/O", why);
		return 0;
	}
	f4->iomap_wanted = true;
	return 0;
}

void f4_iomap_release(struct f4fs *f4)
{
	if (f4->iomap_fd >= 0)
		close(f4->iomap_fd);
	f4->iomap_fd = -1;
}

/* The per-inode flags FUSE_ATTR_* for an inode on an iomap mount. */
uint32_t f4_iomap_attr_flags(struct f4fs *f4,
			     const struct ext2_inode_large *inode)
{
	uint32_t flags = FUSE_ATTR_EXCLUSIVE;

	/* Inline-data files stay on classic READ/WRITE: their bytes live in
	 * the inode, which only this server can update consistently. */
	if (LINUX_S_ISREG(inode->i_mode) &&
	    !(inode->i_flags & EXT4_INLINE_DATA_FL))
		flags |= FUSE_ATTR_IOMAP;
	if (inode->i_flags & EXT2_SYNC_FL)
		flags |= FUSE_ATTR_SYNC;
	if (inode->i_flags & EXT2_IMMUTABLE_FL)
		flags |= FUSE_ATTR_IMMUTABLE;
	if (inode->i_flags & EXT2_APPEND_FL)
		flags |= FUSE_ATTR_APPEND;
	(void)f4;
	return flags;
}

/*
 * Freed blocks may come back as file data that the kernel writes straight
 * to the device, while the device's page cache still holds what this
 * server wrote there as metadata; drop that copy so it can never be
 * written back over the data.
 */
static void f4_iomap_freed(struct f4fs *f4, blk64_t blk, uint64_t num)
{
	int ret;

	ret = fe_notify_iomap_dev_inval(f4->se, f4->iomap_dev,
					f4->iomap_addr_offset +
					(blk << f4->blockbits),
					num << f4->blockbits);
	if (ret < 0 && ret != -ENOTTY)
		f4_log("invalidating freed blocks %llu+%llu failed: %s",
		       (unsigned long long)blk, (unsigned long long)num,
		       strerror(-ret));
}

static void (*f4_old_block_stats)(ext2_filsys, blk64_t, int);
static void (*f4_old_range_stats)(ext2_filsys, blk64_t, blk_t, int);

static void f4_iomap_block_stats(ext2_filsys fs, blk64_t blk, int inuse)
{
	if (f4_old_block_stats)
		f4_old_block_stats(fs, blk, inuse);
	if (inuse < 0)
		f4_iomap_freed(fs->priv_data, blk, 1);
}

static void f4_iomap_range_stats(ext2_filsys fs, blk64_t blk, blk_t num,
				 int inuse)
{
	if (f4_old_range_stats)
		f4_old_range_stats(fs, blk, num, inuse);
	if (inuse < 0)
		f4_iomap_freed(fs->priv_data, blk, num);
}

void f4_iomap_config(struct fe_req *req, const struct fuse_iomap_config_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_super_block *sb = f4->fs->super;
	struct fuse_iomap_config_out out;
	struct ext2_inode_large proto;
	const char *id;
	int dev;

	if (!f4->iomap) {
		f4_reply_err(req, ENOSYS);
		return;
	}
	dev = fe_backing_open_iomap(f4->se, f4->iomap_fd);
	if (dev <= 0) {
		f4_log("registering %s for iomap failed: %s",
		       f4->iomap_loop[0] ? f4->iomap_loop : f4->opts.device,
		       strerror(dev < 0 ? -dev : EIO));
		f4_reply_err(req, dev < 0 ? -dev : EIO);
		return;
	}
	f4->iomap_dev = (uint32_t)dev;
	f4_lock(f4);
	f4->fs->priv_data = f4;
	ext2fs_set_block_alloc_stats_callback(f4->fs, f4_iomap_block_stats,
					      &f4_old_block_stats);
	ext2fs_set_block_alloc_stats_range_callback(f4->fs,
						    f4_iomap_range_stats,
						    &f4_old_range_stats);
	f4_unlock(f4);

	memset(&out, 0, sizeof(out));
	out.flags = FUSE_IOMAP_CONFIG_SID | FUSE_IOMAP_CONFIG_UUID |
		FUSE_IOMAP_CONFIG_BLOCKSIZE | FUSE_IOMAP_CONFIG_MAX_LINKS |
		FUSE_IOMAP_CONFIG_TIME | FUSE_IOMAP_CONFIG_MAXBYTES;
	out.flags &= arg->flags;
	id = strrchr(f4->opts.device, '/');
	snprintf(out.s_id, sizeof(out.s_id), "%s", id ? id + 1 : f4->opts.device);
	memcpy(out.s_uuid, sb->s_uuid, sizeof(out.s_uuid));
	out.s_uuid_len = sizeof(sb->s_uuid);
	out.s_blocksize = f4->blocksize;
	out.s_max_links = F4_LINK_MAX;
	out.s_time_gran = f4->nsec_times ? 1 : 1000000000;
	out.s_time_min = F4_TIME_MIN;
	out.s_time_max = f4->nsec_times ? F4_TIME_MAX_EXTRA : F4_TIME_MAX_OLD;
	/* The largest file an extent-mapped inode can have. */
	memset(&proto, 0, sizeof(proto));
	proto.i_flags = ext2fs_has_feature_extents(sb) ? EXT4_EXTENTS_FL : 0;
	out.s_maxbytes = (int64_t)f4_max_file_size(f4, &proto);
	if (arg->maxbytes > 0 && out.s_maxbytes > arg->maxbytes)
		out.s_maxbytes = arg->maxbytes;
	fe_reply_iomap_config(req, &out);
}

static void f4_iomap_io(struct f4fs *f4, const struct f4_map *map,
			struct fuse_iomap_io *io)
{
	memset(io, 0, sizeof(*io));
	io->offset = map->lblk << f4->blockbits;
	io->length = map->len << f4->blockbits;
	io->addr = FUSE_IOMAP_NULL_ADDR;
	switch (map->type) {
	case F4_MAP_MAPPED:
	case F4_MAP_UNWRITTEN:
		io->type = map->type == F4_MAP_MAPPED ?
			FUSE_IOMAP_TYPE_MAPPED : FUSE_IOMAP_TYPE_UNWRITTEN;
		io->addr = f4->iomap_addr_offset + (map->pblk << f4->blockbits);
		io->dev = f4->iomap_dev;
		break;
	case F4_MAP_INLINE:
		io->type = FUSE_IOMAP_TYPE_INLINE;
		break;
	case F4_MAP_HOLE:
		io->type = FUSE_IOMAP_TYPE_HOLE;
		break;
	}
}

/* Zero blocks on the device: new blocks of indirect-mapped files, which
 * have no unwritten state to hide stale contents behind. */
static int f4_iomap_zero_blocks(struct f4fs *f4, uint64_t pblk, uint64_t len)
{
	errcode_t err = ext2fs_zero_blocks2(f4->fs, pblk, (int)len, NULL, NULL);

	return f4_errno(err);
}

/* Allocate the hole at the start of map for a write. */
static int f4_iomap_allocate(struct fe_req *req, ext2_ino_t ino,
			     struct ext2_inode_large *inode, struct f4_map *map)
{
	struct f4fs *f4 = fe_req_fs(req);
	unsigned int flags = f4_req_privileged(f4, req) ? F4_MAP_ROOT : 0;
	uint64_t lblk = map->lblk, len = map->len;
	int ret;

	if (inode->i_flags & EXT4_EXTENTS_FL) {
		ret = f4_map_prealloc(f4, ino, inode, lblk, len, flags);
		if (ret == 0)
			ret = f4_map_begin(f4, ino, inode, lblk, len,
					   F4_MAP_READ, map);
		if (ret == 0 && map->type != F4_MAP_UNWRITTEN)
			ret = EUCLEAN;
		return ret;
	}
	ret = f4_map_begin(f4, ino, inode, lblk, len, F4_MAP_WRITE | flags, map);
	if (ret == 0)
		ret = f4_iomap_zero_blocks(f4, map->pblk, map->len);
	return ret;
}

/* Blocks from lblk needed to cover [pos, pos + count), at least one. */
static uint64_t f4_iomap_span(struct f4fs *f4, uint64_t lblk, uint64_t pos,
			      uint64_t count)
{
	uint64_t end = pos + (count ? count : 1);

	if (end < pos)
		end = UINT64_MAX;
	return ((end - 1) >> f4->blockbits) - lblk + 1;
}

/*
 * The kernel's validation of one mapping in a BEGIN reply (fuse-abi
 * §2.9); returns the rule broken, or NULL.
 */
static const char *f4_iomap_bad_mapping(struct f4fs *f4,
					const struct fuse_iomap_io *io,
					bool is_write, uint64_t pos,
					uint64_t maxbytes)
{
	uint64_t bs = f4->blocksize;

	switch (io->type) {
	case FUSE_IOMAP_TYPE_HOLE:
	case FUSE_IOMAP_TYPE_DELALLOC:
	case FUSE_IOMAP_TYPE_INLINE:
		if (io->dev != 0 || io->addr != FUSE_IOMAP_NULL_ADDR)
			return "hole/delalloc/inline mapping with a device or address";
		break;
	case FUSE_IOMAP_TYPE_MAPPED:
	case FUSE_IOMAP_TYPE_UNWRITTEN:
		if (io->dev == 0 || io->addr == FUSE_IOMAP_NULL_ADDR)
			return "mapped/unwritten mapping without a device or address";
		if (io->addr + io->length < io->addr)
			return "address + length overflows";
		break;
	case FUSE_IOMAP_TYPE_PURE_OVERWRITE:
		if (!is_write)
			return "pure overwrite as the read mapping";
		if (io->flags || io->dev || io->addr != FUSE_IOMAP_NULL_ADDR)
			return "pure overwrite with flags, device or address";
		break;
	default:
		return "unknown mapping type";
	}
	if (io->flags & ~0xffU)
		return "flags outside the server's set";
	if (io->length == 0)
		return "zero length";
	if (io->offset % bs || io->length % bs)
		return "offset or length not block aligned";
	if (io->offset + io->length < io->offset)
		return "offset + length overflows";
	if (io->offset >= maxbytes)
		return "offset past the maximum file size";
	if (pos < io->offset || pos >= io->offset + io->length)
		return "mapping does not cover pos";
	return NULL;
}

/* -o iomap_debug: log every BEGIN and refuse to send a reply the kernel
 * would reject, naming the rule. */
static int f4_iomap_check_reply(struct f4fs *f4, uint64_t nodeid,
				const struct fuse_iomap_begin_in *arg,
				const struct fuse_iomap_begin_out *out)
{
	struct ext2_inode_large proto = { 0 };
	const char *bad;
	uint64_t maxbytes;

	proto.i_flags = ext2fs_has_feature_extents(f4->fs->super) ?
		EXT4_EXTENTS_FL : 0;
	maxbytes = f4_max_file_size(f4, &proto);
	f4_log("iomap begin node %llu op 0x%x pos %llu count %llu -> "
	       "read {type %u off %llu len %llu addr 0x%llx flags 0x%x dev %u} "
	       "write {type %u off %llu len %llu}",
	       (unsigned long long)nodeid, arg->opflags,
	       (unsigned long long)arg->pos, (unsigned long long)arg->count,
	       out->read.type, (unsigned long long)out->read.offset,
	       (unsigned long long)out->read.length,
	       (unsigned long long)out->read.addr, out->read.flags,
	       out->read.dev, out->write.type,
	       (unsigned long long)out->write.offset,
	       (unsigned long long)out->write.length);
	bad = f4_iomap_bad_mapping(f4, &out->read, false, arg->pos, maxbytes);
	if (!bad)
		bad = f4_iomap_bad_mapping(f4, &out->write, true, arg->pos,
					   maxbytes);
	if (!bad)
		return 0;
	f4_log("iomap begin node %llu: invalid reply (%s); answering EIO",
	       (unsigned long long)nodeid, bad);
	return EIO;
}

void f4_iomap_begin(struct fe_req *req, uint64_t nodeid,
		    const struct fuse_iomap_begin_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	struct fuse_iomap_begin_out out;
	uint32_t op = arg->opflags;
	bool write = op & (FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_ZERO |
			   FUSE_IOMAP_OP_UNSHARE | FUSE_IOMAP_OP_WRITEBACK);
	bool alloc = write && !(op & (FUSE_IOMAP_OP_ZERO |
				      FUSE_IOMAP_OP_UNSHARE));
	uint64_t pos = arg->pos, count = arg->count, lblk, span, max;
	struct f4_map map;
	ext2_ino_t ino;
	int ret;

	memset(&out, 0, sizeof(out));
	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	if (!LINUX_S_ISREG(inode.i_mode)) {
		ret = EINVAL;
		goto out;
	}
	if (alloc && f4->ro) {
		ret = EROFS;
		goto out;
	}
	if (op & FUSE_IOMAP_OP_SWAPFILE) {
		/* No layout leases: swap files stay on other filesystems. */
		ret = EOPNOTSUPP;
		goto out;
	}
	max = f4_max_file_size(f4, &inode);
	if (pos >= max) {
		ret = write ? EFBIG : EINVAL;
		goto out;
	}
	if (count > max - pos)
		count = max - pos;
	if ((inode.i_flags & EXT4_INLINE_DATA_FL) && write) {
		/* Inline-data inodes are never handed to iomap for I/O. */
		ret = ENOSYS;
		goto out;
	}
	lblk = pos >> f4->blockbits;
	span = f4_iomap_span(f4, lblk, pos, count);
	/* Reads and reports describe the whole extent at pos, so the kernel
	 * can issue large I/O; writes map only what they were asked for. */
	ret = f4_map_begin(f4, ino, &inode, lblk,
			   write ? span : UINT32_MAX - (lblk & UINT32_MAX),
			   F4_MAP_READ, &map);
	if (ret)
		goto out;
	if (write && map.len > span && map.type == F4_MAP_HOLE)
		map.len = span;
	if (alloc && map.type == F4_MAP_HOLE) {
		ret = f4_iomap_allocate(req, ino, &inode, &map);
		if (ret)
			goto out;
		f4_iomap_io(f4, &map, &out.read);
		/* The block map changed and is not on disk yet. */
		out.read.flags |= FUSE_IOMAP_F_DIRTY;
		if (map.type == F4_MAP_MAPPED)
			out.read.flags |= FUSE_IOMAP_F_NEW;
	} else {
		f4_iomap_io(f4, &map, &out.read);
	}
	out.write.offset = out.read.offset;
	out.write.length = out.read.length;
	out.write.addr = FUSE_IOMAP_NULL_ADDR;
	out.write.type = FUSE_IOMAP_TYPE_PURE_OVERWRITE;
	if (f4->opts.iomap_debug)
		ret = f4_iomap_check_reply(f4, nodeid, arg, &out);
out:
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_iomap_begin(req, &out);
}

/*
 * A write that stopped short gives back the blocks it had allocated past
 * the end of the file (unwritten extents, or zeroed new blocks of
 * block-mapped files); inside the file they read as zeroes and do no harm.
 */
void f4_iomap_end(struct fe_req *req, uint64_t nodeid,
		  const struct fuse_iomap_end_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	const struct fuse_iomap_io *map = &arg->map;
	struct ext2_inode_large inode;
	uint64_t data_end, first, last, size;
	ext2_ino_t ino;
	int ret;

	/* Only blocks this server allocated for the write (marked DIRTY in
	 * BEGIN) are given back: never a preallocation made on purpose. */
	if (!(arg->opflags & FUSE_IOMAP_OP_WRITE) || arg->written < 0 ||
	    (uint64_t)arg->written >= arg->count ||
	    !(map->flags & FUSE_IOMAP_F_DIRTY) ||
	    !(map->type == FUSE_IOMAP_TYPE_UNWRITTEN ||
	      (map->type == FUSE_IOMAP_TYPE_MAPPED &&
	       (map->flags & FUSE_IOMAP_F_NEW)))) {
		fe_reply_ok(req);
		return;
	}
	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	size = f4_inode_size(&inode);
	data_end = arg->written ? arg->pos + (uint64_t)arg->written : 0;
	if (data_end < size)
		data_end = size;
	first = (data_end + f4->blocksize - 1) >> f4->blockbits;
	if (first < map->offset >> f4->blockbits)
		first = map->offset >> f4->blockbits;
	last = (map->offset + map->length) >> f4->blockbits;
	if (first < last)
		ret = f4_map_punch(f4, ino, &inode, first, last - 1);
out:
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}

void f4_iomap_ioend(struct fe_req *req, uint64_t nodeid,
		    const struct fuse_iomap_ioend_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	uint64_t size = 0, end;
	ext2_ino_t ino;
	int ret;

	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	size = f4_inode_size(&inode);
	/* A failed write changes nothing: the old mapping and size stand. */
	if (arg->error || arg->written == 0 ||
	    (arg->flags & FUSE_IOMAP_IOEND_SWAPOFF))
		goto out;
	if (arg->flags & FUSE_IOMAP_IOEND_SHARED) {
		ret = EUCLEAN;	/* no shared blocks on this filesystem */
		goto out;
	}
	end = arg->pos + arg->written;
	if (end < arg->pos) {
		ret = EINVAL;
		goto out;
	}
	if (arg->flags & FUSE_IOMAP_IOEND_UNWRITTEN) {
		uint64_t lblk = arg->pos >> f4->blockbits;

		ret = f4_map_convert(f4, ino, &inode, lblk,
				     ((end - 1) >> f4->blockbits) - lblk + 1);
		if (ret)
			goto out;
		ret = f4_read_inode(f4, ino, &inode);
		if (ret)
			goto out;
	}
	if (end > size) {
		ret = f4_errno(ext2fs_inode_size_set(f4->fs,
						     (struct ext2_inode *)&inode,
						     end));
		if (ret == 0)
			ret = f4_write_inode(f4, ino, &inode);
		if (ret == 0)
			size = end;
	}
out:
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_iomap_ioend(req, size);
}

void f4_freezefs(struct fe_req *req, uint64_t nodeid,
		 const struct fuse_freezefs_in *arg)
{
	(void)nodeid;
	(void)arg;
	f4_reply_flushed(req);
}

void f4_unfreezefs(struct fe_req *req, uint64_t nodeid)
{
	(void)nodeid;
	fe_reply_ok(req);
}

/* After SHUTDOWN every request fails with EIO, as on ext4. */
void f4_shutdownfs(struct fe_req *req, uint64_t nodeid,
		   const struct fuse_shutdownfs_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);

	(void)nodeid;
	(void)arg;
	if (!f4->ro)
		f4_flush(f4, true);
	__atomic_store_n(&f4->shutdown, true, __ATOMIC_RELEASE);
	fe_reply_ok(req);
}

/* STATX tells iomap-aware callers how direct I/O must be aligned. */
void f4_iomap_statx(struct f4fs *f4, struct fuse_statx *sx)
{
	if (!f4->iomap || !LINUX_S_ISREG(sx->mode))
		return;
	sx->mask |= F4_STATX_DIOALIGN;
	sx->dio_mem_align = 512;
	sx->dio_offset_align = f4->blocksize;
}
