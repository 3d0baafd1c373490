/*
 * Node ids, reading inodes, and the attributes FUSE reports for them.
 *
 * Node ids are ext4 inode numbers, except that the root is FUSE_ROOT_ID (1)
 * on the wire and EXT2_ROOT_INO (2) on disk.  Inode 1 (bad blocks) and the
 * other reserved inodes are never reachable, so the mapping is one to one.
 */
#include "config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "fuse4fs.h"

/* statx(2) constants, spelled out so we do not depend on the C library
 * exposing the kernel's definitions. */
#define F4_STATX_BASIC_STATS	0x000007ffU
#define F4_STATX_BTIME		0x00000800U
#define F4_STATX_ATTR_COMPRESSED 0x00000004ULL
#define F4_STATX_ATTR_IMMUTABLE	0x00000010ULL
#define F4_STATX_ATTR_APPEND	0x00000020ULL
#define F4_STATX_ATTR_NODUMP	0x00000040ULL
#define F4_STATX_ATTR_ENCRYPTED	0x00000800ULL
#define F4_STATX_ATTR_VERITY	0x00100000ULL

int f4_check_nodeid(struct f4fs *f4, uint64_t nodeid, ext2_ino_t *ino)
{
	struct ext2_super_block *sb = f4->fs->super;

	/* Node id 2 would alias the root; reserved inodes are never handed
	 * out; anything past the inode table does not exist. */
	if (nodeid == 0 || nodeid == EXT2_ROOT_INO ||
	    nodeid > sb->s_inodes_count)
		return ESTALE;
	*ino = f4_nodeid_to_ino(nodeid);
	if (*ino != EXT2_ROOT_INO && *ino < EXT2_FIRST_INODE(sb))
		return ESTALE;
	return 0;
}

int f4_read_inode(struct f4fs *f4, ext2_ino_t ino,
		  struct ext2_inode_large *inode)
{
	errcode_t err;

	memset(inode, 0, sizeof(*inode));
	err = ext2fs_read_inode_full(f4->fs, ino, (struct ext2_inode *)inode,
				     sizeof(*inode));
	if (err)
		return f4_errno(err);
	/* With 128-byte inodes there is no extra space, whatever the field
	 * happens to hold. */
	if (EXT2_INODE_SIZE(f4->fs->super) <= EXT2_GOOD_OLD_INODE_SIZE)
		inode->i_extra_isize = 0;
	return 0;
}

/* Look up a node id the kernel sent and read its inode.  An inode that is
 * no longer in use is stale, as the kernel's ext4 reports for handles. */
int f4_iget(struct f4fs *f4, uint64_t nodeid, ext2_ino_t *ino,
	    struct ext2_inode_large *inode)
{
	int ret;

	if (__atomic_load_n(&f4->shutdown, __ATOMIC_ACQUIRE))
		return EIO;
	ret = f4_check_nodeid(f4, nodeid, ino);
	if (ret)
		return ret;
	ret = f4_read_inode(f4, *ino, inode);
	if (ret)
		return ret;
	if (inode->i_mode == 0)
		return ESTALE;
	/* An unlinked inode lives on only while the kernel holds it. */
	if (inode->i_links_count == 0 && !f4_itable_find(f4, *ino))
		return ESTALE;
	return 0;
}

uint64_t f4_inode_size(const struct ext2_inode_large *inode)
{
	return EXT2_I_SIZE(inode);
}

static bool f4_fits_in_inode(const struct ext2_inode_large *inode,
			     size_t field_end)
{
	return field_end <= (size_t)EXT2_GOOD_OLD_INODE_SIZE + inode->i_extra_isize;
}

#define F4_FITS(inode, field) \
	f4_fits_in_inode(inode, offsetof(struct ext2_inode_large, field) + \
			 sizeof((inode)->field))

static void f4_decode_time(const struct ext2_inode_large *inode, uint32_t sec,
			   uint32_t extra, bool has_extra, int64_t *tsec,
			   uint32_t *tnsec)
{
	(void)inode;
	*tsec = (int32_t)sec;
	*tnsec = 0;
	if (has_extra) {
		*tsec += (int64_t)(extra & EXT4_EPOCH_MASK) << 32;
		*tnsec = extra >> EXT4_EPOCH_BITS;
	}
}

