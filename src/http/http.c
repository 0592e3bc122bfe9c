/*-------------------------------------------------------------------------
 *
 * http.c
 *	  libcurl multi wrapper: many requests in flight on reused keep-alive
 *	  connections, capped responses, no redirects, http/https only, and a
 *	  guard at connect time (after DNS) against internal addresses.
 *	  Standard Webhooks signing with HMAC-SHA256.
 *
 * Everything here runs outside transactions and must not ereport from a
 * libcurl callback: callbacks use malloc and report through the request.
 *
 * The caller waits, it does not poll: libcurl tells us (CURLMOPT_SOCKETFUNCTION)
 * which sockets to watch for what, and they are kept in an epoll set of our
 * own, so that one descriptor (re_http_wait_fd) is readable when any of them
 * is ready; with libcurl's timer (CURLMOPT_TIMERFUNCTION, re_http_timeout_ms)
 * that is all the worker adds to its WaitEventSet next to its latch.  A
 * socket libcurl stops watching leaves the epoll set at once, which a
 * WaitEventSet cannot do (PostgreSQL 15 has no way to remove an event).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>

#include "common/base64.h"
#include "lib/stringinfo.h"
#include "compat.h"
#include "http/http.h"

/* Responses longer than this are cut off: the transfer is aborted. */
#define RE_HTTP_BODY_ABORT (1024 * 1024)

struct ReHttpClient
{
	CURLM	   *multi;
	int			in_flight;
	bool		allow_private;
	int			epfd;			/* the sockets libcurl waits on */
	double		timer_at_ms;	/* when libcurl wants to be called; -1: never */
};

static bool curl_initialized = false;

/* Address classes */

static bool
v4_in(uint32 addr, const char *net, int bits)
{
	struct in_addr n;
	uint32		mask = bits == 0 ? 0 : htonl(~((1U << (32 - bits)) - 1));

	inet_pton(AF_INET, net, &n);
	return (addr & mask) == (n.s_addr & mask);
}

static const char *
v4_class(uint32 a)				/* network byte order */
{
	if (v4_in(a, "169.254.169.254", 32) || v4_in(a, "100.100.100.200", 32))
		return "cloud metadata";
	if (v4_in(a, "0.0.0.0", 8))
		return "unspecified";
	if (v4_in(a, "127.0.0.0", 8))
		return "loopback";
	if (v4_in(a, "10.0.0.0", 8) || v4_in(a, "172.16.0.0", 12) ||
		v4_in(a, "192.168.0.0", 16))
		return "private";
	if (v4_in(a, "100.64.0.0", 10))
		return "carrier-grade NAT";
	if (v4_in(a, "169.254.0.0", 16))
		return "link-local";
	if (v4_in(a, "224.0.0.0", 4))
		return "multicast";
	if (v4_in(a, "192.0.0.0", 24) || v4_in(a, "192.0.2.0", 24) ||
		v4_in(a, "198.18.0.0", 15) || v4_in(a, "198.51.100.0", 24) ||
		v4_in(a, "203.0.113.0", 24) || v4_in(a, "240.0.0.0", 4))
		return "reserved";
	return NULL;
}

