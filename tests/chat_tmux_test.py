#!/usr/bin/python3
"""`zeroskip chat` driven as a person would, in a real terminal (tmux send-keys / capture-pane).

    /usr/bin/python3 tests/chat_tmux_test.py BINARY MODEL_DIR

MODEL_DIR is a Hugging Face checkpoint (the shipped demo model); it is converted into a temporary
folder. Pins: the first reply is exactly the greedy continuation of the dialogue template rendered
independently here (computed with `zeroskip run`, cut at the template's blank-line stop), /reset
clears, Ctrl-C stops a long reply and the session goes on, the oldest turns are dropped with a
notice when the context fills, /exit ends the process. Waits use deadlines, never timings.
Exits 77 (reported by ctest as skipped) without tmux. Prints `N passed, M failed`.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77


class Pane:
    def __init__(self, name, command):
        self.name = name
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "200", "-y", "50", command],
                       check=True)

    def text(self):
        out = subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", self.name],
                             capture_output=True, text=True)
        return out.stdout if out.returncode == 0 else ""

    def keys(self, *keys):
        subprocess.run(["tmux", "send-keys", "-t", self.name] + list(keys), check=True)

    def line(self, text):
        self.keys("-l", text)
        self.keys("Enter")

    def wait_for(self, predicate, what, seconds=60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            text = self.text()
            if predicate(text):
                return text
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{self.text()}")

    def wait_exit(self, what, seconds=20):
        deadline = time.monotonic() + seconds
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.alive(), f"{what} did not end chat"

    def alive(self):
        return subprocess.run(["tmux", "has-session", "-t", self.name],
                              capture_output=True).returncode == 0

    def kill(self):
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def prompts(text):
    return sum(1 for line in text.splitlines() if line.startswith("> "))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: chat_tmux_test.py BINARY MODEL_DIR")
    if shutil.which("tmux") is None:
        print("SKIPPED: tmux is not installed")
        return SKIP
    binary, model_dir = map(os.path.abspath, sys.argv[1:])
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="zsk-chat-") as tmp:
        model = os.path.join(tmp, "m.zsk")
        subprocess.run([binary, "convert", model_dir, "-o", model], check=True,
                       capture_output=True)
        # A private tmux server, so the test never touches a user's sessions.
        os.environ["TMUX_TMPDIR"] = tmp
        os.environ.pop("TMUX", None)
        chat = f"{binary} chat -m {model} --temp 0 -t 1"

        def check(name, fn):
            nonlocal passed, failed
            pane = None
            try:
                pane = fn()
                passed += 1
                print(f"PASS {name}", flush=True)
            except AssertionError as e:
                failed += 1
                print(f"FAIL {name}: {e}", flush=True)
            finally:
                subprocess.run(["tmux", "kill-server"], capture_output=True)

        def first_reply_is_the_greedy_continuation():
            user = "Good morrow, sir. What news from Verona?"
            rendered = f"USER:\n{user}\n\nASSISTANT:\n"
            run = subprocess.run([binary, "run", "-m", model, "-p", rendered, "--temp", "0",
                                  "-n", "48", "--json", "-t", "1"], capture_output=True, text=True)
            expected = json.loads(run.stdout)["text"].split("\n\n")[0]
            pane = Pane("first", chat + " -n 48")
            pane.wait_for(lambda t: prompts(t) >= 1, "the first prompt")
            pane.line(user)
            screen = pane.wait_for(lambda t: prompts(t) >= 2, "the reply")
            shown = screen.split("> " + user + "\n", 1)[1].rsplit("\n> ", 1)[0]
            assert shown == expected, f"reply {shown!r}, expected {expected!r}"
            pane.line("/reset")
            pane.wait_for(lambda t: "(conversation cleared)" in t, "the reset notice")
            pane.line("/exit")
            pane.wait_exit("/exit")

        def ctrl_c_stops_a_reply_not_the_session():
            # chatml: this model never writes <|im_end|>, so only Ctrl-C, -n or the context
            # ends the reply. The scalar dense path keeps this tiny model slow enough (~0.3k tok/s,
            # about a second per full context) that Ctrl-C lands inside the reply.
            pane = Pane("ctrlc", chat + " -n 100000 --chat-template chatml --isa scalar --ffn dense")
            pane.wait_for(lambda t: prompts(t) >= 1, "the first prompt")
            pane.line("Speak on, and do not stop.")
            before = pane.text()
            pane.wait_for(lambda t: len(t.strip()) > len(before.strip()) + 20, "reply text")
            pane.keys("C-c")
            pane.wait_for(lambda t: "[stopped]" in t and prompts(t) >= 2, "the stopped reply")
            pane.line("And now?")
            pane.wait_for(lambda t: prompts(t) >= 2 and "> And now?" in t, "a second turn")
            assert pane.alive(), "Ctrl-C ended the session"
            pane.keys("C-c")  # interrupt the second reply too, then leave with Ctrl-D
            pane.wait_for(lambda t: t.count("[stopped]") >= 2, "the second stop")
            pane.keys("C-d")
            pane.wait_exit("Ctrl-D")

        def oldest_turns_dropped_when_context_fills():
            pane = Pane("ctx", chat + " --ctx 64 -n 16")
            pane.wait_for(lambda t: prompts(t) >= 1, "the first prompt")
            for i, words in enumerate(["Who goes there, friend?", "Stand and unfold yourself.",
                                       "Long live the king!", "What, has this thing appeared?"]):
                pane.line(words)
                pane.wait_for(lambda t, n=i + 2: prompts(t) >= n, f"reply {i + 1}")
            assert "(dropped the oldest turn to fit the context)" in pane.text(), pane.text()
            pane.line("/exit")

        check("first_reply_is_the_greedy_continuation", first_reply_is_the_greedy_continuation)
        check("ctrl_c_stops_a_reply_not_the_session", ctrl_c_stops_a_reply_not_the_session)
        check("oldest_turns_dropped_when_context_fills", oldest_turns_dropped_when_context_fills)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
