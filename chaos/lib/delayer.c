/*
 * Holds every packet of an NFQUEUE queue for DELAY_MS plus a uniform random jitter in
 * [0, JITTER_MS], then accepts it: added latency without netem (absent on this kernel).
 * The harness routes packets here with an iptables NFQUEUE rule (--queue-bypass, so
 * traffic flows undelayed if this process dies) inside the sending node's namespace.
 *
 *   delayer QUEUE DELAY_MS JITTER_MS
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MAX_HELD 65536

struct held { uint32_t id; uint64_t due; };
static struct held heap[MAX_HELD];
static size_t count;
static uint64_t delay_ns, jitter_ns;
static volatile sig_atomic_t stopping;

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void push(struct held h) {
  size_t i = count++;
  while (i > 0 && heap[(i - 1) / 2].due > h.due) { heap[i] = heap[(i - 1) / 2]; i = (i - 1) / 2; }
  heap[i] = h;
}

static struct held pop(void) {
  struct held top = heap[0], last = heap[--count];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= count) break;
    if (c + 1 < count && heap[c + 1].due < heap[c].due) c++;
    if (heap[c].due >= last.due) break;
    heap[i] = heap[c];
    i = c;
  }
  heap[i] = last;
  return top;
}

static int on_packet(struct nfq_q_handle *q, struct nfgenmsg *m, struct nfq_data *d, void *unused) {
  (void)m; (void)unused;
  struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(d);
  if (!ph) return 0;
  uint32_t id = ntohl(ph->packet_id);
  if (count == MAX_HELD) return nfq_set_verdict(q, id, NF_ACCEPT, 0, NULL);  /* full: pass it on */
  uint64_t jitter = jitter_ns ? (uint64_t)(drand48() * (double)jitter_ns) : 0;
  push((struct held){id, now_ns() + delay_ns + jitter});
  return 0;
}

static void on_signal(int s) { (void)s; stopping = 1; }

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: delayer QUEUE DELAY_MS JITTER_MS\n");
    return 64;
  }
  uint16_t queue = (uint16_t)atoi(argv[1]);
  delay_ns = (uint64_t)atoll(argv[2]) * 1000000ull;
  jitter_ns = (uint64_t)atoll(argv[3]) * 1000000ull;
  srand48((long)now_ns());
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);

  struct nfq_handle *h = nfq_open();
  if (!h) { perror("nfq_open"); return 1; }
  struct nfq_q_handle *q = nfq_create_queue(h, queue, on_packet, NULL);
  if (!q) { perror("nfq_create_queue"); return 1; }
  if (nfq_set_mode(q, NFQNL_COPY_META, 0) < 0) { perror("nfq_set_mode"); return 1; }
  nfq_set_queue_maxlen(q, MAX_HELD);
  int fd = nfq_fd(h);
  printf("delayer: queue %u, %s ms + [0, %s] ms\n", queue, argv[2], argv[3]);
  fflush(stdout);

  char buf[65536];
  while (!stopping) {
    uint64_t t = now_ns();
    while (count > 0 && heap[0].due <= t) nfq_set_verdict(q, pop().id, NF_ACCEPT, 0, NULL);
    int timeout = count > 0 ? (int)((heap[0].due - t) / 1000000ull) : 100;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout) > 0) {
      ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) nfq_handle_packet(h, buf, (int)n);
      else if (n < 0 && errno == ENOBUFS) fprintf(stderr, "delayer: kernel queue overflow, packets dropped\n");
    }
  }
  /* Release everything still held, so stopping the fault does not drop packets. */
  while (count > 0) nfq_set_verdict(q, pop().id, NF_ACCEPT, 0, NULL);
  nfq_destroy_queue(q);
  nfq_close(h);
  return 0;
}
