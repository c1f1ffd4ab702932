/* pipe — what ss_push (push.c) and ss_push_fd (stream.c) share while their
 * pipelines run: the first failure, which stops both, and the finished
 * work (segments, frames) parked in order until a pack buffer is free. */
#include "push.h"

#include <stdlib.h>
#include <string.h>

void ss_pipe_fail(struct ss_pipe *p, int r, const char *what)
{
	if (!p->failed) {
		p->failed = true;
		ss_err_set(p->err, r, "%s: %s", what, strerror(-r));
	}
}

void ss_pipe_fail_msg(struct ss_pipe *p, int r, const char *msg)
{
	if (!p->failed) {
		p->failed = true;
		ss_err_set(p->err, r, "%s", msg);
	}
}

void ss_pipe_drain(struct ss_pipe *p)
{
	while (p->head && !p->failed) {
		struct ss_parked *it = p->head;
		if (!p->pack(p->arg, it))
			return;
		p->head = it->next;
		if (!p->head)
			p->tail = NULL;
		p->release(p->arg, it);
	}
}

void ss_pipe_park(struct ss_pipe *p, struct ss_parked *it)
{
	it->next = NULL;
	if (p->tail)
		p->tail->next = it;
	else
		p->head = it;
	p->tail = it;
	ss_pipe_drain(p);
}

void ss_pipe_pack_done(void *arg, int res, const char *msg)
{
	struct ss_pipe *p = arg;
	if (res < 0)
		ss_pipe_fail_msg(p, res, msg);
	else
		ss_pipe_drain(p);
}

int ss_pipe_flush(struct ss_pipe *p, struct ss_packer *pk)
{
	struct ss_err e = {0};
	int r = ss_packer_flush(pk, &e);
	if (r < 0)
		ss_pipe_fail_msg(p, r, e.msg);
	return r;
}

int ss_pipe_turn(struct ss_pipe *p, struct ss_loop *l)
{
	int r = ss_loop_turn(l, true);
	if (r < 0)
		ss_pipe_fail(p, r, "event loop failed");
	return r;
}
