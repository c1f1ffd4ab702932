/* gauth — OAuth2 access tokens for GCS; see gauth.h. */
#include "gauth.h"

#include "cryptofn.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define KEYFILE_MAX (64 * 1024)
#define TOKEN_MAX 4096
#define SCOPE "https://www.googleapis.com/auth/devstorage.read_write"
#define DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define DEFAULT_METADATA_HOST "metadata.google.internal"
#define METADATA_PATH "/computeMetadata/v1/instance/service-accounts/default/token"

enum gsrc { G_METADATA = 1, G_SERVICE_ACCOUNT };

struct gauth {
	struct ss_http *http;
	enum gsrc src;
	char source[300];
	char *token;
	unsigned gen;
	uint64_t fresh_until_ns;
	bool fetching;
	struct ss_http_xfer fx;
	char what[400];
	struct ss_http_xfer *whead, *wtail;
	char *url;                /* metadata URL or token_uri */
	/* Service account. */
	char *email, *key_id;
	EVP_PKEY *pkey;
	char *form;               /* the POST body: holds a JWT, wiped after use */
	size_t form_len;
	struct iovec fiov;
};

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static struct json_object *json_parse(const uint8_t *p, size_t n)
{
	if (n > KEYFILE_MAX)
		return NULL;
	struct json_tokener *t = json_tokener_new_ex(16);
	if (!t)
		return NULL;
	struct json_object *o = json_tokener_parse_ex(t, (const char *)p, (int)n);
	if (json_tokener_get_error(t) != json_tokener_success || !o ||
	    !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(t);
	return o;
}

static const char *json_str(struct json_object *o, const char *k)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static bool printable(const char *s, size_t max)
{
	size_t n = 0;
	for (; *s; s++, n++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || n >= max)
			return false;
	return n > 0;
}

/* --- service account: the JWT ----------------------------------------- */

static char *b64url(const uint8_t *p, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char *out = malloc(n / 3 * 4 + 5);
	if (!out)
		return NULL;
	size_t o = 0, i = 0;
	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
	}
	out[o] = '\0';
	return out;
}

static char *b64url_json(struct json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							      JSON_C_TO_STRING_NOSLASHESCAPE);
	return s ? b64url((const uint8_t *)s, strlen(s)) : NULL;
}

/* header.claims.signature, valid for an hour from now (wall clock: the
 * token server checks iat/exp against its own). */
static int make_jwt(struct gauth *g, char **out)
{
	int r = -ENOMEM;
	char *h64 = NULL, *c64 = NULL, *s64 = NULL, *signing = NULL;
	uint8_t *sig = NULL;
	EVP_MD_CTX *md = NULL;
	/* Loaded with the key (gauth_load). */
	const struct ss_cryptofn *C = ss_crypto();
	struct json_object *hdr = json_object_new_object();
	struct json_object *cl = json_object_new_object();
	if (!hdr || !cl)
		goto out;
	int64_t now = (int64_t)time(NULL);
	json_object_object_add(hdr, "alg", json_object_new_string("RS256"));
	json_object_object_add(hdr, "typ", json_object_new_string("JWT"));
	if (g->key_id)
		json_object_object_add(hdr, "kid", json_object_new_string(g->key_id));
	json_object_object_add(cl, "iss", json_object_new_string(g->email));
	json_object_object_add(cl, "scope", json_object_new_string(SCOPE));
	json_object_object_add(cl, "aud", json_object_new_string(g->url));
	json_object_object_add(cl, "iat", json_object_new_int64(now));
	json_object_object_add(cl, "exp", json_object_new_int64(now + 3600));
	h64 = b64url_json(hdr);
	c64 = b64url_json(cl);
	if (!h64 || !c64)
		goto out;
	size_t sl = strlen(h64) + 1 + strlen(c64);
	signing = malloc(sl + 1);
	if (!signing)
		goto out;
	snprintf(signing, sl + 1, "%s.%s", h64, c64);
	md = C->md_ctx_new();
	size_t siglen = 0;
	r = -EKEYREJECTED;
	if (!md || C->digest_sign_init(md, NULL, C->sha256(), NULL, g->pkey) != 1 ||
	    C->digest_sign(md, NULL, &siglen, (const uint8_t *)signing, sl) != 1)
		goto out;
	r = -ENOMEM;
	if (!(sig = malloc(siglen)))
		goto out;
	r = -EKEYREJECTED;
	if (C->digest_sign(md, sig, &siglen, (const uint8_t *)signing, sl) != 1)
		goto out;
	r = -ENOMEM;
	if (!(s64 = b64url(sig, siglen)))
		goto out;
	char *jwt = malloc(sl + 1 + strlen(s64) + 1);
	if (!jwt)
		goto out;
	sprintf(jwt, "%s.%s", signing, s64);
	*out = jwt;
	r = 0;
out:
	C->md_ctx_free(md);
	json_object_put(hdr);
	json_object_put(cl);
	free(h64);
	free(c64);
	free(s64);
	free(sig);
	free(signing);
	return r;
}

