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

	ret = f4_check_nodeid(f4, nodeid, ino);
	if (ret)
		return ret;
	ret = f4_read_inode(f4, *ino, inode);
	if (ret)
		return ret;
	if (inode->i_mode == 0 || inode->i_links_count == 0 || inode->i_dtime)
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
		fe_reply_err(req, ret);
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
out:
	f4_unlock(f4);
	if (ret)
		fe_reply_err(req, ret);
	else
		fe_reply_statx(req, &out);
}

/* Supplementary groups of the calling process, from /proc. */
static bool f4_caller_in_group(uint32_t pid, uint32_t gid)
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
		fe_reply_err(req, ret);
	else
		fe_reply_ok(req);
}
