/*
 * Directories: walking entries from a position, listing, and name lookup.
 *
 * A directory position is the byte offset of an entry in the directory
 * file, so READDIR resumes where the previous call stopped without walking
 * the directory from the start.  Inline-data directories have no "." and
 * ".." records on disk; they get positions 0 and 1, and their entries keep
 * their offsets in the inline buffer (which start at 4).
 *
 * Lookups in hash-indexed directories follow the htree index; anything odd
 * in the index falls back to a linear scan, as the kernel does.
 *
 * Callers hold the filesystem lock except for the request handlers.
 */
#include "config.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "fuse4fs.h"

#define F4_INLINE_DOTDOT_SIZE	4	/* parent inode number */
#define F4_INLINE_IBLOCK_SIZE	60	/* sizeof(i_block) */

/* Outcome of walking one block of entries. */
enum {
	F4_WALK_DONE = 0,	/* reached the end of the block */
	F4_WALK_STOP = 1,	/* the callback asked to stop */
};

struct f4_dirent_view {
	ext2_ino_t ino;
	unsigned int namelen;
	unsigned int ftype;
	const char *name;
	unsigned int rec_len;
};

/* Validate one entry the way the kernel's ext4_check_dir_entry does. */
static bool f4_dirent_ok(struct f4fs *f4, const char *region, size_t size,
			 size_t off, struct f4_dirent_view *v)
{
	struct ext2_dir_entry *d = (struct ext2_dir_entry *)(region + off);
	unsigned int rec_len;

	if (size - off < 12)
		return false;
	if (ext2fs_get_rec_len(f4->fs, d, &rec_len))
		return false;
	v->ino = d->inode;
	v->namelen = ext2fs_dirent_name_len(d);
	v->ftype = ext2fs_has_feature_filetype(f4->fs->super) ?
		(unsigned int)ext2fs_dirent_file_type(d) : 0;
	v->name = d->name;
	v->rec_len = rec_len;
	if (rec_len < 12 || rec_len % 4 || rec_len > size - off ||
	    rec_len < EXT2_DIR_REC_LEN(v->namelen))
		return false;
	if (v->ino > f4->fs->super->s_inodes_count)
		return false;
	return true;
}

/*
 * Walk the entries of one region (a directory block, or a part of an
 * inline directory) that starts at directory position `base`, emitting
 * live entries at or after `pos`.
 */
static int f4_walk_region(struct f4fs *f4, const char *region, size_t size,
			  size_t first, uint64_t base, uint64_t pos,
			  f4_dirent_fn fn, void *priv, int *corrupt)
{
	size_t off = first;

	while (off < size) {
		struct f4_dirent_view v;

		if (!f4_dirent_ok(f4, region, size, off, &v)) {
			*corrupt = 1;
			return F4_WALK_DONE;
		}
		if (v.ino && base + off >= pos && v.namelen > 0 &&
		    fn(priv, v.ino, v.name, v.namelen, v.ftype,
		       base + off + v.rec_len))
			return F4_WALK_STOP;
		off += v.rec_len;
	}
	return F4_WALK_DONE;
}