/* --- the token fetch -------------------------------------------------- */

static int fetch_prepare(struct ss_http_xfer *x, CURL *e)
{
	struct gauth *g = x->owner;
	if (ss_curl()->easy_setopt(e, CURLOPT_URL, g->url) != CURLE_OK)
		return -EINVAL;
	if (g->src == G_METADATA)
		return ss_http_header(x, "Metadata-Flavor: Google");
	wipe_free(g->form);
	g->form = NULL;
	char *jwt;
	int r = make_jwt(g, &jwt);
	if (r) {
		snprintf(x->errmsg, sizeof(x->errmsg), "%s: cannot sign the JWT with the key",
			 x->what);
		return r;
	}
	static const char pre[] =
		"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
	g->form_len = strlen(pre) + strlen(jwt);
	g->form = malloc(g->form_len + 1);
	if (!g->form) {
		wipe_free(jwt);
		return -ENOMEM;
	}
	sprintf(g->form, "%s%s", pre, jwt);
	wipe_free(jwt);
	g->fiov.iov_base = g->form;
	g->fiov.iov_len = g->form_len;
	x->iov = &g->fiov;
	x->iovcnt = 1;
	x->body_off = 0;
	x->body_len = g->form_len;
	/* The method was read before prepare: the body length must be set
	 * here again for this attempt's JWT. */
	if (ss_curl()->easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)g->form_len) != CURLE_OK)
		return -EINVAL;
	return ss_http_header(x, "Content-Type: application/x-www-form-urlencoded");
}

static void fail_waiters(struct gauth *g, int res, const char *msg)
{
	struct ss_http_xfer *w = g->whead;
	g->whead = g->wtail = NULL;
	while (w) {
		struct ss_http_xfer *n = w->owner_next;
		snprintf(w->errmsg, sizeof(w->errmsg), "%.200s: %.300s", w->what, msg);
		w->done(w, res);
		w = n;
	}
}

static void run_waiters(struct gauth *g)
{
	struct ss_http_xfer *w = g->whead;
	g->whead = g->wtail = NULL;
	while (w) {
		struct ss_http_xfer *n = w->owner_next;
		ss_http_run(g->http, w);
		w = n;
	}
}

/* The reason a token server gave ("invalid_grant"), if it is short and
 * plain; its free-text description may quote what we sent. */
static void token_error(const struct ss_http_xfer *x, char *out, size_t cap)
{
	out[0] = '\0';
	struct json_object *o = json_parse(x->body.data, x->body.len);
	if (!o)
		return;
	const char *e = json_str(o, "error");
	if (e && strlen(e) < 64) {
		bool plain = true;
		for (const char *c = e; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || *c == '_' || (*c >= 'A' && *c <= 'Z')))
				plain = false;
		if (plain)
			snprintf(out, cap, " %s", e);
	}
	json_object_put(o);
}

