/* trash — removing checkpoint images off the reply's path (trash.h). */
#include "trash.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define TRASH_PREFIX ".trash-"

struct item {
	struct item *next;
	int fd;          /* >= 0: a descriptor to close, and no path */
	char path[];
};

struct trash {
	char *dir;
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct item *head, **tail;
	unsigned long n;
	bool stop;
};

static int rm_one(const char *path, const struct stat *sb, int type, struct FTW *f)
{
	(void)sb;
	(void)f;
	if (type == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

void rm_tree(const char *path)
{
	if (path)
		nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void *trash_main(void *arg)
{
	struct trash *t = arg;
	/* Freeing pages is work nobody waits for: let the next call's pull or
	 * push have the CPU first (nice, not SCHED_IDLE, so that a busy host
	 * still gets its memory back). */
	setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
	pthread_mutex_lock(&t->mu);
	for (;;) {
		while (!t->head && !t->stop)
			pthread_cond_wait(&t->cv, &t->mu);
		struct item *it = t->head;
		if (!it)
			break;  /* stopping, and nothing is left */
		if (!(t->head = it->next))
			t->tail = &t->head;
		pthread_mutex_unlock(&t->mu);
		if (it->fd >= 0)
			close(it->fd);
		else
			rm_tree(it->path);
		free(it);
		pthread_mutex_lock(&t->mu);
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

static bool queue_item(struct trash *t, const char *path, int fd)
{
	size_t n = strlen(path) + 1;
	struct item *it = malloc(sizeof(*it) + n);
	if (!it)
		return false;
	memcpy(it->path, path, n);
	it->fd = fd;
	it->next = NULL;
	pthread_mutex_lock(&t->mu);
	*t->tail = it;
	t->tail = &it->next;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	return true;
}

static bool queue(struct trash *t, const char *path)
{
	return queue_item(t, path, -1);
}

int trash_new(const char *work_dir, struct trash **out)
{
	struct trash *t = calloc(1, sizeof(*t));
	if (!t || !(t->dir = strdup(work_dir))) {
		free(t);
		return -ENOMEM;
	}
	t->tail = &t->head;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	int r = pthread_create(&t->th, NULL, trash_main, t);
	if (r) {
		free(t->dir);
		free(t);
		return -r;
	}
	/* What a server killed meanwhile left behind. */
	DIR *d = opendir(work_dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char p[PATH_MAX];
		if (strncmp(de->d_name, TRASH_PREFIX, strlen(TRASH_PREFIX)) == 0 &&
		    snprintf(p, sizeof(p), "%s/%s", work_dir, de->d_name) < (int)sizeof(p) &&
		    !queue(t, p))
			rm_tree(p);
	}
	if (d)
		closedir(d);
	*out = t;
	return 0;
}

void trash_put(struct trash *t, const char *path)
{
	char p[PATH_MAX];
	if (t) {
		pthread_mutex_lock(&t->mu);
		unsigned long n = t->n++;
		pthread_mutex_unlock(&t->mu);
		if (snprintf(p, sizeof(p), "%s/" TRASH_PREFIX "%d-%lu", t->dir, (int)getpid(), n) <
			    (int)sizeof(p) &&
		    rename(path, p) == 0) {
			if (!queue(t, p))
				rm_tree(p);
			return;
		}
	}
	rm_tree(path);
}

void trash_close(struct trash *t, int fd)
{
	if (fd >= 0 && (!t || !queue_item(t, "", fd)))
		close(fd);
}

void trash_free(struct trash *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	t->stop = true;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->th, NULL);
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	free(t->dir);
	free(t);
}
