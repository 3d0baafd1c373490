/*
 * Opening the filesystem, checking that it can be served, and describing
 * it (STATFS).
 */
#include "config.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <et/com_err.h>

#include "fuse4fs.h"

/* Features whose on-disk meaning we cannot serve correctly. */
static int f4_check_features(struct f4fs *f4)
{
	struct ext2_super_block *sb = f4->fs->super;
	const char *dev = f4->opts.device;

	if (ext2fs_has_feature_journal_dev(sb)) {
		f4_log("%s is an external journal, not a filesystem", dev);
		return EINVAL;
	}
	if (ext2fs_has_feature_encrypt(sb)) {
		f4_log("%s: encrypted filesystems are not supported", dev);
		return EOPNOTSUPP;
	}
	if (ext2fs_has_feature_casefold(sb)) {
		f4_log("%s: case-insensitive (casefold) filesystems are not supported",
		       dev);
		return EOPNOTSUPP;
	}
	return 0;
}

/* Say what a read-only mount shows of a filesystem that needs attention. */
static void f4_report_state(struct f4fs *f4)
{
	struct ext2_super_block *sb = f4->fs->super;
	const char *dev = f4->opts.device;

	if (ext2fs_has_feature_journal_needs_recovery(sb))
		f4_log("%s: the journal needs recovery; serving the filesystem as "
		       "it is on disk, without the journal's changes (replay it "
		       "with 'e2fsck -E journal_only %s')", dev, dev);
	if (sb->s_state & EXT2_ERROR_FS)
		f4_log("%s: the filesystem has recorded errors; run 'e2fsck -f %s'",
		       dev, dev);
	else if (!(sb->s_state & EXT2_VALID_FS))
		f4_log("%s: the filesystem was not cleanly unmounted; running "
		       "'e2fsck -f %s' is recommended", dev, dev);
}

/* What stops a read-write mount, with the command that fixes it. */
static int f4_check_writable(struct f4fs *f4)
{
	struct ext2_super_block *sb = f4->fs->super;
	const char *dev = f4->opts.device;

	if (ext2fs_has_feature_journal_needs_recovery(sb)) {
		f4_log("%s: the journal needs recovery; replay it with "
		       "'e2fsck -E journal_only %s' before mounting read-write "
		       "(-o ro mounts it as it is)", dev, dev);
		return EUCLEAN;
	}
	if ((sb->s_state & EXT2_ERROR_FS) || sb->s_error_count) {
		f4_log("%s: the filesystem has recorded errors; run "
		       "'e2fsck -f %s' before mounting read-write", dev, dev);
		return EUCLEAN;
	}
	if (ext2fs_has_feature_bigalloc(sb) && EXT2FS_CLUSTER_RATIO(f4->fs) > 1) {
		f4_log("%s: bigalloc filesystems can only be mounted read-only",
		       dev);
		return EOPNOTSUPP;
	}
	if (ext2fs_has_feature_quota(sb) || ext2fs_has_feature_verity(sb) ||
	    ext2fs_has_feature_shared_blocks(sb) ||
	    ext2fs_has_feature_orphan_file(sb)) {
		f4_log("%s: features quota, verity, shared_blocks and orphan_file "
		       "are only supported read-only", dev);
		return EOPNOTSUPP;
	}
	return 0;
}

/*
 * Finish what a crash left on the orphan list, as the kernel does at
 * mount: unlinked inodes are freed, truncations are completed.
 */
static int f4_process_orphans(struct f4fs *f4)
{
	struct ext2_super_block *sb = f4->fs->super;
	ext2_ino_t ino = sb->s_last_orphan;
	uint32_t steps = 0;
	int ret = 0;

	while (ino && ret == 0) {
		struct ext2_inode_large inode;
		ext2_ino_t next;

		if (ino > sb->s_inodes_count || ++steps > sb->s_inodes_count) {
			ret = EUCLEAN;
			break;
		}
		ret = f4_read_inode(f4, ino, &inode);
		if (ret)
			break;
		next = inode.i_dtime;
		inode.i_dtime = 0;
		if (inode.i_links_count == 0) {
			ret = f4_free_inode(f4, ino, &inode);
		} else if (LINUX_S_ISREG(inode.i_mode)) {
			ret = f4_map_punch(f4, ino, &inode,
					   (f4_inode_size(&inode) +
					    f4->blocksize - 1) >> f4->blockbits,
					   ~0ULL);
			if (ret == 0)
				ret = f4_write_inode(f4, ino, &inode);
		} else {
			ret = f4_write_inode(f4, ino, &inode);
		}
		sb->s_last_orphan = next;
		ext2fs_mark_super_dirty(f4->fs);
		ino = next;
	}
	if (ret)
		f4_log("%s: cleaning up orphaned inodes failed (%s); run "
		       "'e2fsck -f %s'", f4->opts.device, strerror(ret),
		       f4->opts.device);
	return ret;
}

