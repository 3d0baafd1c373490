/*
 * Name lookup.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
		f4_reply_err(req, ENAMETOOLONG);
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
	ret = f4_dir_lookup(f4, dir, &dir_inode, name, namelen, &ino, NULL);
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
		f4_reply_err(req, ret);
	} else {
		fe_reply_entry(req, &e);
	}
}

/* ---- changing the namespace ---- */

#define F4_RENAME_NOREPLACE	(1 << 0)
#define F4_RENAME_EXCHANGE	(1 << 1)
#define F4_RENAME_WHITEOUT	(1 << 2)

static bool f4_is_dot_name(const char *name)
{
	return !strcmp(name, ".") || !strcmp(name, "..");
}

/* A directory that may receive or lose names; caller holds the lock. */
static int f4_get_parent(struct f4fs *f4, uint64_t nodeid, ext2_ino_t *dir,
			 struct ext2_inode_large *inode)
{
	int ret = f4_iget(f4, nodeid, dir, inode);

	if (ret)
		return ret;
	if (!LINUX_S_ISDIR(inode->i_mode))
		return ENOTDIR;
	if (inode->i_links_count == 0)
		return ENOENT;	/* removed while the kernel held it */
	return 0;
}

static int f4_check_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || f4_is_dot_name(name) || strchr(name, '/'))
		return EINVAL;
	if (len > EXT2_NAME_LEN)
		return ENAMETOOLONG;
	return 0;
}

static void f4_touch_dir(struct f4fs *f4, ext2_ino_t dir)
{
	struct ext2_inode_large inode;

	/* Re-read: adding a name may have grown the directory. */
	if (f4_read_inode(f4, dir, &inode) == 0) {
		f4_touch(f4, &inode, F4_MTIME | F4_CTIME, NULL);
		f4_write_inode(f4, dir, &inode);
	}
}

/* Encode a device number the way ext4 stores it in i_block. */
static void f4_set_rdev(struct ext2_inode_large *inode, uint32_t rdev)
{
	unsigned int maj = (rdev & 0xfff00) >> 8;
	unsigned int min = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);

	memset(inode->i_block, 0, sizeof(inode->i_block));
	if (maj < 256 && min < 256)
		inode->i_block[0] = (maj << 8) | min;
	else
		inode->i_block[1] = (min & 0xff) | (maj << 8) |
			((min & ~0xffU) << 12);
}

/* Store a symlink target: in the inode when it fits, else in a block. */
static int f4_write_symlink(struct f4fs *f4, ext2_ino_t ino,
			    struct ext2_inode_large *inode, const char *target)
{
	size_t len = strlen(target);
	struct f4_map map;
	char *block;
	int ret;

	if (len >= f4->blocksize)
		return ENAMETOOLONG;
	if (len < sizeof(inode->i_block)) {
		memset(inode->i_block, 0, sizeof(inode->i_block));
		memcpy(inode->i_block, target, len);
		inode->i_size = (uint32_t)len;
		return f4_write_inode(f4, ino, inode);
	}
	if (ext2fs_has_feature_extents(f4->fs->super))
		f4_init_extent_header(inode);
	ret = f4_map_begin(f4, ino, inode, 0, 1, F4_MAP_WRITE | F4_MAP_ROOT,
			   &map);
	if (ret)
		return ret;
	block = calloc(1, f4->blocksize);
	if (!block)
		return ENOMEM;
	memcpy(block, target, len);
	if (pwrite(f4->devfd, block, f4->blocksize,
		   (off_t)(f4->opts.offset + (map.pblk << f4->blockbits))) !=
	    (ssize_t)f4->blocksize)
		ret = errno ? errno : EIO;
	free(block);
	if (ret)
		return ret;
	ret = f4_read_inode(f4, ino, inode);
	if (ret)
		return ret;
	inode->i_size = (uint32_t)len;
	return f4_write_inode(f4, ino, inode);
}

struct f4_node_spec {
	uint32_t mode;
	uint32_t rdev;
	uint32_t umask;
	const char *target;	/* symlinks */
	bool unnamed;		/* O_TMPFILE: no name, on the orphan list */
};

