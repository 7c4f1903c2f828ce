// Linked into the libFuzzer binaries only. The top-level ZEROSKIP_FUZZ flags build UBSan in
// recover mode, where a report is printed and execution continues, so libFuzzer would not stop
// on it; halting makes every UBSan report a crash with a saved reproducer.
extern "C" const char* __ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1";
}