/* Count the mount and mark the filesystem in use, once it is mounted. */
int f4_mark_mounted(struct f4fs *f4)
{
	struct ext2_super_block *sb;
	errcode_t err;

	if (f4->ro)
		return 0;
	sb = f4->fs->super;
	if (sb->s_max_mnt_count > 0 && sb->s_mnt_count >= sb->s_max_mnt_count)
		f4_log("%s: maximal mount count reached, running e2fsck is "
		       "recommended", f4->opts.device);
	sb->s_mnt_count++;
	sb->s_mtime = (uint32_t)time(NULL);
	/* Not clean while mounted: a crash leaves e2fsck a reason to look. */
	sb->s_state &= ~EXT2_VALID_FS;
	ext2fs_mark_super_dirty(f4->fs);
	err = ext2fs_flush2(f4->fs, 0);
	if (err) {
		f4_log("%s: cannot write the superblock: %s", f4->opts.device,
		       error_message(err));
		return f4_errno(err);
	}
	return 0;
}

/*
 * Open the device or image for data I/O (devfd), falling back to
 * read-only as the kernel does for write-protected devices.  The
 * filesystem itself is opened later by f4_open_fs(), once main() has
 * decided which device all I/O goes through.
 */
int f4_open_dev(struct f4fs *f4)
{
	const char *dev = f4->opts.device;
	struct stat st;
	int ret;

	f4->ro = f4->opts.ro;
	f4->devfd = open(dev, (f4->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (f4->devfd < 0 && !f4->ro &&
	    (errno == EACCES || errno == EPERM || errno == EROFS)) {
		/* As the kernel does for write-protected devices. */
		f4_log("%s is write-protected, mounting read-only", dev);
		f4->ro = true;
		f4->devfd = open(dev, O_RDONLY | O_CLOEXEC);
	}
	if (f4->devfd < 0) {
		ret = errno;
		f4_log("cannot open %s: %s", dev, strerror(ret));
		return ret;
	}
	f4->opts.ro = f4->ro;
	if (fstat(f4->devfd, &st) < 0) {
		ret = errno;
		f4_log("cannot stat %s: %s", dev, strerror(ret));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		f4_log("%s is neither a regular file nor a block device", dev);
		ret = EINVAL;
		goto out_close;
	}
	return 0;

out_close:
	close(f4->devfd);
	f4->devfd = -1;
	return ret;
}

/*
 * Open the filesystem with libext2fs on the same device as devfd: the
 * image's loop device when main() switched devfd to it (io_loop), so
 * that metadata and file data share one page cache.  Messages name the
 * device the user gave.  On failure devfd stays open for f4_close_fs().
 */
int f4_open_fs(struct f4fs *f4)
{
	struct ext2_inode_large root;
	const char *dev = f4->opts.device;
	char io_options[64] = "";
	errcode_t err;
	int flags = EXT2_FLAG_64BITS;
	int ret;

	if (f4->opts.offset)
		snprintf(io_options, sizeof(io_options), "offset=%llu",
			 (unsigned long long)f4->opts.offset);
	if (!f4->ro)
		flags |= EXT2_FLAG_RW;
	err = ext2fs_open2(f4->io_loop[0] ? f4->io_loop : dev, io_options,
			   flags, 0, 0, unix_io_manager, &f4->fs);
	if (err) {
		f4_log("cannot open the filesystem on %s: %s", dev,
		       error_message(err));
		f4->fs = NULL;
		return f4_errno(err);
	}
	f4->blocksize = f4->fs->blocksize;
	f4->blockbits = 10 + f4->fs->super->s_log_block_size;
	f4->nsec_times = EXT2_INODE_SIZE(f4->fs->super) >
		EXT2_GOOD_OLD_INODE_SIZE;

	ret = f4_check_features(f4);
	if (ret)
		goto out_fs;
	/* As the kernel refuses them: descriptors pointing outside their
	 * groups would have the allocator hand out the superblock itself. */
	err = ext2fs_check_desc(f4->fs);
	if (err) {
		f4_log("%s: the group descriptors are corrupt (%s); run "
		       "'e2fsck -f %s'", dev, error_message(err), dev);
		ret = EUCLEAN;
		goto out_fs;
	}
	ret = f4_read_inode(f4, EXT2_ROOT_INO, &root);
	if (ret == 0 && (!LINUX_S_ISDIR(root.i_mode) ||
			 root.i_links_count == 0 || root.i_dtime))
		ret = EUCLEAN;
	if (ret) {
		f4_log("%s: the root directory cannot be used (%s); run "
		       "'e2fsck -f %s'", dev, strerror(ret), dev);
		goto out_fs;
	}
	f4->acl = f4->opts.acl && ext2fs_has_feature_xattr(f4->fs->super);
	/* Every change reaches the filesystem through this kernel, which
	 * updates or drops what it cached itself. */
	f4->entry_timeout = 86400.0;
	f4->attr_timeout = 86400.0;
	f4->negative_timeout = 86400.0;
	if (f4->ro) {
		f4_report_state(f4);
		return 0;
	}

	ret = f4_check_writable(f4);
	if (ret)
		goto out_fs;
	err = ext2fs_read_bitmaps(f4->fs);
	if (err) {
		f4_log("%s: cannot read the allocation bitmaps: %s", dev,
		       error_message(err));
		ret = f4_errno(err);
		goto out_fs;
	}
	/* Metadata goes to the device as it is written, never later: file
	 * data written through devfd may reuse a freed metadata block, and
	 * a delayed write of the old contents would clobber it. */
	f4->fs->io->flags |= CHANNEL_FLAGS_WRITETHROUGH;
	/* Backup superblocks and descriptors are refreshed at unmount. */
	f4->fs->flags |= EXT2_FLAG_MASTER_SB_ONLY;
	ext2fs_create_inode_cache(f4->fs, 1024);
	ret = f4_process_orphans(f4);
	if (ret)
		goto out_fs;
	return 0;

out_fs:
	ext2fs_close_free(&f4->fs);
	return ret;
}

/*
 * Write every metadata change to the device, then (with sync) make it and
 * all file data durable.  Waits for writers to finish the data of blocks
 * they allocated, so no flushed block map points at unwritten data.
 */
int f4_flush(struct f4fs *f4, bool sync)
{
	errcode_t err;
	int ret;

	pthread_rwlock_wrlock(&f4->flush_barrier);
	f4_wb_wait(f4, NULL);
	f4_lock(f4);
	err = f4->fs ? ext2fs_flush2(f4->fs, sync ? 0 :
				     EXT2_FLAG_FLUSH_NO_SYNC) : 0;
	f4_unlock(f4);
	ret = f4_errno(err);
	if (ret == 0 && sync && fdatasync(f4->devfd) < 0)
		ret = errno;
	pthread_rwlock_unlock(&f4->flush_barrier);
	if (ret)
		f4_log("%s: writing metadata failed: %s", f4->opts.device,
		       strerror(ret));
	return ret;
}

/* Answer a request that asks for durability (FSYNC, FSYNCDIR, SYNCFS,
 * FREEZE_FS): everything is written back and the device flushed. */
void f4_reply_flushed(struct fe_req *req)
{
	struct f4fs *f4 = fe_req_fs(req);
	int ret = f4->ro ? 0 : f4_flush(f4, true);

	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}

void f4_syncfs(struct fe_req *req, uint64_t nodeid)
{
	struct f4fs *f4 = fe_req_fs(req);
	int ret = f4->ro ? 0 : f4_flush(f4, true);

	(void)nodeid;
	if (ret == 0)
		ret = f4_wb_take_error(f4, NULL);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}

/*
 * The kernel is done with the filesystem (DESTROY, or the channel
 * closed): write everything back and mark it clean, so that once a
 * synchronous unmount returns, e2fsck finds nothing to do.
 */
void f4_destroy(void *fs)
{
	struct f4fs *f4 = fs;
	struct ext2_super_block *sb;
	errcode_t err;

	if (f4->ro || !f4->fs)
		return;
	pthread_rwlock_wrlock(&f4->flush_barrier);
	f4_wb_wait(f4, NULL);
	f4_lock(f4);
	sb = f4->fs->super;
	/* The kernel holds nothing any more: inodes it kept alive after
	 * their last unlink go now. */
	f4_process_orphans(f4);
	if (!(sb->s_state & EXT2_ERROR_FS) && sb->s_last_orphan == 0)
		sb->s_state |= EXT2_VALID_FS;
	sb->s_wtime = (uint32_t)time(NULL);
	f4->fs->flags &= ~EXT2_FLAG_MASTER_SB_ONLY;
	ext2fs_mark_super_dirty(f4->fs);
	err = ext2fs_close_free(&f4->fs);
	f4_unlock(f4);
	if (err)
		f4_log("%s: writing the filesystem back failed: %s",
		       f4->opts.device, error_message(err));
	if (fsync(f4->devfd) < 0)
		f4_log("%s: flushing the device failed: %s", f4->opts.device,
		       strerror(errno));
	pthread_rwlock_unlock(&f4->flush_barrier);
}

void f4_close_fs(struct f4fs *f4)
{
	if (f4->fs && !f4->ro)
		f4_destroy(f4);
	f4_wb_stop(f4);
	if (f4->fs) {
		errcode_t err = ext2fs_close_free(&f4->fs);

		if (err)
			f4_log("%s: closing the filesystem failed: %s",
			       f4->opts.device, error_message(err));
	}
	if (f4->devfd >= 0)
		close(f4->devfd);
	f4->devfd = -1;
	if (f4->dio_fd >= 0)
		close(f4->dio_fd);
	f4->dio_fd = -1;
}

/* Superblock, descriptor and reserved descriptor blocks of a group,
 * counted the way ext4 counts them. */
static blk64_t f4_group_base_meta(ext2_filsys fs, dgrp_t group)
{
	struct ext2_super_block *sb = fs->super;
	dgrp_t per_block = EXT2_DESC_PER_BLOCK(sb);
	dgrp_t metagroup = group / per_block;
	blk64_t n = ext2fs_bg_has_super(fs, group);

	if (!ext2fs_has_feature_meta_bg(sb) || metagroup < sb->s_first_meta_bg) {
		if (n)
			n += (ext2fs_has_feature_meta_bg(sb) ?
			      sb->s_first_meta_bg : fs->desc_blocks) +
				sb->s_reserved_gdt_blocks;
		return n;
	}
	group -= metagroup * per_block;
	return n + (group == 0 || group == 1 || group == per_block - 1);
}

/*
 * Blocks used by the filesystem's own structures, as the kernel's
 * ext4_calculate_overhead() counts them, so that df shows the same numbers
 * on both drivers.
 */
static blk64_t f4_overhead(struct f4fs *f4)
{
	ext2_filsys fs = f4->fs;
	struct ext2_super_block *sb = fs->super;
	blk64_t overhead;
	dgrp_t g;

	if (ext2fs_has_feature_bigalloc(sb) && sb->s_overhead_clusters &&
	    sb->s_overhead_clusters <= ext2fs_blocks_count(sb))
		return EXT2FS_C2B(fs, sb->s_overhead_clusters);

	overhead = sb->s_first_data_block;
	for (g = 0; g < fs->group_desc_count; g++)
		overhead += f4_group_base_meta(fs, g) +
			fs->inode_blocks_per_group + 2;
	if (ext2fs_has_feature_journal(sb) && sb->s_journal_inum) {
		struct ext2_inode_large j;

		if (f4_read_inode(f4, sb->s_journal_inum, &j) == 0)
			overhead += f4_inode_size(&j) >> f4->blockbits;
	}
	return overhead;
}

void f4_statfs(struct fe_req *req, uint64_t nodeid)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_super_block *sb;
	struct fuse_kstatfs st;
	blk64_t total, overhead, free_blocks = 0, reserved;
	uint64_t free_inodes = 0;
	dgrp_t g;

	(void)nodeid;
	memset(&st, 0, sizeof(st));
	f4_lock(f4);
	sb = f4->fs->super;
	total = ext2fs_blocks_count(sb);
	overhead = f4_overhead(f4);
	for (g = 0; g < f4->fs->group_desc_count; g++) {
		free_blocks += ext2fs_bg_free_blocks_count(f4->fs, g);
		free_inodes += ext2fs_bg_free_inodes_count(f4->fs, g);
	}
	free_blocks = EXT2FS_C2B(f4->fs, free_blocks);
	reserved = ext2fs_r_blocks_count(sb) + f4_extent_reserve(f4);
	st.blocks = overhead < total ? total - overhead : 0;
	st.bfree = free_blocks;
	st.bavail = free_blocks > reserved ? free_blocks - reserved : 0;
	st.files = sb->s_inodes_count;
	st.ffree = free_inodes;
	f4_unlock(f4);
	st.bsize = f4->blocksize;
	st.frsize = f4->blocksize;
	st.namelen = EXT2_NAME_LEN;
	fe_reply_statfs(req, &st);
}
