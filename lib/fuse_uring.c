/*
 * FUSE over io_uring: once INIT agreed FUSE_OVER_IO_URING, the kernel
 * queues ordinary requests to per-CPU queues of ring entries instead of
 * /dev/fuse.  Each ring worker owns one io_uring and one entry on one
 * queue: it registers the entry, then loops on "handle the request the
 * kernel placed in it, commit the answer and fetch the next one", a single
 * io_uring_enter per request instead of /dev/fuse's read and write.
 *
 * The kernel keeps FORGET, INTERRUPT and notifications on /dev/fuse, so
 * the /dev/fuse workers stay.  It sends nothing to a queue until every
 * queue has an entry, so each possible CPU gets at least one worker.
 */
#define _GNU_SOURCE
#include "fe_internal.h"

#include <errno.h>
#include <liburing.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

/*
 * An entry's buffer: FE_RING_HEAD bytes of room, then the payload the
 * kernel writes to.  A request is handed to fe_handle() in /dev/fuse
 * layout by copying its in_header and first argument into the room just
 * before the payload, so names and data are never copied.
 */
#define FE_RING_HEAD	4096

struct fe_ring {
	struct io_uring uring;
	uint16_t qid;
	struct fuse_uring_req_header *hdr;
	char *payload;
	struct iovec iov[2];	/* what REGISTER hands the kernel */
	uint32_t cmd;		/* the command in flight */
	uint64_t commit_id;	/* of the request being answered */
	uint64_t unique;
	bool answered;
};

/* Queue ids run over the possible CPUs, not just the online ones. */
static unsigned int fe_ring_nqueues(void)
{
	unsigned int last = 0;
	char line[256], *p;
	FILE *f;

	f = fopen("/sys/devices/system/cpu/possible", "re");
	if (!f)
		goto fallback;
	p = fgets(line, sizeof(line), f);
	fclose(f);
	if (!p)
		goto fallback;
	/* "0-3" or "0,2-5": the highest number ends the list. */
	while (*p) {
		char *end;
		unsigned long n = strtoul(p, &end, 10);

		if (end == p)
			break;
		last = (unsigned int)n;
		p = end;
		if (*p == '-' || *p == ',')
			p++;
		else
			break;
	}
	return last + 1;
fallback:
	return (unsigned int)get_nprocs_conf();
}

static void fe_ring_free(struct fe_worker *w)
{
	struct fe_ring *r = w->ring;

	if (!r)
		return;
	if (r->uring.ring_fd >= 0)
		io_uring_queue_exit(&r->uring);
	free(r->hdr);
	free(w->buf);
	free(r);
	w->ring = NULL;
	w->buf = NULL;
}

static int fe_ring_init_one(struct fe_session *se, struct fe_worker *w,
			    uint16_t qid)
{
	struct io_uring_params p;
	struct fe_ring *r;
	size_t size;
	int ret;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->uring.ring_fd = -1;
	w->ring = r;
	r->qid = qid;
	if (posix_memalign((void **)&r->hdr, 4096, 4096)) {
		r->hdr = NULL;
		return -ENOMEM;
	}
	memset(r->hdr, 0, 4096);
	size = FE_RING_HEAD + se->ring_payload + FE_BUF_SLACK;
	size = (size + 4095) & ~(size_t)4095;
	if (posix_memalign((void **)&w->buf, 4096, size)) {
		w->buf = NULL;
		return -ENOMEM;
	}
	r->payload = w->buf + FE_RING_HEAD;
	r->iov[0].iov_base = r->hdr;
	r->iov[0].iov_len = sizeof(*r->hdr);
	r->iov[1].iov_base = r->payload;
	r->iov[1].iov_len = se->ring_payload;

	memset(&p, 0, sizeof(p));
	/* The FUSE commands need the 128-byte SQEs. */
	p.flags = IORING_SETUP_SQE128;
	ret = io_uring_queue_init_params(2, &r->uring, &p);
	if (ret < 0) {
		r->uring.ring_fd = -1;
		return ret;
	}
	return 0;
}