const char *
re_http_internal_address_class(const void *sockaddr)
{
	const struct sockaddr *sa = sockaddr;

	if (sa->sa_family == AF_INET)
		return v4_class(((const struct sockaddr_in *) sa)->sin_addr.s_addr);
	if (sa->sa_family == AF_INET6)
	{
		const uint8 *b = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;
		static const uint8 zero[16] = {0};
		static const uint8 v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		static const uint8 v4translated[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
		static const uint8 nat64[12] = {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
		static const uint8 nat64_local[6] = {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01};
		static const uint8 discard[8] = {0x01, 0x00, 0, 0, 0, 0, 0, 0};
		uint32		v4;

		if (memcmp(b, zero, 15) == 0 && b[15] == 0)
			return "unspecified";
		if (memcmp(b, zero, 15) == 0 && b[15] == 1)
			return "loopback";

		/*
		 * Forms that reach an IPv4 address by translation are what that
		 * address is: IPv4-mapped (::ffff:a.b.c.d), IPv4-translated
		 * (::ffff:0:a.b.c.d), IPv4-compatible (::a.b.c.d) and the NAT64
		 * well-known prefix (64:ff9b::/96, which DNS64 hands out for public
		 * IPv4 hosts).  The tunnels and the local-use NAT64 prefix, whose
		 * IPv4 end depends on a relay or a local set-up, are refused whole.
		 */
		if (memcmp(b, v4mapped, 12) == 0 || memcmp(b, v4translated, 12) == 0 ||
			memcmp(b, zero, 12) == 0 || memcmp(b, nat64, 12) == 0)
		{
			memcpy(&v4, b + 12, 4);
			return v4_class(v4);
		}
		if (memcmp(b, nat64_local, 6) == 0)
			return "local-use NAT64";
		if (b[0] == 0x20 && b[1] == 0x02)
			return "6to4";
		if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00)
			return "Teredo";
		if (memcmp(b, discard, 8) == 0)
			return "discard-only";
		if (b[0] == 0xfd && b[1] == 0x00 && b[2] == 0x0e && b[3] == 0xc2)
			return "cloud metadata";
		if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
			return "link-local";
		if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
			return "site-local";
		if ((b[0] & 0xfe) == 0xfc)
			return "private";
		if (b[0] == 0xff)
			return "multicast";
		if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
			return "reserved";
		return NULL;
	}
	return "unsupported address family";
}

/* An IPv4 or IPv6 address literal into *sockaddr_storage; false (AF_UNSPEC) when neither. */
bool
re_http_parse_address(const char *ip, void *sockaddr_storage)
{
	struct sockaddr_storage *ss = sockaddr_storage;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &((struct sockaddr_in *) ss)->sin_addr) == 1)
		ss->ss_family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *) ss)->sin6_addr) == 1)
		ss->ss_family = AF_INET6;
	else
		ss->ss_family = AF_UNSPEC;
	return ss->ss_family != AF_UNSPEC;
}

/* libcurl callbacks: no ereport, no palloc */

static curl_socket_t
open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	ReHttpRequest *req = clientp;
	const char *cls = re_http_internal_address_class(&address->addr);

	if (cls != NULL && !req->allow_private)
	{
		char		host[INET6_ADDRSTRLEN] = "?";

		if (address->family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *) &address->addr)->sin_addr,
					  host, sizeof(host));
		else if (address->family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &address->addr)->sin6_addr,
					  host, sizeof(host));
		req->blocked = true;
		snprintf(req->error, sizeof(req->error),
				 "address %s is not allowed (%s); see revenue_engine.http_allow_private",
				 host, cls);
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

/*
 * Before every request, on a new or a reused connection: a connection kept
 * alive from when internal addresses were allowed is not used once they are not.
 */
static int
prereq(void *clientp, char *conn_primary_ip, char *conn_local_ip,
	   int conn_primary_port, int conn_local_port)
{
	ReHttpRequest *req = clientp;
	struct sockaddr_storage ss;
	const char *cls;

	if (req->allow_private)
		return CURL_PREREQFUNC_OK;
	(void) re_http_parse_address(conn_primary_ip, &ss);
	cls = re_http_internal_address_class(&ss);
	if (cls == NULL)
		return CURL_PREREQFUNC_OK;
	req->blocked = true;
	snprintf(req->error, sizeof(req->error),
			 "address %s is not allowed (%s); see revenue_engine.http_allow_private",
			 conn_primary_ip, cls);
	return CURL_PREREQFUNC_ABORT;
}

static size_t
write_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	ReHttpRequest *req = userdata;
	size_t		n = size * nmemb;

	if (req->received + n > RE_HTTP_BODY_ABORT)
	{
		req->response_truncated = true;
		return 0;				/* aborts the transfer */
	}
	if (req->response_len < RE_HTTP_BODY_CAP)
	{
		size_t		keep = Min(n, RE_HTTP_BODY_CAP - req->response_len);

		if (req->response == NULL)
			req->response = malloc(RE_HTTP_BODY_CAP + 1);
		if (req->response == NULL)
			return 0;
		memcpy(req->response + req->response_len, data, keep);
		req->response_len += keep;
		req->response[req->response_len] = '\0';
		if (keep < n)
			req->response_truncated = true;
	}
	else
		req->response_truncated = true;
	req->received += n;
	return n;
}

/*
 * At the blank line that ends a header block, the Retry-After that libcurl
 * parsed (delay-seconds or HTTP-date, as seconds from now; 0 when absent or
 * in the past).  The caller caps it.
 */
