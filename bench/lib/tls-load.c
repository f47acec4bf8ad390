/*
 * tls-load: the TLS handshake load generator of bench/tls.ts. A small C client (OpenSSL) so the
 * client's own CPU is small and identical for every server. T threads, each in a loop until
 * the deadline: TCP connect, TLS 1.3 handshake (timed: connect + handshake), one tiny HTTP/1.1
 * request with "Connection: close", read to the end, close. In "resumed" mode each thread keeps
 * the latest session ticket and offers it on its next connection (the previous one again when
 * the server sent none).
 * Prints one JSON line: connections, resumed, errors, seconds and handshake latency percentiles (ms).
 * Usage: tls-load HOST PORT SECONDS THREADS full|resumed SERVERNAME
 * Build: cc -O2 -o tls-load tls-load.c -lssl -lcrypto -lpthread
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 2000000

static struct sockaddr_in addr;
static SSL_CTX *ctx;
static double deadline;
static int resumed_mode;
static const char *servername;
static double *samples; /* handshake latencies, ms */
static long nsamples, nresumed, nerrors;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void *worker(void *arg) {
  (void)arg;
  SSL_SESSION *session = NULL;
  char buf[4096];
  static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  while (now() < deadline) {
    double t0 = now();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    SSL *ssl = NULL;
    int ok = 0;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
      ssl = SSL_new(ctx);
      SSL_set_fd(ssl, fd);
      SSL_set_tlsext_host_name(ssl, servername);
      if (session) {
        /* OpenSSL treats a TLS 1.3 ticket as single use: offering it marks that object not
         * resumable. Offer a copy, so a server that sends no new ticket on a resumed connection
         * (node:tls) is offered the same ticket again, as servers with stateless tickets allow. */
        SSL_SESSION *offer = SSL_SESSION_dup(session);
        if (offer) {
          SSL_set_session(ssl, offer);
          SSL_SESSION_free(offer);
        }
      }
      if (SSL_connect(ssl) == 1) {
        double ms = (now() - t0) * 1000;
        int reused = SSL_session_reused(ssl);
        if (SSL_write(ssl, req, sizeof req - 1) > 0) {
          while (SSL_read(ssl, buf, sizeof buf) > 0) {}
          ok = 1;
        }
        if (ok && resumed_mode) {
          /* The ticket arrives after the handshake: read above, so it is stored by now. */
          SSL_SESSION *s = SSL_get1_session(ssl);
          if (s && SSL_SESSION_is_resumable(s)) {
            if (session) SSL_SESSION_free(session);
            session = s;
          } else if (s) {
            SSL_SESSION_free(s);
          }
        }
        if (ok) {
          pthread_mutex_lock(&lock);
          if (nsamples < MAX_SAMPLES) samples[nsamples++] = ms;
          nresumed += reused;
          pthread_mutex_unlock(&lock);
        }
      }
    }
    if (!ok) {
      pthread_mutex_lock(&lock);
      nerrors++;
      pthread_mutex_unlock(&lock);
      ERR_clear_error();
    }
    if (ssl) {
      /* Without our close_notify OpenSSL marks the session not resumable when it is freed. */
      if (ok) SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    close(fd);
  }
  if (session) SSL_SESSION_free(session);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: tls-load HOST PORT SECONDS THREADS full|resumed SERVERNAME\n");
    return 2;
  }
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
    fprintf(stderr, "tls-load: HOST must be an IPv4 address\n");
    return 2;
  }
  double seconds = atof(argv[3]);
  int threads = atoi(argv[4]);
  resumed_mode = strcmp(argv[5], "resumed") == 0;
  servername = argv[6];
  if (threads < 1 || threads > 1024 || seconds <= 0) {
    fprintf(stderr, "tls-load: THREADS must be 1..1024 and SECONDS > 0\n");
    return 2;
  }
  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* like s_time: the benchmark measures the server */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  samples = malloc(sizeof(double) * MAX_SAMPLES);
  pthread_t *tids = calloc((size_t)threads, sizeof(pthread_t));
  double t0 = now();
  deadline = t0 + seconds;
  for (int i = 0; i < threads; i++) pthread_create(&tids[i], NULL, worker, NULL);
  for (int i = 0; i < threads; i++) pthread_join(tids[i], NULL);
  double elapsed = now() - t0;
  qsort(samples, (size_t)nsamples, sizeof(double), cmp);
#define PCT(q) (nsamples ? samples[(long)((q) * nsamples) < nsamples ? (long)((q) * nsamples) : nsamples - 1] : 0)
  double sum = 0;
  for (long i = 0; i < nsamples; i++) sum += samples[i];
  printf("{\"connections\":%ld,\"resumed\":%ld,\"errors\":%ld,\"seconds\":%.3f,\"perSecond\":%.1f,"
         "\"latencyMs\":{\"p50\":%.3f,\"p95\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"mean\":%.3f}}\n",
         nsamples, nresumed, nerrors, elapsed, nsamples / elapsed, PCT(0.50), PCT(0.95), PCT(0.99),
         nsamples ? samples[nsamples - 1] : 0, nsamples ? sum / nsamples : 0);
  return 0;
}