/*
 * Create an inode of any kind under parent and give it a name (or, for
 * O_TMPFILE, put it on the orphan list).  Caller holds the lock.
 */
static int f4_make_node(struct fe_req *req, uint64_t parent, const char *name,
			const struct f4_node_spec *spec, ext2_ino_t *ino,
			struct ext2_inode_large *inode)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large dinode;
	ext2_ino_t dir, found;
	bool isdir = LINUX_S_ISDIR(spec->mode);
	int ret;

	*ino = 0;
	if (f4->ro)
		return EROFS;
	if (!spec->unnamed) {
		ret = f4_check_name(name);
		if (ret)
			return ret;
	}
	ret = f4_get_parent(f4, parent, &dir, &dinode);
	if (ret)
		return ret;
	if (dinode.i_flags & EXT2_IMMUTABLE_FL)
		return EPERM;
	if (!spec->unnamed) {
		ret = f4_dir_lookup(f4, dir, &dinode, name, strlen(name), &found, NULL);
		if (ret == 0)
			return EEXIST;
		if (ret != ENOENT)
			return ret;
	}
	if (isdir && f4_dir_link_max(f4, &dinode))
		return EMLINK;

	ret = f4_new_inode(f4, req, dir, &dinode, spec->mode, ino, inode);
	if (ret)
		return ret;
	if (!LINUX_S_ISLNK(spec->mode)) {
		ret = f4_acl_inherit(f4, dir, *ino, inode, spec->umask);
		if (ret)
			goto undo;
	}
	if (isdir)
		ret = f4_dir_make(f4, *ino, inode, dir);
	else if (LINUX_S_ISCHR(spec->mode) || LINUX_S_ISBLK(spec->mode)) {
		f4_set_rdev(inode, spec->rdev);
		ret = f4_write_inode(f4, *ino, inode);
	} else if (LINUX_S_ISLNK(spec->mode))
		ret = f4_write_symlink(f4, *ino, inode, spec->target);
	if (ret)
		goto undo;

	if (spec->unnamed) {
		inode->i_links_count = 0;
		return f4_orphan_add(f4, *ino, inode);
	}
	ret = f4_dir_add(f4, dir, name, *ino, (uint16_t)spec->mode);
	if (ret)
		goto undo;
	if (isdir) {
		ret = f4_read_inode(f4, dir, &dinode);
		if (ret == 0) {
			f4_inc_nlink(f4, &dinode);
			f4_touch(f4, &dinode, F4_MTIME | F4_CTIME, NULL);
			ret = f4_write_inode(f4, dir, &dinode);
		}
	} else {
		f4_touch_dir(f4, dir);
	}
	if (ret == 0)
		ret = f4_read_inode(f4, *ino, inode);
	return ret;
undo:
	f4_read_inode(f4, *ino, inode);
	f4_free_inode(f4, *ino, inode);
	*ino = 0;
	return ret;
}

static void f4_reply_new_entry(struct fe_req *req, int ret, ext2_ino_t ino,
			       struct ext2_inode_large *inode)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct fuse_entry_out e;

	if (ret) {
		f4_unlock(f4);
		f4_reply_err(req, ret);
		return;
	}
	f4_fill_entry(f4, ino, inode, &e);
	f4_unlock(f4);
	fe_reply_entry(req, &e);
}

void f4_mknod(struct fe_req *req, uint64_t parent, const char *name,
	      const struct fuse_mknod_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct f4_node_spec spec = {
		.mode = arg->mode, .rdev = arg->rdev, .umask = arg->umask,
	};
	struct ext2_inode_large inode;
	ext2_ino_t ino;
	int ret;

	switch (arg->mode & LINUX_S_IFMT) {
	case LINUX_S_IFREG:
	case LINUX_S_IFCHR:
	case LINUX_S_IFBLK:
	case LINUX_S_IFIFO:
	case LINUX_S_IFSOCK:
		break;
	default:
		f4_reply_err(req, EINVAL);
		return;
	}
	f4_lock(f4);
	ret = f4_make_node(req, parent, name, &spec, &ino, &inode);
	f4_reply_new_entry(req, ret, ino, &inode);
}

