/*
 * The table of inodes the kernel holds.
 *
 * The kernel holds an inode from the reply that names it (LOOKUP, CREATE,
 * READDIRPLUS, ...) until it FORGETs it, and an open handle until RELEASE.
 * An inode unlinked while held lives on the on-disk orphan list until both
 * counts reach zero, as an ext4 inode lives while the kernel references
 * it.  Each entry also has a reader/writer lock that orders data I/O
 * (shared) against size changes, hole punching and extent conversion
 * (exclusive).
 *
 * The table is protected by the filesystem lock; an entry stays valid for
 * as long as the caller holds one of its opens.  The file handle the
 * kernel gets for an open is the inode number, checked against the table
 * on every use, so a handle can neither dangle nor leak.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuse4fs.h"

#define F4_ITABLE_BUCKETS 65536

struct f4_itable {
	struct f4_inode *bucket[F4_ITABLE_BUCKETS];
};

int f4_itable_init(struct f4fs *f4)
{
	f4->itable = calloc(1, sizeof(*f4->itable));
	return f4->itable ? 0 : ENOMEM;
}

void f4_itable_free(struct f4fs *f4)
{
	unsigned int i;

	if (!f4->itable)
		return;
	for (i = 0; i < F4_ITABLE_BUCKETS; i++) {
		struct f4_inode *ip = f4->itable->bucket[i], *next;

		for (; ip; ip = next) {
			next = ip->next;
			pthread_rwlock_destroy(&ip->iolock);
			free(ip);
		}
	}
	free(f4->itable);
	f4->itable = NULL;
	f4->resv_list = NULL;
}

struct f4_inode *f4_itable_find(struct f4fs *f4, ext2_ino_t ino)
{
	struct f4_inode *ip;

	for (ip = f4->itable->bucket[ino % F4_ITABLE_BUCKETS]; ip; ip = ip->next)
		if (ip->ino == ino)
			return ip;
	return NULL;
}

static struct f4_inode *f4_itable_entry(struct f4fs *f4, ext2_ino_t ino)
{
	struct f4_inode *ip = f4_itable_find(f4, ino);
	struct f4_inode **head;

	if (ip)
		return ip;
	ip = calloc(1, sizeof(*ip));
	if (!ip)
		return NULL;
	if (pthread_rwlock_init(&ip->iolock, NULL)) {
		free(ip);
		return NULL;
	}
	ip->ino = ino;
	head = &f4->itable->bucket[ino % F4_ITABLE_BUCKETS];
	ip->next = *head;
	*head = ip;
	return ip;
}

/* Take an open reference on ino; caller holds the filesystem lock. */
struct f4_inode *f4_itable_get(struct f4fs *f4, ext2_ino_t ino)
{
	struct f4_inode *ip = f4_itable_entry(f4, ino);

	if (ip)
		ip->opens++;
	return ip;
}

/*
 * Count a reference handed to the kernel in a reply.  Failing to count
 * (no memory) only means an unlinked inode is freed at its last release
 * rather than when forgotten.  Caller holds the filesystem lock.
 */
void f4_itable_lookup(struct f4fs *f4, ext2_ino_t ino)
{
	struct f4_inode *ip;

	if (ino == EXT2_ROOT_INO)
		return;
	ip = f4_itable_entry(f4, ino);
	if (ip)
		ip->nlookup++;
}

/* Drop the entry once the kernel holds nothing of it, freeing an orphan. */
static void f4_itable_release(struct f4fs *f4, struct f4_inode *ip)
{
	struct ext2_inode_large inode;
	struct f4_inode **pp;
	ext2_ino_t ino = ip->ino;
	int ret = 0;

	if (ip->opens || ip->nlookup)
		return;
	f4_resv_drop(ip);
	if (ip->orphan) {
		ret = f4_read_inode(f4, ino, &inode);
		if (ret == 0 && inode.i_links_count == 0) {
			ret = f4_orphan_del(f4, ino, &inode);
			if (ret == 0)
				ret = f4_free_inode(f4, ino, &inode);
		}
		if (ret)
			f4_log("inode %u: releasing an unlinked inode failed: "
			       "%s; e2fsck will finish it", ino, strerror(ret));
	}
	for (pp = &f4->itable->bucket[ino % F4_ITABLE_BUCKETS]; *pp;
	     pp = &(*pp)->next) {
		if (*pp == ip) {
			*pp = ip->next;
			break;
		}
	}
	pthread_rwlock_destroy(&ip->iolock);
	free(ip);
}

/* Drop an open reference; caller holds the filesystem lock. */
void f4_itable_put(struct f4fs *f4, struct f4_inode *ip)
{
	if (ip->opens > 0)
		ip->opens--;
	/* With the last open handle gone no more writes come: the window
	 * would only keep others away from free blocks. */
	if (ip->opens == 0)
		f4_resv_drop(ip);
	f4_itable_release(f4, ip);
}

/* FORGET: the kernel dropped nlookup references to nodeid. */
void f4_forget(void *fs, uint64_t nodeid, uint64_t nlookup)
{
	struct f4fs *f4 = fs;
	struct f4_inode *ip;

	f4_lock(f4);
	ip = f4_itable_find(f4, f4_nodeid_to_ino(nodeid));
	if (ip) {
		ip->nlookup -= nlookup < ip->nlookup ? nlookup : ip->nlookup;
		f4_itable_release(f4, ip);
	}
	f4_unlock(f4);
}

/*
 * The open inode a request's file handle names.  A zero handle (iomap's
 * inline I/O) gives NULL; a handle that names no open inode of this node
 * is EBADF.  Caller holds the filesystem lock.
 */
int f4_itable_handle(struct f4fs *f4, uint64_t fh, ext2_ino_t ino,
		     struct f4_inode **ipp)
{
	*ipp = NULL;
	if (fh == 0)
		return 0;
	if (fh != ino)
		return EBADF;
	*ipp = f4_itable_find(f4, ino);
	return *ipp ? 0 : EBADF;
}
