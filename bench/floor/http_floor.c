/* The loopback floor of this machine: an HTTP/1.1 server that does nothing but answer every
 * request with a fixed 2-byte body, on one thread, either sleeping in epoll_wait between
 * requests (mode 0, what most servers do) or polling without sleeping (mode 1, busy polling).
 * Whatever a real server does per request comes on top of these figures. WORK_US, if given,
 * spins that many microseconds before each answer: a server's own work, to see how the round
 * trip grows with it (on a guest whose idle vCPUs halt, not linearly: see docs/BENCHMARKS.md).
 *
 * usage: http_floor MODE PORT [WORK_US]        (listens on 127.0.0.1:PORT) */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char RESP[] =
    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) return 2;
  int busy = atoi(argv[1]), port = atoi(argv[2]), one = 1;
  long work_ns = argc == 4 ? atol(argv[3]) * 1000 : 0;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                          .sin_addr.s_addr = htonl(0x7f000001)};
  if (bind(ls, (void *)&a, sizeof a) || listen(ls, 128)) return 1;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  static char buf[65536];
  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, busy ? 0 : -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, 0, 0, SOCK_NONBLOCK)) >= 0) {
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
        }
        continue;
      }
      ssize_t r = read(fd, buf, sizeof buf);
      if (r <= 0) {
        if (r == 0 || errno != EAGAIN) close(fd);
        continue;
      }
      /* One answer per request head in what arrived (small bodies arrive with their head). */
      for (ssize_t k = 0; k + 3 < r; k++) {
        if (memcmp(buf + k, "\r\n\r\n", 4)) continue;
        if (work_ns) {
          struct timespec t0, t;
          clock_gettime(CLOCK_MONOTONIC, &t0);
          do clock_gettime(CLOCK_MONOTONIC, &t);
          while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < work_ns);
        }
        (void)!write(fd, RESP, sizeof RESP - 1);
      }
    }
  }
}