static uint32_t f4_rdev(const struct ext2_inode_large *inode)
{
	/* Old 16-bit encoding in block[0], the kernel's new_encode_dev()
	 * form in block[1].  Both are what FUSE expects in attr.rdev. */
	if (inode->i_block[0])
		return inode->i_block[0] & 0xffff;
	return inode->i_block[1];
}

void f4_fill_attr(struct f4fs *f4, ext2_ino_t ino,
		  const struct ext2_inode_large *inode, struct fuse_attr *attr)
{
	int64_t sec;
	uint32_t nsec;

	memset(attr, 0, sizeof(*attr));
	attr->ino = ino;
	attr->size = f4_inode_size(inode);
	attr->blocks = ext2fs_get_stat_i_blocks(f4->fs,
						(struct ext2_inode *)inode);
	/* As ext4 reports regular files: data in the inode counts as
	 * sectors, so that tar or rsync do not take them for sparse ones. */
	if ((inode->i_flags & EXT4_INLINE_DATA_FL) &&
	    LINUX_S_ISREG(inode->i_mode))
		attr->blocks += (attr->size + 511) >> 9;
	f4_decode_time(inode, inode->i_atime, inode->i_atime_extra,
		       F4_FITS(inode, i_atime_extra), &sec, &nsec);
	attr->atime = (uint64_t)sec;
	attr->atimensec = nsec;
	f4_decode_time(inode, inode->i_mtime, inode->i_mtime_extra,
		       F4_FITS(inode, i_mtime_extra), &sec, &nsec);
	attr->mtime = (uint64_t)sec;
	attr->mtimensec = nsec;
	f4_decode_time(inode, inode->i_ctime, inode->i_ctime_extra,
		       F4_FITS(inode, i_ctime_extra), &sec, &nsec);
	attr->ctime = (uint64_t)sec;
	attr->ctimensec = nsec;
	attr->mode = inode->i_mode;
	attr->nlink = inode->i_links_count;
	attr->uid = inode_uid(*inode);
	attr->gid = inode_gid(*inode);
	if (LINUX_S_ISCHR(inode->i_mode) || LINUX_S_ISBLK(inode->i_mode))
		attr->rdev = f4_rdev(inode);
	attr->blksize = f4->blocksize;
	if (f4->iomap)
		attr->flags = f4_iomap_attr_flags(f4, inode);
}

static void f4_split_timeout(double t, uint64_t *sec, uint32_t *nsec)
{
	*sec = (uint64_t)t;
	*nsec = (uint32_t)((t - (double)*sec) * 1e9);
}

void f4_fill_entry(struct f4fs *f4, ext2_ino_t ino,
		   const struct ext2_inode_large *inode,
		   struct fuse_entry_out *entry)
{
	memset(entry, 0, sizeof(*entry));
	entry->nodeid = f4_ino_to_nodeid(ino);
	entry->generation = inode->i_generation;
	f4_split_timeout(f4->entry_timeout, &entry->entry_valid,
			 &entry->entry_valid_nsec);
	f4_split_timeout(f4->attr_timeout, &entry->attr_valid,
			 &entry->attr_valid_nsec);
	f4_fill_attr(f4, ino, inode, &entry->attr);
	f4_itable_lookup(f4, ino);
}

uint32_t f4_dirent_type(unsigned int ext2_file_type)
{
	switch (ext2_file_type) {
	case EXT2_FT_REG_FILE:	return DT_REG;
	case EXT2_FT_DIR:	return DT_DIR;
	case EXT2_FT_CHRDEV:	return DT_CHR;
	case EXT2_FT_BLKDEV:	return DT_BLK;
	case EXT2_FT_FIFO:	return DT_FIFO;
	case EXT2_FT_SOCK:	return DT_SOCK;
	case EXT2_FT_SYMLINK:	return DT_LNK;
	}
	return DT_UNKNOWN;
}

uint32_t f4_mode_to_dtype(uint16_t mode)
{
	return (mode & 0170000) >> 12;
}

