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

static int f4_map_lookup(struct f4fs *f4, ext2_ino_t ino,
			 struct ext2_inode_large *inode, uint64_t lblk,
			 uint64_t maxlen, struct f4_map *map)
{
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

/* Largest file ext4 allows for this inode's block mapping scheme. */
uint64_t f4_max_file_size(struct f4fs *f4, const struct ext2_inode_large *inode)
{
	unsigned int bits = f4->blockbits;
	uint64_t limit = UINT64_MAX, res;

	if (!ext2fs_has_feature_huge_file(f4->fs->super))
		limit = (((1ULL << 32) - 1) >> (bits - 9)) << bits;
	if (inode->i_flags & EXT4_EXTENTS_FL) {
		res = ((1ULL << 32) - 1) << bits;
	} else {
		uint64_t per = f4->blocksize / 4;

		res = (EXT2_NDIR_BLOCKS + per + per * per + per * per * per)
			<< bits;
		if (res > ((1ULL << 32) - 1) << bits)
			res = ((1ULL << 32) - 1) << bits;
	}
	return res < limit ? res : limit;
}

/*
 * The space rule of ext4: everyone leaves 2% (at most 4096 clusters) for
 * extent-tree work on extent filesystems, and only privileged callers may
 * use the root-reserved blocks.  libext2fs itself would hand out every
 * last block.  statfs subtracts the same reserve from what is available.
 */
uint64_t f4_extent_reserve(struct f4fs *f4)
{
	struct ext2_super_block *sb = f4->fs->super;
	uint64_t resv;

	if (!ext2fs_has_feature_extents(sb))
		return 0;
	resv = (ext2fs_blocks_count(sb) >>
		(sb->s_log_cluster_size - sb->s_log_block_size)) / 50;
	if (resv > 4096)
		resv = 4096;
	return EXT2FS_C2B(f4->fs, resv);
}

int f4_check_space(struct f4fs *f4, uint64_t nblocks, bool root)
{
	struct ext2_super_block *sb = f4->fs->super;
	uint64_t resv = f4_extent_reserve(f4);

	if (!root)
		resv += ext2fs_r_blocks_count(sb);
	return ext2fs_free_blocks_count(sb) >= resv + nblocks ? 0 : ENOSPC;
}

/* Who may use the root-reserved blocks: root, or the configured user or
 * group. */
bool f4_req_privileged(struct f4fs *f4, const struct fe_req *req)
{
	struct ext2_super_block *sb = f4->fs->super;

	return req->uid == 0 || req->uid == sb->s_def_resuid ||
		(sb->s_def_resgid != 0 && req->gid == sb->s_def_resgid);
}

/*
 * Allocate blocks for a hole in an indirect-mapped file.  The first block
 * comes from libext2fs's allocator; each next one is the physically next
 * block, claimed only if it is free, so the run reported is exactly what
 * was allocated.
 */
static int f4_alloc_indirect(struct f4fs *f4, ext2_ino_t ino,
			     struct ext2_inode_large *inode, uint64_t lblk,
			     uint64_t len, struct f4_map *map)
{
	ext2_filsys fs = f4->fs;
	blk64_t pblk = 0;
	uint64_t i;
	errcode_t err;

	err = ext2fs_bmap2(fs, ino, (struct ext2_inode *)inode, NULL,
			   BMAP_ALLOC, lblk, NULL, &pblk);
	if (err)
		return f4_errno(err);
	for (i = 1; i < len && lblk + i <= UINT32_MAX; i++) {
		blk64_t want = pblk + i;

		if (want >= ext2fs_blocks_count(fs->super) ||
		    ext2fs_test_block_bitmap2(fs->block_map, want))
			break;
		/* Claim it first, so that an indirect block allocated for
		 * the mapping cannot be this very block. */
		ext2fs_block_alloc_stats2(fs, want, +1);
		err = ext2fs_bmap2(fs, ino, (struct ext2_inode *)inode, NULL,
				   BMAP_SET, lblk + i, NULL, &want);
		if (err) {
			ext2fs_block_alloc_stats2(fs, want, -1);
			break;
		}
		ext2fs_iblk_add_blocks(fs, (struct ext2_inode *)inode, 1);
	}
	map->lblk = lblk;
	map->len = i;
	map->pblk = pblk;
	map->type = F4_MAP_MAPPED;
	return 0;
}

/* Longest extents ext4 allows: 2^15 written, 2^15 - 1 unwritten. */
#define F4_EXT_INIT_MAX		32768u
#define F4_EXT_UNINIT_MAX	32767u

/*
 * Merge the extent holding lblk into its left neighbour in the same leaf
 * when they continue each other in the file and on disk and are both
 * written or both unwritten.  Nothing to merge is no error.
 */
static errcode_t f4_extent_merge_left(ext2_extent_handle_t handle,
				      uint64_t lblk)
{
	struct ext2fs_extent cur, prev;
	unsigned int max;
	errcode_t err;

	err = ext2fs_extent_goto2(handle, 0, lblk);
	if (!err)
		err = ext2fs_extent_get(handle, EXT2_EXTENT_CURRENT, &cur);
	if (!err)
		err = ext2fs_extent_get(handle, EXT2_EXTENT_PREV_SIB, &prev);
	if (err)
		return 0;	/* a hole, or first in its leaf */
	max = (cur.e_flags & EXT2_EXTENT_FLAGS_UNINIT) ? F4_EXT_UNINIT_MAX :
		F4_EXT_INIT_MAX;
	if (prev.e_lblk + (uint64_t)prev.e_len != cur.e_lblk ||
	    prev.e_pblk + prev.e_len != cur.e_pblk ||
	    ((prev.e_flags ^ cur.e_flags) & EXT2_EXTENT_FLAGS_UNINIT) ||
	    (uint64_t)prev.e_len + cur.e_len > max)
		return 0;
	prev.e_len += cur.e_len;
	err = ext2fs_extent_replace(handle, 0, &prev);
	if (!err)
		err = ext2fs_extent_get(handle, EXT2_EXTENT_NEXT_SIB, &cur);
	if (!err)
		err = ext2fs_extent_delete(handle, 0);
	if (!err)
		err = ext2fs_extent_fix_parents(handle);
	return err;
}

/*
 * Merge the extent holding lblk with both neighbours where they continue
 * it, as ext4 does after every allocation and conversion, so that a file
 * allocated or converted in pieces (libext2fs makes each piece an extent
 * of its own) keeps one extent per contiguous run and its tree stays in
 * the inode.
 */
static errcode_t f4_extent_merge(ext2_extent_handle_t handle, uint64_t lblk)
{
	struct ext2fs_extent cur;
	errcode_t err;

	err = f4_extent_merge_left(handle, lblk);
	if (err)
		return err;
	err = ext2fs_extent_goto2(handle, 0, lblk);
	if (!err)
		err = ext2fs_extent_get(handle, EXT2_EXTENT_CURRENT, &cur);
	if (err)
		return 0;
	return f4_extent_merge_left(handle, cur.e_lblk + (uint64_t)cur.e_len);
}

/*
 * Soft reservations.  Writers that grow files at the same time would
 * otherwise take turns in the same free run, each write landing just past
 * the other files' last ones, and every file would end up in as many
 * extents as it had writes.  So each inode open for writing keeps a window
 * of device blocks just past its last allocation: its next allocation
 * continues into it, and other inodes' allocations steer around it.  The
 * window grows with the file, as ext4's mballoc sizes its per-inode
 * preallocations by file size, up to the longest extent.
 *
 * Nothing but real allocations ever reaches the bitmaps: a window is a
 * hint in memory, gone when the inode's last open handle is released, and
 * ignored altogether when avoiding the windows finds no free blocks, so it
 * never causes ENOSPC and never shows in st_blocks or to e2fsck.
 *
 * ext4's other trick, a per-process "colour" for the first goal of an
 * empty file, is not used: the windows already keep concurrent writers
 * apart, and ext4 itself drops the colour with delayed allocation, so that
 * files written one after the other are packed from the group's start.
 */
#define F4_RESV_MIN		16u	/* blocks */
#define F4_RESV_PER_BLOCK	4u	/* window per block of file so far */
#define F4_RESV_MAX		F4_EXT_INIT_MAX
/* Bound on steering around windows before they are ignored. */
#define F4_RESV_TRIES		64

void f4_resv_drop(struct f4_inode *ip)
{
	if (!ip->resv_pprev)
		return;
	*ip->resv_pprev = ip->resv_next;
	if (ip->resv_next)
		ip->resv_next->resv_pprev = ip->resv_pprev;
	ip->resv_next = NULL;
	ip->resv_pprev = NULL;
	ip->resv_start = ip->resv_end = 0;
}

/* The window of another inode than ip that overlaps [start, end) and
 * starts first, or NULL. */
static struct f4_inode *f4_resv_foreign(struct f4fs *f4,
					const struct f4_inode *ip,
					uint64_t start, uint64_t end)
{
	struct f4_inode *r, *first = NULL;

	for (r = f4->resv_list; r; r = r->resv_next) {
		if (r == ip || r->resv_end <= start || r->resv_start >= end)
			continue;
		if (!first || r->resv_start < first->resv_start)
			first = r;
	}
	return first;
}

/*
 * Give ip the window after its allocation ending at device block start,
 * for a file that now reaches fileblocks into the file.  The window stops
 * where another inode's begins, so that no two inodes claim the same run.
 */
static void f4_resv_set(struct f4fs *f4, struct f4_inode *ip, uint64_t start,
			uint64_t fileblocks)
{
	uint64_t nblocks = ext2fs_blocks_count(f4->fs->super);
	uint64_t want = fileblocks * F4_RESV_PER_BLOCK, end;
	struct f4_inode *r;

	if (want < F4_RESV_MIN)
		want = F4_RESV_MIN;
	if (want > F4_RESV_MAX)
		want = F4_RESV_MAX;
	end = start < nblocks && want < nblocks - start ? start + want : nblocks;
	r = f4_resv_foreign(f4, ip, start, end);
	if (r)
		end = r->resv_start;
	if (end <= start) {
		f4_resv_drop(ip);
		return;
	}
	ip->resv_start = start;
	ip->resv_end = end;
	if (ip->resv_pprev)
		return;
	ip->resv_next = f4->resv_list;
	if (ip->resv_next)
		ip->resv_next->resv_pprev = &ip->resv_next;
	ip->resv_pprev = &f4->resv_list;
	f4->resv_list = ip;
}

/*
 * Find the first free run at or after goal, up to len blocks long (exactly
 * len if whole), that no other inode's window covers; ip (may be NULL) is
 * the inode it is for.  The run is not yet claimed.
 */
static errcode_t f4_find_free(struct f4fs *f4, const struct f4_inode *ip,
			      blk64_t goal, uint64_t len, bool whole,
			      blk64_t *pblk, blk64_t *plen)
{
	ext2_filsys fs = f4->fs;
	int flags = whole ? EXT2_NEWRANGE_MIN_LENGTH : 0;
	blk64_t at = goal;
	errcode_t err;
	int tries;

	for (tries = 0; f4->resv_list && tries < F4_RESV_TRIES; tries++) {
		struct f4_inode *r;

		err = ext2fs_new_range(fs, flags, at, len, NULL, pblk, plen);
		if (err)
			return err;
		r = f4_resv_foreign(f4, ip, *pblk, *pblk + *plen);
		if (!r)
			return 0;
		if (r->resv_start > *pblk && !whole) {
			/* Free up to where the window begins. */
			*plen = r->resv_start - *pblk;
			return 0;
		}
		at = r->resv_end < ext2fs_blocks_count(fs->super) ?
			r->resv_end : fs->super->s_first_data_block;
	}
	/* No windows, or nothing free outside them. */
	return ext2fs_new_range(fs, flags, goal, len, NULL, pblk, plen);
}

/*
 * Find blocks for a request of len at goal.  A short run that does not
 * continue the file at the goal would become an extent that cannot grow,
 * so a run further on that holds the whole request is preferred, as
 * mballoc prefers; when there is none, the short run does.
 *
 * Looking for a whole run walks every free run on the disk when there is
 * none, and a large fallocate on fragmented space asks again for each
 * piece, so a miss is remembered until blocks are freed (the free count
 * grows): no run of nofit_len blocks or more exists until then.
 */
static errcode_t f4_find_blocks(struct f4fs *f4, const struct f4_inode *ip,
				blk64_t goal, uint64_t len, blk64_t *pblk,
				blk64_t *plen)
{
	uint64_t nfree = ext2fs_free_blocks_count(f4->fs->super);
	blk64_t wpblk, wplen;
	errcode_t err;

	err = f4_find_free(f4, ip, goal, len, false, pblk, plen);
	if (err || *plen >= len || *pblk == goal)
		return err;
	if (len >= f4->nofit_len && nfree <= f4->nofit_free)
		return 0;
	if (f4_find_free(f4, ip, goal, len, true, &wpblk, &wplen) == 0) {
		*pblk = wpblk;
		*plen = wplen;
	} else {
		f4->nofit_len = len;
		f4->nofit_free = nfree;
	}
	return 0;
}

/*
 * Where blocks for the hole at lblk should go: on from the extent before
 * it, or leading into the extent after it, as ext4 chooses (near is the
 * extent the lookup of lblk stopped at, or NULL).  A file without blocks
 * starts at its window if it has one, else at its group.
 * ext2fs_find_inode_goal() alone would give the group's first block for
 * every append, since it only looks at an extent that holds lblk.
 */
static blk64_t f4_alloc_goal(struct f4fs *f4, ext2_ino_t ino,
			     struct ext2_inode_large *inode,
			     const struct f4_inode *ip,
			     const struct ext2fs_extent *near, uint64_t lblk)
{
	ext2_filsys fs = f4->fs;
	uint64_t first = fs->super->s_first_data_block;
	uint64_t goal = 0;

	if (near && near->e_lblk <= lblk)
		goal = near->e_pblk + (lblk - near->e_lblk);
	else if (near && near->e_pblk >= first + (near->e_lblk - lblk))
		goal = near->e_pblk - (near->e_lblk - lblk);
	if (goal >= first && goal < ext2fs_blocks_count(fs->super))
		return goal;
	if (ip && ip->resv_pprev)
		return ip->resv_start;
	return ext2fs_find_inode_goal(fs, ino, (struct ext2_inode *)inode, lblk);
}

/*
 * Allocate up to len blocks for the hole at lblk of an extent-mapped file
 * as one new extent (unwritten if asked), and merge it with its
 * neighbours.  libext2fs's ext2fs_fallocate() is not used: it also fills
 * the gap up to a neighbouring extent, handing out blocks nobody asked for
 * with their stale contents.  The caller has checked that
 * [lblk, lblk+len) is a hole.
 */
static int f4_alloc_extent(struct f4fs *f4, ext2_ino_t ino,
			   struct ext2_inode_large *inode, uint64_t lblk,
			   uint64_t len, bool uninit, struct f4_map *map)
{
	ext2_filsys fs = f4->fs;
	struct f4_inode *ip = f4_itable_find(f4, ino);
	ext2_extent_handle_t handle = NULL;
	struct ext2fs_extent cur, ext;
	bool have_cur, inserted = false;
	blk64_t goal, pblk = 0, plen = 0;
	uint64_t max = uninit ? F4_EXT_UNINIT_MAX : F4_EXT_INIT_MAX;
	errcode_t err;
	int flags = 0;

	if (len > max)
		len = max;
	err = ext2fs_extent_open2(fs, ino, (struct ext2_inode *)inode, &handle);
	if (err)
		goto out;
	/* Insert after the extent before lblk, or first in the tree. */
	err = ext2fs_extent_goto2(handle, 0, lblk);
	if (err == 0) {
		err = EXT2_ET_EXTENT_HEADER_BAD;	/* lblk was no hole */
		goto out;
	}
	if (err != EXT2_ET_EXTENT_NOT_FOUND)
		goto out;
	have_cur = ext2fs_extent_get(handle, EXT2_EXTENT_CURRENT, &cur) == 0;
	if (have_cur && cur.e_lblk < lblk)
		flags = EXT2_EXTENT_INSERT_AFTER;
	goal = f4_alloc_goal(f4, ino, inode, ip, have_cur ? &cur : NULL, lblk);
	err = f4_find_blocks(f4, ip, goal, len, &pblk, &plen);
	if (err)
		goto out;
	ext2fs_block_alloc_stats_range(fs, pblk, (blk_t)plen, +1);

	memset(&ext, 0, sizeof(ext));
	ext.e_lblk = (blk64_t)lblk;
	ext.e_pblk = pblk;
	ext.e_len = (uint32_t)plen;
	ext.e_flags = uninit ? EXT2_EXTENT_FLAGS_UNINIT : 0;
	err = ext2fs_extent_insert(handle, flags, &ext);
	if (err)
		goto out;
	/* From here on the tree points at the blocks: they stay. */
	inserted = true;
	err = ext2fs_iblk_add_blocks(fs, (struct ext2_inode *)inode, plen);
	if (!err)
		err = ext2fs_extent_fix_parents(handle);
	if (!err)
		err = f4_extent_merge(handle, lblk);
	if (err)
		goto out;
	/* Only files being written keep a window: one that is merely
	 * looked up (truncated by setattr) would never release it. */
	if (ip && ip->opens)
		f4_resv_set(f4, ip, pblk + plen, lblk + plen);
	map->lblk = lblk;
	map->len = plen;
	map->pblk = pblk;
	map->type = uninit ? F4_MAP_UNWRITTEN : F4_MAP_MAPPED;
out:
	if (handle)
		ext2fs_extent_free(handle);
	/* Blocks the tree does not point at go back. */
	if (err && plen && !inserted)
		ext2fs_block_alloc_stats_range(fs, pblk, (blk_t)plen, -1);
	return f4_errno(err);
}

/*
 * Return the mapping of lblk.  With F4_MAP_WRITE a hole is allocated as
 * written blocks (at most maxlen of them, near the file's other blocks)
 * and the result is marked fresh: the caller must write every byte of
 * those blocks, zeroes included, before anything flushes the metadata
 * that points at them (see flush_barrier).  Unwritten extents are
 * returned as they are; the caller converts them with f4_map_convert()
 * once the data is on the device.
 */
int f4_map_begin(struct f4fs *f4, ext2_ino_t ino,
		 struct ext2_inode_large *inode, uint64_t lblk,
		 uint64_t maxlen, unsigned int flags, struct f4_map *map)
{
	int ret;

	memset(map, 0, sizeof(*map));
	if (maxlen == 0)
		return EINVAL;
	ret = f4_map_lookup(f4, ino, inode, lblk, maxlen, map);
	if (ret || !(flags & F4_MAP_WRITE) || map->type != F4_MAP_HOLE)
		return ret;
	/* Like ext4, a write that does not fit is refused whole rather
	 * than cut short (tests: test_enospc_with_large_writes_like_ext4). */
	ret = f4_check_space(f4, map->len, flags & F4_MAP_ROOT);
	if (ret)
		return ret;

	if (!(inode->i_flags & EXT4_EXTENTS_FL)) {
		ret = f4_alloc_indirect(f4, ino, inode, lblk, map->len, map);
		goto written;
	}
	ret = f4_alloc_extent(f4, ino, inode, lblk, map->len, false, map);
written:
	if (ret == 0) {
		map->type = F4_MAP_MAPPED;
		ret = f4_write_inode(f4, ino, inode);
	}
	if (ret == 0)
		map->fresh = true;
	return ret;
}

/* Pieces shorter than this are converted block by block, which lets
 * libext2fs merge them into their neighbours. */
#define F4_CONVERT_SPLIT_MIN 64

/*
 * Mark [lblk, lblk+len) written where it lies in unwritten extents, after
 * the data reached the device.
 */
int f4_map_convert(struct f4fs *f4, ext2_ino_t ino,
		   struct ext2_inode_large *inode, uint64_t lblk, uint64_t len)
{
	ext2_extent_handle_t handle = NULL;
	uint64_t cur = lblk, end = lblk + len;
	errcode_t err = 0;
	int ret = 0;

	if (!(inode->i_flags & EXT4_EXTENTS_FL))
		return 0;
	err = ext2fs_extent_open2(f4->fs, ino, (struct ext2_inode *)inode,
				  &handle);
	if (err)
		return f4_errno(err);
	while (cur < end) {
		struct ext2fs_extent e;
		struct f4_map map;
		uint64_t s, t, b;

		err = ext2fs_extent_goto2(handle, 0, cur);
		if (err == EXT2_ET_EXTENT_NOT_FOUND) {
			ret = f4_map_extent(f4, ino, inode, cur, end - cur, &map);
			if (ret)
				goto out;
			cur += map.len;
			continue;
		}
		if (!err)
			err = ext2fs_extent_get(handle, EXT2_EXTENT_CURRENT, &e);
		if (err)
			goto out;
		s = cur;
		t = e.e_lblk + (uint64_t)e.e_len < end ?
			e.e_lblk + (uint64_t)e.e_len : end;
		if (!(e.e_flags & EXT2_EXTENT_FLAGS_UNINIT)) {
			cur = t;
			continue;
		}
		if (s == e.e_lblk && t == e.e_lblk + (uint64_t)e.e_len) {
			e.e_flags &= ~EXT2_EXTENT_FLAGS_UNINIT;
			err = ext2fs_extent_replace(handle, 0, &e);
		} else if (t - s < F4_CONVERT_SPLIT_MIN) {
			for (b = s; b < t && !err; b++)
				err = ext2fs_extent_set_bmap(handle, b,
							     e.e_pblk + (b - e.e_lblk), 0);
		} else {
			struct ext2fs_extent left = e, mid = e, right = e;

			left.e_len = (uint32_t)(s - e.e_lblk);
			mid.e_lblk = s;
			mid.e_pblk = e.e_pblk + (s - e.e_lblk);
			mid.e_len = (uint32_t)(t - s);
			mid.e_flags &= ~EXT2_EXTENT_FLAGS_UNINIT;
			right.e_lblk = t;
			right.e_pblk = e.e_pblk + (t - e.e_lblk);
			right.e_len = (uint32_t)(e.e_lblk + e.e_len - t);
			if (left.e_len) {
				err = ext2fs_extent_replace(handle, 0, &left);
				if (!err)
					err = ext2fs_extent_insert(handle,
						EXT2_EXTENT_INSERT_AFTER, &mid);
			} else {
				err = ext2fs_extent_replace(handle, 0, &mid);
			}
			if (!err && right.e_len)
				err = ext2fs_extent_insert(handle,
					EXT2_EXTENT_INSERT_AFTER, &right);
		}
		/* Written pieces join the written run before them (and the
		 * last one the run after), as ext4 merges after conversion. */
		if (!err)
			err = f4_extent_merge(handle, s);
		if (err)
			goto out;
		cur = t;
	}
out:
	ext2fs_extent_free(handle);
	if (err)
		ret = f4_errno(err);
	if (ret == 0)
		ret = f4_write_inode(f4, ino, inode);
	return ret;
}

/*
 * libext2fs 1.47's ext2fs_punch() cannot free the filesystem's last block:
 * it fails with "Illegal block number", leaving the work half done.  So
 * when [start, end] of an extent-mapped file covers the block mapped to
 * it (always the last block of its extent), that block is unmapped and
 * freed here first, and ext2fs_punch() does the rest.
 */
static errcode_t f4_punch_fs_last_block(struct f4fs *f4, ext2_ino_t ino,
					struct ext2_inode_large *inode,
					uint64_t start, uint64_t end)
{
	ext2_filsys fs = f4->fs;
	blk64_t last = ext2fs_blocks_count(fs->super) - 1;
	ext2_extent_handle_t handle = NULL;
	struct ext2fs_extent e;
	int op = EXT2_EXTENT_ROOT;
	uint64_t lblk;
	errcode_t err;

	if (!(inode->i_flags & EXT4_EXTENTS_FL) ||
	    !ext2fs_test_block_bitmap2(fs->block_map, last))
		return 0;
	err = ext2fs_extent_open2(fs, ino, (struct ext2_inode *)inode, &handle);
	if (err)
		return err;
	while ((err = ext2fs_extent_get(handle, op, &e)) == 0) {
		op = EXT2_EXTENT_NEXT_LEAF;
		if ((e.e_flags & EXT2_EXTENT_FLAGS_LEAF) &&
		    e.e_pblk <= last && last - e.e_pblk < e.e_len)
			break;
	}
	if (err) {
		/* Some other inode has the block. */
		if (err == EXT2_ET_EXTENT_NO_NEXT)
			err = 0;
		goto out;
	}
	lblk = e.e_lblk + (last - e.e_pblk);
	if (lblk < start || lblk > end)
		goto out;
	if (e.e_len == 1) {
		err = ext2fs_extent_delete(handle, 0);
	} else {
		e.e_len--;
		err = ext2fs_extent_replace(handle, 0, &e);
		if (!err)
			err = ext2fs_extent_fix_parents(handle);
	}
	if (err)
		goto out;
	ext2fs_block_alloc_stats2(fs, last, -1);
	err = ext2fs_iblk_sub_blocks(fs, (struct ext2_inode *)inode, 1);
out:
	ext2fs_extent_free(handle);
	return err;
}

/* Free the blocks [start, end] (inclusive; end ~0 means to the end). */
int f4_map_punch(struct f4fs *f4, ext2_ino_t ino,
		 struct ext2_inode_large *inode, uint64_t start, uint64_t end)
{
	errcode_t err;

	if (!ext2fs_inode_has_valid_blocks2(f4->fs, (struct ext2_inode *)inode))
		return 0;
	err = f4_punch_fs_last_block(f4, ino, inode, start, end);
	if (!err)
		err = ext2fs_punch(f4->fs, ino, (struct ext2_inode *)inode,
				   NULL, start, end);
	if (err)
		return f4_errno(err);
	return f4_write_inode(f4, ino, inode);
}

/* Allocate unwritten extents over the holes in [lblk, lblk+len). */
int f4_map_prealloc(struct f4fs *f4, ext2_ino_t ino,
		    struct ext2_inode_large *inode, uint64_t lblk, uint64_t len,
		    unsigned int flags)
{
	uint64_t end = lblk + len;
	int ret;

	if (!(inode->i_flags & EXT4_EXTENTS_FL))
		return EOPNOTSUPP;
	/* Counting blocks already mapped in the range would be exact; the
	 * whole range is a safe upper bound for the check. */
	ret = f4_check_space(f4, len, flags & F4_MAP_ROOT);
	while (ret == 0 && lblk < end) {
		struct f4_map map;

		ret = f4_map_lookup(f4, ino, inode, lblk, end - lblk, &map);
		if (ret == 0 && map.type == F4_MAP_HOLE)
			ret = f4_alloc_extent(f4, ino, inode, lblk, map.len, true,
					      &map);
		lblk += map.len;
	}
	if (ret == 0)
		ret = f4_write_inode(f4, ino, inode);
	return ret;
}
