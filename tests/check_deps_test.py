"""How .ci/check-deps attributes a strace log to tests, on small logs written here (no strace).

Each case is a log as `strace -f -o` writes it; each expectation is the set of system files a test
must answer for. A wrong attribution made CI fail twice (a child's calls logged before its parent's
clone returned; a test executing the fake programs it had just written to its temporary folder).
"""
import importlib.machinery
import importlib.util
import os
import tempfile
import unittest

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
loader = importlib.machinery.SourceFileLoader("check_deps",
                                              os.path.join(SOURCE, ".ci", "check-deps"))
spec = importlib.util.spec_from_loader("check_deps", loader)
check_deps = importlib.util.module_from_spec(spec)
loader.exec_module(check_deps)

TESTS = {("/usr/bin/python3", "t.py"): ("python_t", set())}


def attribute(log_text):
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "strace.log")
        with open(log, "w", encoding="utf-8") as f:
            f.write(log_text)
        return check_deps.files_per_test(log, TESTS, os.path.join(d, "build"))


class FilesPerTest(unittest.TestCase):
    def test_a_test_answers_for_the_programs_and_libraries_it_uses(self):
        used = attribute(
            '100 clone(child_stack=NULL, flags=SIGCHLD) = 200\n'
            '200 execve("/usr/bin/python3", ["/usr/bin/python3", "t.py"], 0x1 /* 3 vars */) = 0\n'
            '200 openat(AT_FDCWD, "/usr/lib/x86_64-linux-gnu/libz.so.1", O_RDONLY|O_CLOEXEC) = 3\n'
            '200 execve("/opt/hand/bin/tool", ["tool"], 0x1 /* 3 vars */) = 0\n')
        self.assertEqual(used, {"python_t": {"/usr/bin/python3",
                                             "/usr/lib/x86_64-linux-gnu/libz.so.1",
                                             "/opt/hand/bin/tool"}})

    def test_a_program_the_test_wrote_is_its_own(self):
        # The fake llama-cli of python_benchmarks: created, then executed by a grandchild.
        used = attribute(
            '100 clone(child_stack=NULL, flags=SIGCHLD) = 200\n'
            '200 execve("/usr/bin/python3", ["/usr/bin/python3", "t.py"], 0x1 /* 3 vars */) = 0\n'
            '200 openat(AT_FDCWD, "/tmp/x1/llama-cli", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666)'
            ' = 3\n'
            '200 clone(child_stack=NULL, flags=SIGCHLD) = 201\n'
            '201 execve("/tmp/x1/llama-cli", ["/tmp/x1/llama-cli", "-m", "a"], 0x1) = 0\n'
            '201 execve("/tmp/x2/unwritten", ["/tmp/x2/unwritten"], 0x1) = 0\n')
        self.assertEqual(used, {"python_t": {"/usr/bin/python3", "/tmp/x2/unwritten"}})

    def test_a_child_logged_before_its_clone_returns_belongs_to_the_test(self):
        used = attribute(
            '100 clone(child_stack=NULL, flags=SIGCHLD) = 200\n'
            '200 execve("/usr/bin/python3", ["/usr/bin/python3", "t.py"], 0x1 /* 3 vars */) = 0\n'
            '201 openat(AT_FDCWD, "/usr/lib/crash_handler.so", O_RDONLY) = 3\n'
            '200 clone3({flags=CLONE_VM, exit_signal=0}, 88) = 201\n')
        self.assertEqual(used["python_t"], {"/usr/bin/python3", "/usr/lib/crash_handler.so"})
        self.assertNotIn("(ctest itself)", used)

    def test_kernel_interfaces_folders_and_name_service_modules_are_the_machines(self):
        used = attribute(
            '100 clone(child_stack=NULL, flags=SIGCHLD) = 200\n'
            '200 execve("/usr/bin/python3", ["/usr/bin/python3", "t.py"], 0x1 /* 3 vars */) = 0\n'
            '200 openat(AT_FDCWD, "/proc/self/maps", O_RDONLY) = 3\n'
            '200 openat(AT_FDCWD, "/usr/lib", O_RDONLY|O_DIRECTORY) = 3\n'
            '200 openat(AT_FDCWD, "/lib/x86_64-linux-gnu/libnss_files.so.2", O_RDONLY) = 3\n')
        self.assertEqual(used, {"python_t": {"/usr/bin/python3"}})


if __name__ == "__main__":
    unittest.main()
