/* Sandbox ("pause") container: block in pause(2) until a signal ends us; reap nothing else. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGINT, done);
    signal(SIGTERM, done);
    for (;;) pause();
}