static size_t
read_header(char *data, size_t size, size_t nmemb, void *userdata)
{
	ReHttpRequest *req = userdata;
	size_t		n = size * nmemb;
	curl_off_t	retry_after = 0;

	if (((n == 2 && data[0] == '\r') || (n == 1 && data[0] == '\n')) &&
		curl_easy_getinfo(req->easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
		retry_after > 0)
		req->retry_after_s = (double) retry_after;
	return n;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* What libcurl waits for: sockets and a timer (no ereport, no palloc) */

static int
socket_changed(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	ReHttpClient *client = userp;
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		/* it may be closed already: nothing to do then */
		(void) epoll_ctl(client->epfd, EPOLL_CTL_DEL, fd, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	ev.data.fd = fd;
	if (epoll_ctl(client->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 &&
		(errno != ENOENT || epoll_ctl(client->epfd, EPOLL_CTL_ADD, fd, &ev) != 0))
		return -1;				/* libcurl fails the transfers on this socket */
	return 0;
}

static int
timer_changed(CURLM *multi, long timeout_ms, void *userp)
{
	ReHttpClient *client = userp;

	client->timer_at_ms = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	return 0;
}

/* The client */

ReHttpClient *
re_http_client_create(int max_connections)
{
	ReHttpClient *client;

	if (!curl_initialized)
	{
		if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
			return NULL;
		curl_initialized = true;
	}
	client = calloc(1, sizeof(ReHttpClient));
	if (client == NULL)
		return NULL;
	client->multi = curl_multi_init();
	client->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (client->multi == NULL || client->epfd < 0)
	{
		if (client->multi)
			curl_multi_cleanup(client->multi);
		if (client->epfd >= 0)
			close(client->epfd);
		free(client);
		return NULL;
	}
	client->timer_at_ms = -1;
	curl_multi_setopt(client->multi, CURLMOPT_SOCKETFUNCTION, socket_changed);
	curl_multi_setopt(client->multi, CURLMOPT_SOCKETDATA, client);
	curl_multi_setopt(client->multi, CURLMOPT_TIMERFUNCTION, timer_changed);
	curl_multi_setopt(client->multi, CURLMOPT_TIMERDATA, client);
	re_http_set_max_connections(client, max_connections);
	return client;
}

void
re_http_set_max_connections(ReHttpClient *client, int max_connections)
{
	curl_multi_setopt(client->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) max_connections);
	curl_multi_setopt(client->multi, CURLMOPT_MAXCONNECTS, (long) max_connections);
}

void
re_http_client_destroy(ReHttpClient *client)
{
	if (client == NULL)
		return;
	curl_multi_cleanup(client->multi);
	close(client->epfd);
	free(client);
}

int
re_http_wait_fd(ReHttpClient *client)
{
	return client->epfd;
}

long
re_http_timeout_ms(ReHttpClient *client)
{
	double		left;

	if (client->timer_at_ms < 0)
		return -1;
	left = client->timer_at_ms - now_ms();
	return left <= 0 ? 0 : (long) left + 1;
}

void
re_http_set_allow_private(ReHttpClient *client, bool allow)
{
	client->allow_private = allow;
}

int
re_http_in_flight(ReHttpClient *client)
{
	return client->in_flight;
}

bool
re_http_start(ReHttpClient *client, ReHttpRequest *req)
{
	CURL	   *easy;
	struct curl_slist *list = NULL;
	int			i;

	req->status = 0;
	req->transport_error = false;
	req->request_sent = false;
	req->blocked = false;
	req->error[0] = '\0';
	req->response = NULL;
	req->response_len = 0;
	req->response_truncated = false;
	req->retry_after_s = -1;
	req->latency_ms = 0;
	req->received = 0;
	req->allow_private = client->allow_private;

	if (pg_strncasecmp(req->url, "http://", 7) != 0 &&
		pg_strncasecmp(req->url, "https://", 8) != 0)
	{
		snprintf(req->error, sizeof(req->error), "only http and https URLs are allowed");
		return false;
	}

	easy = curl_easy_init();
	if (easy == NULL)
	{
		snprintf(req->error, sizeof(req->error), "could not create a curl handle");
		return false;
	}
	for (i = 0; i < req->nheaders; i++)
		list = curl_slist_append(list, req->headers[i]);
	/* no "Expect: 100-continue" round trip */
	list = curl_slist_append(list, "Expect:");

	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_PROXY, "");
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "revenue_engine/0.1");
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
	if (req->body != NULL)
	{
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
	}
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, req->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, req);
	curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, prereq);
	curl_easy_setopt(easy, CURLOPT_PREREQDATA, req);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, read_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);

	req->easy = easy;
	req->header_list = list;
	req->started_ms = now_ms();
	if (curl_multi_add_handle(client->multi, easy) != CURLM_OK)
	{
		snprintf(req->error, sizeof(req->error), "could not start the request");
		curl_easy_cleanup(easy);
		curl_slist_free_all(list);
		req->easy = NULL;
		req->header_list = NULL;
		return false;
	}
	client->in_flight++;
	return true;
}

