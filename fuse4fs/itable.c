/*
 * The table of inodes the kernel holds open.
 *
 * An open inode has a per-inode reader/writer lock that orders data I/O
 * (shared) against size changes, hole punching and extent conversion
 * (exclusive), and an open count so that an inode unlinked while open
 * lives on the on-disk orphan list until its last release.
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

#define F4_ITABLE_BUCKETS 1024

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
}

struct f4_inode *f4_itable_find(struct f4fs *f4, ext2_ino_t ino)
{
	struct f4_inode *ip;

	for (ip = f4->itable->bucket[ino % F4_ITABLE_BUCKETS]; ip; ip = ip->next)
		if (ip->ino == ino)
			return ip;
	return NULL;
}

/* Take an open reference on ino; caller holds the filesystem lock. */
struct f4_inode *f4_itable_get(struct f4fs *f4, ext2_ino_t ino)
{
	struct f4_inode *ip = f4_itable_find(f4, ino);
	struct f4_inode **head;

	if (ip) {
		ip->opens++;
		return ip;
	}
	ip = calloc(1, sizeof(*ip));
	if (!ip)
		return NULL;
	if (pthread_rwlock_init(&ip->iolock, NULL)) {
		free(ip);
		return NULL;
	}
	ip->ino = ino;
	ip->opens = 1;
	head = &f4->itable->bucket[ino % F4_ITABLE_BUCKETS];
	ip->next = *head;
	*head = ip;
	return ip;
}

/*
 * Drop an open reference; caller holds the filesystem lock.  The last
 * release of an inode that was unlinked while open frees it.
 */
void f4_itable_put(struct f4fs *f4, struct f4_inode *ip)
{
	struct ext2_inode_large inode;
	struct f4_inode **pp;
	ext2_ino_t ino = ip->ino;
	bool orphan = ip->orphan;
	int ret;

	if (--ip->opens > 0)
		return;
	for (pp = &f4->itable->bucket[ino % F4_ITABLE_BUCKETS]; *pp;
	     pp = &(*pp)->next) {
		if (*pp == ip) {
			*pp = ip->next;
			break;
		}
	}
	pthread_rwlock_destroy(&ip->iolock);
	free(ip);
	if (!orphan)
		return;
	ret = f4_read_inode(f4, ino, &inode);
	if (ret == 0 && inode.i_links_count == 0) {
		ret = f4_orphan_del(f4, ino, &inode);
		if (ret == 0)
			ret = f4_free_inode(f4, ino, &inode);
	}
	if (ret)
		f4_log("inode %u: releasing an unlinked inode failed: %s; "
		       "e2fsck will finish it", ino, strerror(ret));
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