void f4_getattr(struct fe_req *req, uint64_t nodeid,
		const struct fuse_getattr_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	struct fuse_attr_out out;
	ext2_ino_t ino;
	int ret;

	(void)arg;
	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret == 0) {
		memset(&out, 0, sizeof(out));
		f4_split_timeout(f4->attr_timeout, &out.attr_valid,
				 &out.attr_valid_nsec);
		f4_fill_attr(f4, ino, &inode, &out.attr);
	}
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_attr(req, &out);
}

static void f4_sx_time(struct fuse_sx_time *t, uint64_t sec, uint32_t nsec)
{
	t->tv_sec = (int64_t)sec;
	t->tv_nsec = nsec;
}

void f4_statx(struct fe_req *req, uint64_t nodeid,
	      const struct fuse_statx_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	struct fuse_statx_out out;
	struct fuse_statx *sx = &out.stat;
	struct fuse_attr attr;
	ext2_ino_t ino;
	int64_t sec;
	uint32_t nsec;
	int ret;

	(void)arg;
	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	f4_fill_attr(f4, ino, &inode, &attr);
	memset(&out, 0, sizeof(out));
	f4_split_timeout(f4->attr_timeout, &out.attr_valid,
			 &out.attr_valid_nsec);
	sx->mask = F4_STATX_BASIC_STATS;
	sx->blksize = attr.blksize;
	sx->nlink = attr.nlink;
	sx->uid = attr.uid;
	sx->gid = attr.gid;
	sx->mode = (uint16_t)attr.mode;
	sx->ino = attr.ino;
	sx->size = attr.size;
	sx->blocks = attr.blocks;
	f4_sx_time(&sx->atime, attr.atime, attr.atimensec);
	f4_sx_time(&sx->mtime, attr.mtime, attr.mtimensec);
	f4_sx_time(&sx->ctime, attr.ctime, attr.ctimensec);
	if (F4_FITS(&inode, i_crtime_extra)) {
		f4_decode_time(&inode, inode.i_crtime, inode.i_crtime_extra,
			       true, &sec, &nsec);
		f4_sx_time(&sx->btime, (uint64_t)sec, nsec);
		sx->mask |= F4_STATX_BTIME;
	}
	sx->rdev_major = major(attr.rdev);
	sx->rdev_minor = minor(attr.rdev);
	sx->attributes_mask = F4_STATX_ATTR_COMPRESSED |
		F4_STATX_ATTR_IMMUTABLE | F4_STATX_ATTR_APPEND |
		F4_STATX_ATTR_NODUMP | F4_STATX_ATTR_ENCRYPTED |
		F4_STATX_ATTR_VERITY;
	if (inode.i_flags & EXT2_COMPR_FL)
		sx->attributes |= F4_STATX_ATTR_COMPRESSED;
	if (inode.i_flags & EXT2_IMMUTABLE_FL)
		sx->attributes |= F4_STATX_ATTR_IMMUTABLE;
	if (inode.i_flags & EXT2_APPEND_FL)
		sx->attributes |= F4_STATX_ATTR_APPEND;
	if (inode.i_flags & EXT2_NODUMP_FL)
		sx->attributes |= F4_STATX_ATTR_NODUMP;
	if (inode.i_flags & EXT4_ENCRYPT_FL)
		sx->attributes |= F4_STATX_ATTR_ENCRYPTED;
	if (inode.i_flags & EXT4_VERITY_FL)
		sx->attributes |= F4_STATX_ATTR_VERITY;
	f4_iomap_statx(f4, sx);
out:
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_statx(req, &out);
}

/* Supplementary groups of the calling process, from /proc. */
bool f4_caller_in_group(uint32_t pid, uint32_t gid)
{
	char path[64], line[4096];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%u/status", pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		char *p, *end;

		if (strncmp(line, "Groups:", 7) != 0)
			continue;
		for (p = line + 7; *p; p = end) {
			unsigned long g = strtoul(p, &end, 10);

			if (end == p)
				break;
			if (g == gid) {
				found = true;
				break;
			}
		}
		break;
	}
	fclose(f);
	return found;
}