void f4_mkdir(struct fe_req *req, uint64_t parent, const char *name,
	      const struct fuse_mkdir_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct f4_node_spec spec = {
		.mode = LINUX_S_IFDIR | (arg->mode & 07777),
		.umask = arg->umask,
	};
	struct ext2_inode_large inode;
	ext2_ino_t ino;
	int ret;

	f4_lock(f4);
	ret = f4_make_node(req, parent, name, &spec, &ino, &inode);
	f4_reply_new_entry(req, ret, ino, &inode);
}

void f4_symlink(struct fe_req *req, uint64_t parent, const char *name,
		const char *target)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct f4_node_spec spec = {
		.mode = LINUX_S_IFLNK | 0777,
		.target = target,
	};
	struct ext2_inode_large inode;
	ext2_ino_t ino;
	int ret;

	if (target[0] == '\0') {
		f4_reply_err(req, ENOENT);
		return;
	}
	f4_lock(f4);
	ret = f4_make_node(req, parent, name, &spec, &ino, &inode);
	f4_reply_new_entry(req, ret, ino, &inode);
}

static void f4_create_common(struct fe_req *req, uint64_t parent,
			     const char *name,
			     const struct fuse_create_in *arg, bool unnamed)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct f4_node_spec spec = {
		.mode = LINUX_S_IFREG | (arg->mode & 07777),
		.umask = arg->umask,
		.unnamed = unnamed,
	};
	struct ext2_inode_large inode;
	struct fuse_entry_out e;
	struct fuse_open_out o;
	struct f4_inode *ip = NULL;
	ext2_ino_t ino;
	int ret;

	f4_lock(f4);
	ret = f4_make_node(req, parent, name, &spec, &ino, &inode);
	if (ret == 0) {
		ret = f4_open_file(f4, ino, &ip);
		/* The tmpfile went on the orphan list before it had an entry:
		 * it is the list's head, with no predecessor. */
		if (ret == 0) {
			ip->writer_uid = req->uid;
			ip->writer_gid = req->gid;
		}
		if (ret == 0 && unnamed) {
			ip->orphan = true;
			ip->orphan_prev = 0;
		}
		if (ret && unnamed && f4_orphan_del(f4, ino, &inode) == 0)
			f4_free_inode(f4, ino, &inode);
		else if (ret)
			f4_drop_link(f4, ino, &inode);
	}
	if (ret) {
		f4_unlock(f4);
		f4_reply_err(req, ret);
		return;
	}
	f4_fill_entry(f4, ino, &inode, &e);
	f4_unlock(f4);
	memset(&o, 0, sizeof(o));
	o.fh = ino;
	o.open_flags = FOPEN_KEEP_CACHE;
	if (fe_reply_create(req, &e, &o) < 0) {
		f4_lock(f4);
		f4_itable_put(f4, ip);
		f4_unlock(f4);
	}
}

void f4_create(struct fe_req *req, uint64_t parent, const char *name,
	       const struct fuse_create_in *arg)
{
	f4_create_common(req, parent, name, arg, false);
}

void f4_tmpfile(struct fe_req *req, uint64_t parent,
		const struct fuse_create_in *arg)
{
	f4_create_common(req, parent, NULL, arg, true);
}