int
re_http_poll(ReHttpClient *client, int timeout_ms, ReHttpRequest **done, int max_done)
{
	int			running;
	int			ndone = 0;
	CURLMsg    *msg;
	int			left;
	struct epoll_event ready[256];
	int			nready;
	int			i;

	/* the sockets that are ready, then the timer if it is due */
	nready = epoll_wait(client->epfd, ready, lengthof(ready), timeout_ms);
	for (i = 0; i < nready; i++)
	{
		int			ev = 0;

		if (ready[i].events & (EPOLLIN | EPOLLHUP))
			ev |= CURL_CSELECT_IN;
		if (ready[i].events & EPOLLOUT)
			ev |= CURL_CSELECT_OUT;
		if (ready[i].events & EPOLLERR)
			ev |= CURL_CSELECT_ERR;
		curl_multi_socket_action(client->multi, ready[i].data.fd, ev, &running);
	}
	if (client->timer_at_ms >= 0 && now_ms() >= client->timer_at_ms)
	{
		client->timer_at_ms = -1;	/* libcurl sets the next one */
		curl_multi_socket_action(client->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}

	while (ndone < max_done && (msg = curl_multi_info_read(client->multi, &left)) != NULL)
	{
		ReHttpRequest *req;
		CURL	   *easy = msg->easy_handle;
		long		status = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &req);
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
		req->status = status;
		{
			long		request_size = 0;

			curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &request_size);
			req->request_sent = request_size > 0 || status > 0;
		}
		req->latency_ms = now_ms() - req->started_ms;
		if (msg->data.result != CURLE_OK)
		{
			if (req->response_truncated && msg->data.result == CURLE_WRITE_ERROR)
				snprintf(req->error, sizeof(req->error),
						 "response body larger than %d bytes", RE_HTTP_BODY_ABORT);
			else if (!req->blocked)
				snprintf(req->error, sizeof(req->error), "%s",
						 curl_easy_strerror(msg->data.result));
			/* a status read before the body failed still counts as an answer */
			req->transport_error = !(status >= 200 && status < 300 && req->response_truncated);
			if (req->transport_error)
				req->status = status >= 100 ? status : 0;
		}
		curl_multi_remove_handle(client->multi, easy);
		client->in_flight--;
		done[ndone++] = req;
	}
	return ndone;
}

void
re_http_cancel(ReHttpClient *client, ReHttpRequest *req, const char *reason)
{
	if (req->easy == NULL)
		return;
	curl_multi_remove_handle(client->multi, req->easy);
	client->in_flight--;
	req->status = 0;
	req->transport_error = true;
	req->request_sent = true;	/* started: it may have arrived */
	req->latency_ms = now_ms() - req->started_ms;
	snprintf(req->error, sizeof(req->error), "%s", reason);
}

void
re_http_request_cleanup(ReHttpRequest *req)
{
	if (req->easy)
		curl_easy_cleanup(req->easy);
	if (req->header_list)
		curl_slist_free_all(req->header_list);
	if (req->response)
		free(req->response);
	req->easy = NULL;
	req->header_list = NULL;
	req->response = NULL;
}

/* URL validation with libcurl's own parser, as the requests will use it */

const char *
re_http_check_url(const char *url)
{
	static char reason[160];
	CURLU	   *h = curl_url();
	CURLUcode	rc;
	char	   *scheme = NULL;
	char	   *host = NULL;
	const char *result = NULL;

	if (h == NULL)
		return "out of memory";
	if (strlen(url) > 2048)
		result = "the URL is longer than 2048 bytes";
	else if ((rc = curl_url_set(h, CURLUPART_URL, url, 0)) != CURLUE_OK)
	{
		snprintf(reason, sizeof(reason), "%s", curl_url_strerror(rc));
		result = reason;
	}
	else if (curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
			 (pg_strcasecmp(scheme, "http") != 0 && pg_strcasecmp(scheme, "https") != 0))
	{
		snprintf(reason, sizeof(reason), "scheme \"%s\" is not allowed: use http or https",
				 scheme ? scheme : "");
		result = reason;
	}
	else if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0')
		result = "the URL has no host";
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(h);
	return result;
}

