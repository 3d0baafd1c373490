/*
 * Write-behind: a large buffered write is answered once its blocks are
 * allocated and its data copied into a queue; one thread writes the queue
 * to the device.
 *
 * Without the kernel's writeback cache every write(2) waits for a round
 * trip that ends in a device write, and nothing overlaps that device
 * write: the writer's next request cannot even be sent.  With the queue,
 * the next request travels and is copied while the device takes this
 * one, as it would behind a page cache.  The guarantees are a page
 * cache's too:
 *  - space is allocated before the answer, so ENOSPC, EFBIG and the
 *    root-reserved blocks are decided by write(2) as before;
 *  - a device error is reported by the file's next fsync(2) or close(2)
 *    (FLUSH), and by syncfs(2), and logged;
 *  - whatever reads or changes the file's blocks (READ, truncation,
 *    fallocate, a write that is not queued) first waits for the file's
 *    queued writes, and so does every flush of the metadata, which may
 *    not reach the disk before the data of the blocks it allocated.
 * O_DIRECT, O_SYNC and O_DSYNC writes are never queued, nor writes to
 * unwritten extents, which need a conversion once the data is down.
 */
#include "config.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuse4fs.h"

struct f4_wb_item {
	struct f4_wb_item *next;
	struct f4_inode *ip;	/* holds an open reference */
	void *buf;		/* F4_DIO_ALIGN-aligned copy of the data */
	size_t len;
	off_t dev;		/* device offset */
};

struct f4_wb {
	pthread_mutex_t lock;
	pthread_cond_t work;	/* an item was queued, or stop */
	pthread_cond_t done;	/* an item was written */
	struct f4_wb_item *head;
	struct f4_wb_item **tail;
	size_t bytes;		/* queued or being written */
	size_t limit;
	int error;		/* first failure since the last syncfs */
	bool failed;		/* a write has failed since the start */
	bool stop;
	pthread_t thread;
};

static void *f4_wb_main(void *arg)
{
	struct f4fs *f4 = arg;
	struct f4_wb *wb = f4->wb;

	pthread_mutex_lock(&wb->lock);
	for (;;) {
		struct f4_wb_item *it;
		int err;

		while (!wb->head && !wb->stop)
			pthread_cond_wait(&wb->work, &wb->lock);
		it = wb->head;
		if (!it)
			break;
		wb->head = it->next;
		if (!wb->head)
			wb->tail = &wb->head;
		pthread_mutex_unlock(&wb->lock);

		err = f4_pwrite_full(f4->dio_fd, it->buf, it->len, it->dev);

		pthread_mutex_lock(&wb->lock);
		/* One line per error reported, not per failed write. */
		if (err && !it->ip->wb_error) {
			it->ip->wb_error = err;
			f4_log("inode %u: writing %zu bytes at device offset "
			       "%lld failed: %s; the file's next fsync or "
			       "close reports it", it->ip->ino, it->len,
			       (long long)it->dev, strerror(err));
		}
		if (err && !wb->error)
			wb->error = err;
		if (err)
			wb->failed = true;
		__atomic_sub_fetch(&it->ip->wb_pending, 1, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&wb->done);
		pthread_mutex_unlock(&wb->lock);

		/* The last reference to an unlinked file frees it here, and
		 * must have done so before a wait for the whole queue ends:
		 * DESTROY closes the filesystem once that wait is over. */
		f4_lock(f4);
		f4_itable_put(f4, it->ip);
		f4_unlock(f4);
		free(it->buf);

		pthread_mutex_lock(&wb->lock);
		wb->bytes -= it->len;
		pthread_cond_broadcast(&wb->done);
		free(it);
	}
	pthread_mutex_unlock(&wb->lock);
	return NULL;
}

static void f4_wb_free(struct f4_wb *wb)
{
	pthread_cond_destroy(&wb->done);
	pthread_cond_destroy(&wb->work);
	pthread_mutex_destroy(&wb->lock);
	free(wb);
}

/*
 * Start the queue when the mount can use it: read-write, classic I/O and
 * a direct descriptor on the device.  Without it every write is
 * synchronous, which is slower but no less correct, so a failure here
 * only logs.
 */
void f4_wb_start(struct f4fs *f4)
{
	struct f4_wb *wb;

	if (f4->ro || f4->dio_fd < 0 || f4->opts.write_behind_mib == 0)
		return;
	wb = calloc(1, sizeof(*wb));
	if (!wb)
		goto fail;
	pthread_mutex_init(&wb->lock, NULL);
	pthread_cond_init(&wb->work, NULL);
	pthread_cond_init(&wb->done, NULL);
	wb->tail = &wb->head;
	wb->limit = (size_t)f4->opts.write_behind_mib << 20;
	f4->wb = wb;
	if (pthread_create(&wb->thread, NULL, f4_wb_main, f4) == 0)
		return;
	f4->wb = NULL;
	f4_wb_free(wb);
fail:
	f4_log("write-behind unavailable: all writes are synchronous");
}