static int f4_dir_iterate_inline(struct f4fs *f4, ext2_ino_t dir,
				 const struct ext2_inode_large *inode,
				 uint64_t pos, f4_dirent_fn fn, void *priv)
{
	struct ext2_inode_large copy = *inode;
	size_t size = 0, split;
	int corrupt = 0, ret;
	void *buf = NULL;
	ext2_ino_t parent;

	ret = f4_read_inline(f4, dir, &copy, &buf, &size);
	if (ret)
		return ret;
	if (size < F4_INLINE_DOTDOT_SIZE) {
		ret = EUCLEAN;
		goto out;
	}
	memcpy(&parent, buf, sizeof(parent));
	parent = ext2fs_le32_to_cpu(parent);
	if (pos == 0 && fn(priv, dir, ".", 1, EXT2_FT_DIR, 1))
		goto out;
	if (pos <= 1 && fn(priv, parent, "..", 2, EXT2_FT_DIR,
			   F4_INLINE_DOTDOT_SIZE))
		goto out;
	split = size < F4_INLINE_IBLOCK_SIZE ? size : F4_INLINE_IBLOCK_SIZE;
	if (f4_walk_region(f4, buf, split, F4_INLINE_DOTDOT_SIZE, 0, pos,
			   fn, priv, &corrupt) == F4_WALK_STOP)
		goto out;
	if (size > F4_INLINE_IBLOCK_SIZE)
		f4_walk_region(f4, (char *)buf + F4_INLINE_IBLOCK_SIZE,
			       size - F4_INLINE_IBLOCK_SIZE, 0,
			       F4_INLINE_IBLOCK_SIZE, pos, fn, priv, &corrupt);
	if (corrupt)
		f4_log("directory inode %u: corrupt inline entries skipped",
		       dir);
out:
	free(buf);
	return ret;
}

/* Read directory block lblk; *pblk is 0 for a hole. */
static int f4_read_dir_block(struct f4fs *f4, ext2_ino_t dir,
			     const struct ext2_inode_large *inode,
			     uint64_t lblk, char *buf, blk64_t *pblk)
{
	struct ext2_inode_large copy = *inode;
	errcode_t err;

	*pblk = 0;
	err = ext2fs_bmap2(f4->fs, dir, (struct ext2_inode *)&copy, NULL, 0,
			   lblk, NULL, pblk);
	if (err)
		return f4_errno(err);
	if (*pblk == 0)
		return 0;
	if (*pblk >= ext2fs_blocks_count(f4->fs->super))
		return EUCLEAN;
	err = ext2fs_read_dir_block4(f4->fs, *pblk, buf, 0, dir);
	return f4_errno(err);
}

int f4_dir_iterate(struct f4fs *f4, ext2_ino_t dir,
		   const struct ext2_inode_large *inode, uint64_t pos,
		   f4_dirent_fn fn, void *priv)
{
	uint64_t size = f4_inode_size(inode), lblk;
	char *buf;
	int ret = 0;

	if (inode->i_flags & EXT4_INLINE_DATA_FL)
		return f4_dir_iterate_inline(f4, dir, inode, pos, fn, priv);

	buf = malloc(f4->blocksize);
	if (!buf)
		return ENOMEM;
	for (lblk = pos >> f4->blockbits; lblk < (size + f4->blocksize - 1) >>
	     f4->blockbits; lblk++) {
		blk64_t pblk;
		int corrupt = 0;

		ret = f4_read_dir_block(f4, dir, inode, lblk, buf, &pblk);
		if (ret) {
			/* A bad block hides its entries, not the rest of the
			 * directory, as with the kernel's readdir. */
			f4_log("directory inode %u: block %llu unreadable (%s)",
			       dir, (unsigned long long)lblk, strerror(ret));
			ret = 0;
			continue;
		}
		if (pblk == 0)
			continue;
		if (f4_walk_region(f4, buf, f4->blocksize, 0,
				   lblk << f4->blockbits, pos, fn, priv,
				   &corrupt) == F4_WALK_STOP)
			break;
		if (corrupt)
			f4_log("directory inode %u: corrupt entries in block %llu skipped",
			       dir, (unsigned long long)lblk);
	}
	free(buf);
	return ret;
}

/* ---- lookup ---- */

struct f4_match {
	const char *name;
	size_t namelen;
	ext2_ino_t ino;
	uint64_t lblk;		/* block holding the match */
};

static int f4_match_fn(void *priv, ext2_ino_t ino, const char *name,
		       unsigned int namelen, unsigned int ftype,
		       uint64_t next_pos)
{
	struct f4_match *m = priv;

	(void)ftype;
	(void)next_pos;
	if (namelen == m->namelen && memcmp(name, m->name, namelen) == 0) {
		m->ino = ino;
		return 1;
	}
	return 0;
}

