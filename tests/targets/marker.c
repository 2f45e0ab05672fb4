/* Test library for trace_target.py: one C function per Python call path. Not inlined,
 * not optimised away: each call is a uprobe hit. */
__attribute__((noinline)) long marker_a(long x) { return x * 3 + 1; }
__attribute__((noinline)) long marker_b(long x) { return x * 5 + 2; }
