// zeroskip: one binary, one subcommand per task. Bad input of any kind ends with exactly one
// line `zeroskip: error: <file>: <reason>` on stderr and exit status 1 (2 for bad usage).
#include <dnnl.hpp>
#include <iostream>
#include <new>

#include "commands.h"
#include "zeroskip/error.h"

int main(int argc, char** argv) {
  CLI::App app{"zeroskip: run ReLU language models on the CPU, skipping the work ReLU zeros make "
               "useless"};
  app.require_subcommand(1);
  zeroskip::cli::AddConvert(app);
  zeroskip::cli::AddInfo(app);
  zeroskip::cli::AddVerify(app);
  zeroskip::cli::AddRun(app);
  zeroskip::cli::AddEval(app);
  zeroskip::cli::AddPerplexity(app);
  zeroskip::cli::AddScore(app);
  zeroskip::cli::AddBench(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "zeroskip: error: " << e.what() << " (see --help)\n";
    return 2;
  } catch (const zeroskip::Error& e) {
    std::cout.flush();
    std::cerr << "zeroskip: error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "zeroskip: error: out of memory\n";
    return 1;
  } catch (const dnnl::error& e) {
    std::cerr << "zeroskip: error: oneDNN: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