/* Search one leaf block for the name; strict about read errors. */
static int f4_search_block(struct f4fs *f4, ext2_ino_t dir,
			   const struct ext2_inode_large *inode, uint64_t lblk,
			   char *buf, struct f4_match *m)
{
	blk64_t pblk;
	int corrupt = 0;
	int ret;

	ret = f4_read_dir_block(f4, dir, inode, lblk, buf, &pblk);
	if (ret || pblk == 0)
		return ret;
	f4_walk_region(f4, buf, f4->blocksize, 0, 0, 0, f4_match_fn, m,
		       &corrupt);
	if (m->ino)
		m->lblk = lblk;
	else if (corrupt)
		return EUCLEAN;
	return 0;
}

/* Reasons to give up on the index and scan linearly. */
#define F4_DX_FALLBACK	(-1)

struct f4_dx_node {
	const struct ext2_dx_entry *entries;
	unsigned int count;
};

static int f4_dx_parse(struct f4fs *f4, const char *buf, size_t off,
		       uint64_t nblocks, struct f4_dx_node *node)
{
	const struct ext2_dx_countlimit *cl;
	unsigned int limit, i;

	if (off + sizeof(*cl) > f4->blocksize)
		return F4_DX_FALLBACK;
	cl = (const struct ext2_dx_countlimit *)(buf + off);
	limit = ext2fs_le16_to_cpu(cl->limit);
	node->count = ext2fs_le16_to_cpu(cl->count);
	node->entries = (const struct ext2_dx_entry *)(buf + off);
	if (node->count == 0 || node->count > limit ||
	    off + (size_t)limit * sizeof(struct ext2_dx_entry) > f4->blocksize)
		return F4_DX_FALLBACK;
	for (i = 0; i < node->count; i++)
		if ((ext2fs_le32_to_cpu(node->entries[i].block) & 0x0fffffff) >=
		    nblocks)
			return F4_DX_FALLBACK;
	return 0;
}

/* Index of the last entry whose hash is <= hash (entry 0 has none). */
static unsigned int f4_dx_find(const struct f4_dx_node *node, uint32_t hash)
{
	unsigned int lo = 1, hi = node->count;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (ext2fs_le32_to_cpu(node->entries[mid].hash) <= hash)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo - 1;
}

/* Index nodes are read into buf and leaves into leaf, so the node being
 * followed stays valid while its leaves are searched. */