/*
 * With the writeback cache the kernel keeps a regular file's mtime and
 * ctime itself (also across the writes it sends through) and sends them
 * with SETATTR; a stamp of ours would never be seen.
 */
bool f4_kernel_keeps_times(struct f4fs *f4,
			   const struct ext2_inode_large *inode)
{
	return !f4->ro && f4->opts.writeback_cache &&
		LINUX_S_ISREG(inode->i_mode);
}

/*
 * Clear set-user-ID, and set-group-ID where ext4 would: when the group may
 * execute the file, or when the caller is not in the file's group (and
 * not privileged).  The kernel leaves this to the server on write,
 * truncate and chown (FUSE_HANDLE_KILLPRIV_V2) and only asks when the
 * caller lacks CAP_FSETID.
 */
void f4_kill_suidgid(struct fe_req *req, struct ext2_inode_large *inode)
{
	uint32_t gid = inode_gid(*inode);

	if (LINUX_S_ISDIR(inode->i_mode))
		return;
	inode->i_mode &= ~LINUX_S_ISUID;
	if ((inode->i_mode & LINUX_S_ISGID) &&
	    ((inode->i_mode & 0010) ||
	     (req->uid != 0 && req->gid != gid &&
	      !f4_caller_in_group(req->pid, gid))))
		inode->i_mode &= ~LINUX_S_ISGID;
}

/*
 * ACCESS is only sent when the kernel is not checking permissions itself
 * (no default_permissions); answer it from the mode bits the way
 * generic_permission() does without ACLs.
 */
void f4_access(struct fe_req *req, uint64_t nodeid,
	       const struct fuse_access_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	uint32_t mask = arg->mask & 7, perm;
	ext2_ino_t ino;
	int ret;

	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	f4_unlock(f4);
	if (ret)
		goto out;
	if ((mask & W_OK) && f4->ro) {
		ret = EROFS;
		goto out;
	}
	if (req->uid == 0) {
		/* root may execute only if some execute bit is set */
		if ((mask & X_OK) && !LINUX_S_ISDIR(inode.i_mode) &&
		    !(inode.i_mode & 0111))
			ret = EACCES;
		goto out;
	}
	if (req->uid == inode_uid(inode))
		perm = (inode.i_mode >> 6) & 7;
	else if (req->gid == inode_gid(inode) ||
		 f4_caller_in_group(req->pid, inode_gid(inode)))
		perm = (inode.i_mode >> 3) & 7;
	else
		perm = inode.i_mode & 7;
	if ((perm & mask) != mask)
		ret = EACCES;
out:
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}

/* ---- changing inodes ---- */

int f4_write_inode(struct f4fs *f4, ext2_ino_t ino,
		   struct ext2_inode_large *inode)
{
	return f4_errno(ext2fs_write_inode_full(f4->fs, ino,
						(struct ext2_inode *)inode,
						sizeof(*inode)));
}

/*
 * Encode a time as ext4 stores it, clamped to the range the inode can
 * hold as the VFS clamps ext4's times (a clamped time loses its
 * nanoseconds); FUSE leaves the clamping to the server.
 */
static void f4_encode_time(const struct timespec *ts, bool extra_fits,
			   uint32_t *sec, uint32_t *extra)
{
	int64_t max = extra_fits ? F4_TIME_MAX_EXTRA : F4_TIME_MAX_OLD;
	int64_t s = ts->tv_sec;
	uint32_t nsec = (uint32_t)ts->tv_nsec;

	if (s <= F4_TIME_MIN || s >= max) {
		s = s <= F4_TIME_MIN ? F4_TIME_MIN : max;
		nsec = 0;
	}
	*sec = (uint32_t)s;
	*extra = (uint32_t)(((s - (int32_t)s) >> 32) & EXT4_EPOCH_MASK) |
		(nsec << EXT4_EPOCH_BITS);
}

