// Counts a process's OpenMP parallel regions and explicit barriers (docs/BENCHMARKS.md, "Threads
// on shared cores"): preloaded, it stands in front of libgomp's entry points, counts, and
// forwards. Explicit barriers count once per thread that reaches them.
//   cc -O2 -shared -fPIC benchmarks/omp_count.c -o /tmp/omp_count.so -ldl
//   LD_PRELOAD=/tmp/omp_count.so OMP_WAIT_POLICY=passive build/zeroskip run ...
// (OMP_WAIT_POLICY set by hand: else zeroskip re-executes itself and both runs report.)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

static long regions, barriers;

void GOMP_parallel(void (*fn)(void*), void* data, unsigned threads, unsigned flags) {
  static void (*real)(void (*)(void*), void*, unsigned, unsigned);
  if (!real) real = dlsym(RTLD_NEXT, "GOMP_parallel");
  __atomic_add_fetch(&regions, 1, __ATOMIC_RELAXED);
  real(fn, data, threads, flags);
}

void GOMP_barrier(void) {
  static void (*real)(void);
  if (!real) real = dlsym(RTLD_NEXT, "GOMP_barrier");
  __atomic_add_fetch(&barriers, 1, __ATOMIC_RELAXED);
  real();
}

__attribute__((destructor)) static void Report(void) {
  fprintf(stderr, "omp_count: %ld parallel regions, %ld explicit barriers\n", regions, barriers);
}