static int f4_dx_lookup(struct f4fs *f4, ext2_ino_t dir,
			const struct ext2_inode_large *inode, char *buf,
			char *leaf, struct f4_match *m)
{
	struct ext2_super_block *sb = f4->fs->super;
	uint64_t nblocks = (f4_inode_size(inode) + f4->blocksize - 1) >>
		f4->blockbits;
	const struct ext2_dx_root_info *info;
	struct f4_dx_node node;
	unsigned int levels, depth, i, version, max_levels;
	ext2_dirhash_t hash, minor;
	uint32_t lblk;
	blk64_t pblk;
	int ret;

	ret = f4_read_dir_block(f4, dir, inode, 0, buf, &pblk);
	if (ret || pblk == 0)
		return ret ? ret : F4_DX_FALLBACK;
	/* "." takes 12 bytes, ".." header and name another 12. */
	info = (const struct ext2_dx_root_info *)(buf + 24);
	levels = depth = info->indirect_levels;
	max_levels = ext2fs_has_feature_largedir(sb) ? 3 : 2;
	if (info->reserved_zero || info->info_length < 8 ||
	    levels >= max_levels)
		return F4_DX_FALLBACK;
	version = info->hash_version;
	if (version > EXT2_HASH_TEA && version != EXT2_HASH_SIPHASH)
		return F4_DX_FALLBACK;
	if (version <= EXT2_HASH_TEA &&
	    (sb->s_flags & EXT2_FLAGS_UNSIGNED_HASH))
		version += 3;
	if (ext2fs_dirhash2(version, m->name, (int)m->namelen, NULL, 0,
			    sb->s_hash_seed, &hash, &minor))
		return F4_DX_FALLBACK;

	ret = f4_dx_parse(f4, buf, 24 + info->info_length, nblocks, &node);
	for (;;) {
		if (ret)
			return ret;
		i = f4_dx_find(&node, hash);
		lblk = ext2fs_le32_to_cpu(node.entries[i].block) & 0x0fffffff;
		if (levels == 0)
			break;
		levels--;
		ret = f4_read_dir_block(f4, dir, inode, lblk, buf, &pblk);
		if (ret == 0 && pblk == 0)
			ret = F4_DX_FALLBACK;
		if (ret == 0)
			ret = f4_dx_parse(f4, buf, 8, nblocks, &node);
	}

	/* Leaves that share the hash (collisions) are chained by the low bit
	 * of the following index entry. */
	for (;;) {
		uint32_t next_hash;

		ret = f4_search_block(f4, dir, inode, lblk, leaf, m);
		if (ret || m->ino)
			return ret;
		if (i + 1 >= node.count)
			/* A continuation could start the next index node,
			 * which this walk does not follow. */
			return depth > 0 ? F4_DX_FALLBACK : 0;
		next_hash = ext2fs_le32_to_cpu(node.entries[i + 1].hash);
		if ((next_hash & 1) == 0 || (next_hash & ~1U) != (hash & ~1U))
			return 0;
		i++;
		lblk = ext2fs_le32_to_cpu(node.entries[i].block) & 0x0fffffff;
	}
}

/* Find name in dir; *where (if given) gets the block holding it, or
 * UINT64_MAX for inline directories. */
int f4_dir_lookup(struct f4fs *f4, ext2_ino_t dir,
		  const struct ext2_inode_large *inode, const char *name,
		  size_t namelen, ext2_ino_t *found, uint64_t *where)
{
	struct f4_match m = { .name = name, .namelen = namelen,
			      .lblk = UINT64_MAX };
	uint64_t nblocks, lblk;
	char *buf = NULL;
	int ret;

	*found = 0;
	if (inode->i_flags & EXT4_INLINE_DATA_FL) {
		ret = f4_dir_iterate_inline(f4, dir, inode, 0, f4_match_fn, &m);
		goto out;
	}
	buf = malloc(f4->blocksize);
	if (!buf) {
		ret = ENOMEM;
		goto out;
	}
	if ((inode->i_flags & EXT2_INDEX_FL) &&
	    ext2fs_has_feature_dir_index(f4->fs->super)) {
		char *leaf = malloc(f4->blocksize);

		if (!leaf) {
			ret = ENOMEM;
			goto out;
		}
		ret = f4_dx_lookup(f4, dir, inode, buf, leaf, &m);
		free(leaf);
		if (ret != F4_DX_FALLBACK)
			goto out;
		m.ino = 0;
	}
	nblocks = (f4_inode_size(inode) + f4->blocksize - 1) >> f4->blockbits;
	for (ret = 0, lblk = 0; lblk < nblocks && !m.ino; lblk++) {
		ret = f4_search_block(f4, dir, inode, lblk, buf, &m);
		if (ret)
			break;
	}
out:
	free(buf);
	if (ret == 0 && !m.ino)
		ret = ENOENT;
	*found = m.ino;
	if (where)
		*where = m.lblk;
	return ret;
}

/* ---- requests ---- */

void f4_opendir(struct fe_req *req, uint64_t nodeid,
		const struct fuse_open_in *arg)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	struct fuse_open_out out;
	ext2_ino_t ino;
	int ret;

	(void)arg;
	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	f4_unlock(f4);
	if (ret == 0 && !LINUX_S_ISDIR(inode.i_mode))
		ret = ENOTDIR;
	if (ret) {
		f4_reply_err(req, ret);
		return;
	}
	memset(&out, 0, sizeof(out));
	/* Listings cannot change on a read-only mount; let the kernel keep
	 * them in its page cache. */
	if (f4->ro)
		out.open_flags = FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE;
	fe_reply_open(req, &out);
}