void f4_link(struct fe_req *req, uint64_t oldnodeid, uint64_t newparent,
	     const char *newname)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode, dinode;
	struct f4_inode *ip;
	ext2_ino_t ino, dir, found;
	int ret;

	ret = f4->ro ? EROFS : f4_check_name(newname);
	if (ret) {
		f4_reply_err(req, ret);
		return;
	}
	f4_lock(f4);
	ret = f4_iget(f4, oldnodeid, &ino, &inode);
	if (ret)
		goto out;
	if (LINUX_S_ISDIR(inode.i_mode)) {
		ret = EPERM;
		goto out;
	}
	if (inode.i_flags & (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL)) {
		ret = EPERM;
		goto out;
	}
	if (inode.i_links_count >= F4_LINK_MAX) {
		ret = EMLINK;
		goto out;
	}
	ret = f4_get_parent(f4, newparent, &dir, &dinode);
	if (ret)
		goto out;
	ret = f4_dir_lookup(f4, dir, &dinode, newname, strlen(newname), &found, NULL);
	if (ret == 0)
		ret = EEXIST;
	if (ret != ENOENT)
		goto out;
	ret = f4_dir_add(f4, dir, newname, ino, inode.i_mode);
	if (ret)
		goto out;
	f4_touch_dir(f4, dir);
	/* Linking an O_TMPFILE inode takes it off the orphan list. */
	ip = f4_itable_find(f4, ino);
	if (inode.i_links_count == 0 && ip && ip->orphan) {
		ret = f4_orphan_del(f4, ino, &inode);
		if (ret)
			goto out;
	}
	inode.i_links_count++;
	f4_touch(f4, &inode, F4_CTIME, NULL);
	ret = f4_write_inode(f4, ino, &inode);
out:
	f4_reply_new_entry(req, ret, ino, &inode);
}

/* Detach a directory that lost its name: free it now or at last close. */
static int f4_drop_dir(struct f4fs *f4, ext2_ino_t ino,
		       struct ext2_inode_large *inode)
{
	/* Held open, it reads as empty, as after ext4's rmdir. */
	inode->i_links_count = 0;
	inode->i_size = 0;
	f4_touch(f4, inode, F4_CTIME, NULL);
	if (f4_itable_find(f4, ino))
		return f4_orphan_add(f4, ino, inode);
	return f4_free_inode(f4, ino, inode);
}

static int f4_remove_name(struct fe_req *req, uint64_t parent,
			  const char *name, bool want_dir)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large dinode, inode;
	ext2_ino_t dir, ino;
	int ret;

	if (f4->ro)
		return EROFS;
	if (strlen(name) > EXT2_NAME_LEN)
		return ENAMETOOLONG;
	if (f4_is_dot_name(name))
		return want_dir ? (strcmp(name, ".") ? ENOTEMPTY : EINVAL) :
			EISDIR;
	ret = f4_get_parent(f4, parent, &dir, &dinode);
	if (ret)
		return ret;
	if (dinode.i_flags & (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL))
		return EPERM;
	ret = f4_dir_lookup(f4, dir, &dinode, name, strlen(name), &ino, NULL);
	if (ret)
		return ret;
	ret = f4_read_inode(f4, ino, &inode);
	if (ret)
		return ret;
	if (inode.i_flags & (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL))
		return EPERM;
	if (want_dir) {
		if (!LINUX_S_ISDIR(inode.i_mode))
			return ENOTDIR;
		ret = f4_dir_is_empty(f4, ino, &inode);
		if (ret)
			return ret;
	} else if (LINUX_S_ISDIR(inode.i_mode)) {
		return EISDIR;
	}
	ret = f4_dir_remove(f4, dir, name);
	if (ret)
		return ret;
	if (want_dir) {
		ret = f4_read_inode(f4, dir, &dinode);
		if (ret)
			return ret;
		f4_dec_nlink(&dinode);
		f4_touch(f4, &dinode, F4_MTIME | F4_CTIME, NULL);
		ret = f4_write_inode(f4, dir, &dinode);
		if (ret)
			return ret;
		return f4_drop_dir(f4, ino, &inode);
	}
	f4_touch_dir(f4, dir);
	return f4_drop_link(f4, ino, &inode);
}

void f4_unlink(struct fe_req *req, uint64_t parent, const char *name)
{
	struct f4fs *f4 = fe_req_fs(req);
	int ret;

	f4_lock(f4);
	ret = f4_remove_name(req, parent, name, false);
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}

void f4_rmdir(struct fe_req *req, uint64_t parent, const char *name)
{
	struct f4fs *f4 = fe_req_fs(req);
	int ret;

	f4_lock(f4);
	ret = f4_remove_name(req, parent, name, true);
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}