/* Set the chosen timestamps to ts, or to the current time. */
void f4_touch(struct f4fs *f4, struct ext2_inode_large *inode,
	      unsigned int which, const struct timespec *ts)
{
	struct timespec now;
	uint32_t sec, extra;

	(void)f4;
	if (!ts) {
		clock_gettime(CLOCK_REALTIME, &now);
		ts = &now;
	}
	f4_encode_time(ts, F4_FITS(inode, i_ctime_extra), &sec, &extra);
	if (which & F4_ATIME) {
		inode->i_atime = sec;
		if (F4_FITS(inode, i_atime_extra))
			inode->i_atime_extra = extra;
	}
	if (which & F4_MTIME) {
		inode->i_mtime = sec;
		if (F4_FITS(inode, i_mtime_extra))
			inode->i_mtime_extra = extra;
	}
	if (which & F4_CTIME) {
		inode->i_ctime = sec;
		if (F4_FITS(inode, i_ctime_extra))
			inode->i_ctime_extra = extra;
	}
	if ((which & F4_CRTIME) && F4_FITS(inode, i_crtime_extra)) {
		inode->i_crtime = sec;
		inode->i_crtime_extra = extra;
	}
}

/* Inode flags a new inode takes from its directory, as ext4 passes them. */
#define F4_FL_INHERITED	(0x00000001 | 0x00000002 | EXT2_COMPR_FL | \
			 EXT2_SYNC_FL | EXT2_NODUMP_FL | EXT2_NOATIME_FL | \
			 0x00000400 | 0x00004000 | 0x00008000 | \
			 EXT2_DIRSYNC_FL | 0x20000000)
#define F4_FL_REG_MASK	(~(EXT2_DIRSYNC_FL | EXT2_TOPDIR_FL | 0x20000000))
#define F4_FL_OTHER_MASK (EXT2_NODUMP_FL | EXT2_NOATIME_FL)

/* An empty extent tree in i_block, for inodes that start out mapped. */
void f4_init_extent_header(struct ext2_inode_large *inode)
{
	struct ext3_extent_header *eh = (struct ext3_extent_header *)inode->i_block;

	memset(inode->i_block, 0, sizeof(inode->i_block));
	eh->eh_magic = ext2fs_cpu_to_le16(EXT3_EXT_MAGIC);
	eh->eh_max = ext2fs_cpu_to_le16((sizeof(inode->i_block) -
					 sizeof(*eh)) /
					sizeof(struct ext3_extent));
	inode->i_flags |= EXT4_EXTENTS_FL;
}

/*
 * Allocate and write a new inode owned by the caller, in the directory's
 * group.  Its link count is 1 (2 for directories, which the caller links);
 * the caller links it into a directory or frees it with f4_free_inode().
 */
int f4_new_inode(struct f4fs *f4, struct fe_req *req, ext2_ino_t dir,
		 const struct ext2_inode_large *dir_inode, uint32_t mode,
		 ext2_ino_t *ino, struct ext2_inode_large *inode)
{
	ext2_filsys fs = f4->fs;
	size_t isize = EXT2_INODE_SIZE(fs->super);
	uint32_t gid = req->gid, flags;
	char *raw = NULL;
	errcode_t err;
	int ret;

	err = ext2fs_new_inode(fs, dir, (int)mode, NULL, ino);
	if (err)
		return f4_errno(err);

	memset(inode, 0, sizeof(*inode));
	/* BSD group semantics in set-group-ID directories. */
	if (dir_inode->i_mode & LINUX_S_ISGID) {
		gid = inode_gid(*dir_inode);
		if (LINUX_S_ISDIR(mode))
			mode |= LINUX_S_ISGID;
	}
	inode->i_mode = (uint16_t)mode;
	inode->i_uid = (uint16_t)req->uid;
	inode->osd2.linux2.l_i_uid_high = (uint16_t)(req->uid >> 16);
	inode->i_gid = (uint16_t)gid;
	inode->osd2.linux2.l_i_gid_high = (uint16_t)(gid >> 16);
	inode->i_links_count = LINUX_S_ISDIR(mode) ? 2 : 1;
	if (isize > EXT2_GOOD_OLD_INODE_SIZE) {
		size_t want = sizeof(*inode) - EXT2_GOOD_OLD_INODE_SIZE;

		if (want > isize - EXT2_GOOD_OLD_INODE_SIZE)
			want = isize - EXT2_GOOD_OLD_INODE_SIZE;
		inode->i_extra_isize = (uint16_t)want;
	}
	inode->i_generation = arc4random();
	f4_touch(f4, inode, F4_ATIME | F4_MTIME | F4_CTIME | F4_CRTIME, NULL);

	flags = dir_inode->i_flags & F4_FL_INHERITED;
	if (LINUX_S_ISREG(mode))
		flags &= F4_FL_REG_MASK;
	else if (!LINUX_S_ISDIR(mode))
		flags &= F4_FL_OTHER_MASK;
	inode->i_flags = flags;
	if (ext2fs_has_feature_extents(fs->super) &&
	    (LINUX_S_ISREG(mode) || LINUX_S_ISDIR(mode)))
		f4_init_extent_header(inode);

	/* The slot may hold a freed inode's in-inode xattrs: clear it all. */
	raw = calloc(1, isize);
	if (!raw) {
		ret = ENOMEM;
		goto fail;
	}
	memcpy(raw, inode, isize < sizeof(*inode) ? isize : sizeof(*inode));
	err = ext2fs_write_inode_full(fs, *ino, (struct ext2_inode *)raw,
				      (int)isize);
	free(raw);
	if (err) {
		ret = f4_errno(err);
		goto fail;
	}
	ext2fs_inode_alloc_stats2(fs, *ino, +1, LINUX_S_ISDIR(mode));
	return 0;
fail:
	*ino = 0;
	return ret;
}