void f4_releasedir(struct fe_req *req, uint64_t nodeid,
		   const struct fuse_release_in *arg)
{
	(void)nodeid;
	(void)arg;
	fe_reply_ok(req);
}

struct f4_list {
	struct f4fs *f4;
	char *buf;
	size_t size;
	size_t used;
	bool plus;
};

static int f4_list_fn(void *priv, ext2_ino_t ino, const char *name,
		      unsigned int namelen, unsigned int ftype,
		      uint64_t next_pos)
{
	struct f4_list *l = priv;
	struct ext2_inode_large inode;
	struct fuse_entry_out e;
	uint32_t type = f4_dirent_type(ftype);
	size_t used;
	bool dots = (namelen == 1 && name[0] == '.') ||
		(namelen == 2 && name[0] == '.' && name[1] == '.');

	if (!l->plus) {
		used = fe_add_dirent(l->buf, l->size, l->used, name, namelen,
				     ino, type, next_pos);
	} else {
		/* The kernel never instantiates "." or ".." from a listing;
		 * a zero node id says "no attributes" for them and for
		 * entries whose inode cannot be read. */
		memset(&e, 0, sizeof(e));
		if (!dots && f4_read_inode(l->f4, ino, &inode) == 0 &&
		    inode.i_mode && inode.i_links_count) {
			f4_fill_entry(l->f4, ino, &inode, &e);
			if (type == DT_UNKNOWN)
				type = f4_mode_to_dtype(inode.i_mode);
		}
		e.attr.ino = ino;
		used = fe_add_direntplus(l->buf, l->size, l->used, name,
					 namelen, &e, type, next_pos);
	}
	if (used == l->used)
		return 1;
	l->used = used;
	return 0;
}

static void f4_do_readdir(struct fe_req *req, uint64_t nodeid,
			  const struct fuse_read_in *arg, bool plus)
{
	struct f4fs *f4 = fe_req_fs(req);
	struct ext2_inode_large inode;
	struct f4_list l = { .f4 = f4, .size = arg->size, .plus = plus };
	ext2_ino_t ino;
	int ret;

	l.buf = calloc(1, l.size ? l.size : 1);
	if (!l.buf) {
		f4_reply_err(req, ENOMEM);
		return;
	}
	f4_lock(f4);
	ret = f4_iget(f4, nodeid, &ino, &inode);
	if (ret == 0 && !LINUX_S_ISDIR(inode.i_mode))
		ret = ENOTDIR;
	if (ret == 0)
		ret = f4_dir_iterate(f4, ino, &inode, arg->offset, f4_list_fn,
				     &l);
	f4_unlock(f4);
	if (ret)
		f4_reply_err(req, ret);
	else
		fe_reply_buf(req, l.buf, l.used);
	free(l.buf);
}

void f4_readdir(struct fe_req *req, uint64_t nodeid,
		const struct fuse_read_in *arg)
{
	f4_do_readdir(req, nodeid, arg, false);
}

void f4_readdirplus(struct fe_req *req, uint64_t nodeid,
		    const struct fuse_read_in *arg)
{
	f4_do_readdir(req, nodeid, arg, true);
}

/* ---- changing directories ---- */

static int f4_ext2_file_type(uint16_t mode)
{
	switch (mode & LINUX_S_IFMT) {
	case LINUX_S_IFREG:	return EXT2_FT_REG_FILE;
	case LINUX_S_IFDIR:	return EXT2_FT_DIR;
	case LINUX_S_IFCHR:	return EXT2_FT_CHRDEV;
	case LINUX_S_IFBLK:	return EXT2_FT_BLKDEV;
	case LINUX_S_IFIFO:	return EXT2_FT_FIFO;
	case LINUX_S_IFSOCK:	return EXT2_FT_SOCK;
	case LINUX_S_IFLNK:	return EXT2_FT_SYMLINK;
	}
	return EXT2_FT_UNKNOWN;
}

