/*
 * Hash-indexed (htree) directories: building the index.
 *
 * libext2fs adds names to indexed directories through their index, but
 * never indexes a directory itself, so a directory it grows stays linear
 * and every lookup, insertion and removal scans all of it.  Like ext4,
 * fuse4fs indexes a directory when it first needs more room: the names are
 * sorted by hash into leaf blocks behind a one-level index in block 0.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuse4fs.h"

struct f4_dx_name {
	uint32_t hash;
	uint32_t minor;
	ext2_ino_t ino;
	uint8_t ftype;
	uint8_t len;
	char name[EXT2_NAME_LEN];
};

struct f4_dx_collect {
	struct f4_dx_name *v;
	size_t n, cap;
	int version;
	const uint32_t *seed;
	ext2_ino_t parent;
	int err;
};

static int f4_dx_collect_fn(void *priv, ext2_ino_t ino, const char *name,
			    unsigned int namelen, unsigned int ftype,
			    uint64_t next_pos)
{
	struct f4_dx_collect *c = priv;
	struct f4_dx_name *e;
	ext2_dirhash_t hash, minor;

	(void)next_pos;
	if (namelen == 1 && name[0] == '.')
		return 0;
	if (namelen == 2 && name[0] == '.' && name[1] == '.') {
		c->parent = ino;
		return 0;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct f4_dx_name *v = realloc(c->v, cap * sizeof(*v));

		if (!v) {
			c->err = ENOMEM;
			return 1;
		}
		c->v = v;
		c->cap = cap;
	}
	if (ext2fs_dirhash2(c->version, name, (int)namelen, NULL, 0, c->seed,
			    &hash, &minor)) {
		c->err = EINVAL;
		return 1;
	}
	e = &c->v[c->n++];
	e->hash = hash;
	e->minor = minor;
	e->ino = ino;
	e->ftype = (uint8_t)ftype;
	e->len = (uint8_t)namelen;
	memcpy(e->name, name, namelen);
	return 0;
}

static int f4_dx_cmp(const void *a, const void *b)
{
	const struct f4_dx_name *x = a, *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	if (x->minor != y->minor)
		return x->minor < y->minor ? -1 : 1;
	return 0;
}

/* Bytes of a directory block available to entries (the rest is the
 * checksum tail on metadata_csum filesystems). */
static unsigned int f4_dx_usable(struct f4fs *f4)
{
	return f4->blocksize - (ext2fs_has_feature_metadata_csum(f4->fs->super) ?
				sizeof(struct ext2_dir_entry_tail) : 0);
}

static void f4_dx_put_entry(struct f4fs *f4, char *buf, unsigned int off,
			    ext2_ino_t ino, const char *name, unsigned int len,
			    unsigned int ftype, unsigned int rec_len)
{
	struct ext2_dir_entry *d = (struct ext2_dir_entry *)(buf + off);

	d->inode = ino;
	ext2fs_dirent_set_name_len(d, (int)len);
	ext2fs_dirent_set_file_type(d, ext2fs_has_feature_filetype(f4->fs->super) ?
				    (int)ftype : 0);
	memcpy(d->name, name, len);
	ext2fs_set_rec_len(f4->fs, rec_len, d);
}

static void f4_dx_finish_leaf(struct f4fs *f4, char *buf)
{
	if (ext2fs_has_feature_metadata_csum(f4->fs->super))
		ext2fs_initialize_dirent_tail(f4->fs,
					      EXT2_DIRENT_TAIL(buf, f4->blocksize));
}

static int f4_dx_write(struct f4fs *f4, ext2_ino_t dir,
		       struct ext2_inode_large *inode, uint64_t lblk,
		       uint64_t nblocks_now, char *buf)
{
	struct f4_map map;
	blk64_t pblk = 0;
	errcode_t err;
	int ret;

	if (lblk < nblocks_now) {
		err = ext2fs_bmap2(f4->fs, dir, (struct ext2_inode *)inode, NULL,
				   0, lblk, NULL, &pblk);
		if (err)
			return f4_errno(err);
	}
	if (!pblk) {
		ret = f4_map_begin(f4, dir, inode, lblk, 1, F4_MAP_WRITE | F4_MAP_ROOT,
				   &map);
		if (ret)
			return ret;
		pblk = map.pblk;
	}
	return f4_errno(ext2fs_write_dir_block4(f4->fs, pblk, buf, 0, dir));
}

/*
 * Rewrite the one-block linear directory dir as an indexed one.  The
 * leaves go to new blocks and block 0 is rewritten last, so a failure
 * leaves the directory as it was.  Caller holds the lock.
 */