/*
 * Before serving: one ring worker per queue and enough per queue for the
 * configured number of threads.  Failing is not fatal: the session then
 * does not offer the ring in INIT and stays on /dev/fuse.
 */
void fe_ring_setup(struct fe_session *se)
{
	unsigned int nqueues = fe_ring_nqueues();
	unsigned int per_queue, nrings, i;
	struct fe_worker *all;
	long page = sysconf(_SC_PAGESIZE);
	size_t payload;
	int ret = 0;

	if (nqueues == 0 || nqueues > UINT16_MAX)
		return;
	per_queue = (se->nthreads + nqueues - 1) / nqueues;
	if (per_queue == 0)
		per_queue = 1;
	nrings = nqueues * per_queue;
	/* The kernel wants room for max_write and for max_pages pages; the
	 * filesystem can only lower max_write, and fe_ring_can_serve()
	 * turns the ring down if it raises max_pages beyond this. */
	payload = ((size_t)se->max_write + (size_t)page - 1) & ~((size_t)page - 1);
	if (payload < 8192)
		payload = 8192;
	se->ring_payload = payload;

	all = realloc(se->workers, (se->nthreads + nrings) * sizeof(*all));
	if (!all) {
		ret = -ENOMEM;
		goto fail;
	}
	se->workers = all;
	memset(all + se->nthreads, 0, nrings * sizeof(*all));
	for (i = 0; i < nrings; i++) {
		struct fe_worker *w = &all[se->nthreads + i];

		w->se = se;
		w->index = se->nthreads + i;
		w->fd = se->fd;
		ret = fe_ring_init_one(se, w, (uint16_t)(i % nqueues));
		if (ret < 0) {
			nrings = i + 1;
			goto fail_rings;
		}
	}
	se->nrings = nrings;
	se->nqueues = nqueues;
	se->nworkers = se->nthreads + nrings;
	se->ring_state = FE_RING_PENDING;
	if (se->debug)
		fprintf(stderr, "fe[%ld] io_uring: %u queues x %u entries of "
			"%zu bytes set up\n", fe_gettid(), nqueues, per_queue,
			payload);
	return;

fail_rings:
	for (i = 0; i < nrings; i++)
		fe_ring_free(&all[se->nthreads + i]);
fail:
	fe_log("FUSE over io_uring unavailable (%s); using /dev/fuse",
	       strerror(-ret));
}

void fe_ring_teardown(struct fe_session *se)
{
	unsigned int i;

	for (i = se->nthreads; i < se->nworkers; i++)
		fe_ring_free(&se->workers[i]);
	se->nrings = 0;
	se->nworkers = se->nthreads;
	se->ring_state = FE_RING_UNUSED;
}

/* Whether INIT may agree the ring with these parameters. */
bool fe_ring_can_serve(struct fe_session *se, const struct fe_conn *c)
{
	long page = sysconf(_SC_PAGESIZE);
	bool ok;

	pthread_mutex_lock(&se->lock);
	ok = se->ring_state == FE_RING_PENDING;
	pthread_mutex_unlock(&se->lock);
	if (!ok)
		return false;
	if ((size_t)c->max_pages * (size_t)page > se->ring_payload ||
	    c->max_write > se->ring_payload) {
		fe_log("max_pages %u exceeds the io_uring buffers; using "
		       "/dev/fuse", c->max_pages);
		return false;
	}
	return true;
}

/* Move the rings on from PENDING (only): to GO or OFF. */
void fe_ring_set_state(struct fe_session *se, int state)
{
	pthread_mutex_lock(&se->lock);
	if (se->ring_state == FE_RING_PENDING) {
		se->ring_state = state;
		pthread_cond_broadcast(&se->cond);
	}
	pthread_mutex_unlock(&se->lock);
}