static void fetch_done(struct ss_http_xfer *x, int res)
{
	struct gauth *g = x->owner;
	char msg[600];
	g->fetching = false;
	if (g->form) {
		wipe_free(g->form);
		g->form = NULL;
	}
	if (res < 0) {
		/* errmsg names the token source already. */
		snprintf(msg, sizeof(msg), "no GCS access token: %.500s", x->errmsg);
		goto fail;
	}
	if (x->status != 200) {
		char why[80];
		token_error(x, why, sizeof(why));
		snprintf(msg, sizeof(msg), "no GCS access token from the %s: HTTP %ld%s%s", g->source,
			 x->status, why, x->attempts > 1 ? " (after retries)" : "");
		res = x->status == 401 || x->status == 403 || x->status == 400 ? -EACCES : -EIO;
		goto fail;
	}
	struct json_object *o = json_parse(x->body.data, x->body.len);
	const char *tok = o ? json_str(o, "access_token") : NULL;
	const char *type = o ? json_str(o, "token_type") : NULL;
	struct json_object *ev = NULL;
	int64_t exp = 0;
	if (o && json_object_object_get_ex(o, "expires_in", &ev) &&
	    (json_object_is_type(ev, json_type_int)))
		exp = json_object_get_int64(ev);
	if (!tok || !printable(tok, TOKEN_MAX) || exp <= 0 || exp > 7 * 86400 ||
	    (type && strcasecmp(type, "Bearer") != 0)) {
		json_object_put(o);
		snprintf(msg, sizeof(msg), "the %s sent a malformed token response", g->source);
		res = -EBADMSG;
		goto fail;
	}
	wipe_free(g->token);
	g->token = strdup(tok);
	g->gen++;
	json_object_put(o);
	if (!g->token) {
		snprintf(msg, sizeof(msg), "out of memory");
		res = -ENOMEM;
		goto fail;
	}
	/* Refresh a minute early (half the life for short-lived tokens) so a
	 * request never starts with a token about to lapse. */
	uint64_t life = (uint64_t)exp * 1000000000ull;
	uint64_t margin = exp > 120 ? 60000000000ull : life / 2;
	g->fresh_until_ns = ss_http_now_ns() + life - margin;
	ss_http_log(g->http, "GCS: access token from the %s, valid for %lld s", g->source,
		    (long long)exp);
	ss_http_xfer_reset(&g->fx);
	run_waiters(g);
	return;
fail:
	ss_http_xfer_reset(&g->fx);
	ss_http_log(g->http, "GCS: %s", msg);
	fail_waiters(g, res, msg);
}

static void fetch_start(struct gauth *g)
{
	struct ss_http_xfer *x = &g->fx;
	ss_http_xfer_reset(x);
	x->prepare = fetch_prepare;
	x->done = fetch_done;
	x->owner = g;
	x->what = g->what;
	x->body_cap = 64 * 1024;
	if (g->src == G_METADATA) {
		x->method = SS_HTTP_GET;
		/* Off GCE the name does not resolve: say so at once. */
		x->fail_fast_dns = true;
	} else {
		x->method = SS_HTTP_POST;
		x->iov = NULL;
		x->iovcnt = 0;
		x->body_len = 0;
	}
	g->fetching = true;
	ss_http_run(g->http, x);
}

/* --- public ----------------------------------------------------------- */