int f4_dx_index_dir(struct f4fs *f4, ext2_ino_t dir)
{
	struct ext2_super_block *sb = f4->fs->super;
	struct f4_dx_collect c = { .seed = sb->s_hash_seed };
	unsigned int bs = f4->blocksize, usable = f4_dx_usable(f4);
	unsigned int limit, fill, off = 0, last_off = 0, nleaves = 0;
	struct ext2_dx_root_info *info;
	struct ext2_dx_countlimit *cl;
	struct ext2_dx_entry *ent;
	struct ext2_inode_large inode;
	char *root = NULL, *leaf = NULL;
	size_t i;
	int ret;

	ret = f4_read_inode(f4, dir, &inode);
	if (ret)
		return ret;
	if ((inode.i_flags & (EXT2_INDEX_FL | EXT4_INLINE_DATA_FL)) ||
	    f4_inode_size(&inode) != bs)
		return EINVAL;
	c.version = sb->s_def_hash_version;
	if (c.version > EXT2_HASH_TEA && c.version != EXT2_HASH_SIPHASH)
		return EINVAL;
	if (c.version <= EXT2_HASH_TEA && (sb->s_flags & EXT2_FLAGS_UNSIGNED_HASH))
		c.version += 3;
	ret = f4_dir_iterate(f4, dir, &inode, 0, f4_dx_collect_fn, &c);
	if (ret == 0)
		ret = c.err;
	if (ret)
		goto out;
	if (c.n > 1)
		qsort(c.v, c.n, sizeof(*c.v), f4_dx_cmp);

	limit = (bs - 32 - (ext2fs_has_feature_metadata_csum(sb) ?
			    sizeof(struct ext2_dx_tail) : 0)) /
		sizeof(struct ext2_dx_entry);
	/* Half-full leaves, as ext4 splits them, leave room for the names
	 * that come next. */
	fill = usable / 2;
	root = calloc(1, bs);
	leaf = calloc(1, bs);
	if (!root || !leaf) {
		ret = ENOMEM;
		goto out;
	}
	cl = (struct ext2_dx_countlimit *)(root + 32);
	ent = (struct ext2_dx_entry *)(root + 32);

	for (i = 0; i <= c.n; i++) {
		struct f4_dx_name *e = i < c.n ? &c.v[i] : NULL;
		unsigned int need = e ? EXT2_DIR_REC_LEN(e->len) : 0;

		if (nleaves == 0 && off == 0 && !e) {
			/* No names at all: one empty leaf. */
			need = 0;
		} else if (e && (off == 0 || off + need <= fill)) {
			goto add;
		}
		/* Close the leaf: its last entry spans the usable space. */
		if (off)
			ext2fs_set_rec_len(f4->fs, usable - last_off,
					   (struct ext2_dir_entry *)(leaf + last_off));
		else
			ext2fs_set_rec_len(f4->fs, usable,
					   (struct ext2_dir_entry *)leaf);
		f4_dx_finish_leaf(f4, leaf);
		if (nleaves >= limit) {
			ret = ENOSPC;
			goto undo;
		}
		ret = f4_dx_write(f4, dir, &inode, 1 + nleaves, 1, leaf);
		if (ret)
			goto undo;
		nleaves++;
		memset(leaf, 0, bs);
		off = 0;
		if (!e)
			break;
add:
		if (off == 0) {
			/* A run of equal hashes continuing from the previous
			 * leaf is marked in the index entry's low bit. */
			uint32_t h = e->hash;

			if (nleaves > 0 && c.v[i - 1].hash == e->hash)
				h |= 1;
			if (nleaves > 0)
				ent[nleaves].hash = ext2fs_cpu_to_le32(h);
			ent[nleaves].block = ext2fs_cpu_to_le32(1 + nleaves);
		}
		f4_dx_put_entry(f4, leaf, off, e->ino, e->name, e->len,
				e->ftype, need);
		last_off = off;
		off += need;
	}

	/* The root: ".", a ".." that spans the block, then the index. */
	f4_dx_put_entry(f4, root, 0, dir, ".", 1, EXT2_FT_DIR, 12);
	f4_dx_put_entry(f4, root, 12, c.parent ? c.parent : dir, "..", 2,
			EXT2_FT_DIR, bs - 12);
	info = (struct ext2_dx_root_info *)(root + 24);
	info->hash_version = sb->s_def_hash_version;
	info->info_length = 8;
	cl->limit = ext2fs_cpu_to_le16((uint16_t)limit);
	cl->count = ext2fs_cpu_to_le16((uint16_t)nleaves);
	ret = f4_dx_write(f4, dir, &inode, 0, 1, root);
	if (ret)
		goto undo;
	ret = f4_read_inode(f4, dir, &inode);
	if (ret)
		goto out;
	inode.i_flags |= EXT2_INDEX_FL;
	ret = f4_errno(ext2fs_inode_size_set(f4->fs, (struct ext2_inode *)&inode,
					     (uint64_t)(1 + nleaves) * bs));
	if (ret == 0)
		ret = f4_write_inode(f4, dir, &inode);
	goto out;
undo:
	/* Give back the leaf blocks; block 0 still holds every name. */
	if (f4_read_inode(f4, dir, &inode) == 0)
		f4_map_punch(f4, dir, &inode, 1, ~0ULL);
out:
	free(root);
	free(leaf);
	free(c.v);
	return ret;
}
