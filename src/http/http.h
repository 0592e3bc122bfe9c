/*-------------------------------------------------------------------------
 *
 * http.h
 *	  Concurrent HTTP requests with the libcurl multi interface, Standard
 *	  Webhooks signing, and the guard that refuses private addresses.
 *	  Knows nothing of SPI or tables: the worker hands it requests and reads
 *	  back outcomes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RE_HTTP_H
#define RE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

/* Largest response body kept, in bytes; the rest is read and dropped. */
#define RE_HTTP_BODY_CAP 20480

typedef struct ReHttpRequest
{
	/* filled by the caller; strings must live until the request completes */
	const char *method;
	const char *url;
	const char *body;
	size_t		body_len;
	const char **headers;		/* "Name: value" lines */
	int			nheaders;
	long		timeout_ms;
	long		connect_timeout_ms;
	void	   *owner;			/* the caller's bookkeeping */

	/* outcome, valid once the request completed */
	long		status;			/* HTTP status, 0 when none was received */
	bool		transport_error;	/* timeout, refused, reset, garbage ... */
	bool		request_sent;	/* the request (or part of it) may have reached
								 * the server: not a refused connection */
	bool		blocked;		/* refused by the address guard */
	char		error[256];
	char	   *response;		/* malloc'd, NUL-terminated, capped */
	size_t		response_len;
	bool		response_truncated;
	double		retry_after_s;	/* from Retry-After, -1 if absent */
	double		latency_ms;

	/* private */
	void	   *easy;
	void	   *header_list;
	size_t		received;
	bool		allow_private;
	double		started_ms;
} ReHttpRequest;

typedef struct ReHttpClient ReHttpClient;

/* allow_private: let requests reach loopback, private and other internal networks. */
extern ReHttpClient *re_http_client_create(int max_connections);
extern void re_http_client_destroy(ReHttpClient *client);
extern void re_http_set_allow_private(ReHttpClient *client, bool allow);

/* Start a request; false (with req->error set) if it could not be started. */
extern bool re_http_start(ReHttpClient *client, ReHttpRequest *req);

/* libcurl's connection limit (revenue_engine.worker_max_in_flight). */
extern void re_http_set_max_connections(ReHttpClient *client, int max_connections);

/*
 * Waiting without polling: a descriptor that is readable when a socket of a
 * request is ready, and the milliseconds until libcurl's timer (-1: none).
 * Either one calls for re_http_poll.
 */
extern int	re_http_wait_fd(ReHttpClient *client);
extern long re_http_timeout_ms(ReHttpClient *client);

/*
 * Drive the transfers whose sockets are ready (waiting for one at most
 * timeout_ms, 0: not at all) and libcurl's timer if it is due; completed
 * requests are stored in done[] (up to max_done) and their count returned.
 */
extern int	re_http_poll(ReHttpClient *client, int timeout_ms,
						 ReHttpRequest **done, int max_done);
extern int	re_http_in_flight(ReHttpClient *client);

/* Give up a request in flight: it completes now, a transport error with reason. */
extern void re_http_cancel(ReHttpClient *client, ReHttpRequest *req, const char *reason);

/* Free what a completed request holds (response, curl handle). */
extern void re_http_request_cleanup(ReHttpRequest *req);

/*
 * Which address class, if any, makes addr (a struct sockaddr) internal:
 * "loopback", "private", "link-local", "cgnat", "multicast", "unspecified",
 * "reserved", "metadata" ...; NULL for a public address.
 */
extern const char *re_http_internal_address_class(const void *sockaddr);
extern bool re_http_parse_address(const char *ip, void *sockaddr_storage);

/*
 * Standard Webhooks signature header value for one or more "whsec_..."
 * secrets: "v1,<b64> v1,<b64>".  Returns false with *error set on a bad
 * secret.  out must hold nsecrets * 50 bytes.
 */
extern bool re_http_sign(const char *msg_id, long timestamp, const char *body,
						 size_t body_len, const char **secrets, int nsecrets,
						 char *out, size_t outlen, const char **error);

/*
 * Verify a Standard Webhooks "webhook-signature" header (space-separated
 * "v1,<b64>" entries) of "<msg_id>.<timestamp>.<body>" with a whsec_ secret.
 * False with *error set when none matches or the secret is bad.
 */
extern bool re_http_verify(const char *secret, const char *msg_id, const char *timestamp,
						   const char *body, size_t body_len, const char *signatures,
						   const char **error);

/* HMAC-SHA256 of msg with key into out (32 bytes); false on failure. */
extern bool re_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
						   unsigned char *out);

/* Check a URL: NULL if it is an absolute http(s) URL with a host, else the reason. */
extern const char *re_http_check_url(const char *url);
struct StringInfoData;
extern void re_http_append_escaped(struct StringInfoData *buf, const char *s);

/* Check a "whsec_<base64>" secret's format; NULL if good, else the reason. */
extern const char *re_http_check_secret(const char *secret);

#endif							/* RE_HTTP_H */
