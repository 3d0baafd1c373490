/*
 * The engine's private state, shared by its transports: /dev/fuse (and
 * socket) workers in fuse_engine.c and io_uring queues in fuse_uring.c.
 * Nothing outside lib/ includes this.
 */
#ifndef FE_INTERNAL_H
#define FE_INTERNAL_H

#include <pthread.h>
#include <signal.h>

#include "fuse_engine.h"

/* Workers waiting for the kernel are woken with this signal on stop. */
#define FE_WAKE_SIGNAL		SIGUSR1
/* Room past a message to realign its extension area to 8 bytes. */
#define FE_BUF_SLACK		8

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

struct fe_ring;

struct fe_ireq {
	struct fe_req req;
	struct fe_ireq *prev, *next;	/* in-flight list, under se->lock */
	bool listed;
	bool replied;
	struct fe_ring *ring;	/* answer into this ring entry, not req.fd */
};

struct fe_worker {
	struct fe_session *se;
	unsigned int index;
	pthread_t thread;
	bool started;
	bool running;		/* under se->lock */
	bool own_fd;
	int fd;
	long tid;
	bool nofs_done;		/* FUSE_DEV_IOC_SET_NOFS was tried */
	char *buf;
	struct fe_ireq ireq;
	struct fe_ring *ring;	/* NULL for a /dev/fuse worker */
};

enum fe_init_state {
	FE_INIT_NONE,
	FE_INIT_BUSY,		/* an INIT is being handled */
	FE_INIT_DONE,
};

enum fe_ring_state {
	FE_RING_UNUSED,		/* not asked for, or the rings could not be set up */
	FE_RING_PENDING,	/* set up; waiting for INIT (and IOMAP_CONFIG) */
	FE_RING_GO,		/* agreed: register the entries */
	FE_RING_OFF,		/* not agreed: the ring workers leave */
};

struct fe_session {
	const struct fe_ops *ops;
	void *fs;
	unsigned int nthreads;
	bool debug;
	bool want_uring;
	uint32_t max_write;	/* the most any worker buffer can take */
	size_t bufsize;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	int init_state;		/* written under lock, read atomically */
	struct fe_conn conn;
	bool stop;		/* written under lock, read atomically */
	bool destroyed;		/* likewise */
	bool is_socket;
	int fd;			/* the channel given to serve; -1 otherwise */
	unsigned int nrunning;
	int error;		/* first fatal channel error, negative */
	bool nofs_logged;	/* a SET_NOFS failure was reported (atomic) */
	struct fe_ireq inflight;	/* list head */
	/* nthreads /dev/fuse workers, then nrings io_uring workers. */
	struct fe_worker *workers;
	unsigned int nworkers;
	unsigned int nrings;
	unsigned int nqueues;
	size_t ring_payload;	/* payload buffer of each ring entry */
	int ring_state;		/* enum fe_ring_state, under lock */
};

void fe_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
long fe_gettid(void);
bool fe_stopping(struct fe_session *se);
void fe_request_stop(struct fe_session *se, int error);
void fe_worker_nofs(struct fe_worker *w);
void fe_worker_exit(struct fe_worker *w);
/* Handle the n-byte message at msg, laid out as /dev/fuse delivers it,
 * with FE_BUF_SLACK writable bytes after it. */
void fe_handle(struct fe_worker *w, char *msg, size_t n);

/* FUSE over io_uring (fuse_uring.c). */
void fe_ring_setup(struct fe_session *se);
void fe_ring_teardown(struct fe_session *se);
bool fe_ring_can_serve(struct fe_session *se, const struct fe_conn *c);
void fe_ring_set_state(struct fe_session *se, int state);
void *fe_ring_main(void *arg);
void *fe_ring_space(struct fe_ring *r, size_t len);
int fe_ring_reply(struct fe_ring *r, int error, uint64_t unique,
		  const struct iovec *iov, int iovcnt);

#endif