/* Add an entry, growing the directory by a block when it is full. */
int f4_dir_add(struct f4fs *f4, ext2_ino_t dir, const char *name,
	       ext2_ino_t ino, uint16_t mode)
{
	int ftype = f4_ext2_file_type(mode);
	struct ext2_inode_large inode;
	errcode_t err;
	int ret;

	err = ext2fs_link(f4->fs, dir, name, ino, ftype);
	if (err != EXT2_ET_DIR_NO_SPACE)
		return f4_errno(err);
	/* An indexed directory grows through its index; a full index means
	 * the directory cannot take more names. */
	ret = f4_read_inode(f4, dir, &inode);
	if (ret)
		return ret;
	if (inode.i_flags & EXT2_INDEX_FL)
		return ENOSPC;
	/* A directory outgrowing its first block gets an index, as on ext4;
	 * if it cannot have one it grows linearly. */
	if (ext2fs_has_feature_dir_index(f4->fs->super) &&
	    !(inode.i_flags & EXT4_INLINE_DATA_FL) &&
	    f4_inode_size(&inode) == f4->blocksize &&
	    f4_dx_index_dir(f4, dir) == 0)
		return f4_errno(ext2fs_link(f4->fs, dir, name, ino, ftype));
	err = ext2fs_expand_dir(f4->fs, dir);
	if (!err)
		err = ext2fs_link(f4->fs, dir, name, ino, ftype);
	return f4_errno(err);
}

/*
 * Remove name from dir.  The entry is found through the index where there
 * is one, and dropped from its block by folding it into the entry before
 * it (or clearing it when it comes first), as ext4 does.
 */
int f4_dir_remove(struct f4fs *f4, ext2_ino_t dir, const char *name)
{
	struct ext2_inode_large inode;
	size_t namelen = strlen(name);
	unsigned int off = 0, prev = UINT32_MAX;
	uint64_t lblk;
	ext2_ino_t ino;
	blk64_t pblk;
	char *buf;
	errcode_t err;
	int ret;

	ret = f4_read_inode(f4, dir, &inode);
	if (ret)
		return ret;
	if (inode.i_flags & EXT4_INLINE_DATA_FL) {
		err = ext2fs_unlink(f4->fs, dir, name, 0, 0);
		/* libext2fs says "no space" when it did not find the name. */
		return err == EXT2_ET_DIR_NO_SPACE ? ENOENT : f4_errno(err);
	}
	ret = f4_dir_lookup(f4, dir, &inode, name, namelen, &ino, &lblk);
	if (ret)
		return ret;
	buf = malloc(f4->blocksize);
	if (!buf)
		return ENOMEM;
	ret = f4_read_dir_block(f4, dir, &inode, lblk, buf, &pblk);
	if (ret == 0 && pblk == 0)
		ret = EUCLEAN;
	while (ret == 0) {
		struct f4_dirent_view v;

		if (off >= f4->blocksize ||
		    !f4_dirent_ok(f4, buf, f4->blocksize, off, &v)) {
			ret = EUCLEAN;
			break;
		}
		if (v.ino && v.namelen == namelen &&
		    memcmp(v.name, name, namelen) == 0) {
			struct ext2_dir_entry *d =
				(struct ext2_dir_entry *)(buf + off);

			if (prev != UINT32_MAX) {
				struct ext2_dir_entry *p =
					(struct ext2_dir_entry *)(buf + prev);
				unsigned int plen;

				ext2fs_get_rec_len(f4->fs, p, &plen);
				ext2fs_set_rec_len(f4->fs, plen + v.rec_len, p);
			} else {
				d->inode = 0;
			}
			ret = f4_errno(ext2fs_write_dir_block4(f4->fs, pblk, buf,
							       0, dir));
			break;
		}
		prev = off;
		off += v.rec_len;
	}
	free(buf);
	return ret;
}

