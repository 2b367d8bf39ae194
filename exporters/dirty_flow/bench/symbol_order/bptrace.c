// bptrace FUNCS OUT -- CMD...: puts a breakpoint (int3) on the first byte of every function of
// CMD's executable listed in FUNCS (hex virtual addresses, as `nm` prints them), runs CMD with all
// its threads at full speed, and writes to OUT each function entered, first entered first.
// Each breakpoint fires once per address space (the byte is restored); forked children are
// followed until they exec.
#define _GNU_SOURCE
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <sys/user.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <unistd.h>
#include <string.h>
#include <errno.h>
#include <elf.h>

typedef struct { uint64_t va; unsigned char orig; char hit; } bp_t;
static bp_t *bps; static size_t nbps;
static int cmp(const void *a, const void *b) { uint64_t x = ((bp_t *)a)->va, y = ((bp_t *)b)->va; return x < y ? -1 : x > y; }
static bp_t *find(uint64_t va) {
  size_t lo = 0, hi = nbps;
  while (lo < hi) { size_t m = (lo + hi) / 2; if (bps[m].va < va) lo = m + 1; else hi = m; }
  return lo < nbps && bps[lo].va == va ? &bps[lo] : NULL;
}
static volatile sig_atomic_t stop_req;
static void on_sig(int s) { (void)s; stop_req = 1; }
int main(int argc, char **argv) {
  if (argc < 5 || strcmp(argv[3], "--")) { fprintf(stderr, "usage: bptrace FUNCS OUT -- CMD...\n"); return 2; }
  FILE *ff = fopen(argv[1], "r"); size_t cap = 1 << 16; bps = malloc(cap * sizeof *bps);
  unsigned long long v;
  while (fscanf(ff, "%llx", &v) == 1) { if (nbps == cap) bps = realloc(bps, (cap *= 2) * sizeof *bps); bps[nbps++] = (bp_t){ v, 0, 0 }; }
  fclose(ff);
  qsort(bps, nbps, sizeof *bps, cmp);
  size_t u = 0; for (size_t i = 0; i < nbps; i++) if (!u || bps[i].va != bps[u - 1].va) bps[u++] = bps[i];
  nbps = u;
  pid_t pid = fork();
  if (pid == 0) { ptrace(PTRACE_TRACEME, 0, 0, 0); execvp(argv[4], argv + 4); _exit(127); }
  int st; waitpid(pid, &st, 0);
  // Load base: the executable's lowest mapping (offset 0); 0 for a non-PIE (ET_EXEC) file.
  char path[256], line[4096], exe[4096]; uint64_t base = 0;
  snprintf(path, sizeof path, "/proc/%d/exe", pid); ssize_t n = readlink(path, exe, sizeof exe - 1); exe[n > 0 ? n : 0] = 0;
  FILE *ef = fopen(exe, "rb"); Elf64_Ehdr eh; fread(&eh, sizeof eh, 1, ef); fclose(ef);
  if (eh.e_type == ET_DYN) {
    snprintf(path, sizeof path, "/proc/%d/maps", pid); FILE *mf = fopen(path, "r");
    while (fgets(line, sizeof line, mf)) {
      unsigned long lo, off; char p[4096] = "";
      if (sscanf(line, "%lx-%*s %*s %lx %*s %*s %4095s", &lo, &off, p) >= 2 && !strcmp(p, exe) && off == 0) { base = lo; break; }
    }
    fclose(mf);
  }
  for (size_t i = 0; i < nbps; i++) {
    uint64_t a = base + bps[i].va;
    errno = 0; long w = ptrace(PTRACE_PEEKTEXT, pid, a, 0);
    if (errno) { bps[i].hit = 2; continue; }
    bps[i].orig = w & 0xff;
    ptrace(PTRACE_POKETEXT, pid, a, (w & ~0xffL) | 0xcc);
  }
  ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL);
  // No SA_RESTART: a signal must end the waitpid() below so that it is passed on.
  struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = on_sig;
  sigaction(SIGTERM, &sa, NULL); sigaction(SIGINT, &sa, NULL);
  FILE *out = fopen(argv[2], "w");
  ptrace(PTRACE_CONT, pid, 0, 0);
  int sent = 0; size_t hits = 0;
  for (;;) {
    if (stop_req && !sent) { kill(pid, SIGTERM); sent = 1; }
    pid_t tid = waitpid(-1, &st, __WALL);
    if (tid < 0) { if (errno == EINTR) continue; break; }
    if (WIFEXITED(st) || WIFSIGNALED(st)) { if (tid == pid) break; continue; }
    if (!WIFSTOPPED(st)) continue;
    int sig = WSTOPSIG(st), deliver = 0;
    if (sig == SIGTRAP && (st >> 16) == 0) {
      struct user_regs_struct r; ptrace(PTRACE_GETREGS, tid, 0, &r);
      bp_t *b = find(r.rip - 1 - base);
      if (b) {
        // Restore the byte in this task's memory (a forked child has its own copy).
        long w = ptrace(PTRACE_PEEKTEXT, tid, r.rip - 1, 0);
        if ((w & 0xff) == 0xcc) ptrace(PTRACE_POKETEXT, tid, r.rip - 1, (w & ~0xffL) | b->orig);
        if (!b->hit) { b->hit = 1; hits++; fprintf(out, "%lx\n", (unsigned long)b->va); }
        r.rip -= 1; ptrace(PTRACE_SETREGS, tid, 0, &r);
      } else deliver = SIGTRAP;
    } else if (sig == SIGTRAP) {
      // A child that execs leaves the traced image: let it go.
      if ((st >> 16) == PTRACE_EVENT_EXEC && tid != pid) { ptrace(PTRACE_DETACH, tid, 0, 0); continue; }
      deliver = 0; // clone/fork event
    } else if (sig == SIGSTOP) {
      deliver = 0;
    } else deliver = sig;
    ptrace(PTRACE_CONT, tid, 0, deliver);
  }
  fclose(out);
  fprintf(stderr, "bptrace: %zu breakpoints, %zu functions entered\n", nbps, hits);
  return 0;
}
