// zeroskip: one binary, one subcommand per task. Bad input of any kind ends with exactly one
// line `zeroskip: error: <file>: <reason>` on stderr and exit status 1; a command line CLI11
// cannot parse exits 2. Errors about a flag rather than a file name the flag instead.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <new>

#include "build_info.h"
#include "commands.h"
#include "zeroskip/engine.h"
#include "zeroskip/error.h"
#include "zeroskip/format.h"

namespace {

// oneDNN's batched matmuls run on GCC's OpenMP team, whose idle threads spin for 300000 polls
// (milliseconds) before they sleep: on a machine whose cores are busy with other processes, each
// spinning waiter burns the slice the thread it waits for needs (issue 29). Waiting the way the
// engine's own WorkerPool waits, a brief spin and then sleep, keeps that property and saves a
// quiet machine the wake-up at every region: 1000 polls of a pause instruction are 20-40 us
// (19 ns a pause on this machine's EPYC, ~40 on Intel since Skylake), the order of the pool's own
// 50 us spin. Measured against passive waiting and longer spins in docs/BENCHMARKS.md ("Threads on
// shared cores"). libgomp reads its settings once, in its own constructor, before main(). A
// setenv from this program's .preinit_array runs earlier but is lost: glibc's own initializer,
// which runs after it, points environ back at the block the kernel passed. So the program runs
// itself again with the spin count set. The user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
void RerunWithBoundedOpenMpSpin(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) {
    return;
  }
  setenv("GOMP_SPINCOUNT", "1000", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then run with libgomp's default
}

void OnTerminate(int sig) {
  zeroskip::RemoveUnfinishedOutput();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

// Descriptors 0-2 that the caller closed (`<&-`, `>&-`) are taken by /dev/null opened the wrong
// way round, so reads of stdin and writes to stdout/stderr still fail (EBADF) as on a closed
// descriptor, but no model or text file opened later can land on them and be read as input or
// written as output.
void ReserveStandardDescriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    ::open("/dev/null", fd == 0 ? O_WRONLY : O_RDONLY);  // the lowest free number: fd
  }
}

// An error line is one line whatever a flag value held: CLI11's messages quote values verbatim,
// so control bytes are escaped as zeroskip::Error escapes them (\xNN).
std::string OneLine(std::string_view text) { return zeroskip::Error("", std::string(text)).what(); }

// --version and --help print and exit 0 only if what they printed arrived.
int AfterPrinting(int code) {
  try {
    zeroskip::cli::FlushStdout();
  } catch (const zeroskip::cli::StdoutClosed&) {
  } catch (const zeroskip::Error& e) {
    std::cerr << "zeroskip: error: " << e.what() << "\n";
    return 1;
  }
  return code;
}
}  // namespace

namespace zeroskip::cli {

void FlushStdout() {
  std::cout.flush();
  if (std::fflush(stdout) == 0 && !std::ferror(stdout) && std::cout.good()) return;
  const int error = errno;
  std::clearerr(stdout);
  if (error == EPIPE) throw StdoutClosed{};
  throw Error("stdout", std::string("write failed: ") + std::strerror(error));
}

void WriteStdout(std::string_view text) {
  errno = 0;
  std::fwrite(text.data(), 1, text.size(), stdout);
  FlushStdout();
}

}  // namespace zeroskip::cli

namespace {

// What a bug report needs: version, commit, build type, the kernels compiled in and which of them
// this CPU runs, and the CPU features that matter to them.
std::string VersionText() {
  std::string text = std::string("zeroskip ") + ZEROSKIP_VERSION + " (commit " +
                     ZEROSKIP_GIT_COMMIT + ", " + ZEROSKIP_BUILD_TYPE + " build)\nkernels:";
  for (const std::string_view isa : zeroskip::IsaNames()) {
    text += " " + std::string(isa) + (zeroskip::IsaSupported(isa) ? "" : " (not on this CPU)");
  }
  return text + " -> using " + std::string(zeroskip::BestIsaName()) +
         "\ncpu features: " + zeroskip::CpuFeatures();
}

}  // namespace

int main(int argc, char** argv) {
  ReserveStandardDescriptors();
  RerunWithBoundedOpenMpSpin(argv);
  // Every signal that ends the process by default and can be caught removes an unfinished output.
  for (const int sig : zeroskip::OutputCleanupSignals()) std::signal(sig, OnTerminate);
  // Past the file size limit (ulimit -f) a write fails with EFBIG, reported as an error line.
  std::signal(SIGXFSZ, SIG_IGN);
  // A closed pipe is an error code on write (handled: StdoutClosed), not a killing signal.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{
      "zeroskip: run ReLU language models on the CPU, skipping the work ReLU zeros make "
      "useless"};
  app.set_version_flag("--version", VersionText);
  app.require_subcommand(1);
  zeroskip::cli::AddConvert(app);
  zeroskip::cli::AddShadow(app);
  zeroskip::cli::AddNeurons(app);
  zeroskip::cli::AddInfo(app);
  zeroskip::cli::AddVerify(app);
  zeroskip::cli::AddRun(app);
  zeroskip::cli::AddEval(app);
  zeroskip::cli::AddPerplexity(app);
  zeroskip::cli::AddScore(app);
  zeroskip::cli::AddChat(app);
  zeroskip::cli::AddServe(app);
  zeroskip::cli::AddBench(app);
  try {
    app.parse(argc, argv);
    zeroskip::cli::FlushStdout();
  } catch (const zeroskip::cli::StdoutClosed&) {
    return 0;
  } catch (const CLI::CallForVersion& e) {
    return AfterPrinting(app.exit(e));
  } catch (const CLI::CallForHelp& e) {
    return AfterPrinting(app.exit(e));
  } catch (const CLI::CallForAllHelp& e) {
    return AfterPrinting(app.exit(e));
  } catch (const CLI::ParseError& e) {
    std::cerr << "zeroskip: error: " << OneLine(e.what()) << " (see --help)\n";
    return 2;
  } catch (const zeroskip::Error& e) {
    std::cout.flush();
    std::cerr << "zeroskip: error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "zeroskip: error: out of memory (a smaller --ctx may help)\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "zeroskip: error: " << zeroskip::Error("internal", e.what()).what() << "\n";
    return 1;
  }
  return 0;
}