struct f4_retarget {
	const char *name;
	size_t namelen;
	ext2_ino_t ino;
	int ftype;
	bool has_filetype;
	bool done;
};

static int f4_retarget_fn(ext2_ino_t dir, int entry,
			  struct ext2_dir_entry *dirent, int offset,
			  int blocksize, char *buf, void *priv)
{
	struct f4_retarget *r = priv;

	(void)dir;
	(void)entry;
	(void)offset;
	(void)blocksize;
	(void)buf;
	if (!dirent->inode ||
	    (size_t)ext2fs_dirent_name_len(dirent) != r->namelen ||
	    memcmp(dirent->name, r->name, r->namelen) != 0)
		return 0;
	dirent->inode = r->ino;
	if (r->has_filetype)
		ext2fs_dirent_set_file_type(dirent, r->ftype);
	r->done = true;
	return DIRENT_CHANGED | DIRENT_ABORT;
}

/* Point an existing entry at another inode, in place: the replacement
 * of a rename target is a single directory block write. */
int f4_dir_retarget(struct f4fs *f4, ext2_ino_t dir, const char *name,
		    ext2_ino_t ino, uint16_t mode)
{
	struct f4_retarget r = {
		.name = name,
		.namelen = strlen(name),
		.ino = ino,
		.ftype = f4_ext2_file_type(mode),
		.has_filetype = ext2fs_has_feature_filetype(f4->fs->super),
	};
	errcode_t err;

	err = ext2fs_dir_iterate2(f4->fs, dir, 0, NULL, f4_retarget_fn, &r);
	if (err)
		return f4_errno(err);
	return r.done ? 0 : ENOENT;
}

static int f4_nonempty_fn(void *priv, ext2_ino_t ino, const char *name,
			  unsigned int namelen, unsigned int ftype,
			  uint64_t next_pos)
{
	bool *found = priv;

	(void)ino;
	(void)ftype;
	(void)next_pos;
	if ((namelen == 1 && name[0] == '.') ||
	    (namelen == 2 && name[0] == '.' && name[1] == '.'))
		return 0;
	*found = true;
	return 1;
}

/* 0 when the directory holds nothing but "." and "..", else ENOTEMPTY. */
int f4_dir_is_empty(struct f4fs *f4, ext2_ino_t dir,
		    const struct ext2_inode_large *inode)
{
	bool found = false;
	int ret;

	ret = f4_dir_iterate(f4, dir, inode, 0, f4_nonempty_fn, &found);
	if (ret)
		return ret;
	return found ? ENOTEMPTY : 0;
}

/* Give a new directory inode its first block, holding "." and "..". */
int f4_dir_make(struct f4fs *f4, ext2_ino_t ino,
		struct ext2_inode_large *inode, ext2_ino_t parent)
{
	struct f4_map map;
	char *block = NULL;
	errcode_t err;
	int ret;

	err = ext2fs_new_dir_block(f4->fs, ino, parent, &block);
	if (err)
		return f4_errno(err);
	ret = f4_map_begin(f4, ino, inode, 0, 1, F4_MAP_WRITE | F4_MAP_ROOT,
			   &map);
	if (ret)
		goto out;
	err = ext2fs_write_dir_block4(f4->fs, map.pblk, block, 0, ino);
	if (err) {
		ret = f4_errno(err);
		goto out;
	}
	ret = f4_read_inode(f4, ino, inode);
	if (ret)
		goto out;
	ret = f4_errno(ext2fs_inode_size_set(f4->fs, (struct ext2_inode *)inode,
					     f4->blocksize));
	if (ret == 0)
		ret = f4_write_inode(f4, ino, inode);
out:
	ext2fs_free_mem(&block);
	return ret;
}

void f4_fsyncdir(struct fe_req *req, uint64_t nodeid,
		 const struct fuse_fsync_in *arg)
{
	(void)nodeid;
	(void)arg;
	f4_reply_flushed(req);
}