/* Would moving directory `moved` under `target` put it inside itself? */
static int f4_check_loop(struct f4fs *f4, ext2_ino_t moved, ext2_ino_t target)
{
	struct ext2_inode_large inode;
	ext2_ino_t cur = target, up;
	uint32_t steps;
	int ret;

	for (steps = 0; cur != EXT2_ROOT_INO; steps++) {
		if (cur == moved)
			return EINVAL;
		if (steps > f4->fs->super->s_inodes_count)
			return EUCLEAN;
		ret = f4_read_inode(f4, cur, &inode);
		if (ret == 0)
			ret = f4_dir_lookup(f4, cur, &inode, "..", 2, &up, NULL);
		if (ret)
			return ret == ENOENT ? EUCLEAN : ret;
		cur = up;
	}
	return moved == EXT2_ROOT_INO ? EINVAL : 0;
}

/* Adjust a parent's link count by delta (+1/-1) and touch it. */
static int f4_adjust_dir(struct f4fs *f4, ext2_ino_t dir, int delta)
{
	struct ext2_inode_large inode;
	int ret = f4_read_inode(f4, dir, &inode);

	if (ret)
		return ret;
	if (delta > 0)
		f4_inc_nlink(f4, &inode);
	else if (delta < 0)
		f4_dec_nlink(&inode);
	f4_touch(f4, &inode, F4_MTIME | F4_CTIME, NULL);
	return f4_write_inode(f4, dir, &inode);
}

