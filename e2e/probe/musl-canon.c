/* The canonical name a musl client reads: getaddrinfo(AF_UNSPEC,
 * AI_CANONNAME). Prints "CANON <ai_canonname>" and "ADDR <ip>" per address
 * and exits 0, or prints "EAI <code> <message>" and exits 2. Built static
 * with musl-gcc (build-deps.sh musl); dns/tests/rewrite_readback.rs runs it. */
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s NAME\n", argv[0]);
        return 64;
    }
    struct addrinfo hints, *res, *p;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_CANONNAME;
    int rc = getaddrinfo(argv[1], NULL, &hints, &res);
    if (rc != 0) {
        printf("EAI %d %s\n", rc, gai_strerror(rc));
        return 2;
    }
    printf("CANON %s\n", res->ai_canonname ? res->ai_canonname : "");
    for (p = res; p; p = p->ai_next) {
        char buf[INET6_ADDRSTRLEN];
        const void *a = p->ai_family == AF_INET
            ? (const void *)&((struct sockaddr_in *)p->ai_addr)->sin_addr
            : (const void *)&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
        if (inet_ntop(p->ai_family, a, buf, sizeof buf))
            printf("ADDR %s\n", buf);
    }
    freeaddrinfo(res);
    return 0;
}