static void fe_ring_prep(struct fe_ring *r, int fd, uint32_t cmd)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);
	struct fuse_uring_cmd_req creq;

	r->cmd = cmd;
	/* One entry per ring and nothing else in flight: the submission
	 * queue always has room. */
	if (!sqe) {
		fe_log("io_uring queue %u: no free submission entry", r->qid);
		return;
	}
	memset(sqe, 0, 2 * sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = fd;
	sqe->cmd_op = cmd;
	sqe->user_data = (uintptr_t)r;
	if (cmd == FUSE_IO_URING_CMD_REGISTER) {
		sqe->addr = (uintptr_t)r->iov;
		sqe->len = 2;
	}
	memset(&creq, 0, sizeof(creq));
	creq.qid = r->qid;
	creq.commit_id = cmd == FUSE_IO_URING_CMD_COMMIT_AND_FETCH ?
			 r->commit_id : 0;
	memcpy(sqe->cmd, &creq, sizeof(creq));
}

/* The reply's data goes to the payload, where the kernel reads it. */
void *fe_ring_space(struct fe_ring *r, size_t len)
{
	return len <= r->iov[1].iov_len ? r->payload : NULL;
}

/*
 * Put the answer into the entry: the out header into the header area, all
 * reply arguments, concatenated, into the payload.  The arguments may
 * point into the payload itself (a reply built from the request), hence
 * memmove.
 */