/* Release an inode with no links and no opens: its blocks, xattrs and
 * the inode itself. */
int f4_free_inode(struct f4fs *f4, ext2_ino_t ino,
		  struct ext2_inode_large *inode)
{
	ext2_filsys fs = f4->fs;
	errcode_t err = 0;
	int ret;

	ret = f4_map_punch(f4, ino, inode, 0, ~0ULL);
	if (ret)
		return ret;
	err = ext2fs_free_ext_attr(fs, ino, inode);
	if (err)
		return f4_errno(err);
	inode->i_links_count = 0;
	inode->i_size = 0;
	inode->i_size_high = 0;
	inode->i_flags &= ~EXT4_INLINE_DATA_FL;
	inode->i_dtime = (uint32_t)time(NULL);
	ret = f4_write_inode(f4, ino, inode);
	if (ret)
		return ret;
	ext2fs_inode_alloc_stats2(fs, ino, -1, LINUX_S_ISDIR(inode->i_mode));
	return 0;
}

/*
 * The orphan list is the on-disk chain from s_last_orphan through i_dtime
 * that e2fsck (and a later mount) uses to finish off inodes that were
 * unlinked while open, if the server dies before their last release.
 */
int f4_orphan_add(struct f4fs *f4, ext2_ino_t ino,
		  struct ext2_inode_large *inode)
{
	struct ext2_super_block *sb = f4->fs->super;
	struct f4_inode *head = f4_itable_find(f4, sb->s_last_orphan);
	struct f4_inode *ip = f4_itable_find(f4, ino);
	int ret;

	inode->i_dtime = sb->s_last_orphan;
	ret = f4_write_inode(f4, ino, inode);
	if (ret)
		return ret;
	if (head && head->orphan)
		head->orphan_prev = ino;
	if (ip) {
		ip->orphan = true;
		ip->orphan_prev = 0;
	}
	sb->s_last_orphan = ino;
	ext2fs_mark_super_dirty(f4->fs);
	return 0;
}

int f4_orphan_del(struct f4fs *f4, ext2_ino_t ino,
		  struct ext2_inode_large *inode)
{
	struct ext2_super_block *sb = f4->fs->super;
	struct f4_inode *ip = f4_itable_find(f4, ino), *nip;
	ext2_ino_t prev = 0, cur = sb->s_last_orphan;
	struct ext2_inode_large pinode;
	uint32_t steps;
	int ret;

