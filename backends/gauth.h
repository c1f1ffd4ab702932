/* gauth — OAuth2 access tokens for Google Cloud Storage (private to the
 * object-store backends).
 *
 * Two sources, tried in this order when a gs:// backend opens without HMAC
 * keys:
 *   - a service-account key file named by GOOGLE_APPLICATION_CREDENTIALS:
 *     a JWT (RS256, signed with OpenSSL) is exchanged at the key's
 *     token_uri for a token;
 *   - the GCE/GKE metadata server (GCE_METADATA_HOST overrides its
 *     address, for tests).
 * A token is cached until shortly before it expires (60 s, or half its
 * life when that is shorter), then fetched again. Fetches are ordinary
 * transfers on the backend's curl multi handle, so they never block the
 * loop; requests that need a token wait for the fetch in a list.
 *
 * Tokens, JWTs and keys never reach a message or a log line. Loop thread
 * only.
 */
#ifndef SS_GAUTH_H
#define SS_GAUTH_H

#include "http.h"

struct gauth;

/* Set up from the caller's environment block env (GOOGLE_APPLICATION_
 * CREDENTIALS, GCE_METADATA_HOST; NULL: none set) and the key file it
 * names (a small blocking read at open). Returns 0 or -errno with err set. */
int gauth_new(struct ss_http *h, const char *const *env, struct gauth **out,
	      struct ss_err *err);
void gauth_free(struct gauth *g);

/* "service account <email>" or "metadata server", for messages. */
const char *gauth_source(const struct gauth *g);

/* The cached token when it is still fresh, else NULL (then gauth_wait). */
const char *gauth_token(struct gauth *g);
/* The last token even if stale (for a retry already under way), or NULL;
 * *gen (may be NULL) receives its generation, which grows with each new
 * token. */
const char *gauth_token_any(const struct gauth *g, unsigned *gen);

/* Park x until a token is there, fetching one if none is on its way; then
 * ss_http_run(x). If the fetch fails, x->done(x, -errno) runs with the
 * reason in x->errmsg. Never completes x from inside this call. */
void gauth_wait(struct gauth *g, struct ss_http_xfer *x);

/* The server refused the token of generation gen (HTTP 401): forget it,
 * unless a newer one has come since, so the next request fetches another. */
void gauth_invalidate(struct gauth *g, unsigned gen);

/* True if s contains the current token, for scrubbing server messages. */
bool gauth_leaks(const struct gauth *g, const char *s);

#endif