static int load_key(struct gauth *g, const char *path, struct ss_err *err)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int r = ss_read_small_file(path, KEYFILE_MAX, &buf, &len);
	if (r)
		return ss_err_set(err, r, "cannot read GOOGLE_APPLICATION_CREDENTIALS file %s: %s",
				  path, strerror(-r));
	struct json_object *o = json_parse(buf, len);
	explicit_bzero(buf, len);
	free(buf);
	if (!o)
		return ss_err_set(err, -EINVAL, "%s is not a JSON key file", path);
	const char *type = json_str(o, "type");
	const char *email = json_str(o, "client_email");
	const char *pem = json_str(o, "private_key");
	const char *kid = json_str(o, "private_key_id");
	const char *uri = json_str(o, "token_uri");
	r = 0;
	if (!type || strcmp(type, "service_account") != 0)
		r = ss_err_set(err, -EINVAL,
			       "%s: only service-account keys are supported (type \"%s\")", path,
			       type && printable(type, 40) ? type : "?");
	else if (!email || !printable(email, 256) || !pem)
		r = ss_err_set(err, -EINVAL, "%s: client_email or private_key missing", path);
	else if (uri && strncmp(uri, "https://", 8) != 0 && strncmp(uri, "http://", 7) != 0)
		r = ss_err_set(err, -EINVAL, "%s: token_uri is not an http(s) URL", path);
	if (!r)
		r = ss_crypto_load(err);
	if (!r) {
		const struct ss_cryptofn *C = ss_crypto();
		BIO *bio = C->bio_new_mem_buf(pem, (int)strlen(pem));
		g->pkey = bio ? C->pem_read_bio_privatekey(bio, NULL, NULL, NULL) : NULL;
		C->bio_free(bio);
		if (!g->pkey || C->pkey_base_id(g->pkey) != EVP_PKEY_RSA)
			r = ss_err_set(err, -EINVAL, "%s: private_key is not an RSA key in PEM",
				       path);
	}
	if (!r) {
		g->email = strdup(email);
		g->key_id = kid && printable(kid, 256) ? strdup(kid) : NULL;
		g->url = strdup(uri && printable(uri, 2048) ? uri : DEFAULT_TOKEN_URI);
		if (!g->email || !g->url)
			r = ss_err_set(err, -ENOMEM, "out of memory");
		snprintf(g->source, sizeof(g->source), "token endpoint for service account %s",
			 email);
	}
	/* The parsed copy of the private key lives inside o: free it wiped. */
	if (pem)
		explicit_bzero((char *)pem, strlen(pem));
	json_object_put(o);
	return r;
}

int gauth_new(struct ss_http *h, const char *const *env, struct gauth **out, struct ss_err *err)
{
	struct gauth *g = calloc(1, sizeof(*g));
	if (!g)
		return ss_err_set(err, -ENOMEM, "out of memory");
	g->http = h;
	int r = 0;
	const char *keyfile = ss_env_get(env, "GOOGLE_APPLICATION_CREDENTIALS");
	if (keyfile) {
		g->src = G_SERVICE_ACCOUNT;
		r = load_key(g, keyfile, err);
	} else {
		g->src = G_METADATA;
		const char *host = ss_env_get(env, "GCE_METADATA_HOST");
		if (!host)
			host = DEFAULT_METADATA_HOST;
		if (!printable(host, 256)) {
			r = ss_err_set(err, -EINVAL, "GCE_METADATA_HOST is not a host name");
		} else {
			size_t n = strlen(host) + sizeof(METADATA_PATH) + 8;
			g->url = malloc(n);
			if (!g->url)
				r = ss_err_set(err, -ENOMEM, "out of memory");
			else
				snprintf(g->url, n, "http://%s%s", host, METADATA_PATH);
			snprintf(g->source, sizeof(g->source), "metadata server at %.200s", host);
		}
	}
	if (r) {
		gauth_free(g);
		return r;
	}
	snprintf(g->what, sizeof(g->what), "GCS token request to the %s", g->source);
	*out = g;
	return 0;
}

void gauth_free(struct gauth *g)
{
	if (!g)
		return;
	ss_http_xfer_reset(&g->fx);
	wipe_free(g->token);
	wipe_free(g->form);
	free(g->url);
	free(g->email);
	free(g->key_id);
	if (g->pkey)
		ss_crypto()->pkey_free(g->pkey);
	free(g);
}

const char *gauth_source(const struct gauth *g)
{
	return g->source;
}

const char *gauth_token(struct gauth *g)
{
	if (g->token && ss_http_now_ns() < g->fresh_until_ns)
		return g->token;
	return NULL;
}

const char *gauth_token_any(const struct gauth *g, unsigned *gen)
{
	if (gen)
		*gen = g->gen;
	return g->token;
}

void gauth_wait(struct gauth *g, struct ss_http_xfer *x)
{
	x->owner_next = NULL;
	if (g->wtail)
		g->wtail->owner_next = x;
	else
		g->whead = x;
	g->wtail = x;
	if (!g->fetching)
		fetch_start(g);
}

void gauth_invalidate(struct gauth *g, unsigned gen)
{
	if (g->gen == gen)
		g->fresh_until_ns = 0;
}

bool gauth_leaks(const struct gauth *g, const char *s)
{
	return g->token && strstr(s, g->token);
}