	/* Orphans made while mounted know their predecessor; others (and
	 * any inconsistency) are found by walking the chain. */
	if (ip && ip->orphan) {
		prev = ip->orphan_prev;
		if (prev == 0 ? sb->s_last_orphan == ino :
		    f4_read_inode(f4, prev, &pinode) == 0 &&
		    pinode.i_dtime == ino)
			goto found;
		prev = 0;
	}
	for (steps = 0; cur && cur != ino && steps < sb->s_inodes_count;
	     steps++) {
		if (cur > sb->s_inodes_count)
			return EUCLEAN;
		ret = f4_read_inode(f4, cur, &pinode);
		if (ret)
			return ret;
		prev = cur;
		cur = pinode.i_dtime;
	}
	if (cur != ino)
		return EUCLEAN;
found:
	nip = f4_itable_find(f4, inode->i_dtime);
	if (nip && nip->orphan)
		nip->orphan_prev = prev;
	if (ip)
		ip->orphan = false;
	if (prev) {
		pinode.i_dtime = inode->i_dtime;
		ret = f4_write_inode(f4, prev, &pinode);
		if (ret)
			return ret;
	} else {
		sb->s_last_orphan = inode->i_dtime;
		ext2fs_mark_super_dirty(f4->fs);
	}
	inode->i_dtime = 0;
	return f4_write_inode(f4, ino, inode);
}

/* Link counting as ext4 does it: an indexed directory stops counting (stays
 * at 1) once it passes the link limit. */
void f4_inc_nlink(struct f4fs *f4, struct ext2_inode_large *inode)
{
	bool dx = LINUX_S_ISDIR(inode->i_mode) &&
		(inode->i_flags & EXT2_INDEX_FL) &&
		ext2fs_has_feature_dir_index(f4->fs->super);

	inode->i_links_count++;
	if (dx && (inode->i_links_count > F4_LINK_MAX ||
		   inode->i_links_count == 2))
		inode->i_links_count = 1;
}

void f4_dec_nlink(struct ext2_inode_large *inode)
{
	if (!LINUX_S_ISDIR(inode->i_mode) || inode->i_links_count > 2)
		inode->i_links_count--;
}

bool f4_dir_link_max(struct f4fs *f4, const struct ext2_inode_large *dir)
{
	return dir->i_links_count >= F4_LINK_MAX &&
		!(ext2fs_has_feature_dir_nlink(f4->fs->super) &&
		  (dir->i_flags & EXT2_INDEX_FL));
}

/*
 * Drop one name of a non-directory.  The last name of an inode that is
 * still open puts it on the orphan list; otherwise it is freed now.
 */
int f4_drop_link(struct f4fs *f4, ext2_ino_t ino,
		 struct ext2_inode_large *inode)
{
	struct f4_inode *ip;

	if (inode->i_links_count > 0)
		inode->i_links_count--;
	f4_touch(f4, inode, F4_CTIME, NULL);
	if (inode->i_links_count > 0)
		return f4_write_inode(f4, ino, inode);
	ip = f4_itable_find(f4, ino);
	if (ip)
		return f4_orphan_add(f4, ino, inode);
	return f4_free_inode(f4, ino, inode);
}

/* The SETATTR bits that change something (not FH, LOCKOWNER, ...). */
#define F4_FATTR_CHANGES (FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | \
			  FATTR_ATIME | FATTR_MTIME | FATTR_CTIME | \
			  FATTR_ATIME_NOW | FATTR_MTIME_NOW)

static void f4_timespec_from(struct timespec *ts, uint64_t sec, uint32_t nsec)
{
	ts->tv_sec = (time_t)(int64_t)sec;
	ts->tv_nsec = nsec;
}