/*
 * s percent-encoded by libcurl for one URL component (everything but the
 * unreserved A-Z a-z 0-9 - . _ ~), appended to buf.
 */
void
re_http_append_escaped(StringInfo buf, const char *s)
{
	char	   *escaped = curl_easy_escape(NULL, s, (int) strlen(s));

	if (escaped == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	appendStringInfoString(buf, escaped);
	curl_free(escaped);
}

/* Standard Webhooks signing */

const char *
re_http_check_secret(const char *secret)
{
	const char *b64;
	size_t		len;
	char		key[256];
	int			klen;

	if (strncmp(secret, "whsec_", 6) != 0)
		return "a signing secret starts with \"whsec_\"";
	b64 = secret + 6;
	len = strlen(b64);
	if (len < 24 || len > 256 || len % 4 != 0)
		return "the part after \"whsec_\" must be base64 of 18 to 192 bytes";
	klen = re_b64_decode(b64, (int) len, key, sizeof(key));
	if (klen < 16)
		return "the part after \"whsec_\" is not valid base64 of at least 16 bytes";
	return NULL;
}

bool
re_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
			   unsigned char *out)
{
	unsigned int maclen = 0;

	return HMAC(EVP_sha256(), key, (int) keylen, msg, msglen, out, &maclen) != NULL &&
		maclen == 32;
}

/*
 * The base64 of HMAC-SHA256("<id>.<timestamp>.<body>") with a whsec_ secret,
 * into b64 (at least 64 bytes); NULL if good, else the reason.
 */
static const char *
standard_signature(const char *secret, const char *msg_id, const char *timestamp,
				   const char *body, size_t body_len, char *b64)
{
	const char *error;
	char		key[256];
	int			klen;
	char		prefix[256];
	int			plen;
	char	   *msg;
	unsigned char mac[32];
	int			blen;

	if ((error = re_http_check_secret(secret)) != NULL)
		return error;
	klen = re_b64_decode(secret + 6, (int) strlen(secret + 6), key, sizeof(key));
	plen = snprintf(prefix, sizeof(prefix), "%s.%s.", msg_id, timestamp);
	if (plen < 0 || plen >= (int) sizeof(prefix))
		return "the message id is too long";
	msg = malloc(plen + body_len + 1);
	if (msg == NULL)
		return "out of memory";
	memcpy(msg, prefix, plen);
	memcpy(msg + plen, body, body_len);
	if (!re_hmac_sha256(key, klen, msg, plen + body_len, mac))
		error = "HMAC-SHA256 failed";
	free(msg);
	if (error)
		return error;
	blen = re_b64_encode(mac, (int) sizeof(mac), b64, 63);
	if (blen < 0)
		return "base64 encoding failed";
	b64[blen] = '\0';
	return NULL;
}

bool
re_http_sign(const char *msg_id, long timestamp, const char *body,
			 size_t body_len, const char **secrets, int nsecrets,
			 char *out, size_t outlen, const char **error)
{
	char		ts[32];
	size_t		pos = 0;
	int			i;

	snprintf(ts, sizeof(ts), "%ld", timestamp);
	out[0] = '\0';
	*error = NULL;
	for (i = 0; i < nsecrets; i++)
	{
		char		b64[64];

		*error = standard_signature(secrets[i], msg_id, ts, body, body_len, b64);
		if (*error != NULL)
			break;
		if (pos + strlen(b64) + 5 >= outlen)
		{
			*error = "signature buffer too small";
			break;
		}
		pos += snprintf(out + pos, outlen - pos, "%sv1,%s", i > 0 ? " " : "", b64);
	}
	return *error == NULL;
}

bool
re_http_verify(const char *secret, const char *msg_id, const char *timestamp,
			   const char *body, size_t body_len, const char *signatures,
			   const char **error)
{
	char		expected[64];
	size_t		elen;
	const char *p = signatures;

	*error = standard_signature(secret, msg_id, timestamp, body, body_len, expected);
	if (*error != NULL)
		return false;
	elen = strlen(expected);
	/* space-separated "v1,<base64>" entries; any one matching is enough */
	while (*p)
	{
		const char *end;

		while (*p == ' ')
			p++;
		end = p;
		while (*end && *end != ' ')
			end++;
		if (end - p == (ptrdiff_t) (3 + elen) && strncmp(p, "v1,", 3) == 0 &&
			CRYPTO_memcmp(p + 3, expected, elen) == 0)
			return true;
		p = end;
	}
	*error = "no v1 signature matches";
	return false;
}
