/*
 * The mapping engine: turns a range of a file into runs of device blocks.
 *
 * Every data path goes through f4_map_begin(): classic READ answers by
 * mapping and then reading the device itself, and the iomap protocol hands
 * the same mappings to the kernel.  A mapping never extends past what the
 * caller asked for, and always starts at the requested block.
 *
 * Callers hold the filesystem lock.
 */
#include "config.h"

#include <string.h>

#include "fuse4fs.h"

/* Bound on block-by-block probing of indirect (ext2/ext3) files per call. */
#define F4_BMAP_MAX_RUN	1024

static bool f4_extent_sane(struct f4fs *f4, const struct ext2fs_extent *e)
{
	blk64_t nblocks = ext2fs_blocks_count(f4->fs->super);

	return e->e_len > 0 && e->e_pblk >= f4->fs->super->s_first_data_block &&
	       e->e_pblk < nblocks && e->e_len <= nblocks - e->e_pblk;
}

/*
 * Find the extent holding lblk, or the start of the next extent after it
 * (*next, or ~0 when there is none).  Walks with EXT2_EXTENT_NEXT, which
 * visits index entries too, rather than NEXT_LEAF, whose cursor handling
 * at the right edge of the tree is unreliable in some libext2fs versions.
 */
static int f4_map_extent(struct f4fs *f4, ext2_ino_t ino,
			 struct ext2_inode_large *inode, uint64_t lblk,
			 uint64_t maxlen, struct f4_map *map)
{
	ext2_extent_handle_t handle = NULL;
	struct ext2fs_extent e;
	uint64_t next = UINT64_MAX;
	errcode_t err;
	int ret = 0;
	int steps;

	err = ext2fs_extent_open2(f4->fs, ino, (struct ext2_inode *)inode,
				  &handle);
	if (err) {
		ret = f4_errno(err);
		goto out;
	}
	err = ext2fs_extent_goto2(handle, 0, lblk);
	if (err == 0) {
		err = ext2fs_extent_get(handle, EXT2_EXTENT_CURRENT, &e);
		if (err) {
			ret = f4_errno(err);
			goto out;
		}
		if (!f4_extent_sane(f4, &e) || lblk < e.e_lblk ||
		    lblk >= e.e_lblk + (uint64_t)e.e_len) {
			ret = EUCLEAN;
			goto out;
		}
		map->lblk = lblk;
		map->len = e.e_lblk + (uint64_t)e.e_len - lblk;
		map->pblk = e.e_pblk + (lblk - e.e_lblk);
		map->type = (e.e_flags & EXT2_EXTENT_FLAGS_UNINIT) ?
			F4_MAP_UNWRITTEN : F4_MAP_MAPPED;
		goto clamp;
	}
	if (err != EXT2_ET_EXTENT_NOT_FOUND) {
		ret = f4_errno(err);
		goto out;
	}

	/* A hole: find where it ends. */
	err = ext2fs_extent_get(handle, EXT2_EXTENT_CURRENT, &e);
	for (steps = 0; err == 0 && steps < 100000; steps++) {
		if ((e.e_flags & EXT2_EXTENT_FLAGS_LEAF) && e.e_lblk > lblk) {
			next = e.e_lblk;
			break;
		}
		err = ext2fs_extent_get(handle, EXT2_EXTENT_NEXT, &e);
	}
	if (err && err != EXT2_ET_EXTENT_NO_NEXT &&
	    err != EXT2_ET_NO_CURRENT_NODE) {
		ret = f4_errno(err);
		goto out;
	}
	map->lblk = lblk;
	map->len = next == UINT64_MAX ? maxlen : next - lblk;
	map->pblk = 0;
	map->type = F4_MAP_HOLE;
clamp:
	if (map->len > maxlen)
		map->len = maxlen;
out:
	if (handle)
		ext2fs_extent_free(handle);
	return ret;
}

static int f4_map_indirect(struct f4fs *f4, ext2_ino_t ino,
			   struct ext2_inode_large *inode, uint64_t lblk,
			   uint64_t maxlen, struct f4_map *map)
{
	blk64_t nblocks = ext2fs_blocks_count(f4->fs->super);
	uint64_t i, limit = maxlen < F4_BMAP_MAX_RUN ? maxlen : F4_BMAP_MAX_RUN;
	errcode_t err;

	/* Block-mapped files address at most 2^32 blocks. */
	if (lblk > UINT32_MAX) {
		map->lblk = lblk;
		map->len = maxlen;
		map->pblk = 0;
		map->type = F4_MAP_HOLE;
		return 0;
	}
	for (i = 0; i < limit && lblk + i <= UINT32_MAX; i++) {
		blk64_t pblk = 0;

		err = ext2fs_bmap2(f4->fs, ino, (struct ext2_inode *)inode,
				   NULL, 0, lblk + i, NULL, &pblk);
		if (err)
			return f4_errno(err);
		if (pblk >= nblocks)
			return EUCLEAN;
		if (i == 0) {
			map->lblk = lblk;
			map->pblk = pblk;
			map->type = pblk ? F4_MAP_MAPPED : F4_MAP_HOLE;
			continue;
		}
		if (map->type == F4_MAP_HOLE ? pblk != 0 :
		    pblk != map->pblk + i)
			break;
	}
	map->len = i;
	return 0;
}

int f4_map_begin(struct f4fs *f4, ext2_ino_t ino,
		 struct ext2_inode_large *inode, uint64_t lblk,
		 uint64_t maxlen, unsigned int flags, struct f4_map *map)
{
	(void)flags;
	memset(map, 0, sizeof(*map));
	if (maxlen == 0)
		return EINVAL;
	if (inode->i_flags & EXT4_INLINE_DATA_FL) {
		map->lblk = lblk;
		map->len = lblk == 0 ? 1 : maxlen;
		map->type = lblk == 0 ? F4_MAP_INLINE : F4_MAP_HOLE;
		return 0;
	}
	if (inode->i_flags & EXT4_EXTENTS_FL)
		return f4_map_extent(f4, ino, inode, lblk, maxlen, map);
	return f4_map_indirect(f4, ino, inode, lblk, maxlen, map);
}