/* Write out the queue and end its thread. */
void f4_wb_stop(struct f4fs *f4)
{
	struct f4_wb *wb = f4->wb;

	if (!wb)
		return;
	pthread_mutex_lock(&wb->lock);
	wb->stop = true;
	pthread_cond_signal(&wb->work);
	pthread_mutex_unlock(&wb->lock);
	pthread_join(wb->thread, NULL);
	f4->wb = NULL;
	f4_wb_free(wb);
}

/*
 * Queue a copy of data for the device at dev, for the file ip.  Returns
 * false when it could not (no queue, no memory): the caller writes it
 * itself, after f4_wb_wait().  Waits while the queue is full.  Caller
 * holds ip's I/O lock exclusively, not the filesystem lock.
 */
bool f4_wb_queue(struct f4fs *f4, struct f4_inode *ip, const void *data,
		 size_t len, off_t dev)
{
	struct f4_wb *wb = f4->wb;
	struct f4_wb_item *it;

	if (!wb)
		return false;
	it = calloc(1, sizeof(*it));
	if (!it)
		return false;
	pthread_mutex_lock(&wb->lock);
	while (wb->bytes > 0 && wb->bytes + len > wb->limit)
		pthread_cond_wait(&wb->done, &wb->lock);
	wb->bytes += len;
	pthread_mutex_unlock(&wb->lock);

	if (posix_memalign(&it->buf, F4_DIO_ALIGN, len)) {
		it->buf = NULL;
		goto fail;
	}
	memcpy(it->buf, data, len);
	it->len = len;
	it->dev = dev;
	f4_lock(f4);
	it->ip = f4_itable_get(f4, ip->ino);	/* ip itself: it is held */
	f4_unlock(f4);
	if (!it->ip)
		goto fail;

	pthread_mutex_lock(&wb->lock);
	__atomic_add_fetch(&it->ip->wb_pending, 1, __ATOMIC_RELAXED);
	*wb->tail = it;
	wb->tail = &it->next;
	pthread_cond_signal(&wb->work);
	pthread_mutex_unlock(&wb->lock);
	return true;

fail:
	pthread_mutex_lock(&wb->lock);
	wb->bytes -= len;
	pthread_cond_broadcast(&wb->done);
	pthread_mutex_unlock(&wb->lock);
	free(it->buf);
	free(it);
	return false;
}

/*
 * Wait until the queued writes of ip, or with ip NULL all queued writes,
 * are on the device.  Caller must not hold the filesystem lock, which
 * the queue's thread takes after each write.
 */
void f4_wb_wait(struct f4fs *f4, struct f4_inode *ip)
{
	struct f4_wb *wb = f4->wb;

	if (!wb)
		return;
	/* Every READ and unqueued write asks, so the common answer comes
	 * without the queue's lock.  A zero stays zero while the caller
	 * holds ip's I/O lock: only a writer holding it exclusively queues
	 * for ip. */
	if (ip && __atomic_load_n(&ip->wb_pending, __ATOMIC_ACQUIRE) == 0)
		return;
	pthread_mutex_lock(&wb->lock);
	while (ip ? ip->wb_pending > 0 : wb->bytes > 0)
		pthread_cond_wait(&wb->done, &wb->lock);
	pthread_mutex_unlock(&wb->lock);
}

/*
 * True when no write is queued and none has ever failed: then no file has
 * anything to wait for or report, and close(2) need not look.
 */
bool f4_wb_quiet(struct f4fs *f4)
{
	struct f4_wb *wb = f4->wb;
	bool quiet;

	if (!wb)
		return true;
	pthread_mutex_lock(&wb->lock);
	quiet = wb->bytes == 0 && !wb->failed;
	pthread_mutex_unlock(&wb->lock);
	return quiet;
}

/*
 * The first device error of a queued write not yet reported, for ip or,
 * with ip NULL, for the filesystem; reporting it clears it.
 */
int f4_wb_take_error(struct f4fs *f4, struct f4_inode *ip)
{
	struct f4_wb *wb = f4->wb;
	int err;

	if (!wb)
		return 0;
	pthread_mutex_lock(&wb->lock);
	if (ip) {
		err = ip->wb_error;
		ip->wb_error = 0;
	} else {
		err = wb->error;
		wb->error = 0;
	}
	pthread_mutex_unlock(&wb->lock);
	return err;
}