void f4_setattr(struct fe_req *req, uint64_t nodeid,
		const struct fuse_setattr_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	struct fuse_attr_out out;
	struct f4_inode *ip = NULL;
	uint32_t valid = arg->valid;
	struct timespec ts;
	ext2_ino_t ino;
	bool ctime_set = false;
	int ret;

	if (f4->ro) {
		f4_reply_err(req, EROFS);
		return;
	}
	/* Size changes exclude data I/O on the inode. */
	if (valid & FATTR_SIZE) {
		f4_lock(f4);
		ret = f4_check_nodeid(f4, nodeid, &ino);
		if (ret == 0)
			ip = f4_itable_get(f4, ino);
		f4_unlock(f4);
		if (ret)
			goto reply;
		if (!ip) {
			ret = ENOMEM;
			goto reply;
		}
		pthread_rwlock_wrlock(&ip->iolock);
		f4_wb_wait(f4, ip);
	}

	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret)
		goto out;
	if ((valid & FATTR_SIZE) && !LINUX_S_ISREG(inode.i_mode)) {
		ret = LINUX_S_ISDIR(inode.i_mode) ? EISDIR : EINVAL;
		goto out;
	}
	if ((inode.i_flags & (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL)) &&
	    (valid & (FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE))) {
		ret = EPERM;
		goto out;
	}
	if (valid & FATTR_MODE)
		inode.i_mode = (uint16_t)((inode.i_mode & LINUX_S_IFMT) |
					  (arg->mode & 07777));
	if (valid & FATTR_UID) {
		inode.i_uid = (uint16_t)arg->uid;
		inode.osd2.linux2.l_i_uid_high = (uint16_t)(arg->uid >> 16);
	}
	if (valid & FATTR_GID) {
		inode.i_gid = (uint16_t)arg->gid;
		inode.osd2.linux2.l_i_gid_high = (uint16_t)(arg->gid >> 16);
	}
	/* chown(2) drops the set-ID bits of non-directories, as does a
	 * truncation by an unprivileged caller.  With HANDLE_KILLPRIV_V2 the
	 * kernel turns any other request to drop them (chown to the same
	 * owner, a write by a caller without CAP_FSETID) into a SETATTR that
	 * changes nothing else but, with the writeback cache, ctime. */
	/* The empty form cannot tell a non-owner's chown(-1, -1), which
	 * ext4 refuses, from a non-owner's fallocate or truncate, which must
	 * drop the bits: dropping them is the safe side. */
	if (((valid & (FATTR_UID | FATTR_GID)) && !(valid & FATTR_MODE)) ||
	    (valid & FATTR_KILL_SUIDGID) ||
	    !(valid & F4_FATTR_CHANGES & ~FATTR_CTIME))
		f4_kill_suidgid(req, &inode);
	if ((valid & FATTR_SIZE) && arg->size != f4_inode_size(&inode)) {
		ret = f4_truncate(f4, ino, &inode, arg->size);
		if (ret)
			goto out;
		if (!(valid & FATTR_MTIME))
			f4_touch(f4, &inode, F4_MTIME, NULL);
	}
	if (valid & FATTR_ATIME) {
		f4_timespec_from(&ts, arg->atime, arg->atimensec);
		f4_touch(f4, &inode, F4_ATIME,
			 (valid & FATTR_ATIME_NOW) ? NULL : &ts);
	}
	if (valid & FATTR_MTIME) {
		f4_timespec_from(&ts, arg->mtime, arg->mtimensec);
		f4_touch(f4, &inode, F4_MTIME,
			 (valid & FATTR_MTIME_NOW) ? NULL : &ts);
	}
	if (valid & FATTR_CTIME) {
		f4_timespec_from(&ts, arg->ctime, arg->ctimensec);
		f4_touch(f4, &inode, F4_CTIME, &ts);
		ctime_set = true;
	}
	if (!ctime_set && !f4_kernel_keeps_times(f4, &inode))
		f4_touch(f4, &inode, F4_CTIME, NULL);
	ret = f4_write_inode(f4, ino, &inode);
	if (ret == 0 && (valid & FATTR_MODE)) {
		ret = f4_acl_chmod(f4, ino, inode.i_mode);
		if (ret == 0)
			ret = f4_read_inode(f4, ino, &inode);
	}
	if (ret)
		goto out;
	memset(&out, 0, sizeof(out));
	f4_split_timeout(f4->attr_timeout, &out.attr_valid,
			 &out.attr_valid_nsec);
	f4_fill_attr(f4, ino, &inode, &out.attr);
out:
	f4_unlock(f4);
	if (ip) {
		pthread_rwlock_unlock(&ip->iolock);
		f4_lock(f4);
		f4_itable_put(f4, ip);
		f4_unlock(f4);
	}
reply:
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_attr(req, &out);
}