int fe_ring_reply(struct fe_ring *r, int error, uint64_t unique,
		  const struct iovec *iov, int iovcnt)
{
	struct fuse_out_header oh;
	size_t total = 0, room = r->iov[1].iov_len;
	char *p = r->payload;
	int i, ret = 0;

	for (i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (total > room) {
		fe_log("reply to request %llu: %zu bytes exceed the %zu-byte "
		       "io_uring buffer", (unsigned long long)unique, total,
		       room);
		error = -EIO;
		iovcnt = 0;
		total = 0;
		ret = -EINVAL;
	}
	for (i = 0; i < iovcnt; i++) {
		if (iov[i].iov_base != p)
			memmove(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	memset(&oh, 0, sizeof(oh));
	oh.len = (uint32_t)(sizeof(oh) + total);
	oh.error = error;
	oh.unique = unique;
	memcpy(r->hdr->in_out, &oh, sizeof(oh));
	r->hdr->ring_ent_in_out.payload_sz = (uint32_t)total;
	r->answered = true;
	return ret;
}

/* The kernel placed a request in the entry: rebuild and handle it. */
static void fe_ring_handle(struct fe_worker *w)
{
	struct fe_ring *r = w->ring;
	struct fuse_uring_req_header *h = r->hdr;
	struct fuse_in_header ih;
	size_t psz, oplen;
	char *msg;

	memcpy(&ih, h->in_out, sizeof(ih));
	r->commit_id = h->ring_ent_in_out.commit_id;
	r->unique = ih.unique;
	r->answered = false;
	psz = h->ring_ent_in_out.payload_sz;
	if (psz > r->iov[1].iov_len || ih.len < sizeof(ih) + psz ||
	    ih.len - sizeof(ih) - psz > FUSE_URING_OP_IN_OUT_SZ) {
		fe_log("io_uring request %llu (%s): length %u does not fit "
		       "its %zu-byte payload", (unsigned long long)ih.unique,
		       fe_opcode_name(ih.opcode), ih.len, psz);
		fe_ring_reply(r, -EIO, ih.unique, NULL, 0);
		return;
	}
	oplen = ih.len - sizeof(ih) - psz;
	if (oplen % 8 == 0) {
		msg = r->payload - oplen - sizeof(ih);
	} else {
		/* Keep the argument structs aligned: move the payload. */
		msg = w->buf;
		memmove(msg + sizeof(ih) + oplen, r->payload, psz);
	}
	memcpy(msg, &ih, sizeof(ih));
	memcpy(msg + sizeof(ih), h->op_in, oplen);
	fe_handle(w, msg, ih.len);
	/* Every ring request expects an answer; the commit carries one. */
	if (!r->answered)
		fe_ring_reply(r, -EIO, ih.unique, NULL, 0);
}

/*
 * The kernel queues a request on the queue of the CPU its caller runs on;
 * answering it from that CPU saves waking another one.  A CPU that is
 * offline (or outside our cpuset) refuses, and that is fine.
 */
static void fe_ring_pin(struct fe_ring *r)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(r->qid, &set);
	(void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/*
 * A queue that never gets an entry would hold every request back for good:
 * the kernel waits for all queues before it uses any.  A REGISTER the
 * kernel refuses (a queue id past the last) makes it give up the rings and
 * serve everything over /dev/fuse instead, so a worker that cannot
 * register sends that, from a ring of its own.
 */
static void fe_ring_abandon(struct fe_worker *w, int err)
{
	struct fe_session *se = w->se;
	struct fe_ring *r = w->ring, spare;
	struct io_uring_cqe *cqe;
	int ret;

	fe_log("io_uring queue %u cannot register (%s): serving over "
	       "/dev/fuse instead", r->qid, strerror(-err));
	memset(&spare, 0, sizeof(spare));
	spare.qid = UINT16_MAX;
	spare.iov[0] = r->iov[0];
	spare.iov[1] = r->iov[1];
	ret = io_uring_queue_init(2, &spare.uring, IORING_SETUP_SQE128);
	if (ret < 0)
		goto out;
	fe_ring_prep(&spare, se->fd, FUSE_IO_URING_CMD_REGISTER);
	ret = io_uring_submit_and_wait(&spare.uring, 1);
	if (ret >= 0 && io_uring_peek_cqe(&spare.uring, &cqe) == 0)
		ret = cqe->res;
	io_uring_queue_exit(&spare.uring);
out:
	if (ret >= 0)
		fe_log("io_uring: the kernel kept the rings; requests may stall");
}

void *fe_ring_main(void *arg)
{
	struct fe_worker *w = arg;
	struct fe_session *se = w->se;
	struct fe_ring *r = w->ring;
	sigset_t waitmask;
	bool registered;
	int state;

	w->tid = fe_gettid();
	/* Wait with the wake-up signal deliverable, atomically, so a stop
	 * cannot slip in between the check and the wait. */
	pthread_sigmask(SIG_BLOCK, NULL, &waitmask);
	sigdelset(&waitmask, FE_WAKE_SIGNAL);

	pthread_mutex_lock(&se->lock);
	while ((state = se->ring_state) == FE_RING_PENDING && !se->stop)
		pthread_cond_wait(&se->cond, &se->lock);
	pthread_mutex_unlock(&se->lock);
	if (state != FE_RING_GO || fe_stopping(se))
		goto out;

	fe_worker_nofs(w);
	fe_ring_pin(r);
	fe_ring_prep(r, se->fd, FUSE_IO_URING_CMD_REGISTER);
	registered = false;
	for (;;) {
		struct io_uring_cqe *cqe = NULL;
		int ret, res;

		/* A signal can end the wait after the submission went out:
		 * then ret counts what was submitted and there is no CQE. */
		ret = io_uring_submit_and_wait_timeout(&r->uring, &cqe, 1, NULL,
						       &waitmask);
		if (ret == -EINTR || ret == -EAGAIN || (ret >= 0 && !cqe)) {
			if (fe_stopping(se))
				break;
			continue;
		}
		if (ret < 0) {
			if (!registered)
				fe_ring_abandon(w, ret);
			else
				fe_log("io_uring queue %u: %s", r->qid,
				       strerror(-ret));
			break;
		}
		registered = true;
		res = cqe->res;
		io_uring_cqe_seen(&r->uring, cqe);
		if (res == 0) {
			fe_ring_handle(w);
			fe_ring_prep(r, se->fd,
				     FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
			continue;
		}
		if (res == -EAGAIN || res == -EINTR) {
			fe_ring_prep(r, se->fd, r->cmd);
			continue;
		}
		/* ENOTCONN, ECONNABORTED, ECANCELED: the connection or the
		 * ring is going away, and /dev/fuse says so too. */
		if (res != -ENOTCONN && res != -ECONNABORTED &&
		    res != -ECANCELED)
			fe_log("io_uring queue %u: %s failed: %s", r->qid,
			       r->cmd == FUSE_IO_URING_CMD_REGISTER ?
			       "REGISTER" : "COMMIT_AND_FETCH", strerror(-res));
		break;
	}
out:
	fe_worker_exit(w);
	return NULL;
}