static int f4_do_rename(struct fe_req *req, uint64_t parent, const char *name,
			uint64_t newparent, const char *newname,
			uint32_t flags)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large pinode, npinode, sinode, dinode, winode;
	ext2_ino_t pdir, npdir, sino, dino = 0, wino;
	bool sdir, ddir = false;
	int ret;

	if (f4->ro)
		return EROFS;
	if (flags & ~(F4_RENAME_NOREPLACE | F4_RENAME_EXCHANGE |
		      F4_RENAME_WHITEOUT))
		return EINVAL;
	if ((flags & F4_RENAME_EXCHANGE) &&
	    (flags & (F4_RENAME_NOREPLACE | F4_RENAME_WHITEOUT)))
		return EINVAL;
	if (f4_is_dot_name(name) || f4_is_dot_name(newname))
		return EBUSY;
	ret = f4_check_name(newname);
	if (ret)
		return ret;
	ret = f4_get_parent(f4, parent, &pdir, &pinode);
	if (ret == 0)
		ret = f4_get_parent(f4, newparent, &npdir, &npinode);
	if (ret)
		return ret;
	if ((pinode.i_flags | npinode.i_flags) &
	    (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL))
		return EPERM;
	ret = f4_dir_lookup(f4, pdir, &pinode, name, strlen(name), &sino, NULL);
	if (ret == 0)
		ret = f4_read_inode(f4, sino, &sinode);
	if (ret)
		return ret;
	if (sinode.i_flags & (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL))
		return EPERM;
	sdir = LINUX_S_ISDIR(sinode.i_mode);
	ret = f4_dir_lookup(f4, npdir, &npinode, newname, strlen(newname),
			    &dino, NULL);
	if (ret == 0)
		ret = f4_read_inode(f4, dino, &dinode);
	if (ret == ENOENT)
		dino = 0;
	else if (ret)
		return ret;
	if (dino) {
		if (flags & F4_RENAME_NOREPLACE)
			return EEXIST;
		if (dinode.i_flags & (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL))
			return EPERM;
		ddir = LINUX_S_ISDIR(dinode.i_mode);
	} else if (flags & F4_RENAME_EXCHANGE) {
		return ENOENT;
	}
	if (sino == dino)
		return 0;
	if (sdir && pdir != npdir) {
		ret = f4_check_loop(f4, sino, npdir);
		if (ret)
			return ret;
	}
	if (ddir && (flags & F4_RENAME_EXCHANGE) && pdir != npdir) {
		ret = f4_check_loop(f4, dino, pdir);
		if (ret)
			return ret;
	}

	if (flags & F4_RENAME_EXCHANGE) {
		ret = f4_dir_retarget(f4, pdir, name, dino, dinode.i_mode);
		if (ret == 0)
			ret = f4_dir_retarget(f4, npdir, newname, sino,
					      sinode.i_mode);
		if (ret)
			return ret;
		if (pdir != npdir && sdir != ddir) {
			/* A directory moved one way only: link counts move. */
			ret = f4_adjust_dir(f4, sdir ? pdir : npdir, -1);
			if (ret == 0)
				ret = f4_adjust_dir(f4, sdir ? npdir : pdir, +1);
			if (ret)
				return ret;
		}
		if (sdir && pdir != npdir)
			ret = f4_dir_retarget(f4, sino, "..", npdir,
					      LINUX_S_IFDIR);
		if (ret == 0 && ddir && pdir != npdir)
			ret = f4_dir_retarget(f4, dino, "..", pdir,
					      LINUX_S_IFDIR);
		if (ret)
			return ret;
		f4_touch_dir(f4, pdir);
		if (npdir != pdir)
			f4_touch_dir(f4, npdir);
		f4_touch(f4, &sinode, F4_CTIME, NULL);
		ret = f4_write_inode(f4, sino, &sinode);
		if (ret == 0) {
			f4_touch(f4, &dinode, F4_CTIME, NULL);
			ret = f4_write_inode(f4, dino, &dinode);
		}
		return ret;
	}

	if (dino) {
		if (sdir && !ddir)
			return ENOTDIR;
		if (!sdir && ddir)
			return EISDIR;
		if (ddir) {
			ret = f4_dir_is_empty(f4, dino, &dinode);
			if (ret)
				return ret;
		}
		ret = f4_dir_retarget(f4, npdir, newname, sino, sinode.i_mode);
	} else {
		if (sdir && pdir != npdir && f4_dir_link_max(f4, &npinode))
			return EMLINK;
		ret = f4_dir_add(f4, npdir, newname, sino, sinode.i_mode);
	}
	if (ret)
		return ret;

	if (flags & F4_RENAME_WHITEOUT) {
		/* overlayfs marks the removed lower name with a 0:0 char
		 * device, created here so the swap is one directory write. */
		ret = f4_new_inode(f4, req, pdir, &pinode, LINUX_S_IFCHR, &wino,
				   &winode);
		if (ret == 0)
			ret = f4_dir_retarget(f4, pdir, name, wino, LINUX_S_IFCHR);
		if (ret)
			return ret;
	} else {
		ret = f4_dir_remove(f4, pdir, name);
		if (ret)
			return ret;
	}

	if (dino) {
		if (ddir) {
			ret = f4_adjust_dir(f4, npdir, -1);
			if (ret == 0)
				ret = f4_drop_dir(f4, dino, &dinode);
		} else {
			ret = f4_drop_link(f4, dino, &dinode);
		}
		if (ret)
			return ret;
	}
	if (sdir && pdir != npdir) {
		ret = f4_dir_retarget(f4, sino, "..", npdir, LINUX_S_IFDIR);
		if (ret == 0)
			ret = f4_adjust_dir(f4, pdir, -1);
		if (ret == 0)
			ret = f4_adjust_dir(f4, npdir, +1);
		if (ret)
			return ret;
	} else {
		f4_touch_dir(f4, pdir);
		if (npdir != pdir)
			f4_touch_dir(f4, npdir);
	}
	ret = f4_read_inode(f4, sino, &sinode);
	if (ret)
		return ret;
	f4_touch(f4, &sinode, F4_CTIME, NULL);
	return f4_write_inode(f4, sino, &sinode);
}

void f4_rename(struct fe_req *req, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, uint32_t flags)
{
	struct f4fs *f4 = fe_req_fs(req);
	int ret;

	f4_lock(f4);
	ret = f4_do_rename(req, parent, name, newparent, newname, flags);
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_ok(req);
}
